"""`streamd engine build`: build (or find cached) a TensorRT engine ahead of the daemon."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamd.cli.commands import Commands, options_as


def _cmd_build(args: argparse.Namespace) -> int:
    import os

    from streamd.config.schema import BatchProfileConfig, default_engine_cache
    from streamd.engine.cache import EngineCache
    from streamd.engine.tensorrt_backend import Profile, build_engine
    from streamd.machine.auto import batch_for_cameras

    cache = EngineCache(args.cache or default_engine_cache(Path.cwd(), os.environ))
    profile = options_as(BatchProfileConfig, {"min": args.min, "opt": args.opt, "max": args.max})
    # Without --opt: the daemon's `auto` batch for --cameras on a GPU (a frame of each, a
    # power of two, at most 32), so the daemon finds this engine in the cache.
    opt = profile.optimize_for(batch_for_cameras(args.cameras))
    print(build_engine(args.model, Profile(profile.min, opt, profile.max), cache, force=args.force))
    return 0


def add_to(commands: Commands) -> None:
    engine = commands.add_parser("engine", help="TensorRT engines").add_subparsers(dest="engine_command", required=True)
    build = engine.add_parser("build", help="build (or find cached) the TensorRT engine for a canonical or Q/DQ model")
    build.add_argument("model", type=Path, metavar="MODEL.onnx")
    build.add_argument(
        "--cache", type=Path, help="engine cache (default: $STATE_DIRECTORY/engines, else ./engines/cache)"
    )
    build.add_argument("--min", type=int, help="smallest batch (default: engine.profile.min's)")
    build.add_argument("--opt", type=int, help="batch optimized for (default: the daemon's auto batch for --cameras)")
    build.add_argument("--cameras", type=int, default=8, help="cameras the daemon will run (default: 8)")
    build.add_argument("--max", type=int, help="largest batch (default: engine.profile.max's)")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.set_defaults(func=_cmd_build)
