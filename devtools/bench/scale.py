"""`python -m devtools.bench scale`: what the Python orchestration costs per frame, at 50 to 400 cameras.

Everything between a camera's slot and the sinks is the real thing: the latest-frame
slots, the DynamicBatcher on the event loop (uvloop where installed, as `streamd run`),
the EngineRunner's threads, postprocess, the records, the per-camera metrics and a JSON
Lines sink writing to a file. Only the two ends are stand-ins:

- each camera is a thread that puts a pre-made frame into its slot at the camera's rate,
  as a decode thread does after decoding (no network, no decode, no conversion);
- the engine sleeps for a set time per batch (`zero`, or the `a10` curve: 2 ms plus
  0.97 ms a frame, which makes the roughly 965 frames/s at batch 32 that DESIGN.md gives
  for YOLOv5 INT8 on TensorRT) and returns the same candidates every time: mostly
  background, and two faces a frame with a few overlapping candidates each, so
  postprocess does its usual work.

Reported per camera count: the CPU time per analysed frame of everything but the camera
threads and the engine (process CPU minus the camera threads' own CPU; the stand-in
engine sleeps, so it costs none), the event loop's lag (a 10 ms timer, how late it
fires: p50 and p99), and analysed against target. The largest count at which every
sampled frame is analysed (>= 0.99 of target) is the capacity. The last line is the one
the issue asks for: `us_per_frame=X loop_lag_p99_ms=Y` at 200 cameras, zero-time engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devtools.bench.thread_cpu import cpu_by_role, spent_between
from streamd.analysis.detector import Detector
from streamd.base.tasks import event_loop_factory
from streamd.camera.slot import LatestFrameSlot
from streamd.config.schema import BatcherConfig, JsonlSinkConfig, PostprocessConfig, TrackingConfig
from streamd.frames.frame import Frame, StageTimes
from streamd.frames.letterbox import letterbox_geometry
from streamd.metrics.registry import Metrics
from streamd.model.canonical import ROW_WIDTH, SCORE_COLUMN
from streamd.sinks.factory import build_sinks
from streamd.sinks.outputs import Outputs
from streamd.tracks.tracking import Tracking

INPUT = 640
CANDIDATES = 25200  # YOLOv5-Face at 640: (80^2 + 40^2 + 20^2) anchors x 3
# Seconds per batch: fixed + per frame.
ENGINES = {"zero": (0.0, 0.0), "a10": (0.002, 0.00097)}
LAG_PERIOD_S = 0.01
FACES_PER_FRAME = 2
FULL_SHARE = 0.99


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", default="50,100,200,400", help="camera counts (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate per camera (default: %(default)s)")
    parser.add_argument(
        "--engine", default="zero,a10", help=f"stand-in engines, of {', '.join(ENGINES)} (default: %(default)s)"
    )
    parser.add_argument("--max-batch", type=int, default=32, help="frames per batch at most (default: %(default)s)")
    parser.add_argument(
        "--max-delay-ms",
        type=float,
        default=BatcherConfig().max_delay_ms,
        help="the batcher's max_delay_ms (default: streamd's, %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where the figures go")
    parser.add_argument(
        "--tracking",
        choices=["off", "on", "both"],
        default="off",
        help="the tracking stage after postprocess (crops off); both: each run twice, and the tracker's "
        "CPU per face from the deliver thread's difference (default: %(default)s)",
    )


class SleepingEngine:
    """The engine contract with a set time per batch and canned output; no CPU of its own."""

    name = "stand-in"
    input_height = input_width = INPUT
    on_gpu = False

    def __init__(self, max_batch: int, fixed_s: float, per_frame_s: float) -> None:
        self.max_batch = max_batch
        self.fixed_s, self.per_frame_s = fixed_s, per_frame_s
        self.planes = np.stack([_candidate_planes(random.Random(index)) for index in range(max_batch)])

    def new_input_buffer(self) -> np.ndarray:
        return np.empty((self.max_batch, 1, 1, 3), np.uint8)  # input is not read: engine time is set

    def load(self, buffer: Any, index: int, image: Any) -> None:
        pass

    def infer(self, images: Any) -> np.ndarray:
        seconds = self.fixed_s + self.per_frame_s * len(images) if len(images) else 0.0
        if seconds:
            time.sleep(seconds)
        planes: np.ndarray = self.planes[: len(images)]
        return planes

    def close(self) -> None:
        pass


def _candidate_planes(rng: random.Random) -> np.ndarray:
    """One image's canonical output ([15, N] planes): background, and two faces."""
    generator = np.random.default_rng(rng.randrange(2**32))
    rows = generator.uniform(0, INPUT, (CANDIDATES, ROW_WIDTH)).astype(np.float32)
    rows[:, 2:4] = generator.uniform(4, 40, (CANDIDATES, 2))
    rows[:, SCORE_COLUMN] = generator.uniform(0, 0.05, CANDIDATES)
    for face in range(FACES_PER_FRAME):  # each seen by four neighbouring anchors
        centre = np.array([150 + 300 * face, 320], np.float32)
        for anchor in range(4):
            row = rows[1000 * face + anchor]
            row[0:2] = centre + anchor
            row[2:4] = (60, 80)
            row[SCORE_COLUMN] = 0.9 - 0.1 * anchor
    return np.ascontiguousarray(rows.T)


