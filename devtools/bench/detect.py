"""`python -m devtools.bench detect` (`make bench`): detection throughput, three ways in one run.

(a) limit: the engine alone on ready-made batches of letterboxed frames, every batch
    size from 1 to `max_batch`; the best is the limit.
(b) streamd: N cameras served at their real rate by the RTSP test server on loopback,
    the whole daemon (decode threads, batcher, engine, postprocess, JSON Lines sink).
(c) naive: one thread per camera that decodes, samples, letterboxes and calls the model
    one frame at a time; each thread loads its own ONNX Runtime session with default
    options, as per-camera worker code usually does. It shares streamd's sampler,
    letterbox and postprocess, so only the architecture differs.

Throughput is analysed frames per second over the window. Latency is how far behind
live a result is: result time minus when the frame was due by its stream timestamp,
counted from the camera's first frame. It includes any backlog a design builds up.
The engine alone on all cores is a limit no program that also decodes can reach when
the cores are few (on 2 cores streamd reached 0.54-0.67 of it). So it is measured a
second time with the same decode load beside it: the largest camera count's streams
decoded, sampled and letterboxed by PyAV alone (`devtools.bench.pyav_alone`), in the
same run: the fair limit.

streamd runs with its engine settings on `auto`; then at the largest camera count
with each hand-picked setting of `--sweep` (instances, threads, max_batch), in the same
run, and `auto_vs_best_picked` compares auto with the best of them.

The run ends with `ratio_vs_naive=X ratio_vs_limit=Y ratio_vs_fair_limit=F
ratio_vs_possible=Z` at the largest camera count; "possible" is the lower of the fair
limit and the cameras' demand (cameras x fps): when the engine can do more than the
cameras ask, all that is asked is the most anyone can analyse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from devtools.bench.models import bench_model
from devtools.bench.thread_cpu import cpu_by_role, spent_between
from devtools.testing.demo import CACHE_DIR, shared_image
from devtools.testing.rtsp import RtspTestServer
from devtools.testing.video import VideoSpec, cached_video
from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.camera.sampler import FrameSampler
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.letterbox import letterbox
from streamd.service.daemon import Daemon, DaemonOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", default="4,8,12,16", help="camera counts to run (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--source-fps", type=int, default=5, help="the cameras' frame rate")
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate per camera")
    # ONNX Runtime on a CPU runs no faster per frame in batches (measured: 85 frames/s at
    # batch 1, 77 at 4 with two instances), so the CPU benchmark sends frames as they come.
    parser.add_argument("--max-batch", type=int, help="streamd's batcher.max_batch (default: auto)")
    parser.add_argument(
        "--sweep",
        default="1,2,1;2,1,1;1,2,2;2,1,2",
        help="hand-picked engine.instances,engine.threads,batcher.max_batch to run at the largest camera count "
        "beside streamd's auto (default: %(default)s; empty: none)",
    )
    parser.add_argument("--model", type=Path, help="source or canonical model (default: the shared one)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where figures and the plot go")


@dataclass
class RunFigures:
    way: str
    cameras: int
    throughput: float
    p50: float
    p99: float
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.way:8s} cameras={self.cameras:3d} throughput={self.throughput:6.1f} frames/s "
            f"latency p50={self.p50 * 1000:7.1f} ms p99={self.p99 * 1000:7.1f} ms"
        )


Observation = tuple[str, float, float, float]  # camera, frame pts, captured_at, result_at


def behind_live(observations: list[Observation]) -> list[tuple[float, float]]:
    """(result_at, seconds behind live) per observation.

    A camera's live clock is set by the frame that arrived soonest relative to its
    timestamp; every other frame was due at that offset plus its own timestamp.
    """
    offset: dict[str, float] = {}
    for camera, pts, captured_at, _ in observations:
        offset[camera] = min(offset.get(camera, captured_at - pts), captured_at - pts)
    return [(result_at, result_at - (offset[camera] + pts)) for camera, pts, _, result_at in observations]


def _window(observations: list[Observation], start: float, end: float) -> tuple[float, float, float]:
    """Throughput, p50 and p99 lag of the results inside [start, end)."""
    lags = [lag for at, lag in behind_live(observations) if start <= at < end]
    if not lags:
        return 0.0, float("nan"), float("nan")
    return len(lags) / (end - start), float(np.percentile(lags, 50)), float(np.percentile(lags, 99))


# -- (a) the engine alone ---------------------------------------------------------


def _engines_alone(engines: list[OnnxRuntimeEngine], images: np.ndarray, seconds: float) -> float:
    """Frames/s of `engines` each running ready-made batches in its own thread."""
    stop_at = time.perf_counter() + seconds
    done = [0] * len(engines)

    def work(index: int) -> None:
        while time.perf_counter() < stop_at:
            engines[index].infer(images)
            done[index] += len(images)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def engine_limit(model: Path, max_batch: int, frame: av.VideoFrame, seconds: float = 2.5) -> dict[str, float]:
    """The engine alone, every arrangement and batch size; the best of them is the limit.

    Arrangements: one instance using every core (spinning threads: fastest when it has
    the machine to itself), and one single-threaded instance per core (streamd's default).
    """
    cores = os.cpu_count() or 1
    arrangements = {
        f"1x{cores} threads": [OnnxRuntimeEngine(model, max_batch, threads=cores, spin_wait=True)],
        f"{cores}x1 thread": [OnnxRuntimeEngine(model, max_batch, threads=1) for _ in range(cores)],
    }
    image, _ = letterbox(frame, 640, 640)
    rates = {}
    for name, engines in arrangements.items():
        for batch in range(1, max_batch + 1):
            images = np.stack([image] * batch)
            for engine in engines:
                engine.infer(images)
            rates[f"{name}, batch {batch}"] = _engines_alone(engines, images, seconds)
        for engine in engines:
            engine.close()
    return rates


def engine_limit_beside_decoding(
    model: Path, max_batch: int, frame: av.VideoFrame, urls: list[str], fps: float
) -> dict[str, float]:
    """`engine_limit` while PyAV alone decodes `urls` as streamd's cameras do."""
    from devtools.bench.pyav_alone import decode_camera

    stop = threading.Event()
    threads = [threading.Thread(target=decode_camera, args=(url, fps, stop), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3.0)  # connected and decoding at the streams' rate
        return engine_limit(model, max_batch, frame)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)


def stage_timer_cost_us(frames: int = 20000, batch: int = 32) -> float:
    """What `streamd_stage_seconds` costs per analysed frame (its six timings, a batch of
    `batch` frames at a time, as the detector observes them), in us."""
    from streamd.analysis.detector import stage_seconds
    from streamd.engine.runner import BatchResult
    from streamd.frames.frame import Frame, StageTimes
    from streamd.metrics.registry import Metrics

    metrics = Metrics()
    batch_frames = [Frame("c", 0, 0.0, 0.0, 1.0, 2, 2, None, times=StageTimes(0.004, 1.001, 1.01))] * batch
    result = BatchResult(batch_frames, np.zeros((batch, 15, 1), np.float32), 0.02, 1.05, 1.03)
    start = time.perf_counter()
    for _ in range(frames // batch):
        metrics.stage_seconds.observe(stage_seconds(batch_frames, result, 1.0501, 1.0502))
    return (time.perf_counter() - start) / (frames // batch * batch) * 1e6


# -- (b) streamd ------------------------------------------------------------------


async def _streamd(
    server: RtspTestServer,
    names: list[str],
    model: Path,
    args: argparse.Namespace,
    picked: tuple[int, int, int] | None = None,
) -> RunFigures:
    """The daemon on `names`; `picked`: engine.instances, engine.threads and
    batcher.max_batch set by hand instead of `auto`."""
    out = args.out / f"streamd-{len(names)}.jsonl"
    out.unlink(missing_ok=True)
    config = StreamsConfig.model_validate(
        {
            "engine": {"model": str(model)} | ({"instances": picked[0], "threads": picked[1]} if picked else {}),
            "batcher": {"max_batch": picked[2] if picked else args.max_batch or "auto", "max_delay_ms": 10},
            "sinks": [{"path": str(out), "rotate_mb": None}],
            "defaults": {"fps": args.fps},
            "cameras": [{"id": name, "url": server.url(name)} for name in names],
        }
    )
    daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, rate_log_interval_s=3600))
    await daemon.start()
    try:
        await asyncio.sleep(args.warmup)
        window_start = time.time()
        cpu0, roles0 = time.process_time(), cpu_by_role()
        await asyncio.sleep(args.seconds)
        window_end = time.time()
        cpu, roles = time.process_time() - cpu0, spent_between(roles0, cpu_by_role())
    finally:
        await daemon.stop()
    lines = (json.loads(line) for line in out.read_text().splitlines())
    records = [record for record in lines if "event" not in record]  # frames, not track events
    observations = [(r["camera"], r["frame_pts"], r["captured_at"], r["result_at"]) for r in records]
    registry = daemon.metrics.registry
    batch_sum = registry.get_sample_value("streamd_batch_size_sum") or 0.0
    batch_count = registry.get_sample_value("streamd_batch_size_count") or 1.0
    infer_sum = registry.get_sample_value("streamd_inference_seconds_sum") or 0.0
    extra = {
        "mean_batch": batch_sum / batch_count,
        "mean_inference_ms": 1000 * infer_sum / batch_count,
        "cpu_cores": cpu / args.seconds,
        "cores_by_role": {role: seconds / args.seconds for role, seconds in roles.items()},
    }
    return RunFigures("streamd", len(names), *_window(observations, window_start, window_end), extra)


# -- (c) naive ----------------------------------------------------------------------


def _naive_camera(url: str, model: Path, fps: float, stop: threading.Event, results: list[Observation]) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])  # defaults, as naive code has
    settings = PostprocessSettings()
    sampler = FrameSampler(fps)
    options = {"rtsp_transport": "tcp", "analyzeduration": "500000", "probesize": "1000000"}  # as streamd opens
    with av.open(url, options=options, timeout=(10, 10)) as container:
        for frame in container.decode(video=0):
            if stop.is_set():
                return
            if frame.time is None or not sampler.take(frame.time):
                continue
            captured_at = time.time()
            image, box = letterbox(frame, 640, 640)
            rows = session.run(["detections"], {"images": image[np.newaxis]})[0]
            postprocess(rows[0], box, settings)
            results.append((url, frame.time, captured_at, time.time()))


