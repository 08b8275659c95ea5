"""`streamd check --deep`: what `run` does before its first camera, then undone.

Binds the metrics listener, opens every sink for appending, says where the cameras
would decode (the NVDEC budget and plan), loads the model and runs one full batch on
every engine instance (with the same memory guard as `run`). Cameras
are not opened: checking a file must not disturb the cameras it names. An operator runs
it on the edited file before a reload, while the daemon holds the metrics address; that
one case is recognised (the daemon's /status names the same file) and is not an error.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamd.base.errors import StreamdError
from streamd.camera.nvdec import nvdec_unavailable_reason
from streamd.camera.placement import ESTIMATED_COST, DecodeDemand, plan_nvdec
from streamd.config.schema import DecodeMode, MetricsConfig, MqttSinkConfig, RedisSinkConfig, StreamsConfig
from streamd.engine.base import EngineError
from streamd.engine.factory import create_engines
from streamd.engine.runner import EngineRunner
from streamd.gpu.nvdec_budget import budget_for, gpu_name
from streamd.monitor.http_server import MetricsServer, describe
from streamd.monitor.web_config import WebConfigError, load_web_config
from streamd.sinks.jsonl import JsonLinesSink
from streamd.sinks.redis_streams import RedisStreamSink


@dataclass
class DeepCheck:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def deep_check(config: StreamsConfig, path: Path) -> DeepCheck:
    result = DeepCheck()
    _check_listener(config.metrics, path.resolve(), result)
    for index, sink in enumerate(config.sinks):
        if isinstance(sink, RedisSinkConfig):
            # Not a problem: `run` starts without Redis and keeps records until it answers.
            try:
                RedisStreamSink(sink.url, sink.stream, sink.maxlen, min(sink.timeout_s, 3.0)).ping()
            except OSError as exc:
                result.notes.append(f"sinks[{index}]: Redis does not answer now ({exc}); records will wait for it")
            continue
        if isinstance(sink, MqttSinkConfig):
            try:
                socket.create_connection((sink.host, sink.port), timeout=3.0).close()
            except OSError as exc:
                result.notes.append(f"sinks[{index}]: the MQTT broker does not answer now ({exc}); records will wait")
            continue
        try:
            JsonLinesSink(Path(sink.path), None, rotate_daily=False).probe()
        except OSError as exc:
            result.problems.append(f"sinks[{index}].path: cannot write {sink.path}: {describe(exc)}")
    _check_crops(config, result)
    _check_recognition(config, result)
    _check_decoders(config, result)
    if config.engine is not None:
        _check_engine(config, result)
    return result


def _check_recognition(config: StreamsConfig, result: DeepCheck) -> None:
    """The embedder loads and the gallery reads, where `run` would use them."""
    settings = config.recognition
    if not (settings.enabled if settings.enabled is not None else settings.gallery_path.exists()):
        return
    from streamd.recognition.embedders import make_embedder
    from streamd.recognition.gallery import Gallery

    try:
        embedder = make_embedder(settings.embedder, settings.model_path)
        people = len(Gallery(settings.gallery_path, embedder.name).people())
    except StreamdError as error:
        result.problems.append(f"recognition: {error}")
        return
    threshold = settings.threshold or embedder.threshold
    result.notes.append(f"recognition: {embedder.name}, threshold {threshold:g}, {people} people in {settings.gallery}")


def _check_crops(config: StreamsConfig, result: DeepCheck) -> None:
    """The best-face crops' directory can be written, or made where it is missing; the
    check makes nothing itself."""
    crops = config.tracking.crops
    if not (config.tracking.enabled and crops.enabled and crops.directory):
        return
    directory = Path(crops.directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), directory.anchor)
    try:
        if not Path(existing).is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a directory")
        if existing == directory:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".streamd-check-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, f"{existing} is not writable")
    except OSError as exc:
        result.problems.append(f"tracking.crops.directory: cannot write {directory}: {describe(exc)}")


def _check_listener(metrics: MetricsConfig, path: Path, result: DeepCheck) -> None:
    web_config = Path(metrics.web_config) if metrics.web_config else None
    if web_config is not None:
        try:
            load_web_config(web_config)
        except WebConfigError as exc:
            result.problems.append(f"metrics.web_config: {exc}")
            return
    server = MetricsServer(metrics.host, metrics.port, CollectorRegistry(), web_config=web_config)
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and web_config is not None:
            # Behind TLS and basic auth the holder cannot be asked which file it runs.
            result.notes.append(f"metrics.listen {metrics.listen}: in use (by a streamd behind its web config?)")
        elif exc.errno == errno.EADDRINUSE and _served_by_daemon_of(metrics, path):
            result.notes.append(f"metrics.listen {metrics.listen}: held by the streamd running this file")
        else:
            result.problems.append(f"metrics.listen: {exc.strerror}")
        return
    server.stop()


def _served_by_daemon_of(metrics: MetricsConfig, path: Path) -> bool:
    """True when a streamd answers at the address and runs the file at `path`."""
    try:
        with urllib.request.urlopen(f"http://{metrics.listen}/status", timeout=2) as response:
            status = json.loads(response.read())
        return bool(status["config"]["path"] == str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_decoders(config: StreamsConfig, result: DeepCheck) -> None:
    """Where the cameras would decode: the NVDEC budget and the plan `run` starts with
    (cameras not yet measured count as 1080p at 25 frames/s)."""
    unavailable = nvdec_unavailable_reason()
    if unavailable is not None:
        result.notes.append(f"decoders: NVDEC not available here ({unavailable}); every camera decodes on the CPU")
        return
    budget = budget_for(gpu_name(), config.nvdec.budget_fps)
    cameras = config.cameras_to_run
    demands = [
        DecodeDemand(camera.id, camera.priority, camera.decode is DecodeMode.nvdec, ESTIMATED_COST)
        for camera in cameras
        if camera.decode is not DecodeMode.cpu
    ]
    plan = plan_nvdec(demands, budget.fps)
    on_cpu = [camera.id for camera in cameras if camera.id not in plan.on_nvdec]
    shown = ", ".join(on_cpu[:10]) + (f" and {len(on_cpu) - 10} more" if len(on_cpu) > 10 else "")
    result.notes.append(
        f"decoders: NVDEC budget {budget.fps:g} 1080p frames/s ({budget.source}); {len(plan.on_nvdec)} of "
        f"{len(cameras)} cameras on NVDEC ({plan.planned_fps:g} frames/s taken as 1080p25 until measured)"
        + (f", on the CPU: {shown}" if on_cpu else "")
    )


def _check_engine(config: StreamsConfig, result: DeepCheck) -> None:
    assert config.engine is not None
    try:
        loaded = create_engines(config.engine, config.batcher.max_batch, len(config.cameras_to_run))
        engines = loaded.instances
    except EngineError as exc:
        result.problems.append(f"engine: {exc}")
        return
    runner = EngineRunner(engines, lambda _result: None, lambda: None, fit_instances=loaded.sizing.instances_auto)
    try:
        seconds = runner.warm_up()
    except EngineError as exc:
        result.problems.append(f"engine: {exc}")
        return
    finally:
        for engine in runner.engines:  # the warm-up closed those memory could not hold
            engine.close()
    result.notes.append(
        f"engine: {len(runner.engines)} {engines[0].name} instance(s), a batch of {engines[0].max_batch} "
        f"in {seconds * 1000:.0f} ms"
    )
    chosen = loaded.sizing.chosen
    result.notes += [f"auto: {choice.line()}" for choice in chosen.all() if choice.auto] if chosen else []
