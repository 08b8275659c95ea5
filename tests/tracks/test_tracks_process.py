"""Tracks through `streamd run`: real RTSP cameras showing real faces that move, cross,
enter and leave (clips made from the shared photos, with their ground truth), analysed
at 5 fps; the records and events reach a JSON Lines file, a real MQTT broker and a
real Redis; the best faces land on disk as crops and aligned chips."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
import yaml

from devtools.testing.moving_faces import SCENES, Scene, face_patches, make_clip
from devtools.testing.ports import free_port
from devtools.testing.track_score import TrackScore, matched_faces, score
from streamd.analysis.postprocess import PostprocessSettings
from streamd.analysis.still_images import detect_images
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import StartRtspServer, system_binary
from tests.support.listener import fetch, sample, scrape
from tests.support.mqtt import Mosquitto, Subscriber
from tests.support.redis import RedisServer
from tests.support.streams import until, write_atomically

pytestmark = [pytest.mark.rtsp, pytest.mark.assets]

Record = dict[str, Any]
SHOWN = {"crossing": SCENES[0], "fast": SCENES[2]}  # small-and-fast: faces narrower than a step


@pytest.fixture(scope="module")
def clips(canonical_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    patches = face_patches(canonical_model)
    folder = tmp_path_factory.mktemp("clips")
    return {camera: make_clip(scene, patches, folder / f"{camera}.mkv") for camera, scene in SHOWN.items()}


def read(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def first_showing(scene: Scene, frames: list[Record]) -> tuple[list[Record], Callable[[float], float]]:
    """The camera's frames of the clip's first showing, and the clip time of a `frame_pts`.
    The server stamps a session's frames from 0 and FFmpeg's RTSP clock may start a little
    off: the offset is the one under which the most faces match the truth."""

    def matched(offset: float) -> int:
        return sum(
            matched_faces(scene, record, record["frame_pts"] - offset)
            for record in frames
            if 0 <= record["frame_pts"] - offset < scene.seconds
        )

    offset = max((step * 0.04 - 0.6 for step in range(31)), key=matched)
    shown = [r for r in frames if 0 <= r["frame_pts"] - offset < scene.seconds]
    return shown, lambda pts: pts - offset


def camera_score(camera: str, records: list[Record]) -> tuple[TrackScore, list[Record], list[Record]]:
    scene = SHOWN[camera]
    frames = [r for r in records if r["camera"] == camera and "event" not in r]
    shown, clip_time = first_showing(scene, frames)
    tracks = {face["track"] for record in shown for face in record["faces"]} - {None}
    events = [r for r in records if r["camera"] == camera and "event" in r and r["track"] in tracks]
    return score(scene, shown, events, clip_time), shown, events


def test_moving_faces_keep_one_track_each_with_one_started_and_one_ended_event(
    canonical_model: Path, clips: dict[str, Path], rtsp_servers: StartRtspServer, tmp_path: Path
) -> None:
    server = rtsp_servers(clips)
    mosquitto = Mosquitto(system_binary("mosquitto", "mosquitto"), tmp_path)
    redis = RedisServer(system_binary("redis-server", "redis-server"), tmp_path)
    mosquitto.start()
    redis.start()
    subscriber = Subscriber(mosquitto.port)
    out, crops, port = tmp_path / "records.jsonl", tmp_path / "crops", free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "metrics": {"listen": f"127.0.0.1:{port}"},
                "engine": {"model": str(canonical_model), "threads": 1},
                "tracking": {"lost_after_s": 1.0, "crops": {"directory": str(crops)}},
                "sinks": [
                    {"path": str(out)},
                    {"type": "mqtt", "port": mosquitto.port},
                    {"type": "redis", "url": redis.url, "kinds": ["events"]},
                ],
                "cameras": [{"id": camera, "url": server.url(camera), "fps": 5} for camera in clips],
            }
        )
    )
    process = spawn_streamd(config)
    try:
        # One whole showing of each clip, and the second's first seconds: the first
        # showing's tracks have ended (lost) by then.
        def past_first_showing() -> bool:
            records = read(out)
            return all(
                any(r["camera"] == c and "event" not in r and r["frame_pts"] > SHOWN[c].seconds + 2 for r in records)
                for c in clips
            )

        until(past_first_showing, 120, "a showing and a half of each clip", process)
        until(lambda: len(subscriber.events()) >= 2, 20, "events on MQTT", process)
        assert_the_listener_shows_tracks(port, list(clips))
        stderr = stop_daemon(process)
        records = read(out)
        said = re.search(r"(\d+) frames inferred, every one handed to the sinks \(and (\d+) track events\)", stderr)
        assert said, stderr[-3000:]
        assert len(records) == int(said.group(1)) + int(said.group(2)), "every record and event is in the file"
        for camera in clips:
            figures, _, events = camera_score(camera, records)
            assert len(figures.faces) == len(SHOWN[camera].walkers), (camera, figures.line())
            assert figures.switches_per_face <= 0.2, (camera, figures.line(), [f.ids for f in figures.faces])
            assert figures.coverage >= 0.85, (camera, figures.line(), [f.ids for f in figures.faces])
            assert figures.exact_events == 1.0, (camera, figures.line(), [(f.started, f.ended) for f in figures.faces])
            ended = [e for e in events if e["event"] == "track_ended"]
            assert {e["reason"] for e in ended} == {"lost"}, ended
            assert_crops_hold_the_faces(ended, crops, canonical_model)
        # The brokers got the same events as the file.
        in_file = {(r["camera"], r["track"], r["event"]) for r in records if "event" in r}
        heard = {(e["camera"], e["track"], e["event"]) for e in subscriber.events()}
        assert heard == in_file
        streamed = [fields for camera in clips for _, fields in redis.client().xrange(f"streamd:{camera}")]
        assert {(f["camera"], int(f["track"]), f["event"]) for f in streamed} == in_file
        assert all("best" in f for f in streamed if f["event"] == "track_ended")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        subscriber.close()
        mosquitto.stop()
        redis.stop()


def assert_the_listener_shows_tracks(port: int, cameras: list[str]) -> None:
    """/status counts open tracks and names the last best faces, which the listener serves;
    the metrics count the events."""
    status = {camera["id"]: camera for camera in json.loads(fetch(port, "/status"))["cameras"]}
    metrics = scrape(port)
    for camera in cameras:
        tracks = status[camera]["tracks"]
        assert tracks["active"] >= 0 and tracks["best_faces"], (camera, tracks)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/cameras/{camera}/best/{tracks['best_faces'][0]}.jpg"
        ) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg" and reply.read(2) == b"\xff\xd8"
        for event in ("track_started", "track_ended"):
            assert (sample(metrics, "streamd_track_events_total", camera=camera, event=event) or 0) >= 1
        assert sample(metrics, "streamd_tracks_active", camera=camera) is not None


def assert_crops_hold_the_faces(ended: list[Record], crops: Path, model: Path) -> None:
    for event in ended:
        best = event["best"]
        crop, chip = crops / best["crop"], crops / best["chip"]
        x1, y1, x2, y2 = best["box"]
        with av.open(str(crop)) as container:
            picture = next(container.decode(video=0))
        # The box with a quarter of its size on every side (whole pixels, the chroma grid; clipped at the edge).
        assert picture.width <= round((x2 - x1) * 1.5) + 4 and picture.height <= round((y2 - y1) * 1.5) + 4
        assert picture.width >= min(x2 - x1, 20) and picture.height >= min(y2 - y1, 20)
        with av.open(str(chip)) as container:
            aligned = next(container.decode(video=0))
        assert (aligned.width, aligned.height) == (112, 112)
        found = detect_images([str(chip)], str(model), PostprocessSettings(score_threshold=0.3))[0]["faces"]
        assert found, f"the model finds no face in {chip.name}"


def test_a_removed_camera_ends_its_tracks_and_crops_stay_within_their_limits(
    canonical_model: Path, clips: dict[str, Path], rtsp_servers: StartRtspServer, tmp_path: Path
) -> None:
    server = rtsp_servers({"crossing": clips["crossing"]})
    out, crops = tmp_path / "records.jsonl", tmp_path / "crops"
    # An earlier run's crops: one past the age limit, one recent and large.
    old, recent = crops / "crossing" / "2026-01-01" / "old.jpg", crops / "crossing" / "2026-12-01" / "big.jpg"
    for path, size in ((old, 1000), (recent, 150_000)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff" * size)
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    settings = {
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "engine": {"model": str(canonical_model), "threads": 1},
        "tracking": {"lost_after_s": 1.0, "crops": {"directory": str(crops), "max_age_h": 24, "max_mb": 0.1}},
        "sinks": [{"path": str(out)}],
        "cameras": [{"id": "crossing", "url": server.url("crossing"), "fps": 5}],
    }
    config = tmp_path / "streams.yaml"
    config.write_text(yaml.safe_dump(settings))
    process = spawn_streamd(config)
    try:
        until(lambda: not old.exists() and not recent.exists(), 60, "the earlier run's crops swept", process)
        until(lambda: any(r.get("event") == "track_ended" for r in read(out)), 60, "a track's end", process)
        until(
            lambda: any(r.get("event") == "track_started" and t_open(read(out), r) for r in read(out)),
            60,
            "a track open now",
            process,
        )
        write_atomically(config, yaml.safe_dump({**settings, "cameras": []}))
        until(
            lambda: any(r.get("reason") == "camera_removed" for r in read(out)), 30, "the removed camera's end", process
        )
        stop_daemon(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    records = read(out)
    started = {r["track"] for r in records if r.get("event") == "track_started"}
    ended = {r["track"]: r["reason"] for r in records if r.get("event") == "track_ended"}
    assert started == set(ended), "every track started ends, the open ones with the camera"
    assert "camera_removed" in ended.values()
    on_disk = [p for p in crops.rglob("*.jpg")]
    assert sum(p.stat().st_size for p in on_disk) <= 100_000 + max((p.stat().st_size for p in on_disk), default=0)


def t_open(records: list[Record], started: Record) -> bool:
    """Whether the track of `started` has not ended yet in `records`."""
    return not any(r.get("event") == "track_ended" and r["track"] == started["track"] for r in records)