class Camera(threading.Thread):
    """A decode thread's hand-off: a frame into the slot at the camera's rate."""

    def __init__(self, camera_id: str, slot: LatestFrameSlot[Frame], fps: float, stop: threading.Event) -> None:
        super().__init__(name=f"camera-{camera_id}", daemon=True)
        self.camera_id, self.slot, self.interval, self.stop = camera_id, slot, 1 / fps, stop
        self.image = np.full((INPUT, INPUT, 3), 114, np.uint8)
        self.box = letterbox_geometry(1920, 1080, INPUT, INPUT)[2]
        self.sampled = self.replaced = 0
        self.cpu_s = 0.0

    def run(self) -> None:
        due = time.monotonic() + random.uniform(0, self.interval)
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            now = time.monotonic()
            frame = Frame(
                self.camera_id,
                self.sampled,
                due,
                time.time(),
                now,
                1920,
                1080,
                self.image,
                self.box,
                StageTimes(ready_mono=now),
            )
            self.replaced += self.slot.put(frame)
            self.sampled += 1
            due += self.interval
            self.cpu_s = time.thread_time()


@dataclass
class ScaleFigures:
    engine: str
    tracking: bool
    cameras: int
    target_fps: float
    analysed_fps: float
    us_per_frame: float
    loop_lag_p50_ms: float
    loop_lag_p99_ms: float
    replaced: int
    stale: int
    mean_batch: float
    us_by_thread: dict[str, float]
    """CPU per analysed frame by thread (10 ms ticks): the loop, the runner's assemble and
    infer threads, deliver (postprocess, records, metrics), the sink."""

    @property
    def full(self) -> bool:
        return self.analysed_fps >= FULL_SHARE * self.target_fps

    def line(self) -> str:
        return (
            f"engine={self.engine} tracking={'on' if self.tracking else 'off'} cameras={self.cameras} "
            f"analysed={self.analysed_fps:.0f}/{self.target_fps:.0f} fps "
            f"us_per_frame={self.us_per_frame:.1f} loop_lag_p50_ms={self.loop_lag_p50_ms:.2f} "
            f"loop_lag_p99_ms={self.loop_lag_p99_ms:.2f} replaced={self.replaced} stale={self.stale} "
            f"mean_batch={self.mean_batch:.1f} "
            f"(us by thread: {' '.join(f'{role}={us:.0f}' for role, us in self.us_by_thread.items())})"
        )


async def _lag_probe(lags: list[float]) -> None:
    while True:
        expected = time.monotonic() + LAG_PERIOD_S
        await asyncio.sleep(LAG_PERIOD_S)
        lags.append(max(0.0, time.monotonic() - expected))


