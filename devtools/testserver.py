"""`python -m devtools.testserver`: serve test videos over RTSP on loopback at their real
frame rate, looping (the demo cameras of `make run`, and the benchmarks')."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from devtools.testing.demo import demo_videos
from devtools.testing.rtsp import RtspTestServer, gstreamer_missing


def serve(args: argparse.Namespace) -> int:
    missing = gstreamer_missing()
    if missing:
        print(f"testserver: {missing}", file=sys.stderr)
        return 1

    mounts = {name: Path(path) for name, _, path in (m.partition("=") for m in args.mount)}
    if args.demo:
        mounts.update(demo_videos(args.demo, args.width, args.height, args.fps))
    if not mounts:
        print("testserver: give --demo N or --mount NAME=FILE.mkv", file=sys.stderr)
        return 2
    server = RtspTestServer(mounts, port=args.port, host=args.host)
    # Handlers that only set a flag (not a blocked mask and sigwait: a blocked mask is
    # inherited by the server child, which would then never see its stop signal).
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        for name in mounts:
            print(server.url(name), flush=True)
        while not stop.wait(1.0):
            if not server.running:
                print("testserver: the RTSP server exited", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.testserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--demo", type=int, default=0, metavar="N", help="serve N demo cameras cam1..camN")
    parser.add_argument("--mount", action="append", default=[], metavar="NAME=FILE.mkv")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=25)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
