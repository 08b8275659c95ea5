"""`python -m devtools.bench NAME ...`: the benchmarks (not tests); each is a module here
with add_arguments() and main(), imported only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from streamd.base.logs import setup_logging

BENCHES = {
    "ingest": "decode rate per core and streamd's ingest against it",
    "detect": "detection throughput: engine alone, streamd, naive",
    "overload": "a real overload shared between cameras and priorities",
    "scale": "orchestration cost per frame and event-loop lag at 50 to 400 cameras",
    "memory": "resident memory per 1080p camera at 10 and 20 cameras, streamd against PyAV alone",
    "soak": "N real cameras through a real daemon for M minutes: memory, open files, records",
    "reload-soak": "reload storms one after another: memory by kind after each, leak or allocator slack",
    "tracks": "tracking on clips of moving faces with ground truth: switches, coverage, events, CPU",
    "recognition": "the second stage: faces from many cameras in batches against one at a time",
    "files": "recorded video through streamd detect against a naive loop and the machine's limit",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    benches = parser.add_subparsers(dest="bench", required=True)
    wanted = next((word for word in argv if word in BENCHES), None)
    for name, help_text in BENCHES.items():
        command = benches.add_parser(name, help=help_text)
        if name == wanted:
            bench = importlib.import_module(f"devtools.bench.{name.replace('-', '_')}")
            bench.add_arguments(command)
            command.set_defaults(func=bench.main)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "text")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
