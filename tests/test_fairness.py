"""Overload shared fairly: the real batcher, slots and governor, in simulated time.

Cameras put frames into their real latest-frame slots at their sampled rate; the real
DynamicBatcher forms batches from them; a stand-in engine (the edge) takes a fixed time
per frame and holds two batches at most, like the runner's double buffering. The clock
is simulated, so a minute of 1.5x overload runs in a moment and every count is exact:
each sampled frame is analysed, replaced in its slot, dropped as stale, or still waiting
at the end, and the test checks that nothing else happens to it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

from streamd.analysis.batcher import BatchPolicy, DynamicBatcher, Waiting
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig, OverloadConfig
from streamd.frames.frame import Frame
from streamd.metrics.registry import Metrics
from streamd.monitor.overload import OverloadGovernor
from streamd.monitor.rates import Rates
from tests.support.waiting import run

IMAGE = np.zeros((2, 2, 3), np.uint8)


def test_higher_priority_goes_first_then_the_fewest_turns_then_the_longest_wait() -> None:
    policy = BatchPolicy(max_batch=3, max_delay_s=0.01, max_age_s=1.0)
    waiting = [
        Waiting("oldest-frame", 10.0, priority=0, turns=8, served=9.9),
        Waiting("long-ago", 10.05, priority=0, turns=7, served=5.0),
        Waiting("recent", 10.06, priority=0, turns=7, served=9.8),
        Waiting("important", 10.09, priority=1, turns=50, served=9.95),
    ]
    # By frame age "oldest-frame" would go first; by turns it goes last.
    assert policy.decide(waiting, now=10.1, engine_has_room=True).take == ["important", "long-ago", "recent"]


@dataclass
class SimCounts:
    sampled: int = 0
    replaced: int = 0
    stale: int = 0
    analysed: int = 0


@dataclass
class SimCamera:
    """A camera at the edge: puts a frame into its slot every 1/fps simulated seconds."""

    camera: CameraConfig
    slot: LatestFrameSlot[Frame]
    run: CameraRun
    metrics: SimCounts = field(default_factory=SimCounts)

    @property
    def camera_id(self) -> str:
        return self.camera.id

    @property
    def sampling_fps(self) -> float:
        return self.run.fps

    def set_sampling_fps(self, fps: float) -> None:
        self.run.fps = fps


class SimEngine:
    """The edge: `per_frame_s` of engine time per frame, two batches held at most."""

    def __init__(self, per_frame_s: float, now: list[float]) -> None:
        self.per_frame_s = per_frame_s
        self.now = now
        self.finishing: list[tuple[float, list[Frame]]] = []

    def has_room(self) -> bool:
        return len(self.finishing) < 2

    def idle(self) -> bool:
        return not self.finishing

    def submit(self, frames: list[Frame]) -> None:
        start = max([self.now[0]] + [done for done, _ in self.finishing])
        self.finishing.append((start + self.per_frame_s * len(frames), frames))


@dataclass
class Outcome:
    cameras: dict[str, SimCamera]
    engine_fps: float

    def analysed_fps(self, camera_id: str, seconds: float) -> float:
        return self.cameras[camera_id].metrics.analysed / seconds


def simulate(
    cameras: list[CameraConfig],
    engine_fps: float,
    seconds: float,
    overload: OverloadConfig | None = None,
    engine_fps_after: tuple[float, float] | None = None,
) -> Outcome:
    """Run `seconds` of simulated time; `engine_fps_after` = (time, new capacity)."""

    async def scenario() -> Outcome:
        loop = asyncio.get_running_loop()
        now = [0.0]
        engine = SimEngine(1.0 / engine_fps, now)
        sims = {c.id: SimCamera(c, LatestFrameSlot[Frame](loop), CameraRun(c.fps)) for c in cameras}
        batcher = DynamicBatcher(
            BatchPolicy(max_batch=8, max_delay_s=0.01, max_age_s=1.0),
            engine,
            lambda frame: setattr(sims[frame.camera_id].metrics, "stale", sims[frame.camera_id].metrics.stale + 1),
            clock=lambda: now[0],
        )
        for sim in sims.values():
            batcher.attach(sim.camera.id, sim.slot, sim.camera.priority)
        governor = OverloadGovernor(lambda: overload or OverloadConfig(), lambda: list(sims.values()), Metrics())
        counted = {cid: (0, 0) for cid in sims}  # what the rate clock read a second ago: sampled, analysed
        # (time, order, kind, camera): frame arrivals staggered across the cameras.
        events: list[tuple[float, int, str, str]] = []
        for index, sim in enumerate(sims.values()):
            heapq.heappush(events, (index * 0.2 / len(sims), index, "frame", sim.camera.id))
        heapq.heappush(events, (1.0, -1, "govern", ""))
        wake_at: float | None = None
        order = len(sims)
        while now[0] < seconds:
            next_done = min((done for done, _ in engine.finishing), default=float("inf"))
            next_event = events[0][0]
            now[0] = min(next_done, next_event, wake_at if wake_at is not None else float("inf"))
            if now[0] >= seconds:
                break
            if engine_fps_after and now[0] >= engine_fps_after[0]:
                engine.per_frame_s = 1.0 / engine_fps_after[1]
            for done, frames in [item for item in engine.finishing if item[0] <= now[0]]:
                engine.finishing.remove((done, frames))
                for frame in frames:
                    sims[frame.camera_id].metrics.analysed += 1
            while events and events[0][0] <= now[0]:
                at, _, kind, camera_id = heapq.heappop(events)
                order += 1
                if kind == "govern":
                    # The rate clock's tick, read from the simulated counters.
                    last_second = {
                        cid: Rates(0.0, sim.metrics.sampled - counted[cid][0], sim.metrics.analysed - counted[cid][1])
                        for cid, sim in sims.items()
                    }
                    counted = {cid: (sim.metrics.sampled, sim.metrics.analysed) for cid, sim in sims.items()}
                    governor.on_rates(last_second, now[0])
                    heapq.heappush(events, (at + 1.0, order, "govern", ""))
                    continue
                sim = sims[camera_id]
                sim.metrics.sampled += 1
                frame = Frame(camera_id, sim.metrics.sampled, at, at, at, 2, 2, IMAGE)
                if sim.slot.put(frame):
                    sim.metrics.replaced += 1
                heapq.heappush(events, (at + 1.0 / sim.run.fps, order, "frame", camera_id))
            await asyncio.sleep(0)  # the slots' announcements reach the batcher, as on the loop
            decision = batcher.step()
            while decision.take:
                decision = batcher.step()
            wake_at = decision.wake_at if decision.wake_at and decision.wake_at > now[0] else None
        for sim in sims.values():  # frames still waiting or in the engine are neither lost nor analysed
            waiting = 1 if sim.slot.peek() is not None else 0
            in_engine = sum(f.camera_id == sim.camera.id for _, frames in engine.finishing for f in frames)
            m = sim.metrics
            assert m.sampled == m.analysed + m.replaced + m.stale + waiting + in_engine, sim.camera.id
        return Outcome(sims, engine_fps)

    return run(scenario())


def cameras(count: int, priority: int = 0, prefix: str = "cam") -> list[CameraConfig]:
    return [CameraConfig(id=f"{prefix}{i}", url="rtsp://127.0.0.1/x", fps=5, priority=priority) for i in range(count)]


def test_equal_cameras_share_a_1_5x_overload_within_10_percent_for_a_minute() -> None:
    # 12 cameras at 5 fps offer 60 frames/s to an engine that analyses 40: 1.5x.
    outcome = simulate(cameras(12), engine_fps=40, seconds=60)
    rates = [outcome.analysed_fps(c, 60) for c in outcome.cameras]
    mean = sum(rates) / len(rates)
    assert mean == pytest.approx(40 / 12, rel=0.05), "the engine is kept busy"
    assert min(rates) >= 0.9 * mean, rates


@pytest.mark.parametrize("engine_fps", [40, 24])
def test_high_priority_keeps_its_rate_and_low_priority_gives_way(engine_fps: float) -> None:
    # 20 frames/s of high priority and 40 of low, offered to 40 (1.5x) and to 24 (2.5x:
    # the high ones alone nearly fill the engine).
    high, low = cameras(4, priority=1, prefix="high"), cameras(8, priority=0, prefix="low")
    outcome = simulate(high + low, engine_fps=engine_fps, seconds=60)
    high_rates = [outcome.analysed_fps(c.id, 60) for c in high]
    low_rates = [outcome.analysed_fps(c.id, 60) for c in low]
    assert min(high_rates) >= 0.95 * 5, high_rates
    low_mean = sum(low_rates) / len(low_rates)
    assert low_mean == pytest.approx((engine_fps - 20) / 8, rel=0.15, abs=0.05), "low ones get the rest"
    assert min(low_rates) >= 0.9 * low_mean, low_rates
    lost = sum(s.metrics.replaced + s.metrics.stale for s in outcome.cameras.values() if s.camera.priority == 0)
    assert lost > 0
    for camera in high:
        counts = outcome.cameras[camera.id].metrics
        assert counts.replaced + counts.stale <= 0.05 * counts.sampled, counts


def test_degradation_lowers_the_low_priority_sampling_and_restores_it_when_load_eases() -> None:
    high, low = cameras(4, priority=1, prefix="high"), cameras(8, priority=0, prefix="low")
    overload = OverloadConfig(degrade=True, min_fps=1.0, after_s=5)
    # 60 frames/s offered to 40 for a minute, then the engine gets faster (say, another
    # process on the GPU ended) and analyses 80.
    outcome = simulate(high + low, engine_fps=40, seconds=120, overload=overload, engine_fps_after=(60.0, 80.0))
    sims = outcome.cameras
    assert all(sims[c.id].run.fps == 5 for c in high), "high priority is never lowered"
    assert all(sims[c.id].run.fps == pytest.approx(5) for c in low), "restored once the engine keeps up"

    during = simulate(high + low, engine_fps=40, seconds=60, overload=overload)
    low_fps = [during.cameras[c.id].run.fps for c in low]
    assert all(1.0 <= fps < 5 for fps in low_fps), low_fps
    assert max(low_fps) - min(low_fps) < 0.01, "lowered alike within a priority"
    offered = 4 * 5 + sum(low_fps)
    assert offered <= 40, f"sampling {offered:.1f} frames/s now fits the engine's 40"
    replaced_late = Counter({c.id: during.cameras[c.id].metrics.replaced for c in low})
    assert sum(replaced_late.values()) > 0, "the overload before degradation was counted"
