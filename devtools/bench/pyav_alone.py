"""PyAV alone on N RTSP cameras: the floor `python -m devtools.bench memory` compares the daemon with.

Run as its own process by the memory bench: one thread per camera opens the stream
(TCP, one decoding thread, as streamd does), decodes every frame and letterboxes the
frames sampled at the analysis rate, keeping only the last; nothing else. It prints
one JSON line of its resident memory (`cameras`, `total`, `by_kind`) once settled with
no cameras, then after adding each group of cameras, and exits after the last.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import av

from devtools.bench.memory import settled_resident
from streamd.camera.sampler import FrameSampler
from streamd.frames.letterbox import letterbox


def decode_camera(url: str, fps: float, stop: threading.Event) -> None:
    last: Any = None
    sampler = FrameSampler(fps)
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10.0, 10.0)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            if stop.is_set():
                return
            if frame.time is not None and sampler.take(frame.time):
                last = letterbox(frame, 640, 640)
    del last


def _report(cameras: int, settle_s: float, measure_s: float) -> None:
    resident = settled_resident(None, settle_s, measure_s)
    print(json.dumps({"cameras": cameras, "total": resident.total, "by_kind": resident.by_kind}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyav_alone")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--counts", default="10,20", help="cameras open at each reading")
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--measure", type=float, default=10.0)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args(argv)
    stop = threading.Event()
    _report(0, 2.0, args.measure)
    threads: list[threading.Thread] = []
    for count in (int(c) for c in args.counts.split(",")):
        for url in args.urls[len(threads) : count]:
            threads.append(threading.Thread(target=decode_camera, args=(url, args.fps, stop), daemon=True))
            threads[-1].start()
        _report(count, args.settle, args.measure)
    # Joined before exit: an interpreter that finalises while threads are inside FFmpeg
    # crashes (SIGSEGV).
    stop.set()
    for thread in threads:
        thread.join(timeout=30.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