def _naive(server: RtspTestServer, names: list[str], model: Path, args: argparse.Namespace) -> RunFigures:
    stop = threading.Event()
    results: list[Observation] = []
    threads = [
        threading.Thread(target=_naive_camera, args=(server.url(n), model, args.fps, stop, results), daemon=True)
        for n in names
    ]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    window_start = time.time()
    time.sleep(args.seconds)
    window_end = time.time()
    stop.set()
    for thread in threads:
        thread.join(15)
    return RunFigures("naive", len(names), *_window(results, window_start, window_end))


# -- the run --------------------------------------------------------------------------


def _plot(figures: list[RunFigures], limit: float, fair_limit: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for way, style in (("streamd", "o-"), ("naive", "s--")):
        runs = [f for f in figures if f.way == way]
        cams = [f.cameras for f in runs]
        left.plot(cams, [f.throughput for f in runs], style, label=way)
        right.plot(cams, [f.p50 * 1000 for f in runs], style, label=f"{way} p50")
        right.plot(cams, [f.p99 * 1000 for f in runs], style, alpha=0.5, label=f"{way} p99")
    left.axhline(limit, color="grey", linestyle=":", label="engine alone (limit)")
    left.axhline(fair_limit, color="black", linestyle="-.", label="engine beside the decoding (fair limit)")
    left.set(xlabel="cameras", ylabel="analysed frames/s", title="Throughput")
    right.set(xlabel="cameras", ylabel="ms behind live", title="Latency", yscale="log")
    left.legend()
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args: argparse.Namespace) -> int:
    model = bench_model("detect", args.model, args.out)
    if model is None:
        return 2
    image = shared_image("group9.jpg")
    # A camera sub-stream as edge deployments use them for analysis: 640x480 at about
    # half a megabit (decode cost grows with the bits, so the bitrate must be real).
    spec = VideoSpec(
        width=640, height=480, fps=args.source_fps, seconds=10, image=str(image) if image else None, bitrate_kbps=512
    )
    video = cached_video(spec, CACHE_DIR)
    with av.open(str(video)) as container:
        first_frame = next(container.decode(video=0))
    counts = [int(c) for c in args.cameras.split(",")]
    print(f"clip {video.name}: 640x480 at {args.source_fps} fps, analysed at {args.fps:g} fps per camera")

    batch = args.max_batch or 1  # auto on a CPU
    rates = engine_limit(model, batch, first_frame)
    limit = max(rates.values())
    print("engine alone (frames/s): " + "; ".join(f"{k}: {r:.1f}" for k, r in rates.items()))
    print(f"limit: {limit:.1f} frames/s ({max(rates, key=rates.__getitem__)})")

    timers_us = stage_timer_cost_us()
    print(
        f"stage timers: {timers_us:.1f} us per analysed frame "
        f"({timers_us / 1e6 * limit * 100:.3f}% of a frame's engine time at the limit)"
    )

    figures: list[RunFigures] = []
    names_all = [f"cam{i + 1}" for i in range(max(counts))]
    with RtspTestServer(dict.fromkeys(names_all, video)) as server:
        fair_rates = engine_limit_beside_decoding(
            model, batch, first_frame, [server.url(name) for name in names_all], args.fps
        )
        fair_limit = max(fair_rates.values())
        print(
            f"fair limit: {fair_limit:.1f} frames/s, the engine alone while PyAV alone decodes the "
            f"{len(names_all)} cameras ({max(fair_rates, key=fair_rates.__getitem__)}; "
            f"{fair_limit / limit:.2f} of the engine alone)"
        )
        for count in counts:
            names = names_all[:count]
            run = asyncio.run(_streamd(server, names, model, args))
            extra = run.extra
            print(
                run.line() + f" (mean batch {extra['mean_batch']:.2f}, {extra['mean_inference_ms']:.0f} ms/batch, "
                f"{extra['cpu_cores']:.2f} cores: "
                + ", ".join(f"{role} {cores:.2f}" for role, cores in extra["cores_by_role"].items())
                + ")"
            )
            figures.append(run)
            run = _naive(server, names, model, args)
            print(run.line())
            figures.append(run)
        swept = []
        for text in filter(None, args.sweep.split(";")):
            instances, threads, max_batch = (int(x) for x in text.split(","))
            run = asyncio.run(_streamd(server, names_all, model, args, (instances, threads, max_batch)))
            run.way = f"picked {instances}x{threads} batch {max_batch}"
            print(run.line())
            swept.append(run)

    top = max(counts)
    streamd_top = next(f for f in figures if f.way == "streamd" and f.cameras == top)
    naive_top = next(f for f in figures if f.way == "naive" and f.cameras == top)
    plot = args.out / "bench-detect.png"
    _plot(figures, limit, fair_limit, plot)
    (args.out / "bench-detect.json").write_text(
        json.dumps(
            {
                "limit": rates,
                "fair_limit": fair_rates,
                "stage_timers_us_per_frame": timers_us,
                "runs": [f.__dict__ for f in figures],
                "picked": [f.__dict__ for f in swept],
            },
            indent=2,
            default=str,
        )
    )
    print(f"plot: {plot}")
    vs_naive = streamd_top.throughput / naive_top.throughput
    # What any design could analyse: the cameras' demand, or the fair limit if lower.
    possible = min(fair_limit, top * args.fps)
    print(
        f"ratio_vs_naive={vs_naive:.2f} ratio_vs_limit={streamd_top.throughput / limit:.2f} "
        f"ratio_vs_fair_limit={streamd_top.throughput / fair_limit:.2f} "
        f"ratio_vs_possible={streamd_top.throughput / possible:.2f}"
    )
    if swept:
        best = max(swept, key=lambda run: run.throughput)
        ratio = streamd_top.throughput / best.throughput
        print(f"auto against the best hand-picked ({best.way}): auto_vs_best_picked={ratio:.2f}")
    return 0
