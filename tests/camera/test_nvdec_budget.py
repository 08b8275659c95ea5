"""The NVDEC budget: cameras are placed on NVDEC by priority until the GPU's decode
capacity is spent, the rest decode on the CPU, and the plan follows the cameras.

Driven through the Supervisor (what the daemon starts cameras with) on real video files.
The edges stood in for: the driver (libcuda names the GPU), the probe that says NVDEC
exists, and FFmpeg's hardware open (which here opens the file on the CPU and records
that NVDEC was asked for).
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from av.codec.hwaccel import HWAccel

import streamd.camera.decoder as decoder_module
from streamd.analysis.discard import DiscardingConsumer
from streamd.camera.placement import DecoderPlacement
from streamd.config.schema import StreamsConfig
from streamd.gpu.nvdec_budget import budget_for, gpu_name
from streamd.metrics.registry import Metrics
from streamd.monitor.rates import RateClock
from streamd.service.cameras import Supervisor
from tests.support.libcuda import Libcuda
from tests.support.waiting import wait_for


class Opens:
    """FFmpeg's open at the boundary: records, per camera file, whether NVDEC was asked."""

    def __init__(self) -> None:
        self.by_url: dict[str, list[bool]] = defaultdict(list)

    def __call__(self, url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        self.by_url[url].append(hw is not None)
        return self.real(url, options, timeout, None)  # frames come, as from NVDEC

    real = staticmethod(decoder_module.open_container)

    def last(self, url: Path) -> bool | None:
        opened = self.by_url.get(str(url))
        return opened[-1] if opened else None


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Opens:
    recorder = Opens()
    monkeypatch.setattr(decoder_module, "nvdec_unavailable_reason", lambda: None)
    monkeypatch.setattr(decoder_module, "open_container", recorder)
    return recorder


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, f"{name} is exported"
    return value


def cameras_config(files: dict[str, Path], priorities: dict[str, int]) -> StreamsConfig:
    return StreamsConfig.model_validate(
        {
            "cameras": [
                {"id": cid, "url": str(path), "fps": 5, "priority": priorities[cid], "decode": "auto"}
                for cid, path in files.items()
            ]
        }
    )


def test_seventy_1080p25_cameras_fill_an_a10s_budget_by_priority_and_replan_as_cameras_come(
    opens: Opens, test_video: Path, tmp_path: Path
) -> None:
    budget = budget_for(gpu_name(Libcuda(name="NVIDIA A10")), None)
    assert budget.fps == pytest.approx(1496) and "2 NVDEC engine" in budget.source
    # One file per camera (hard links), so each camera's opens can be told apart.
    files = {f"c{index:02d}": tmp_path / f"c{index:02d}.mp4" for index in range(71)}
    for path in files.values():
        os.link(test_video, path)
    priorities = {cid: 0 if index < 20 else 1 for index, cid in enumerate(files)}
    priorities["c70"] = 2
    first_seventy = {cid: files[cid] for cid in list(files)[:70]}
    metrics = Metrics()
    placement = DecoderPlacement(budget, metrics.nvdec_planned)
    supervisor = Supervisor(metrics, DiscardingConsumer(), placement=placement)

    def on_nvdec() -> set[str]:
        return {cid for cid, path in files.items() if opens.last(path)}

    async def scenario() -> None:
        try:
            await supervisor.apply(cameras_config(first_seventy, priorities))
            await wait_for(lambda: all(opens.last(p) is not None for p in first_seventy.values()), 30, "70 opens")
            # Unmeasured, each camera is taken as 1080p at 25 fps: 59 of them fit 1,496 frames/s.
            placed = on_nvdec()
            assert len(placed) == 59
            assert {cid for cid in first_seventy if priorities[cid] == 1} <= placed, "priority first"
            assert placed - {cid for cid in first_seventy if priorities[cid] == 1} == {f"c{i:02d}" for i in range(9)}
            assert sample(metrics, "streamd_nvdec_planned_fps") == 59 * 25
            assert sample(metrics, "streamd_nvdec_budget_fps") == pytest.approx(1496)

            # A camera of higher priority comes: it takes NVDEC, the last placed camera of
            # the lowest priority moves to the CPU at its next keyframe, nobody else moves.
            await supervisor.apply(cameras_config(files, priorities))
            await wait_for(lambda: opens.last(files["c70"]) is True, 30, "the new camera on NVDEC")
            await wait_for(lambda: opens.last(files["c08"]) is False, 30, "c08 moved to the CPU")
            assert on_nvdec() == placed - {"c08"} | {"c70"}
            moved = [cid for cid, path in files.items() if len(opens.by_url[str(path)]) > 1]
            assert moved == ["c08"]

            # Measured, these cameras are small (640x360): the plan is made again with
            # what they cost and every camera fits on NVDEC.
            rates = RateClock(supervisor.sources, log_interval_s=60)
            rates.tick()
            await asyncio.sleep(1.0)
            rates.tick()
            placement.measured(supervisor.sources(), {cid: r.decoded_fps for cid, r in rates.rates.items()})
            await wait_for(lambda: on_nvdec() == set(files), 30, "every camera on NVDEC")
            assert sample(metrics, "streamd_nvdec_planned_fps") < 1.2 * 71 * 25 * 640 * 360 / (1920 * 1080)
        finally:
            await supervisor.stop(timeout=5)

    asyncio.run(scenario())


def test_the_budget_comes_from_the_gpu_model_or_the_configuration() -> None:
    assert budget_for(gpu_name(Libcuda(name="NVIDIA A100-SXM4-80GB")), None).fps == pytest.approx(5 * 748)
    assert budget_for("NVIDIA L40S", None).fps == pytest.approx(3 * 748)
    unknown = budget_for(gpu_name(Libcuda(name="NVIDIA GeForce RTX 4090")), None)
    assert unknown.fps == pytest.approx(748) and "nvdec.budget_fps" in unknown.source
    assert budget_for("NVIDIA A10", 900).fps == 900


def test_the_daemon_plans_from_its_budget_shows_it_in_status_and_replans_on_reload(
    opens: Opens, monkeypatch: pytest.MonkeyPatch, test_video: Path, tmp_path: Path
) -> None:
    import json
    import urllib.request

    import yaml

    import streamd.gpu.context
    import streamd.gpu.nvdec_budget
    import streamd.service.daemon
    from streamd.config.loader import read_config
    from streamd.service.daemon import Daemon, DaemonOptions

    driver = Libcuda(name="NVIDIA A10")
    monkeypatch.setattr(streamd.service.daemon, "nvdec_unavailable_reason", lambda: None)
    monkeypatch.setattr(streamd.gpu.context, "load_libcuda", lambda: driver)
    monkeypatch.setattr(streamd.gpu.nvdec_budget, "load_libcuda", lambda: driver)
    files = {cid: tmp_path / f"{cid}.mp4" for cid in ("low", "mid", "high")}
    for path in files.values():
        os.link(test_video, path)
    cameras = [{"id": cid, "url": str(path), "priority": rank} for rank, (cid, path) in enumerate(files.items())]
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump({"nvdec": {"budget_fps": 50}, "cameras": cameras}))

    async def status(daemon: Daemon) -> dict[str, Any]:
        url = f"http://127.0.0.1:{daemon.http.port}/status"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        return dict(json.loads(text))

    async def scenario() -> None:
        options = DaemonOptions(metrics_port=0, watch_config=False, rate_log_interval_s=3600)
        daemon = Daemon(read_config(path), options)
        await daemon.start()
        try:
            await wait_for(lambda: all(opens.last(p) is not None for p in files.values()), 30, "three opens")
            assert [opens.last(files[cid]) for cid in files] == [False, True, True]
            shown = await status(daemon)
            assert shown["nvdec"] == {
                "budget_fps": 50,
                "budget_source": "nvdec.budget_fps in the configuration",
                "planned_fps": 50.0,
                "cameras_placed": ["high", "mid"],
            }
            await wait_for(lambda: all(s.state == "streaming" for s in daemon.sources()), 30, "streaming")
            by_id = {camera["id"]: camera for camera in (await status(daemon))["cameras"]}
            assert by_id["low"]["decoder"] == "cpu" and by_id["high"]["decoder"] == "nvdec"

            path.write_text(path.read_text().replace("budget_fps: 50", "budget_fps: 75"))
            assert await daemon.reload("test") == "applied"
            await wait_for(lambda: opens.last(files["low"]) is True, 30, "low moved onto NVDEC")
            assert (await status(daemon))["nvdec"]["planned_fps"] == 75.0
        finally:
            await daemon.stop()

    asyncio.run(scenario())
