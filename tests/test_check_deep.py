"""`streamd check --deep`: whatever it accepts, `run` starts.

The property test generates configurations mixing sane values with hostile ones (NaN,
infinities, out-of-range numbers, a taken port, a name that does not resolve, a sink
path that cannot be written, a backend that is not installed) and, for each one that
`check --deep` accepts, starts the real daemon on it in this process: start() must
return, with no exception, and stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.testing.ports import free_port
from streamd.config.loader import ConfigError, load_config, read_config
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.service.deep_check import deep_check

NAN, INF = float("nan"), float("inf")


def hostile(sane: st.SearchStrategy[Any], *bad: Any) -> st.SearchStrategy[Any]:
    return st.one_of(sane, st.sampled_from([NAN, INF, -INF, -1, 0, 10**9, *bad]))


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def configs(model: Path, video: Path, workdir: Path) -> st.SearchStrategy[dict[str, Any]]:
    blocked = workdir / "a-file"  # a sink "directory" that is a file
    blocked.write_text("")
    # Sizes stay small where they are sane (each accepted example loads and warms the
    # model twice); the hostile ones are the point.
    engine = st.fixed_dictionaries(
        {"model": st.just(str(model))},
        optional={
            "backend": st.sampled_from(["auto", "onnxruntime", "tensorrt"]),
            "instances": hostile(st.integers(0, 3), 17, 64),
            "threads": hostile(st.integers(0, 2), 65, 256),
            "profile": st.fixed_dictionaries({"max": hostile(st.sampled_from([4, 8, 64]), 65)}),
        },
    )
    sink = st.fixed_dictionaries(
        {"path": st.sampled_from([str(workdir / "out" / "d.jsonl"), str(blocked / "d.jsonl"), str(workdir)])},
        optional={"rotate_mb": hostile(st.floats(1, 1000), 0.001)},
    )
    camera = st.fixed_dictionaries(
        {"id": st.just("cam"), "url": st.just(str(video))},
        optional={"fps": hostile(st.floats(0.5, 30)), "stall_timeout_s": hostile(st.floats(1, 60))},
    )
    return st.fixed_dictionaries(
        {
            "metrics": st.fixed_dictionaries({"listen": st.sampled_from(["free", "taken", "nosuchhost.invalid"])}),
            "cameras": st.lists(camera, max_size=1),
        },
        optional={
            "engine": engine,
            "batcher": st.fixed_dictionaries(
                {},
                optional={
                    "max_batch": hostile(st.sampled_from([1, 2, 4]), 65, 256),
                    "max_delay_ms": hostile(st.floats(0, 50)),
                },
            ),
            "sinks": st.lists(sink, max_size=2),
            "health": st.fixed_dictionaries({}, optional={"ready_share": hostile(st.floats(0, 1), 1.5)}),
            "defaults": st.fixed_dictionaries({}, optional={"fps": hostile(st.floats(0.5, 30), 121)}),
        },
    )


def check_deep(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamd", "--log-level", "ERROR", "check", "--deep", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deep")


async def start_and_stop(config_path: Path) -> None:
    daemon = Daemon(read_config(config_path), DaemonOptions(watch_config=False))
    try:
        await daemon.start()
    finally:
        await daemon.stop()


def test_whatever_check_deep_accepts_run_starts(canonical_model: Path, test_video: Path, workdir: Path) -> None:
    seen = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: CI must not be a lottery
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(configs(canonical_model, test_video, workdir))
    def check_then_run(config: dict[str, Any]) -> None:
        with port_in_use() as taken:
            host_port = {
                "free": f"127.0.0.1:{free_port()}",
                "taken": f"127.0.0.1:{taken}",
                "nosuchhost.invalid": f"nosuchhost.invalid:{free_port()}",
            }
            config["metrics"]["listen"] = host_port[config["metrics"]["listen"]]
            path = write(workdir / "streams.yaml", config)
            try:
                loaded = load_config(path)
            except ConfigError:
                seen["refused"] += 1
                return
            if deep_check(loaded, path).problems:
                seen["refused"] += 1
                return
            seen["accepted"] += 1
            asyncio.run(start_and_stop(path))

    check_then_run()
    # Both sides of the property were exercised, not only the easy one.
    assert seen["accepted"] >= 3 and seen["refused"] >= 10, seen


def test_deep_check_reports_each_part_by_its_key(canonical_model: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with port_in_use() as taken:
        config = {
            "metrics": {"listen": f"127.0.0.1:{taken}"},
            "engine": {"model": str(canonical_model), "backend": "tensorrt"},
            "tracking": {"crops": {"directory": str(blocked / "crops")}},
            "sinks": [{"path": str(blocked / "d.jsonl")}],
            "cameras": [],
        }
        path = write(tmp_path / "streams.yaml", config)
        result = check_deep(path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (
        f"{path} metrics.listen: cannot listen on 127.0.0.1:{taken} (metrics.listen): Address already in use" in lines
    )
    assert any(
        line.startswith(f"{path} sinks[0].path: cannot write {blocked}/d.jsonl: {blocked} is a file, not a directory")
        for line in lines
    ), lines
    assert any(line.startswith(f"{path} engine: ") and "TensorRT" in line for line in lines), lines
    assert any(
        line.startswith(f"{path} tracking.crops.directory: cannot write {blocked}/crops: {blocked} is a file")
        for line in lines
    ), lines
    assert f"{path}: 4 error(s)" in lines
    assert not blocked.with_name("d.jsonl").exists()


def test_deep_check_passes_a_good_file_and_leaves_nothing_behind(canonical_model: Path, tmp_path: Path) -> None:
    sink = tmp_path / "out" / "d.jsonl"
    config = {
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "engine": {"model": str(canonical_model), "instances": 2},
        "batcher": {"max_batch": 2},
        "sinks": [{"path": str(sink)}],
        "cameras": [],
    }
    path = write(tmp_path / "streams.yaml", config)
    result = check_deep(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: engine: 2 onnxruntime instance(s), a batch of 2 in" in result.stdout
    assert f"{path}: OK, 0 camera(s), 0 enabled" in result.stdout
    assert f"{path}: decoders: NVDEC not available here (" in result.stdout, "no GPU here"
    assert not sink.exists() and not (tmp_path / "crops").exists(), "a check writes nothing"
    assert "auto: engine.instances" not in result.stdout and "auto: batcher.max_batch" not in result.stdout
    config["engine"] = {"model": str(canonical_model)}
    del config["batcher"]
    on_auto = check_deep(write(tmp_path / "auto.yaml", config))
    assert on_auto.returncode == 0, on_auto.stderr
    assert "auto: engine.instances=" in on_auto.stdout and "because one single-threaded instance" in on_auto.stdout
    assert "auto: batcher.max_batch=1 because ONNX Runtime on a CPU" in on_auto.stdout


def test_deep_check_shows_where_seventy_cameras_would_decode_on_an_a10(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import streamd.gpu.nvdec_budget
    import streamd.service.deep_check
    from tests.support.libcuda import Libcuda

    monkeypatch.setattr(streamd.service.deep_check, "nvdec_unavailable_reason", lambda: None)
    monkeypatch.setattr(streamd.gpu.nvdec_budget, "load_libcuda", lambda: Libcuda(name="NVIDIA A10"))
    cameras = [{"id": f"c{i:02d}", "url": f"rtsp://10.0.0.{i + 1}/s", "priority": int(i >= 20)} for i in range(70)]
    path = write(tmp_path / "streams.yaml", {"metrics": {"listen": f"127.0.0.1:{free_port()}"}, "cameras": cameras})
    notes = deep_check(load_config(path), path).notes
    (decoders,) = [note for note in notes if note.startswith("decoders:")]
    assert "NVDEC budget 1496 1080p frames/s (NVIDIA A10: 2 NVDEC engine(s)" in decoders
    assert "59 of 70 cameras on NVDEC (1475 frames/s" in decoders
    assert "on the CPU: c09, c10, c11, c12, c13, c14, c15, c16, c17, c18 and 1 more" in decoders


def test_deep_check_against_the_running_daemon_of_the_same_file(tmp_path: Path) -> None:
    """The operator's case: the daemon holds metrics.listen; checking its file before a reload is fine."""
    path = write(tmp_path / "streams.yaml", {"metrics": {"listen": f"127.0.0.1:{free_port()}"}, "cameras": []})
    other = write(tmp_path / "other.yaml", yaml.safe_load(path.read_text()))

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        daemon = Daemon(read_config(path), DaemonOptions(watch_config=False))
        await daemon.start()
        try:
            same = await asyncio.to_thread(deep_check, load_config(path), path)
            different = await asyncio.to_thread(deep_check, load_config(other), other)
        finally:
            await daemon.stop()
        return same.notes, same.problems, different.problems

    notes, problems, other_problems = asyncio.run(scenario())
    assert problems == [] and any("held by the streamd running this file" in note for note in notes)
    assert len(other_problems) == 1 and "Address already in use" in other_problems[0]


def test_run_names_the_address_it_cannot_listen_on(tmp_path: Path) -> None:
    with port_in_use() as taken:
        path = write(tmp_path / "streams.yaml", {"metrics": {"listen": f"127.0.0.1:{taken}"}, "cameras": []})
        result = subprocess.run(
            [sys.executable, "-m", "streamd", "--log-format", "text", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{taken} (metrics.listen): Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
