"""Build the configured sinks, each behind its own bounded runner."""

from __future__ import annotations

import logging
from pathlib import Path

from streamd.base.failures import Failures
from streamd.base.redact import redact_url
from streamd.config.schema import MqttSinkConfig, RedisSinkConfig, SinkConfig
from streamd.metrics.registry import Metrics
from streamd.sinks.base import Sink, SinkRunner
from streamd.sinks.jsonl import JsonLinesSink
from streamd.sinks.mqtt import MqttSink
from streamd.sinks.redis_streams import RedisStreamSink

log = logging.getLogger(__name__)


def build_sinks(configs: list[SinkConfig], metrics: Metrics, failures: Failures | None = None) -> list[SinkRunner]:
    runners = []
    for index, config in enumerate(configs):
        name = config.type if len(configs) == 1 else f"{config.type}-{index}"
        writer = _writer(config, name)
        for reason in ("queue_full", "write_error", "shutdown"):
            metrics.sink_dropped.labels(name, reason)  # at 0 from the start, for rate() and alerts
        runners.append(
            SinkRunner(
                writer,
                config.queue,
                on_drop=lambda sink, reason: metrics.sink_dropped.labels(sink, reason).inc(),
                on_written=metrics.sink_records.labels(name).inc,
                failures=failures,
                on_health=metrics.sink_up.labels(name).set,
                kinds=frozenset(kind.value for kind in config.kinds),
            )
        )
        log.info("sink %s: %s", name, _where(config))
    return runners


def _writer(config: SinkConfig, name: str) -> Sink:
    if isinstance(config, MqttSinkConfig):
        return MqttSink(config, name=name)
    if isinstance(config, RedisSinkConfig):
        return RedisStreamSink(config.url, config.stream, config.maxlen, config.timeout_s, name=name)
    rotate_bytes = int(config.rotate_mb * 1_000_000) if config.rotate_mb else None
    return JsonLinesSink(Path(config.path), rotate_bytes, config.rotate_daily, name=name)


def _where(config: SinkConfig) -> str:
    if isinstance(config, MqttSinkConfig):
        return f"mqtt://{config.host}:{config.port} topics {config.prefix}/<camera>/faces"
    if isinstance(config, RedisSinkConfig):
        return f"{redact_url(config.url)} stream {config.stream}"
    return config.path