async def _run(engine: str, count: int, args: argparse.Namespace, out: Path, tracks: bool) -> ScaleFigures:
    metrics = Metrics()
    fixed_s, per_frame_s = ENGINES[engine]
    outputs = Outputs(build_sinks([JsonlSinkConfig(path=str(out / "records.jsonl"), rotate_mb=None)], metrics))
    batcher = BatcherConfig(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms)
    settings = TrackingConfig.model_validate({"crops": {"enabled": False, "directory": str(out)}})
    tracking = Tracking(settings, outputs.offer_many, metrics) if tracks else None
    detector = Detector(
        [SleepingEngine(args.max_batch, fixed_s, per_frame_s)],
        batcher,
        PostprocessConfig(),
        outputs,
        metrics,
        tracking=tracking,
    )
    outputs.start()
    await detector.start()
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    cameras = []
    for number in range(count):
        camera_id = f"cam{number:03d}"
        slot: LatestFrameSlot[Frame] = LatestFrameSlot(loop)
        detector.attach(camera_id, slot)
        cameras.append(Camera(camera_id, slot, args.fps, stop))
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(lags))
    for camera in cameras:
        camera.start()
    await asyncio.sleep(args.warmup)

    def sample() -> tuple[float, float, int, int, float, float]:
        # The CPU clock first: counting the stale drops (one registry collection) is the
        # bench's own work, not the pipeline's.
        cpu_s = time.process_time()
        stale = sum(
            sample.value
            for family in metrics.frames_dropped.collect()
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("reason") == "stale"
        )
        batches = metrics.registry.get_sample_value("streamd_batch_size_count") or 0.0
        return (
            cpu_s,
            sum(c.cpu_s for c in cameras),
            detector.inferred,
            sum(c.replaced for c in cameras),
            stale,
            batches,
        )

    lags.clear()
    start_mono, before, threads_before = time.monotonic(), sample(), cpu_by_role()
    await asyncio.sleep(args.seconds)
    elapsed, after, threads_after = time.monotonic() - start_mono, sample(), cpu_by_role()
    lag_ms = sorted(lag * 1000 for lag in lags)
    stop.set()
    probe.cancel()
    for camera in cameras:
        camera.join()
    await detector.stop(10.0)
    await outputs.stop(10.0)
    analysed = after[2] - before[2]
    pipeline_cpu = (after[0] - before[0]) - (after[1] - before[1])
    spent = spent_between(threads_before, threads_after)
    by_thread = {
        role: spent.get(role, 0.0) / max(1, analysed) * 1e6
        for role in ("loop", "assemble", "inference", "deliver", "sink")
    }
    return ScaleFigures(
        engine,
        tracks,
        count,
        count * args.fps,
        analysed / elapsed,
        pipeline_cpu / max(1, analysed) * 1e6,
        lag_ms[len(lag_ms) // 2],
        lag_ms[min(len(lag_ms) - 1, int(len(lag_ms) * 0.99))],
        after[3] - before[3],
        int(after[4] - before[4]),
        analysed / max(1.0, after[5] - before[5]),
        by_thread,
    )


def _plot(figures: list[ScaleFigures], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine in dict.fromkeys(f.engine for f in figures):
        runs = [f for f in figures if f.engine == engine]
        cams = [f.cameras for f in runs]
        left.plot(cams, [f.us_per_frame for f in runs], "o-", label=f"{engine} engine")
        right.plot(cams, [f.loop_lag_p50_ms for f in runs], "o-", label=f"{engine} p50")
        right.plot(cams, [f.loop_lag_p99_ms for f in runs], "s--", label=f"{engine} p99")
    left.axhline(50, color="grey", linestyle=":", label="goal: 50 us")
    right.axhline(5, color="grey", linestyle=":", label="goal: p99 5 ms")
    left.set(xlabel="cameras at 5 fps", ylabel="CPU us per analysed frame", title="Orchestration cost per frame")
    right.set(xlabel="cameras at 5 fps", ylabel="event-loop lag, ms", title="Event-loop lag")
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def wake_up_cost_us(naps: int = 100, nap_s: float = 0.005) -> float:
    """CPU a thread is charged for going idle and waking up, with no work: what each hop
    between threads costs on this machine before any work is done (a virtual machine
    charges far more than bare metal). The pipeline's cost per frame is mostly such hops
    when batches are small."""
    start = time.thread_time()
    for _ in range(naps):
        time.sleep(nap_s)
    return (time.thread_time() - start) / naps * 1e6


def main(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.cameras.split(",")]
    engines = [name.strip() for name in args.engine.split(",")]
    unknown = [name for name in engines if name not in ENGINES]
    if unknown:
        print(f"bench scale: unknown engine {unknown[0]!r}: one of {', '.join(ENGINES)}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"a thread's wake-up on this machine: {wake_up_cost_us():.0f} us of CPU with no work; "
        f"batcher max_delay_ms={args.max_delay_ms:g}",
        flush=True,
    )
    figures = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tracking]
    with tempfile.TemporaryDirectory(prefix="streamd-scale-") as scratch:
        for engine in engines:
            for count in counts:
                for tracks in modes:
                    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                        result = runner.run(_run(engine, count, args, Path(scratch), tracks))
                    print(result.line(), flush=True)
                    figures.append(result)
    for engine in engines:
        full = [f.cameras for f in figures if f.engine == engine and f.full]
        print(f"engine={engine}: every frame analysed up to {max(full, default=0)} cameras of those tried")
    (args.out / "scale.json").write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    _plot(figures, args.out / "scale.png")
    print(f"figures: {args.out / 'scale.json'}, plot: {args.out / 'scale.png'}")
    headline = next((f for f in figures if f.engine == "zero" and f.cameras == 200), figures[-1])
    print(f"us_per_frame={headline.us_per_frame:.1f} loop_lag_p99_ms={headline.loop_lag_p99_ms:.2f}")
    if args.tracking == "both":
        without, with_tracks = (
            next(
                f for f in figures if f.engine == headline.engine and f.cameras == headline.cameras and f.tracking == on
            )
            for on in (False, True)
        )
        extra = with_tracks.us_by_thread["deliver"] - without.us_by_thread["deliver"]
        print(f"tracking_us_per_face={extra / FACES_PER_FRAME:.1f} (deliver thread, {headline.cameras} cameras)")
    return 0
