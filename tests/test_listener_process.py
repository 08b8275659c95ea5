"""The metrics listener of a real `streamd run` against what a network can do to it: a
flood of idle connections under systemd's default descriptor limit, and TLS with basic
auth scraped by a real Prometheus."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from devtools.testing.ports import free_port
from streamd.monitor.http_server import MAX_CONNECTIONS
from tests.support.daemon import DaemonProcess
from tests.support.environment import StartRtspServer, system_binary
from tests.support.prometheus import Prometheus, wait_until

pytestmark = pytest.mark.rtsp

# systemd's default soft limit, which the old listener ran out of.
DESCRIPTOR_LIMIT = 1024
FLOOD = 1100


def proc(daemon: DaemonProcess, what: str) -> int:
    """The daemon's open descriptors (`fds`) or a line of /proc/PID/status (`Threads`)."""
    pid = daemon.process.pid
    if what == "fds":
        return len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{what}:")))


def stop(daemon: DaemonProcess) -> int:
    daemon.signal(signal.SIGTERM)
    return daemon.wait(40)


@contextlib.contextmanager
def streamd(config: Path, nofile: int | None = None) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(config, nofile=nofile)
    try:
        yield daemon
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def get(url: str, timeout: float = 5.0, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def camera_status(port: int, camera: str) -> dict[str, Any]:
    _, _, body = get(f"http://127.0.0.1:{port}/status")
    return next(c for c in json.loads(body)["cameras"] if c["id"] == camera)


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections to the port that never send a byte, held open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1000)), hard))
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", port))
            held.append(client)
        yield held
    finally:
        for client in held:
            client.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_idle_connections_leaves_health_threads_descriptors_and_cameras_alone(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    rtsp_port, port = free_port(), free_port()
    server = rtsp_servers({"cam": test_video}, port=rtsp_port)
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        "defaults: {backoff: {initial_s: 0.2, max_s: 1.0}}\n"
        f"cameras: [{{id: cam, url: '{server.url('cam')}', fps: 5}}]\n"
    )
    with streamd(config, nofile=DESCRIPTOR_LIMIT) as daemon:
        wait_until(lambda: camera_status(port, "cam")["state"] == "streaming", 30, "the camera to stream")
        threads_before, fds_before = proc(daemon, "Threads"), proc(daemon, "fds")
        with idle_connections(port, FLOOD):
            # The connections the full backlog refused come back in waves (the kernel's SYN
            # retries after 1, 3, 7 s...): health checks all through them must be answered.
            slowest = 0.0
            for _ in range(16):
                started = time.monotonic()
                status, _, body = get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                slowest = max(slowest, time.monotonic() - started)
                assert (status, body) == (200, b"ok\n")
                time.sleep(0.5)
            assert slowest < 5.0, f"/healthz took {slowest:.1f}s under the flood"
            threads, fds = proc(daemon, "Threads"), proc(daemon, "fds")
            # The old listener held a thread and a descriptor per connection, and ran out.
            # Now: the open connections, plus at most a backlog's worth accepted in one go
            # and not yet turned away, plus a few for the test's own requests.
            assert threads <= threads_before + 4, (threads_before, threads)
            assert fds <= fds_before + 2 * MAX_CONNECTIONS + 8, (fds_before, fds)

            # The camera's server restarts during the flood: the camera must get a
            # descriptor to reconnect with.
            server.kill()
            wait_until(lambda: camera_status(port, "cam")["state"] != "streaming", 20, "the camera to notice")
            server.start()
            wait_until(lambda: camera_status(port, "cam")["state"] == "streaming", 30, "the camera to come back")
            assert camera_status(port, "cam")["reconnects"] >= 1

        # What HTTP clients get: HEAD without a body, 405 for other methods, nosniff.
        status, headers, body = get(f"http://127.0.0.1:{port}/status", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
        status, headers, _ = get(f"http://127.0.0.1:{port}/status", method="DELETE")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert stop(daemon) == 0, daemon.log[-3000:]
    assert "Too many open files" not in daemon.log


def test_a_request_head_that_never_ends_is_cut_off(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{port}}}\ncameras: []\n")
    with streamd(config) as daemon:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "the listener")
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.settimeout(20)
        started = time.monotonic()
        assert slow.recv(100) == b"", "the server closes a head that does not finish"
        took = time.monotonic() - started
        slow.close()
        assert 5 < took < 15, took
        assert stop(daemon) == 0


