"""`streamd check FILE...`: validate configurations (`--deep`: load and try what they name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamd.cli.commands import Commands


def _cmd_check(args: argparse.Namespace) -> int:
    from streamd.base.errors import InputError
    from streamd.config.loader import ConfigError, load_config

    if args.hardware:
        return _hardware(args)
    if args.json:
        raise InputError("--json goes with --hardware")
    if not args.files:
        raise InputError("name the configuration files to check (or --hardware)")
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


def _hardware(args: argparse.Namespace) -> int:
    """What this machine gives, and for each FILE what `auto` chooses on it."""
    import json

    from streamd.config.loader import load_config
    from streamd.machine.auto import engine_choices
    from streamd.machine.hardware import detect_machine

    machine = detect_machine()
    # The GPU rules where a GPU and a GPU engine are both there; else the CPU's.
    on_gpu = bool(machine.gpus.gpus) and any(
        name.startswith(("tensorrt", "onnxruntime-gpu")) for name in machine.packages
    )
    chosen: dict[str, list[dict[str, object]]] = {}
    for path in args.files:
        config = load_config(path)
        engine, batch = config.engine, config.batcher.max_batch
        choices = engine_choices(
            machine,
            on_gpu,
            len(config.cameras_to_run),
            None if engine is None or engine.instances == "auto" else engine.instances,
            None if engine is None or engine.threads == "auto" else engine.threads,
            None if batch == "auto" else batch,
        )
        chosen[path] = [choice.as_dict() for choice in choices.all()]
    if args.json:
        print(json.dumps({"machine": machine.as_dict(), "engine_on_gpu": on_gpu, "auto": chosen}, indent=1))
        return 0
    rows = machine.table()
    width = max(len(what) for what, _ in rows)
    for what, found in rows:
        print(f"{what:<{width}}  {found}")
    for path, settings in chosen.items():
        where = "on the GPU" if on_gpu else "on the CPU"
        print(f"\n{path} ({where}; the measured cost of the model is applied at start):")
        for choice in settings:
            how = f"auto: {choice['why']}" if choice["auto"] else "set in the file"
            print(f"  {choice['knob']}={choice['value']}  ({how})")
    return 0


def add_to(commands: Commands) -> None:
    check = commands.add_parser("check", help="validate streams.yaml files; exit 1 listing every error")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.add_argument(
        "--hardware",
        action="store_true",
        help="print the usable cores, memory, GPUs and inference packages, and for each FILE what auto chooses",
    )
    check.add_argument("--json", action="store_true", help="with --hardware: as JSON")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also load the model, run a batch on every engine instance, open the sinks and bind the "
        "metrics listener (cameras are not opened)",
    )
    check.set_defaults(func=_cmd_check)
