"""A real mosquitto on loopback, and a subscriber that keeps what it hears."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.testing.ports import free_port


class Mosquitto:
    """A broker with persistence, so a subscriber's session survives its restart."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.port = binary, free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\nuser root\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Subscriber:
    """Everything under `streamd/#`, QoS 1, with a session the broker keeps across restarts."""

    def __init__(self, port: int, client_id: str = "test-subscriber") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client: Any = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("streamd/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def faces(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(payload) for topic, payload, _ in self.messages if topic.endswith("/faces")]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(payload) for topic, payload, _ in self.messages if topic.endswith("/events")]

    def last(self, topic: str) -> str | None:
        with self._lock:
            payloads = [payload for t, payload, _ in self.messages if t == topic]
        return payloads[-1] if payloads else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
