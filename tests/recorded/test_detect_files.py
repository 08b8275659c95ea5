"""`streamd detect` on recorded video, through the command line, with the real model:
videos, an image and a corrupt file in one folder; a stop by SIGTERM and `--resume`;
progress as lines, as JSON and as a bar on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.testing.demo import CACHE_DIR
from devtools.testing.video import VideoSpec, cached_video

pytestmark = pytest.mark.assets

# Wall-clock fields: when a run decoded a frame, not what is in it.
_TIMING = ("captured_at", "result_at", "latency_s", "first_at", "last_at")


def clip(assets_dir: Path, photo: str, seconds: float, fps: int = 10) -> Path:
    image = str(assets_dir / "images" / photo)
    spec = VideoSpec(width=640, height=360, fps=fps, seconds=seconds, image=image, bitrate_kbps=800)
    return cached_video(spec, CACHE_DIR)


def detect(*arguments: str, model: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamd", "--log-level", "WARNING", "detect", "--model", str(model)]
    return subprocess.run(command + list(arguments), capture_output=True, text=True, timeout=timeout)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for record in records:
        record = {key: value for key, value in record.items() if key not in _TIMING}
        if "best" in record:  # the crop's file is named by the time it was written
            record["best"] = {k: v for k, v in record["best"].items() if k not in ("captured_at", "crop", "chip")}
        kept.append(record)
    return kept


def test_a_folder_gives_a_file_per_video_a_record_per_image_and_an_error_per_bad_file(
    tmp_path: Path, canonical_model: Path, assets_dir: Path
) -> None:
    folder = tmp_path / "incident"
    folder.mkdir()
    shutil.copy(clip(assets_dir, "group9.jpg", 2), folder / "door.mp4")
    shutil.copy(clip(assets_dir, "two_people.jpg", 2), folder / "hall.mkv")
    shutil.copy(assets_dir / "images" / "street_bus.jpg", folder / "street.jpg")
    (folder / "broken.mp4").write_bytes(os.urandom(20_000))
    whole = clip(assets_dir, "group9.jpg", 4).read_bytes()
    (folder / "cut.mkv").write_bytes(whole[: len(whole) // 3])  # a copy interrupted
    (folder / "notes.txt").write_text("not a video")  # a folder's other files are left alone
    out = tmp_path / "out"

    result = detect(str(folder), "-o", str(out), "--fps", "5", "--progress-interval", "0.2", model=canonical_model)

    assert result.returncode == 1, result.stderr  # two inputs failed, the rest are done
    assert sorted(p.name for p in out.glob("*.jsonl*")) == [
        "cut.mkv.jsonl.partial",
        "door.mp4.jsonl",
        "hall.mkv.jsonl",
        "street.jpg.jsonl",
    ]
    for name in ("door.mp4", "hall.mkv"):
        records = lines(out / f"{name}.jsonl")
        frames = [r for r in records if "event" not in r]
        # Two seconds at 5 frames/s of the video's clock, every one analysed, in order.
        assert [r["seq"] for r in frames] == list(range(10)), name
        assert [r["frame_pts"] for r in frames] == pytest.approx([i * 0.2 for i in range(10)]), name
        assert all(r["camera"] == name and r["width"] == 640 for r in frames)
        assert all(frame["faces"] for frame in frames), f"{name}: faces in every frame of a photo's pan"
        started = {e["track"] for e in records if e.get("event") == "track_started"}
        ended = {e["track"]: e for e in records if e.get("event") == "track_ended"}
        assert started and set(ended) == started, name
        assert {e["reason"] for e in ended.values()} == {"finished"}
        assert {f["track"] for r in frames for f in r["faces"]} - {None} == started
        for event in ended.values():  # its best face written under the output folder
            assert (out / "crops" / event["best"]["crop"]).is_file()
    [image] = lines(out / "street.jpg.jsonl")
    assert image["image"] == str(folder / "street.jpg") and image["width"] == 810 and image["faces"]

    # The cut copy: what it held is analysed and kept, and it is reported as truncated.
    cut = [r for r in lines(out / "cut.mkv.jsonl.partial") if "event" not in r]
    assert 0 < len(cut) < 20

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["files"], summary["done"], summary["failed"]) == (5, 3, 2)
    assert summary["frames"] == 21 + len(cut)
    errors = {error["file"]: error["error"] for error in summary["errors"]}
    assert errors["broken.mp4"].startswith("cannot open: ")
    assert errors["cut.mkv"].startswith("truncated: the video ends after ")
    assert errors["cut.mkv"].endswith(f"of the 4.00s it declares (after {len(cut)} frame(s))")
    assert "streamd detect: broken.mp4: failed: cannot open" in result.stderr
    assert "streamd detect: cut.mkv: failed: truncated" in result.stderr
    assert "streamd detect: door.mp4: done, 10 frames" in result.stderr
    assert "5 file(s): 3 done, 2 failed" in result.stderr
    # Progress lines while it ran: frames done of all, the rate and the time left.
    assert re.search(r"streamd detect: \d+/\d+ frames \(\d+%\), [\d.]+ frames/s, ETA ", result.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {name: entry["status"] for name, entry in manifest["inputs"].items()} == {
        "broken.mp4": "failed",
        "cut.mkv": "failed",
        "door.mp4": "done",
        "hall.mkv": "done",
        "street.jpg": "done",
    }

    # A resumed run must make the records the first run made: other settings are refused.
    again = detect(str(folder), "-o", str(out), "--fps", "2", "--resume", model=canonical_model)
    assert again.returncode == 1
    assert "--resume: the settings differ" in again.stderr and "fps 5.0 -> 2.0" in again.stderr


def test_inputs_from_a_list_file_and_a_glob_each_once_and_a_missing_one_reported(
    tmp_path: Path, canonical_model: Path, assets_dir: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(assets_dir / "images" / "two_people.jpg", photos / name)
    listed = tmp_path / "inputs.txt"
    listed.write_text("# the night's photos\nphotos/a.jpg\nphotos/missing.jpg\n")

    result = detect(
        "--list", str(listed), str(photos / "*.jpg"), "-o", str(tmp_path / "out"), "--json-progress",
        model=canonical_model,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    files = {e["file"]: e for e in events if e["event"] == "file"}
    assert set(files) == {"photos/a.jpg", "photos/missing.jpg", str(photos / "b.jpg").lstrip("/")}
    assert files["photos/missing.jpg"] == {
        "event": "file",
        "file": "photos/missing.jpg",
        "status": "failed",
        "error": "no such file",
    }
    assert events[0] == {"event": "start", "files": 3, "frames_total": 2}
    assert events[-1]["event"] == "summary" and events[-1]["done"] == 2 and events[-1]["failed"] == 1


def test_sigterm_leaves_done_files_whole_the_current_one_partial_and_resume_makes_the_same_records(
    tmp_path: Path, canonical_model: Path, assets_dir: Path
) -> None:
    folder = tmp_path / "day"
    folder.mkdir()
    for index, photo in enumerate(("group9.jpg", "two_people.jpg", "group9.jpg")):
        shutil.copy(clip(assets_dir, photo, 6, fps=25), folder / f"cam{index}.mkv")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "streamd", "--log-level", "WARNING", "detect", "--model", str(canonical_model)]
    command += [str(folder), "-o", str(out), "--all-frames", "--jobs", "1", "--json-progress"]
    command += ["--progress-interval", "0.2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:  # the first file done, the second begun: stop
            seen.append(json.loads(line))
            if seen[-1]["event"] == "progress" and seen[-1]["running"].get("cam1.mkv", 0) > 0:
                break
        assert seen[-1]["event"] == "progress", seen
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        rest, errors = process.communicate(timeout=30)
        took = time.monotonic() - stopped
    assert process.returncode == 128 + signal.SIGTERM, errors
    assert took < 5, f"the stop took {took:.1f}s"
    finished = [json.loads(line) for line in rest.splitlines()]
    assert [(e["file"], e["status"]) for e in seen + finished if e["event"] == "file"] == [
        ("cam0.mkv", "done"),
        ("cam1.mkv", "partial"),
    ]
    assert finished[-1]["stopped_by"] == "SIGTERM" and finished[-1]["not_started"] == 1
    assert sorted(p.name for p in out.glob("*.jsonl*")) == ["cam0.mkv.jsonl", "cam1.mkv.jsonl.partial"]
    partial = lines(out / "cam1.mkv.jsonl.partial")
    frames_before = [r for r in partial if "event" not in r]
    assert 0 < len(frames_before) < 150
    # Its tracks ended with the stop; their events are in the partial file.
    assert {e["reason"] for e in partial if e.get("event") == "track_ended"} == {"stopped"}
    manifest = json.loads((out / "manifest.json").read_text())["inputs"]
    assert {name: entry["status"] for name, entry in manifest.items()} == {"cam0.mkv": "done", "cam1.mkv": "partial"}

    resumed = detect(str(folder), "-o", str(out), "--all-frames", "--resume", "--json-progress", model=canonical_model)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert sorted((e["file"], e["status"]) for e in events if e["event"] == "file") == [
        ("cam0.mkv", "skipped"),
        ("cam1.mkv", "done"),
        ("cam2.mkv", "done"),
    ]
    assert events[-1]["frames"] == 300, "only the two files left were analysed"
    assert sorted(p.name for p in out.glob("*.jsonl*")) == ["cam0.mkv.jsonl", "cam1.mkv.jsonl", "cam2.mkv.jsonl"]

    whole = tmp_path / "whole"
    single = detect(str(folder), "-o", str(whole), "--all-frames", "--progress-interval", "60", model=canonical_model)
    assert single.returncode == 0, single.stderr
    for name in ("cam0.mkv", "cam1.mkv", "cam2.mkv"):
        ours, uninterrupted = lines(out / f"{name}.jsonl"), lines(whole / f"{name}.jsonl")
        assert len([r for r in ours if "event" not in r]) == 150
        assert without_timing(ours) == without_timing(uninterrupted), name


def test_progress_on_a_terminal_is_a_bar(tmp_path: Path, canonical_model: Path, assets_dir: Path) -> None:
    video = clip(assets_dir, "group9.jpg", 2)
    command = [sys.executable, "-m", "streamd", "--log-level", "WARNING", "detect", "--model", str(canonical_model)]
    command += [str(video), "-o", str(tmp_path / "out"), "--progress-interval", "0.1"]
    leader, follower = pty.openpty()
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    environment.pop("NO_COLOR", None)
    with subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, env=environment) as process:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            shown += chunk
        process.wait(timeout=60)
    os.close(leader)
    text = shown.decode(errors="replace")
    assert process.returncode == 0, text
    assert "━" in text and "all files" in text, text  # rich's bar, redrawn in place
    assert "\x1b[" in text, "a terminal's bar is drawn with escape codes"
    assert "1 file(s): 1 done" in text


def test_without_model_the_streams_yaml_here_gives_it_and_records_go_to_stdout(
    tmp_path: Path, canonical_model: Path, assets_dir: Path
) -> None:
    # As right after `make run` in the project's folder: ./streams.yaml names the model.
    (tmp_path / "streams.yaml").write_text(
        f"engine: {{model: {canonical_model}}}\npostprocess: {{score_threshold: 0.5}}\ncameras: []\n"
    )
    photo = assets_dir / "images" / "two_people.jpg"
    command = [sys.executable, "-m", "streamd", "--log-level", "WARNING", "detect", str(photo)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["image"] == str(photo) and len(record["faces"]) == 2
    assert all(face["score"] >= 0.5 for face in record["faces"]), "the file's threshold applies"
    elsewhere = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path / "..")
    assert elsewhere.returncode == 1
    assert "no model: no streams.yaml here; give --model" in elsewhere.stderr
