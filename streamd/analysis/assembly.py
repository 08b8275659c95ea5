"""The detector with its engines, tracks and second stage, as a configuration asks:
one assembly for the daemon's cameras and for recorded video."""

from __future__ import annotations

from typing import TypeVar

from streamd.analysis.detector import Detector, RecordsOut
from streamd.base.failures import Failures
from streamd.config.schema import EngineConfig, StreamsConfig
from streamd.engine.factory import create_engines
from streamd.metrics.registry import Metrics
from streamd.recognition.from_config import recognition_from_config
from streamd.tracks.tracking import Tracking

Out = TypeVar("Out", bound=RecordsOut)


def assemble_detector(
    config: StreamsConfig, engine: EngineConfig, outputs: Out, metrics: Metrics, failures: Failures, sources: int
) -> Detector[Out]:
    """Loads the engines (seconds: call from a thread); `sources`: the cameras (or files
    at once) that will send frames, for `auto` batch sizes."""
    engines = create_engines(engine, config.batcher.max_batch, sources)
    recognition = recognition_from_config(config, outputs.offer_many, metrics)
    tracking = Tracking(config.tracking, outputs.offer_many, metrics, failures, recognition)
    return Detector(
        engines.instances,
        config.batcher,
        config.postprocess,
        outputs,
        metrics,
        engine.warmup,
        failures,
        tracking,
        engines.sizing,
    )
