"""/healthz, /readyz and /status on the metrics listener; JSON logs; GPU metrics absent cleanly."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

from devtools.bench.scale import SleepingEngine
from streamd.analysis.detector import Detector
from streamd.base.logs import JsonFormatter
from streamd.config.loader import LoadedConfig, read_config
from streamd.config.schema import BatcherConfig, PostprocessConfig, StreamsConfig
from streamd.engine.base import Engine
from streamd.metrics.gpu import GpuCollector
from streamd.metrics.registry import Metrics
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.sinks.outputs import Outputs
from tests.support.waiting import run, wait_for

PASSWORD = "St4tus-Secret"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_routes_follow_the_cameras(test_video: Path, tmp_path: Path) -> None:
    config = StreamsConfig.model_validate(
        {
            "health": {"ready_share": 0.5},
            "cameras": [
                {"id": "replay", "url": str(test_video)},
                {"id": "down", "url": f"rtsp://viewer:{PASSWORD}@127.0.0.1:9/none"},
                {"id": "down2", "url": "rtsp://127.0.0.1:9/none2"},
            ],
        }
    )

    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))

    async def scenario() -> dict[str, tuple[int, str]]:
        daemon = Daemon(read_config(path), DaemonOptions(metrics_port=0, rate_log_interval_s=0.5, watch_config=False))
        await daemon.start()
        port = daemon.http.port
        seen = {"healthz": get(port, "/healthz"), "not_ready": get(port, "/readyz")}
        await wait_for(lambda: daemon.sources()[0].state == "streaming", 10, "the replay camera")
        await wait_for(lambda: "replay" in daemon.rates.rates, 5, "a rate measurement")
        seen["status"] = get(port, "/status")
        seen["metrics"] = get(port, "/metrics")
        seen["missing"] = get(port, "/nope")
        changed = config.model_copy(update={"health": config.health.model_copy(update={"ready_share": 0.3})})
        path.write_text(yaml.safe_dump(changed.model_dump(mode="json", exclude_defaults=True)))
        assert await daemon.reload("test") == "applied"
        seen["ready"] = get(port, "/readyz")
        await daemon.stop()
        return seen

    seen = run(scenario())
    assert seen["healthz"] == (200, "ok\n")
    assert seen["not_ready"][0] == 503 and "cameras streaming" in seen["not_ready"][1]
    assert seen["ready"] == (200, "ready: 1/3 cameras streaming\n")
    assert seen["missing"][0] == 404
    status = json.loads(seen["status"][1])
    cameras = {c["id"]: c for c in status["cameras"]}
    assert cameras["replay"]["state"] == "streaming" and cameras["replay"]["decoder"] == "cpu"
    assert cameras["replay"]["sampled_fps"] == pytest.approx(5.0, abs=2.5)
    assert cameras["replay"]["last_frame_age_s"] < 1.0
    assert cameras["down"]["reason"] == "connection_refused"
    assert cameras["down"]["url"] == "rtsp://***@127.0.0.1:9/none"
    assert PASSWORD not in seen["status"][1] and PASSWORD not in seen["metrics"][1]
    assert "streamd_event_loop_lag_seconds" in seen["metrics"][1]
    assert "streamd_build_info{" in seen["metrics"][1]


def test_json_log_lines_carry_the_camera_and_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("streamd.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("cannot open %s", f"rtsp://u:{PASSWORD}@h/x", extra={"camera": "door"})
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["camera"] == "door" and entry["level"] == "WARNING"
    assert entry["message"] == "cannot open rtsp://***@h/x"


def test_gpu_metrics_are_absent_without_nvml() -> None:
    try:
        import pynvml  # noqa: F401

        pytest.skip("nvidia-ml-py is installed here; this checks the machine without it")
    except ImportError:
        pass
    assert GpuCollector.create() is None


class BrokenEngine(SleepingEngine):
    def infer(self, images: Any) -> np.ndarray:
        raise RuntimeException("[ONNXRuntimeError] : 1 : FAIL : CUDA error cudaErrorLaunchFailure")


def test_an_engine_instance_out_of_rotation_makes_the_daemon_not_ready_and_says_which(test_video: Path) -> None:
    config = StreamsConfig.model_validate({"cameras": [{"id": "replay", "url": str(test_video), "fps": 10}]})

    async def scenario() -> tuple[tuple[int, str], dict[str, Any], float]:
        metrics = Metrics()
        engines: list[Engine] = [BrokenEngine(1, 0.0, 0.0), SleepingEngine(1, 0.005, 0.0)]
        detector = Detector(engines, BatcherConfig(max_batch=1), PostprocessConfig(), Outputs([]), metrics, False)
        daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, consumer=detector, watch_config=False))
        await daemon.start()
        await wait_for(lambda: bool(detector.runner.retired), 20, "the broken instance taken out")
        await wait_for(lambda: detector.analysed("replay") >= 5, 20, "frames analysed by the other")
        port = daemon.http.port
        seen = get(port, "/readyz"), json.loads(get(port, "/status")[1])["engine"]
        in_rotation = detector.metrics.registry.get_sample_value("streamd_engine_instances") or 0.0
        await daemon.stop()
        return seen[0], seen[1], in_rotation

    ready, engine, in_rotation = run(scenario())
    assert ready[0] == 503
    assert "engine instance 1 out of rotation: 5 batches in a row failed, the last: RuntimeException" in ready[1]
    assert engine["instances_in_rotation"] == 1 and in_rotation == 1