def write_certificate(authority: trustme.CA, directory: Path, ca_name: str = "ca.pem") -> dict[str, Path]:
    """A server certificate for 127.0.0.1 from `authority`, as server.pem and server.key
    (each replaced whole, as a renewal does), and the CA as `ca_name`."""
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    files = {"ca": directory / ca_name, "cert": directory / "server.pem", "key": directory / "server.key"}
    authority.cert_pem.write_to_path(str(files["ca"]))
    for name, blobs in (("key", [certificate.private_key_pem]), ("cert", certificate.cert_chain_pems)):
        partial = files[name].with_suffix(".partial")
        partial.write_bytes(b"".join(blob.bytes() for blob in blobs))
        partial.replace(files[name])
    return files


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    return write_certificate(trustme.CA(), tmp_path)


def test_tls_and_basic_auth_admit_prometheus_with_credentials_and_no_one_without(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    password = "correct horse"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{port}, web_config: web.yml, pictures: false}}\ncameras: []\n")
    check = subprocess.run(
        [sys.executable, "-m", "streamd", "check", "--deep", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr

    trusted = ssl.create_default_context(cafile=str(tls_files["ca"]))
    base = f"https://127.0.0.1:{port}"
    good = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"prometheus:guess").decode()}

    def fetch(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10, context=trusted) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), error.read()

    binary = system_binary("prometheus", "prometheus")
    with streamd(config) as daemon:
        wait_until(lambda: fetch("/healthz", good)[0] == 200, 30, "the listener over TLS")
        status, headers, _ = fetch("/metrics")
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="streamd"'
        assert fetch("/healthz", wrong)[0] == 401
        status, _, body = fetch("/metrics", good)
        assert status == 200 and b"streamd_build_info" in body
        # Pictures are off: no snapshot route, no images on the page; status stays.
        status, _, body = fetch("/cameras/any/latest.jpg", good)
        assert status == 404 and b"pictures are off" in body
        assert b"<img" not in fetch("/", good)[2] and fetch("/status", good)[0] == 200
        # Plain HTTP to a TLS listener gets no answer a client could read as one.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/metrics")
            plain.getresponse().read()
        plain.close()

        tls = {"ca_file": str(tls_files["ca"])}
        target = {"targets": [f"127.0.0.1:{port}"]}
        jobs = [
            {"job_name": "streamd", "scheme": "https", "tls_config": tls, "static_configs": [target],
             "basic_auth": {"username": "prometheus", "password": password}},
            {"job_name": "anonymous", "scheme": "https", "tls_config": tls, "static_configs": [target]},
        ]  # fmt: skip
        prometheus = Prometheus(binary, tmp_path, "", scrape_configs=jobs)
        try:
            wait_until(lambda: prometheus.query('up{job="streamd"} == 1'), 60, "Prometheus to scrape through TLS")
            wait_until(lambda: prometheus.query('up{job="anonymous"} == 0'), 30, "the anonymous job to be refused")
            assert prometheus.query('streamd_build_info{job="streamd"}')
            assert not prometheus.query('streamd_build_info{job="anonymous"}')
        finally:
            prometheus.stop()
        assert stop(daemon) == 0, daemon.log[-3000:]
    assert password not in daemon.log and hashed not in daemon.log


def test_check_deep_names_what_is_wrong_in_the_web_config(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{port}, web_config: web.yml}}\ncameras: []\n")
    web = tmp_path / "web.yml"
    cases = {
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  cipher_suites: [x]\n": (
            "tls_server_config.cipher_suites is not supported"
        ),
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n": "cannot load cert_file 'missing.pem'",
        "basic_auth_users:\n  alice: plaintext\n": "user 'alice': not a bcrypt hash",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  clientauth: x\n": "clientauth",
    }
    for text, expected in cases.items():
        web.write_text(text)
        check = subprocess.run(
            [sys.executable, "-m", "streamd", "check", "--deep", str(config)], capture_output=True, text=True
        )
        assert check.returncode == 1, (text, check.stdout, check.stderr)
        assert "metrics.web_config" in check.stderr and expected in check.stderr and str(web) in check.stderr
        assert "plaintext" not in check.stderr


def test_a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_refused(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{port}, web_config: web.yml}}\ncameras: []\n")

    def answers(ca: Path) -> bool:
        trusted = ssl.create_default_context(cafile=str(ca))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=5, context=trusted) as reply:
                return bool(reply.status == 200)
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLCertVerificationError):
                return False
            raise

    with streamd(config) as daemon:
        wait_until(lambda: answers(tls_files["ca"]), 30, "the listener with the first certificate")
        renewed = write_certificate(trustme.CA(), tmp_path, "renewed-ca.pem")
        wait_until(lambda: answers(renewed["ca"]), 15, "the renewed certificate to be served")
        assert not answers(tls_files["ca"]), "the old certificate is no longer served"
        renewed["key"].write_text("not a key\n")  # a renewal gone wrong
        time.sleep(2.5)
        assert answers(renewed["ca"]), "the last good certificate stays"
        assert stop(daemon) == 0
    log = daemon.log
    assert "metrics.web_config read again" in log
    assert "metrics.web_config changed but cannot be used, so the last good one stays" in log
