"""`python -m devtools.bench files` (`make bench-files`): recorded video through
`streamd detect` against a naive loop and against the machine's limit, in one run.

(a) naive: one file at a time, one frame at a time: PyAV decodes (its default threads),
    frames are sampled, letterboxed and given to one ONNX Runtime session with default
    options, then post-processed; streamd's own sampler, letterbox and postprocess, so
    only the architecture differs.
(b) the limit, measured here: decoding alone (a thread per core, each decoding files,
    sampling and letterboxing as streamd's readers do) gives D analysed frames/s; the
    engine alone on ready letterboxed frames (the best arrangement of instances) gives E.
    Cores shared between the two sustain 1 / (1/D + 1/E) frames/s: each frame costs the
    machine 1/D seconds of decoding and 1/E of inference.
(c) streamd detect, in this process as the command line runs it, with 1, 2, 4 ... files
    in parallel; frames/s from its summary (the model's loading left out), and the CPU
    per analysed frame by thread role, sampled from /proc while it runs.

The run ends with `ratio_vs_naive=X ratio_vs_limit=Y` at the best parallelism.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from devtools.bench.detect import engine_limit
from devtools.bench.models import bench_model
from devtools.bench.thread_cpu import role_of
from devtools.testing.demo import CACHE_DIR, shared_image
from devtools.testing.video import VideoSpec, cached_video
from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.camera.sampler import FrameSampler
from streamd.frames.letterbox import letterbox


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=8, help="H.264 files in the folder")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each file")
    parser.add_argument("--size", default="1280x720", help="the files' picture size")
    parser.add_argument("--source-fps", type=int, default=25, help="the files' frame rate")
    parser.add_argument("--fps", type=float, default=5.0, help="analysis rate (streamd detect --fps)")
    parser.add_argument("--jobs", default="1,2,4,8", help="files in parallel to run streamd detect with")
    parser.add_argument("--model", type=Path, help="source or canonical model (default: the shared one)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where figures and the plot go")


class RoleSampler:
    """CPU seconds by thread role, read from /proc every `every_s` while it runs, so
    threads that end before the run does (the readers) still count, up to their last
    reading."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._base = self._read()

    def _read(self) -> dict[int, tuple[str, float]]:
        roles = {thread.native_id: role_of(thread.name) for thread in threading.enumerate()}
        ticks = os.sysconf("SC_CLK_TCK")
        found = {}
        for task in Path("/proc/self/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tid = int(task.name)
            found[tid] = (roles.get(tid, "native"), (int(fields[11]) + int(fields[12])) / ticks)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for tid, (role, seconds) in self._read().items():
                known = self._last.get(tid)
                # A thread named after its first reading keeps the role it was given then
                # unless that was the nameless `native`.
                self._last[tid] = (role if known is None or known[0] == "native" else known[0], seconds)

    def __enter__(self) -> RoleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for tid, (role, seconds) in self._read().items():
            self._last[tid] = (self._last.get(tid, (role, 0))[0], seconds)

    def by_role(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for tid, (role, seconds) in self._last.items():
            if role == "bench":
                continue
            before = self._base.get(tid, (role, 0.0))[1]
            spent[role] = spent.get(role, 0.0) + max(0.0, seconds - before)
        return spent


def _frames_of(path: Path, fps: float, threads: int) -> Any:
    """Sampled frames of `path`, decoded as streamd's readers do."""
    sampler = FrameSampler(fps)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is not None and sampler.take(frame.time):
                yield frame


def naive(files: list[Path], model: Path, fps: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])  # defaults, as naive code has
    settings = PostprocessSettings()
    done, started = 0, time.perf_counter()
    for path in files:
        sampler = FrameSampler(fps)
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if frame.time is None or not sampler.take(frame.time):
                    continue
                image, box = letterbox(frame, 640, 640)
                rows = session.run(["detections"], {"images": image[np.newaxis]})[0]
                postprocess(rows[0], box, settings)
                done += 1
    return done / (time.perf_counter() - started)


def decode_alone(files: list[Path], fps: float) -> float:
    """Analysed frames/s that decoding, sampling and letterboxing alone reach on every core."""
    cores = os.cpu_count() or 1
    queue = list(files)
    lock = threading.Lock()
    done = [0] * cores

    def work(index: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            for frame in _frames_of(path, fps, 1):
                letterbox(frame, 640, 640)
                done[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(cores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def streamd_detect(folder: Path, model: Path, fps: float, jobs: int) -> dict[str, Any]:
    """`streamd detect FOLDER -o OUT --fps F --jobs J` in this process; its summary and CPU."""
    from streamd.cli.main import main as streamd_main

    out = Path(tempfile.mkdtemp(prefix="bench-files-"))
    try:
        arguments = ["--log-level", "WARNING", "detect", str(folder), "-o", str(out), "--model", str(model)]
        arguments += ["--fps", str(fps), "--jobs", str(jobs), "--progress-interval", "3600"]
        with RoleSampler() as cpu:
            code = streamd_main(arguments)
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"streamd detect exited with {code}: {summary['errors']}")
    frames = max(1, summary["frames"])
    summary["cpu_ms_per_frame"] = {role: 1000 * s / frames for role, s in sorted(cpu.by_role().items())}
    return summary


def _plot(jobs: list[int], rates: list[float], limit: float, naive_rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(6.5, 4.2))
    axes.plot(jobs, rates, "o-", label="streamd detect")
    axes.axhline(limit, color="grey", linestyle=":", label="limit (decode and engine sharing the cores)")
    axes.axhline(naive_rate, color="tab:red", linestyle="--", label="naive loop")
    axes.set(xlabel="files in parallel (--jobs)", ylabel="analysed frames/s", title="Recorded video", xscale="log")
    axes.set_xticks(jobs, [str(j) for j in jobs])
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args: argparse.Namespace) -> int:
    model = bench_model("files", args.model, args.out)
    if model is None:
        return 2
    width, height = (int(x) for x in args.size.split("x"))
    photos = [shared_image(name) for name in ("group9.jpg", "two_people.jpg", "street_bus.jpg")]
    folder = Path(tempfile.mkdtemp(prefix="bench-files-in-"))
    try:
        for index in range(args.files):
            photo = photos[index % len(photos)]
            spec = VideoSpec(width, height, args.source_fps, args.seconds, str(photo) if photo else None, 2500)
            # Copies, not links: inputs that resolve to one file are read once.
            shutil.copy(cached_video(spec, CACHE_DIR), folder / f"clip{index:02d}.mkv")
        files = sorted(folder.iterdir())
        print(f"{len(files)} files of {args.size} at {args.source_fps} fps, {args.seconds:g}s each, analysed at "
              f"{args.fps:g} fps, on {os.cpu_count()} cores")  # fmt: skip
        first = next(_frames_of(files[0], args.fps, 1))
        decode = decode_alone(files, args.fps)
        # The engine alone at batch 1 (streamd's on a CPU), both arrangements of instances.
        engines = engine_limit(model, 1, first)
        engine = max(engines.values())
        limit = 1 / (1 / decode + 1 / engine)
        print(f"decode alone: {decode:.1f} frames/s; engine alone: "
              + "; ".join(f"{k} {r:.1f}" for k, r in engines.items()))  # fmt: skip
        print(f"limit: {limit:.1f} frames/s (1 / (1/{decode:.1f} + 1/{engine:.1f}))")
        naive_rate = naive(files[:2], model, args.fps)
        print(f"naive: {naive_rate:.1f} frames/s (one file, one frame at a time)")
        jobs = [int(j) for j in args.jobs.split(",")]
        runs = []
        for count in jobs:
            summary = streamd_detect(folder, model, args.fps, count)
            runs.append(summary)
            cpu = ", ".join(f"{role} {ms:.1f}" for role, ms in summary["cpu_ms_per_frame"].items())
            print(f"streamd jobs={count}: {summary['frames_per_s']:.1f} frames/s ({summary['frames']} frames, "
                  f"{summary['faces']} faces); CPU ms per frame: {cpu}")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rates = [run["frames_per_s"] for run in runs]
    best = max(range(len(jobs)), key=rates.__getitem__)
    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "bench-files.png"
    _plot(jobs, rates, limit, naive_rate, plot)
    figures = {
        "decode": decode,
        "engine": engines,
        "limit": limit,
        "naive": naive_rate,
        "runs": dict(zip(jobs, runs, strict=True)),
    }
    (args.out / "bench-files.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"plot: {plot}")
    # The most any design could gain over the naive loop on this machine: limit / naive.
    print(f"best at jobs={jobs[best]}: ratio_vs_naive={rates[best] / naive_rate:.2f} "
          f"ratio_vs_limit={rates[best] / limit:.2f} limit_vs_naive={limit / naive_rate:.2f}")  # fmt: skip
    return 0
