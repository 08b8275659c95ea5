"""`streamd detect INPUT...`: faces in recorded video and still images, as fast as the
machine allows, through the daemon's batcher, engine, postprocess and tracks."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from streamd.base.errors import InputError
from streamd.cli.commands import Commands, options_as

_DEFAULT_CONFIG = "streams.yaml"


def _cmd_detect(args: argparse.Namespace) -> int:
    import asyncio

    from streamd.machine.limits import read_limits
    from streamd.recorded.inputs import expand, plan
    from streamd.recorded.job import DetectJob, JobOptions
    from streamd.recorded.progress import choose

    if not args.inputs and not args.list:
        raise InputError("name at least one video, image, folder or glob (or --list FILE)")
    if args.out is None and (args.resume or args.json_progress):
        raise InputError("--resume and --json-progress need -o/--out (the manifest and stdout are theirs)")
    streams, engine, fps = _configuration(args)
    inputs = plan(expand(args.inputs, args.list), fps)
    options = JobOptions(
        Path(args.out) if args.out is not None else None,
        fps,
        args.jobs or read_limits().cores,
        args.resume,
        args.progress_interval,
    )
    job = DetectJob(streams, engine, inputs, options, choose(args.json_progress))

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, job.stop, signal.Signals(signum).name)
        return await job.run()

    summary = asyncio.run(run())
    if job.stop_reason is not None:
        return 128 + signal.Signals[job.stop_reason].value
    return 1 if summary["failed"] else 0


def _configuration(args: argparse.Namespace) -> tuple[Any, Any, float | None]:
    """The configuration (`-c`, else ./streams.yaml when there is one, else the defaults)
    with the command line's model, thresholds and rate over it: the settings, the engine's,
    and the analysis rate (None: every frame)."""
    from streamd.config.loader import read_config
    from streamd.config.schema import CameraSettings, EngineConfig, PostprocessConfig, StreamsConfig

    # The options' own rules first: a wrong one is named before any file is read.
    given = _given({"score_threshold": args.score, "iou_threshold": args.iou, "max_faces": args.max_faces})
    options_as(PostprocessConfig, given)
    if args.fps is not None:
        options_as(CameraSettings, {"fps": args.fps})
    # A model given on the command line is the one used: the file's need not exist.
    if args.model is not None and not Path(args.model).is_file():
        raise InputError(f"--model {args.model}: no such file (streamd model prepare makes one)")
    model = {("engine", "model"): str(Path(args.model).absolute())} if args.model is not None else None
    path = args.config or (_DEFAULT_CONFIG if Path(_DEFAULT_CONFIG).exists() else None)
    if path is not None:
        streams = read_config(path, given=model).config
    else:
        streams = StreamsConfig.model_validate({"cameras": []})
    post = options_as(PostprocessConfig, streams.postprocess.model_dump() | given)
    fps = None if args.all_frames else (args.fps if args.fps is not None else streams.defaults.fps)
    engine = streams.engine
    if args.model is not None:
        engine = (engine or EngineConfig(model=args.model)).model_copy(update={"model": args.model})
    if engine is None:
        where = f"{path} has no `engine` section" if path is not None else f"no {_DEFAULT_CONFIG} here"
        raise InputError(f"no model: {where}; give --model (streamd model prepare makes one) or -c FILE")
    if not Path(engine.model).exists():
        raise InputError(f"the model {engine.model} does not exist (make run prepares the demo one)")
    return streams.model_copy(update={"postprocess": post}), engine, fps


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def add_to(commands: Commands) -> None:
    detect = commands.add_parser(
        "detect",
        help="detect faces in videos and images: one JSON Lines file per input (or records on stdout)",
        description="Videos, images, folders and globs through the daemon's engine and tracks, as fast as "
        "the machine allows. With -o: DIR/NAME.jsonl per input, DIR/manifest.json, DIR/summary.json, "
        "best faces under DIR/crops. Exit status: 0 all done, 1 some input failed, 128+N stopped by signal N.",
    )
    detect.add_argument("inputs", nargs="*", metavar="INPUT", help="video or image file, folder, or glob")
    detect.add_argument("--list", action="append", default=[], metavar="FILE", help="a file naming inputs, one a line")
    detect.add_argument("-o", "--out", metavar="DIR", help="output folder (default: records on stdout)")
    detect.add_argument("-c", "--config", help=f"settings from this file (default: ./{_DEFAULT_CONFIG} if present)")
    detect.add_argument("--model", help="canonical model (default: the config's engine.model)")
    rate = detect.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="analysis rate on the video's clock (default: the cameras' default)")
    rate.add_argument("--all-frames", action="store_true", help="analyse every frame")
    detect.add_argument("--jobs", type=int, default=0, help="inputs decoded at once (default: one per usable core)")
    detect.add_argument("--resume", action="store_true", help="skip inputs the manifest in --out says are done")
    detect.add_argument("--json-progress", action="store_true", help="progress as JSON lines on stdout")
    detect.add_argument(
        "--progress-interval", type=float, default=10.0, metavar="S", help="seconds between progress reports"
    )
    # Defaults (None here): the configuration's `postprocess` section's.
    detect.add_argument("--score", type=float, help="score threshold (default: postprocess.score_threshold's)")
    detect.add_argument("--iou", type=float, help="NMS IoU threshold (default: postprocess.iou_threshold's)")
    detect.add_argument("--max-faces", type=int, help="faces per image at most (default: postprocess.max_faces')")
    detect.set_defaults(func=_cmd_detect)
