"""Redis Streams: one entry per record (XADD), one stream per camera or one for all.

Each entry's fields are the record's top-level keys, scalars as text and `faces` as
JSON, so a consumer reads `camera` or `latency_s` without parsing the whole record.
Streams are capped with an approximate MAXLEN (`XADD MAXLEN ~`): Redis trims whole
nodes, so a stream holds `maxlen` entries and at most one node (100 by default) more.

A group of records goes in one MULTI/EXEC transaction: all or none, so a retry after a
failed group cannot leave half of it behind. Connection trouble is raised as
ConnectionError and the runner keeps the group and retries it (`retries = True`);
redis-py reconnects on the next command. If Redis applied a transaction and the
connection failed before its answer came, the retry writes the group again: delivery
is at least once.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamd.sinks.base import Record


class RedisStreamSink:
    retries = True

    def __init__(self, url: str, stream: str, maxlen: int, timeout_s: float, name: str = "redis") -> None:
        import redis

        self.name = name
        self.stream = stream
        self.maxlen = maxlen
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def ping(self) -> None:
        """Raise ConnectionError unless Redis answers."""
        try:
            self._client.ping()
        except self._errors as error:
            raise ConnectionError(f"Redis: {error}") from error
        finally:
            self._client.close()

    def write(self, records: list[Record]) -> None:
        pipeline = self._client.pipeline(transaction=True)
        for record in records:
            pipeline.xadd(self.stream_of(record), _fields(record), maxlen=self.maxlen, approximate=True)
        try:
            pipeline.execute()
        except self._errors as error:
            # The network's, not a bug: an OSError, so the failure is logged without a traceback.
            raise ConnectionError(f"Redis: {error}") from error

    def stream_of(self, record: Record) -> str:
        return self.stream.replace("{camera}", str(record["camera"]))

    def close(self) -> None:
        self._client.close()


def _fields(record: Record) -> dict[str, str]:
    return {
        key: orjson.dumps(value).decode() if isinstance(value, (list, dict)) else str(value)
        for key, value in record.items()
    }
