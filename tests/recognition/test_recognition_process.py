"""Who a tracked face is, through `streamd faces` and `streamd run`: two people enrolled
from the shared class photo, a real RTSP camera showing one of them moving (scaled and
re-encoded) and a stranger from another photo."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from devtools.testing.moving_faces import Scene, Walker, face_patches, make_clip
from devtools.testing.ports import free_port
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.frames.jpeg import encode_jpeg
from streamd.service.daemon import Daemon, DaemonOptions
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import StartRtspServer
from tests.support.listener import fetch, scrape
from tests.support.streams import until
from tests.support.waiting import run, wait_for

pytestmark = [pytest.mark.rtsp, pytest.mark.assets]

Record = dict[str, Any]
# Faces of the shared photos, left to right: 0-7 the class photo, 8-9 the two people.
ALICE, BOB, STRANGER = 0, 1, 9
SCENE = Scene(
    "alice-and-a-stranger",
    (
        Walker(ALICE, 0.5, 9.5, (-100, 200), (150, 0), 110),
        Walker(STRANGER, 1.0, 9.5, (1180, 420), (-120, 0), 110),
    ),
    seconds=10.0,
)


def streamd(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def read(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def photos(canonical_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each person's face from the photos, saved as a photo of its own (with a margin)."""
    folder = tmp_path_factory.mktemp("people")
    patches = face_patches(canonical_model)
    saved = {}
    for name, index in (("alice", ALICE), ("bob", BOB)):
        saved[name] = folder / f"{name}.jpg"
        saved[name].write_bytes(encode_jpeg(np.ascontiguousarray(patches[index].pixels), 2))
    return saved


def test_an_enrolled_person_is_named_the_other_never_and_a_stranger_stays_unknown(
    canonical_model: Path, photos: dict[str, Path], rtsp_servers: StartRtspServer, tmp_path: Path
) -> None:
    clip = make_clip(SCENE, face_patches(canonical_model), tmp_path / "clip.mkv")
    server = rtsp_servers({"door": clip})
    out, port = tmp_path / "records.jsonl", free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "metrics": {"listen": f"127.0.0.1:{port}"},
                "engine": {"model": str(canonical_model), "threads": 1},
                "tracking": {"lost_after_s": 1.0, "crops": {"directory": str(tmp_path / "crops")}},
                "sinks": [{"path": str(out)}],
                "cameras": [{"id": "door", "url": server.url("door"), "fps": 5}],
            }
        )
    )
    for name in ("Alice", "Bob"):
        enrolled = streamd("faces", "enroll", name, str(photos[name.lower()]), "-c", str(config), cwd=tmp_path)
        assert enrolled.returncode == 0, enrolled.stderr
    listed = streamd("faces", "list", "-c", str(config), cwd=tmp_path)
    assert "Alice\t1 embedding(s)" in listed.stdout and "Bob\t1 embedding(s)" in listed.stdout
    gallery = tmp_path / "gallery.json"
    assert gallery.stat().st_mode & 0o777 == 0o600, "biometric data: the owner's alone"

    process = spawn_streamd(config)
    try:
        until(
            lambda: len([r for r in read(out) if r.get("event") == "track_ended"]) >= 2,
            90,
            "both faces' tracks to end",
            process,
        )
        status, metrics = fetch(port, "/status"), scrape(port)
        stderr = stop_daemon(process)
        said = re.search(r"(\d+) frames inferred, every one handed to the sinks \(and (\d+) track events\)", stderr)
        assert said and len(read(out)) == int(said.group(1)) + int(said.group(2)), "identifications counted too"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    records = read(out)
    identified = [r for r in records if r.get("event") == "track_identified"]
    ended = [r for r in records if r.get("event") == "track_ended" and r.get("identity")]
    named = {r["track"]: r["identity"]["name"] for r in identified + ended}
    assert "Alice" in named.values(), identified
    assert "Bob" not in named.values(), "the other enrolled person is never named"
    strangers = [r for r in identified + ended if r["identity"]["name"] is None]
    assert strangers and all(r["identity"]["label"].startswith("unknown-") for r in strangers)
    alice_tracks = {track for track, name in named.items() if name == "Alice"}
    for event in ended:
        if event["track"] in alice_tracks:
            assert event["identity"]["name"] == "Alice" and event["identity"]["distance"] < 0.5
    # Each identified track was identified once, early.
    assert len({r["track"] for r in identified}) == len(identified)
    # Biometric data stays in the gallery: no embedding, no gallery content elsewhere.
    vector = json.loads(gallery.read_text())["people"]["Alice"][0]
    for text in (stderr, status, metrics):
        assert str(vector[0]) not in text and "embedding" not in text.lower()
    assert "Alice" not in metrics, "names are never metric labels"
    assert "streamd_gallery_people 2.0" in metrics
    assert os.stat(gallery).st_mode & 0o777 == 0o600


class _FailingModel:
    """dlib's model as it fails when its device is gone (dlib raises RuntimeError)."""

    def __init__(self, _path: str) -> None:
        pass

    def compute_face_descriptor(self, *_args: Any) -> Any:
        raise RuntimeError("cudaMalloc failed: out of memory")


def test_a_failing_second_stage_leaves_detection_at_full_rate_with_drops_counted(
    canonical_model: Path,
    photos: dict[str, Path],
    rtsp_servers: StartRtspServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dlib

    clip = make_clip(SCENE, face_patches(canonical_model), tmp_path / "clip.mkv")
    server = rtsp_servers({"door": clip})
    out = tmp_path / "records.jsonl"
    config = StreamsConfig.model_validate(
        {
            "engine": {"model": str(canonical_model), "threads": 1},
            "tracking": {"lost_after_s": 1.0, "crops": {"enabled": False}},
            "recognition": {"enabled": True, "gallery": str(tmp_path / "gallery.json")},
            "sinks": [{"path": str(out)}],
            "cameras": [{"id": "door", "url": server.url("door"), "fps": 5}],
        }
    )
    monkeypatch.setattr(dlib, "face_recognition_model_v1", _FailingModel)

    async def scenario() -> tuple[float, float, tuple[bool, str]]:
        daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, rate_log_interval_s=3600))
        await daemon.start()
        try:
            await wait_for(lambda: "door" in daemon.rates.rates, 20, "a rate measurement")
            await asyncio.sleep(6)
            registry = daemon.metrics.registry
            dropped = registry.get_sample_value(
                "streamd_recognition_dropped_total", {"camera": "door", "reason": "error"}
            )
            return daemon.rates.rates["door"].analysed_fps, dropped or 0.0, daemon.health.ready()
        finally:
            await daemon.stop()

    analysed_fps, dropped, (ready, why) = run(scenario())
    assert analysed_fps == pytest.approx(5.0, abs=1.0), "detection keeps its rate"
    assert dropped >= 1
    assert not ready and "recognition failing: RuntimeError" in why
    events = [r for r in read(out) if "event" in r]
    assert [e for e in events if e["event"] == "track_started"], "tracks go on"
    assert all(e.get("identity") is None for e in events if e["event"] == "track_ended")
