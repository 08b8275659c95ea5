"""The status page and snapshots from a running daemon: headless Chromium loads `/`
and sees every camera with its latest frame; a snapshot is a JPEG of the camera's size
with the boxes where the records say."""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from devtools.testing.demo import CACHE_DIR
from devtools.testing.ports import free_port
from devtools.testing.video import VideoSpec, cached_video
from streamd.monitor import status_page
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import StartRtspServer, system_binary

pytestmark = [pytest.mark.rtsp, pytest.mark.assets]


def get(port: int, path: str) -> tuple[bytes, int]:
    """The body and the frame it shows (X-Frame-Seq)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
        return body, int(response.headers["X-Frame-Seq"])


def decode_image(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), "r") as container:
        picture: np.ndarray = next(container.decode(video=0)).to_ndarray(format="rgb24")
        return picture


def green(pixels: np.ndarray) -> np.ndarray:
    """Where the drawn boxes are (pure green, blurred a little by JPEG)."""
    return (pixels[..., 1] > 150) & (pixels[..., 0] < 120) & (pixels[..., 2] < 120)


def chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a profile of its own (two runs sharing one collide on its lock)."""
    binary = system_binary("chromium", "chromium")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}"]
    result = subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_page_shows_every_camera_and_snapshots_have_the_records_boxes(
    rtsp_servers: StartRtspServer, assets_dir: Path, canonical_model: Path, tmp_path: Path
) -> None:
    photo = assets_dir / "images" / "group9.jpg"
    video = cached_video(VideoSpec(width=1024, height=768, fps=25, seconds=6, image=str(photo), pan=False), CACHE_DIR)
    server = rtsp_servers({"lobby": video, "door": video})
    port = free_port()
    out = tmp_path / "out.jsonl"
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {canonical_model}}}\n"
        f"sinks: [{{path: {out}}}]\n"
        "cameras:\n" + "".join(f"  - {{id: {name}, url: '{server.url(name)}', fps: 5}}\n" for name in ("lobby", "door"))
    )
    process = spawn_streamd(config)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "streamd exited early"
            cameras = {r["camera"] for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
            if cameras == {"lobby", "door"}:
                break
            time.sleep(0.3)
        jpeg, seq = get(port, "/cameras/lobby/latest.jpg")
        snapshot = decode_image(jpeg)
        # Less virtual time than the page's own refresh: it must not be reloading when taken.
        wait = f"--virtual-time-budget={(status_page.REFRESH_S - 2) * 1000}"
        page_url = f"http://127.0.0.1:{port}/"
        dom = chromium(tmp_path / "dom", wait, "--dump-dom", page_url)
        shot = tmp_path / "page.png"
        chromium(tmp_path / "shot", wait, "--window-size=1100,1000", f"--screenshot={shot}", page_url)
        missing = urllib.request.Request(f"http://127.0.0.1:{port}/cameras/nobody/latest.jpg")
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(missing, timeout=10)
        not_found.value.close()
        stop_daemon(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not_found.value.code == 404
    records = [json.loads(line) for line in out.read_text().splitlines()]
    record = next(r for r in records if r["camera"] == "lobby" and r.get("seq") == seq)

    # The snapshot: the camera's size, and green along every box of its frame's record.
    assert snapshot.shape == (768, 1024, 3)
    mask = green(snapshot)
    assert len(record["faces"]) >= 7
    for face in record["faces"]:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        top = mask[max(0, y1 - 2) : y1 + 3, x1:x2].any(axis=0)
        left = mask[y1:y2, max(0, x1 - 2) : x1 + 3].any(axis=1)
        assert top.mean() > 0.8 and left.mean() > 0.8, face["box"]
    assert mask.mean() < 0.05, "boxes, not a green picture"

    # The page, as a browser renders it: every camera, its state, its frame loaded.
    html = dom.stdout
    for name in ("lobby", "door"):
        assert re.search(rf'id="camera-{name}".*?class="streaming"', html, re.S), html[:2000]
        assert re.search(rf'alt="latest analysed frame of {name}"[^>]*data-loaded="yes"', html), html[:3000]
    page = decode_image(shot.read_bytes())
    assert page.shape[:2] == (1000, 1100)
    assert green(page).sum() > 500, "the snapshots with their boxes are on the screenshot"


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_a_storm_of_snapshot_requests_for_a_4k_camera_costs_one_encode_and_bounded_memory(
    assets_dir: Path, canonical_model: Path, tmp_path: Path
) -> None:
    photo = assets_dir / "images" / "group9.jpg"
    video = cached_video(
        VideoSpec(width=3840, height=2160, fps=5, seconds=4, image=str(photo), pan=False, bitrate_kbps=4000), CACHE_DIR
    )
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {canonical_model}, threads: 1}}\n"
        f"sinks: [{{path: {tmp_path / 'out.jsonl'}}}]\n"
        f"cameras: [{{id: uhd, url: '{video}', fps: 1}}]\n"
    )
    process = spawn_streamd(config)
    peak = [0.0]
    sampling = threading.Event()

    def sample_memory() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], resident_mb(process.pid))
            time.sleep(0.01)

    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "streamd exited early"
            try:
                get(port, "/cameras/uhd/latest.jpg")
                break
            except urllib.error.URLError as error:  # not listening yet, or no frame yet (404)
                if isinstance(error, urllib.error.HTTPError):
                    error.close()
                assert time.monotonic() < deadline, "no snapshot of the 4K camera"
                time.sleep(0.5)
        time.sleep(2)  # the first encode's buffers are the allocator's now
        before = peak[0] = resident_mb(process.pid)
        sampler = threading.Thread(target=sample_memory)
        sampler.start()
        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            replies = list(pool.map(lambda _: get(port, "/cameras/uhd/latest.jpg"), range(60)))
        sampling.set()
        sampler.join()
        after = resident_mb(process.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
            engine = json.loads(response.read())["engine"]
        stop_daemon(process)
    finally:
        sampling.set()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert decode_image(replies[0][0]).shape == (2160, 3840, 3)
    # One analysed frame a second: the 60 replies show one or two frames, each encoded once.
    assert len({seq for _, seq in replies}) <= 3
    assert len({jpeg for jpeg, _ in replies}) == len({seq for _, seq in replies})
    assert peak[0] - before < 200, f"resident memory rose {peak[0] - before:.0f} MB during the storm"
    assert after - before < 200, f"resident memory stayed {after - before:.0f} MB higher"
    # /status shows the engine's settings: the file's as they are, auto's with why.
    settings = {setting["knob"]: setting for setting in engine["settings"]}
    assert settings["engine.threads"] == {"knob": "engine.threads", "value": 1, "auto": False, "why": None}
    assert settings["engine.instances"]["auto"] and "usable core" in settings["engine.instances"]["why"]
    assert settings["batcher.max_batch"]["value"] == 1 and settings["batcher.max_batch"]["auto"]
    assert (
        engine["instances_in_rotation"] == settings["engine.instances"]["value"] and engine["backend"] == "onnxruntime"
    )
