"""The `streamd` command line: one parser, one module per command, one error handler."""

from __future__ import annotations

import argparse
import sys

from streamd import __version__
from streamd.base.errors import StreamdError
from streamd.base.logs import setup_logging
from streamd.cli import calibrate, check, detect, engine, faces, gpu_check, model, run


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command's module adds its own parser. A command's
    working modules are imported when it runs, not here (`streamd --version` and
    `streamd check` load neither the daemon nor onnx)."""
    parser = argparse.ArgumentParser(prog="streamd", description="Real-time multi-camera face detection daemon.")
    parser.add_argument("--version", action="version", version=f"streamd {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "text", "json"],
        help="json lines for journald; auto: json when systemd connects stderr to the journal",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (run, check, gpu_check, model, detect, engine, calibrate, faces):
        command.add_to(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    if "run" in (sys.argv[1:] if argv is None else argv):
        run.EARLY_SIGNALS.install()  # first thing: a signal during start-up must not kill the daemon
    from streamd.base.dependencies import pyav_problem

    # Before any command imports PyAV: an old one is named, not a traceback.
    problem = pyav_problem()
    if problem is not None:
        print(f"streamd: {problem}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except StreamdError as error:
        # What streamd says is wrong, said as it is; anything else is a bug: a traceback.
        for line in error.lines():
            print(f"streamd {_command_of(args)}: {line}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a file or device the command was given
        print(f"streamd {_command_of(args)}: {describe_os_error(error)}", file=sys.stderr)
        return 1


def _command_of(args: argparse.Namespace) -> str:
    words = [args.command, getattr(args, f"{args.command}_command", None)]
    return " ".join(word for word in words if isinstance(word, str))


def describe_os_error(error: OSError) -> str:
    """'FILE: No such file or directory' rather than '[Errno 2] No such file or directory: FILE'."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason
