"""`python -m devtools.bench reload-soak` (`make soak-reload`): reload storms, one after another:
does memory grow because something leaks, or is it the allocator's slack?

A daemon in this process (the `Daemon` that `streamd run` builds, on a streams.yaml
file) runs cameras replaying a local clip, with the engine when a model is given. Each
storm is a burst of edits of the file, each applied through `Daemon.reload` as the
watcher does once a save settles: a camera added or removed, another's fps changed, so
cameras start and stop. After each storm the cameras settle, garbage is collected and
it records resident memory, what Python itself holds (tracemalloc), threads and open
files; then glibc is asked to give free memory back (`malloc_trim(0)`) and resident
memory is read again.

A leak rises storm after storm in Python's allocations or in resident memory after the
trim; allocator slack rises before the trim and falls back after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import tempfile
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

from devtools.testing.demo import CACHE_DIR
from devtools.testing.video import VideoSpec, cached_video
from streamd.base.memory import rss_bytes
from streamd.config.loader import read_config
from streamd.service.daemon import Daemon, DaemonOptions

_MB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cameras", type=int, default=6, help="cameras always running (default: %(default)s)")
    parser.add_argument("--storms", type=int, default=20, help="reload storms (default: %(default)s)")
    parser.add_argument("--edits", type=int, default=30, help="edits per storm (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=None, help="canonical model: run the detector too")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where reload-soak.json goes")


@dataclass
class Storm:
    storm: int
    rss_mb: float
    rss_trimmed_mb: float
    python_mb: float
    threads: int
    open_files: int


def _streams(clip: Path, cameras: int, edit: int, model: Path | None) -> str:
    """The file after edit number `edit`: the base cameras (one with a changing fps) and a
    guest camera present on every other edit."""
    engine = f"engine: {{model: '{model.resolve()}', threads: 1}}\n" if model else ""
    lines = [f"  - {{id: cam{i}, url: '{clip}', fps: {2 if i else 1 + edit % 3}}}\n" for i in range(cameras)]
    if edit % 2:
        lines.append(f"  - {{id: guest, url: '{clip}', fps: 2}}\n")
    head = f"metrics: {{listen: '127.0.0.1:9108'}}\n{engine}sinks: [{{path: '{os.devnull}'}}]\n"
    return head + "cameras:\n" + "".join(lines)


def _malloc_trim() -> None:
    # Not glibc: nothing to trim, and the trimmed figure is the untrimmed one.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _sample(storm: int) -> Storm:
    gc.collect()
    rss = (rss_bytes() or 0) / _MB
    _malloc_trim()
    return Storm(
        storm=storm,
        rss_mb=round(rss, 1),
        rss_trimmed_mb=round((rss_bytes() or 0) / _MB, 1),
        python_mb=round(tracemalloc.get_traced_memory()[0] / _MB, 2),
        threads=threading.active_count(),
        open_files=len(os.listdir("/proc/self/fd")),
    )


async def _soak(args: argparse.Namespace, path: Path, clip: Path) -> list[Storm]:
    path.write_text(_streams(clip, args.cameras, 0, args.model))
    options = DaemonOptions(metrics_port=0, rate_log_interval_s=3600, watch_config=False)
    daemon = Daemon(read_config(path), options)
    await daemon.start()
    samples: list[Storm] = []
    try:
        await asyncio.sleep(3)
        samples.append(_sample(0))
        print(_line(samples[-1], samples[0]), flush=True)
        edit = 0
        for storm in range(1, args.storms + 1):
            for _ in range(args.edits):
                edit += 1
                path.write_text(_streams(clip, args.cameras, edit, args.model))
                result = await daemon.reload("bench")
                if result not in ("applied", "unchanged"):
                    raise SystemExit(f"reload {edit} was {result}")
            await asyncio.sleep(3)  # the cameras started by the storm settle
            samples.append(_sample(storm))
            print(_line(samples[-1], samples[0]), flush=True)
    finally:
        await daemon.stop()
    return samples


def _line(sample: Storm, first: Storm) -> str:
    return (
        f"storm {sample.storm:3d}: resident {sample.rss_mb:7.1f} MB ({sample.rss_mb - first.rss_mb:+6.1f}), "
        f"after malloc_trim {sample.rss_trimmed_mb:7.1f} MB ({sample.rss_trimmed_mb - first.rss_trimmed_mb:+6.1f}), "
        f"Python {sample.python_mb:6.2f} MB ({sample.python_mb - first.python_mb:+5.2f}), "
        f"threads {sample.threads}, open files {sample.open_files}"
    )


def _slope(values: list[float]) -> float:
    """Least-squares rise per storm."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    spread = sum((x - mean_x) ** 2 for x in range(n)) or 1.0
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread


def main(args: argparse.Namespace) -> int:
    clip = cached_video(VideoSpec(width=640, height=360, fps=10, seconds=4), CACHE_DIR)
    tracemalloc.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="streamd-reload-soak-") as scratch:
        samples = asyncio.run(_soak(args, Path(scratch) / "streams.yaml", clip))
    later = samples[1:]  # the first storm warms caches up (imports, pools, arenas)
    summary = {
        "storms": args.storms,
        "edits_per_storm": args.edits,
        "cameras": args.cameras,
        "detector": args.model is not None,
        "seconds": round(time.monotonic() - started, 1),
        "mb_per_storm": {
            "resident": round(_slope([s.rss_mb for s in later]), 3),
            "resident_after_trim": round(_slope([s.rss_trimmed_mb for s in later]), 3),
            "python": round(_slope([s.python_mb for s in later]), 4),
        },
        "threads": sorted({s.threads for s in samples}),
        "open_files": sorted({s.open_files for s in samples}),
        "samples": [asdict(s) for s in samples],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reload-soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    rise = summary["mb_per_storm"]
    print(
        f"per storm of {args.edits} edits (storms 1-{args.storms}): resident {rise['resident']:+.2f} MB, "
        f"after malloc_trim {rise['resident_after_trim']:+.2f} MB, Python {rise['python']:+.3f} MB; "
        f"threads {summary['threads']}, open files {summary['open_files']}"
    )
    return 0
