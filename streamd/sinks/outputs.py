"""Every configured sink, behind its own runner: where analysis hands what it makes.

Records (of analysed frames, and track events: those with an `event` key) fan out to
every sink that takes their kind (`kinds`), without blocking (each runner queues or drops and
counts). Camera states go to the sinks that publish them (MQTT's retained
`<prefix>/<camera>/state`) when one changes, straight from the cameras' once-a-second
measurement, not through the detector. The sinks are a lifecycle part of their own,
stopped after the detector so that what the engine drains is still written.
"""

from __future__ import annotations

import asyncio
import functools

from streamd.base.threads import run_in_thread
from streamd.sinks.base import Record, SinkRunner


class Outputs:
    def __init__(self, runners: list[SinkRunner]) -> None:
        self.runners = runners
        self._states: dict[str, str] = {}

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def offer_many(self, records: list[Record]) -> None:
        """Hand `records` to every sink that takes their kind (any thread; never blocks)."""
        events = [record for record in records if "event" in record]
        frames = [record for record in records if "event" not in record] if events else records
        for runner in self.runners:
            taken = (frames if "frames" in runner.kinds else []) + (events if "events" in runner.kinds else [])
            if taken:
                runner.offer_many(taken)

    def camera_states(self, states: dict[str, str]) -> None:
        """Every camera's state now; sinks that publish states hear of it when one changed."""
        if states == self._states:
            return
        self._states = dict(states)
        for runner in self.runners:
            runner.camera_states(states)

    def problems(self) -> list[str]:
        """Why sinks are not writing now (empty while all are)."""
        return [problem for runner in self.runners if (problem := runner.problem()) is not None]

    async def stop(self, timeout: float) -> bool:
        """Flush every sink side by side within `timeout` (what is left is counted as dropped)."""
        flushed = await asyncio.gather(
            *(
                run_in_thread(functools.partial(runner.stop, timeout), name=f"sink-stop-{runner.sink.name}")
                for runner in self.runners
            )
        )
        return all(flushed)
