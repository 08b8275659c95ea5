"""MQTT: one message per analysed frame (or per frame with faces) on `<prefix>/<camera>/faces`,
one per track event on `<prefix>/<camera>/events` (never retained).

Also, retained: `<prefix>/available` is `online` while streamd is connected and
`offline` after it stops, or, through the broker's Last Will, after it dies; and
`<prefix>/<camera>/state` is each camera's state (`streaming`, `backoff`...). Both are
published again on every reconnect.

paho-mqtt runs the connection in its own thread and reconnects with a growing pause.
A group of records counts as written once the broker has acknowledged every message of
it (QoS 1 and 2; for QoS 0, once sent): a record is never counted before it left. While
the broker is unreachable `write` raises ConnectionError and the runner keeps the group
and retries it, the queue holding the records behind it (bounded, drops counted).
Messages paho accepted before a connection broke are re-sent by paho itself (QoS 1 and
2), so a retry waits for them instead of publishing them again. Delivery is at least
once: a message the broker got but did not acknowledge before the break comes twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import orjson

from streamd.config.schema import MqttSinkConfig
from streamd.sinks.base import Record

log = logging.getLogger(__name__)

_RECONNECT_MIN_S, _RECONNECT_MAX_S = 1, 30
_GOODBYE_S = 2.0  # how long `close` waits for `offline` to be acknowledged


class MqttSink:
    retries = True

    def __init__(self, config: MqttSinkConfig, name: str = "mqtt") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.name = name
        self.config = config
        self._mqtt = mqtt
        self.prefix = config.prefix.rstrip("/")
        client_id = config.client_id or f"streamd-{socket.gethostname()}-{os.getpid()}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(ca_certs=config.ca_file)
        client.will_set(self._available, "offline", qos=1, retain=True)
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client: Any = client
        self._condition = threading.Condition()
        self._states: dict[str, str] = {}
        self._group: tuple[list[Record], dict[int, Any]] | None = None  # records, index -> MQTTMessageInfo
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        client.loop_start()

    @property
    def _available(self) -> str:
        return f"{self.prefix}/available"

    def write(self, records: list[Record]) -> None:
        if self._group is None or self._group[0] is not records:
            self._group = (records, {})
        handed = self._group[1]
        for index, record in enumerate(records):
            event = "event" in record
            if index in handed or (not event and self.config.only_faces and not record.get("faces")):
                continue
            if not self._client.is_connected():
                raise ConnectionError(f"MQTT: not connected to {self.config.host}:{self.config.port}")
            topic = f"{self.prefix}/{record['camera']}/{'events' if event else 'faces'}"
            payload = orjson.dumps(record)
            retain = self.config.retain and not event  # a retained event would be told again to every newcomer
            info = self._client.publish(topic, payload, qos=self.config.qos, retain=retain)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"MQTT: publish failed: {self._mqtt.error_string(info.rc)}")
            handed[index] = info  # paho sends it again after a reconnect if need be
        self._wait_until_published(list(handed.values()))
        self._group = None

    def _wait_until_published(self, infos: list[Any]) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        with self._condition:
            while not all(info.is_published() for info in infos):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(not info.is_published() for info in infos)
                    raise ConnectionError(f"MQTT: {missing} message(s) unacknowledged after {self.config.timeout_s:g}s")
                self._condition.wait(min(left, 0.5))

    def camera_states(self, states: dict[str, str]) -> None:
        """Retained `<prefix>/<camera>/state` for each camera whose state changed (any thread)."""
        changed = {camera: state for camera, state in states.items() if self._states.get(camera) != state}
        self._states = dict(states)
        for camera, state in changed.items():
            self._client.publish(f"{self.prefix}/{camera}/state", state, qos=1, retain=True)

    def close(self) -> None:
        if self._client.is_connected():
            info = self._client.publish(self._available, "offline", qos=1, retain=True)
            deadline = time.monotonic() + _GOODBYE_S
            with self._condition:
                while info.rc == self._mqtt.MQTT_ERR_SUCCESS and not info.is_published():
                    if time.monotonic() >= deadline:
                        break
                    self._condition.wait(0.1)
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho's thread ------------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        if reason.is_failure:
            log.warning("sink %s: the broker refused the connection: %s", self.name, reason)
            return
        client.publish(self._available, "online", qos=1, retain=True)
        for camera, state in self._states.items():
            client.publish(f"{self.prefix}/{camera}/state", state, qos=1, retain=True)

    def _on_publish(self, _client: Any, _userdata: Any, _mid: int, _reason: Any, _properties: Any) -> None:
        with self._condition:  # wake `write`: one of its messages may be the one acknowledged
            self._condition.notify_all()
