"""No password leaves the daemon, whatever characters it holds.

A table of camera URLs with hostile passwords goes through everything that prints:
`streamd check`, a real daemon's logs (text and JSON, at DEBUG), `/status`, `/metrics`,
and FFmpeg's own error text for those URLs. The cameras point at a real RTSP server:
some at a live mount (streaming), some at a missing one (FFmpeg's 404 text, which
quotes the URL) and some at a closed port (refused).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import av
import pytest
import yaml

from devtools.testing.ports import free_port
from devtools.testing.rtsp import RtspTestServer
from streamd.camera.errors import classify
from tests.support.listener import fetch, scrape

pytestmark = pytest.mark.rtsp

ENV_PASSWORD = "fr0m'env\"Pw"
CREDENTIAL_PASSWORD = "cred'sëntial:Qk20"
# (user, password as written in the URL). Every password is unique, so finding one
# anywhere is a leak and not a coincidence.
ACCEPTED = [
    ("viewer", "sin'gle-Qk1"),
    ("viewer", 'dou"ble-Qk2'),
    ("viewer", "sl%2Fash-Qk3"),
    ("viewer", "a@t-Qk4"),
    ("viewer", "enc%40at-Qk5"),
    ("viewer", "co:lon-Qk6"),
    ("viewer", "100%pct-Qk7"),
    ("viewer", "enc%25pct-Qk8"),
    ("viewer", "enc%23hash-Qk9"),
    ("viewer", "enc%3Fask-Qk10"),
    ("viewer", "with space-Qk11"),
    ("viewer", "pässwörd-Qk12"),
    ("viewer", "b\\ack'sl\"ash-Qk13"),
    ("ad'min-Qk14", "plain-Qk15"),
    ("viewer", "${CAM_PASSWORD}"),
    ("viewer", "${credential:cam}"),
]
# Unencoded '/', '#' and '?' end the host part: check refuses these, and says why.
REFUSED = [("viewer", "sl/ash-Qk16"), ("viewer", "ha#sh-Qk17"), ("viewer", "as?k-Qk18")]


def expanded(password: str) -> str:
    return {"${CAM_PASSWORD}": ENV_PASSWORD, "${credential:cam}": CREDENTIAL_PASSWORD}.get(password, password)


def forbidden_texts() -> list[str]:
    """Every password and distinctive user name, as written and percent-decoded, plus JSON's escaping."""
    values = [expanded(p) for _, p in ACCEPTED + REFUSED] + [u for u, _ in ACCEPTED if u != "viewer"]
    texts = set(values) | {unquote(v) for v in values}
    return sorted(texts | {json.dumps(t)[1:-1] for t in texts})


def assert_no_secret(text: str, where: str) -> None:
    leaked = [secret for secret in forbidden_texts() if secret in text]
    assert not leaked, f"{where} shows {leaked}"


def camera_urls(server: RtspTestServer, entries: list[tuple[str, str]]) -> dict[str, str]:
    closed = free_port()
    targets = [f"127.0.0.1:{server.port}/cam1", f"127.0.0.1:{server.port}/missing", f"127.0.0.1:{closed}/cam1"]
    return {f"c{i:02d}": f"rtsp://{user}:{password}@{targets[i % 3]}" for i, (user, password) in enumerate(entries)}


def write_config(path: Path, port: int, urls: dict[str, str]) -> None:
    config = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "defaults": {"fps": 2, "open_timeout_s": 3, "backoff": {"initial_s": 0.2, "max_s": 1}},
        "cameras": [{"id": camera_id, "url": url} for camera_id, url in urls.items()],
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def secret_env(tmp_path: Path) -> dict[str, str]:
    credentials = tmp_path / "credentials"
    credentials.mkdir(exist_ok=True)
    (credentials / "cam").write_text(CREDENTIAL_PASSWORD + "\n", encoding="utf-8")
    return {**os.environ, "CAM_PASSWORD": ENV_PASSWORD, "CREDENTIALS_DIRECTORY": str(credentials)}


