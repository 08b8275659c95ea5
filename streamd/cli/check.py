"""`streamd check FILE...`: validate configurations (`--deep`: load and try what they name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamd.cli.commands import Commands


def _cmd_check(args: argparse.Namespace) -> int:
    from streamd.config.loader import ConfigError, load_config

    failed = False
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as error:
            failed = True
            for problem in error.errors:
                print(problem, file=sys.stderr)
            print(f"{path}: {len(error.errors)} error(s)", file=sys.stderr)
            continue
        if args.deep:
            from streamd.service.deep_check import deep_check

            result = deep_check(config, Path(path))
            for note in result.notes:
                print(f"{path}: {note}")
            for deep_problem in result.problems:
                print(f"{path} {deep_problem}", file=sys.stderr)
            if result.problems:
                failed = True
                print(f"{path}: {len(result.problems)} error(s)", file=sys.stderr)
                continue
        enabled = len(config.enabled_cameras)
        shard = config.this_shard
        in_shard = f", {len(config.cameras_to_run)} in shard {shard}" if shard.count > 1 else ""
        print(f"{path}: OK, {len(config.cameras)} camera(s), {enabled} enabled{in_shard}")
    return 1 if failed else 0


def add_to(commands: Commands) -> None:
    check = commands.add_parser("check", help="validate streams.yaml files; exit 1 listing every error")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also load the model, run a batch on every engine instance, open the sinks and bind the "
        "metrics listener (cameras are not opened)",
    )
    check.set_defaults(func=_cmd_check)
