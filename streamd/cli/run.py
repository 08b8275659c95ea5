"""`streamd run`: the daemon in the foreground, as systemd runs it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from streamd.cli.commands import Commands
from streamd.service.signals import EarlySignals

log = logging.getLogger("streamd")

EARLY_SIGNALS = EarlySignals()
"""Installed by `main` first thing, before the daemon's modules load: a stop signal then is kept, not fatal."""


def _cmd_run(args: argparse.Namespace) -> int:
    from streamd.base.tasks import event_loop_factory
    from streamd.config.loader import ConfigError, read_config
    from streamd.config.schema import Overrides
    from streamd.engine.base import EngineError
    from streamd.monitor.web_config import WebConfigError
    from streamd.service.daemon import Daemon, DaemonOptions

    path = Path(args.config)
    try:
        overrides = Overrides(shard=args.shard, metrics_listen=args.metrics_listen)
        loaded = read_config(path)
    except ValueError as error:
        log.error("%s", error)
        return 2
    except ConfigError as error:
        for problem in error.errors:
            log.error("%s", problem)
        return 2
    options = DaemonOptions(overrides, rate_log_interval_s=args.rate_log_interval, early_signals=EARLY_SIGNALS)
    daemon = Daemon(loaded, options)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            code = runner.run(daemon.run())
    except (OSError, EngineError, WebConfigError) as error:
        # An OSError's own text is "[Errno 98] ..."; its strerror is the sentence.
        log.error("cannot start: %s", getattr(error, "strerror", None) or error)
        code = 1
    _exit_past_left_threads(code)
    return code


def _exit_past_left_threads(code: int) -> None:
    """Exit now, without the interpreter's teardown, if a thread was left behind.

    A stop abandons threads that cannot be interrupted: a model load or warm-up inside
    ONNX Runtime, a camera blocked connecting inside FFmpeg. The interpreter's normal
    exit runs the native libraries' static destructors under them, and ONNX Runtime
    then aborts the process (measured: SIGABRT, "terminate called without an active
    exception"), turning a clean stop into a crash. Everything of ours has stopped and
    been flushed by now; only the log streams are left to flush.
    """
    import os
    import threading

    if threading.active_count() > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def add_to(commands: Commands) -> None:
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default="streams.yaml", help="streams.yaml to load (default: %(default)s)")
    run.add_argument("--rate-log-interval", type=float, default=10.0, help="seconds between per-camera rate lines")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the cameras of shard I of N (0 <= I < N), so N instances share one file "
        "(overrides the file's `shard`)",
    )
    run.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="the metrics listener of this instance (overrides `metrics.listen`)",
    )
    run.set_defaults(func=_cmd_run)