def check(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamd", "check", str(config)]
    return subprocess.run(command, capture_output=True, text=True, env=secret_env(tmp_path), timeout=60)


def test_the_table_has_every_hostile_character() -> None:
    passwords = "".join(expanded(p) for _, p in ACCEPTED + REFUSED)
    for character in ("'", '"', "/", "@", "%40", ":", "%", "#", "?", " ", "ä"):
        assert character in passwords, character
    assert len(ACCEPTED) + len(REFUSED) >= 15


def test_check_names_the_bad_urls_and_prints_no_password(rtsp_server: RtspTestServer, tmp_path: Path) -> None:
    config = tmp_path / "streams.yaml"
    urls = camera_urls(rtsp_server, ACCEPTED + REFUSED)
    urls["typo"] = "rtsp//viewer:typo-Qk19@127.0.0.1/cam1"
    write_config(config, free_port(), urls)
    result = check(config, tmp_path)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert_no_secret(output, "check")
    assert "typo-Qk19" not in output
    refused = {line.split()[1].split(".")[0] for line in result.stderr.splitlines() if ".url:" in line}
    assert refused == {f"cameras[{i}]" for i in range(len(ACCEPTED), len(ACCEPTED) + len(REFUSED) + 1)}
    assert "percent-encode" in result.stderr and "mistyped rtsp:// URL" in result.stderr

    # The accepted ones alone pass.
    write_config(config, free_port(), camera_urls(rtsp_server, ACCEPTED))
    ok = check(config, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert_no_secret(ok.stdout + ok.stderr, "check")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_running_daemon_prints_no_password_in_logs_status_or_metrics(
    rtsp_server: RtspTestServer, tmp_path: Path, log_format: str
) -> None:
    port = free_port()
    config = tmp_path / "streams.yaml"
    urls = camera_urls(rtsp_server, ACCEPTED)
    write_config(config, port, urls)
    process = subprocess.Popen(
        [sys.executable, "-m", "streamd", "--log-level", "DEBUG", "--log-format", log_format, "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=secret_env(tmp_path),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "streamd exited"
            assert time.monotonic() < deadline, "not every camera streamed or failed in time"
            try:
                cameras = json.loads(fetch(port, "/status"))["cameras"]
            except OSError:
                time.sleep(0.2)
                continue
            live = [c for c in cameras if c["id"] in list(urls)[0::3]]
            failing = [c for c in cameras if c not in live]
            if (
                len(cameras) == len(urls)
                and all(c["state"] == "streaming" for c in live)
                and all(c["reconnects"] >= 1 and c["reason"] for c in failing)
            ):
                break
            time.sleep(0.2)
        status, metrics = fetch(port, "/status"), scrape(port)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-2000:]
    # The failures happened and were described: FFmpeg's own texts reached the logs and /status.
    reasons = {c["reason"] for c in json.loads(status)["cameras"] if c["state"] != "streaming"}
    assert {"not_found", "connection_refused"} <= reasons, status
    assert "404" in stderr or "Not Found" in stderr
    assert "***@127.0.0.1" in stderr, "URLs are still shown, masked"
    if log_format == "json":
        assert all(json.loads(line)["message"] is not None for line in stderr.splitlines() if line.strip())
    assert_no_secret(stderr, f"{log_format} logs")
    assert_no_secret(status, "/status")
    assert_no_secret(metrics, "/metrics")


def test_ffmpegs_own_error_text_holds_the_password_and_streamd_masks_it(tmp_path: Path) -> None:
    from streamd.base.redact import register_secrets, url_secrets

    url = f"rtsp://viewer:{ACCEPTED[12][1]}@127.0.0.1:{free_port()}/cam1"
    with pytest.raises(av.error.FFmpegError) as caught:
        av.open(url, options={"rtsp_transport": "tcp"}, timeout=5)
    raw = str(caught.value)
    assert repr(url) in raw, "the premise: PyAV's error repeats the URL"
    register_secrets(url_secrets(url))  # what reading the configuration does
    message = str(classify(caught.value, streaming=False))
    assert_no_secret(message, "the camera error")
    assert "Connection refused" in message and "***@127.0.0.1" in message
