"""The `streamd` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from streamd import __version__
from streamd.base.errors import StreamdError
from streamd.base.logs import setup_logging
from streamd.service.signals import EarlySignals

log = logging.getLogger("streamd")


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
    options = DaemonOptions(overrides, rate_log_interval_s=args.rate_log_interval, early_signals=_EARLY_SIGNALS)
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


def _add_gpu_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", default="1,8,32", help="concurrent NVDEC streams to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="decode time per measurement")
    parser.add_argument("--model", type=Path, default=None, help="YOLOv5-Face ONNX (default: the shared assets')")
    parser.add_argument("--photo", type=Path, default=None, help="a photo of faces for TensorRT (default: shared)")
    parser.add_argument("--work", type=Path, default=Path(".cache") / "gpu-check", help="the test clip and model")


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from streamd.service.gpu_check import run_checks

    return run_checks(args)


def _cmd_model_prepare(args: argparse.Namespace) -> int:
    from streamd.model.prepare import prepare_model

    result = prepare_model(args.source, args.output)
    print(
        f"{result.path}: canonical model from a {result.source_layout} source, input uint8 "
        f"[batch, {result.input_height}, {result.input_width}, 3], {result.candidates} candidates per image"
    )
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    import json

    from streamd.analysis.postprocess import PostprocessSettings
    from streamd.analysis.still_images import detect_images

    settings = PostprocessSettings(score_threshold=args.score, iou_threshold=args.iou, max_faces=args.max_faces)
    for record in detect_images(args.images, args.model, settings):
        print(json.dumps(record))
    return 0


def _cmd_calibrate_collect(args: argparse.Namespace) -> int:
    from streamd.calibration.collect import collect
    from streamd.config.loader import load_config

    config = load_config(args.config)
    entries = asyncio.run(collect(config, args.out, args.count, args.interval, args.held_out, args.timeout))
    print(f"{args.out}: {len(entries)} frames")
    return 0 if len(entries) == args.count else 1


def _cmd_calibrate_quantize(args: argparse.Namespace) -> int:
    from streamd.calibration.quantize import quantize

    frames = args.frames or [Path("calibration/frames")]
    used = quantize(args.model, frames, args.output, args.method, keep_sensitive_float=not args.all_int8)
    print(f"{args.output}: INT8 Q/DQ model calibrated on {used} frames ({args.method})")
    return 0


def _cmd_calibrate_crowd(args: argparse.Namespace) -> int:
    from streamd.calibration.crowd import write_crowd_frames, write_scene_frames

    write = write_scene_frames if args.scene else write_crowd_frames
    faces = (args.min_face, args.max_face)
    entries = write(args.model, args.images, args.out, args.count, args.held_out, args.seed, faces)
    kind = "crowd scenes" if args.scene else "crowd mosaics"
    print(f"{args.out}: {len(entries)} {kind}, faces {args.min_face:g} to {args.max_face:g} px in the model input")
    return 0


def _cmd_calibrate_choose(args: argparse.Namespace) -> int:
    from streamd.calibration.choose import choose

    best, _ = choose(args.model, args.frames, args.held_out, args.output, tuple(args.methods), args.threshold)
    print(f"{args.output}: {best.name} (recall {best.report.recall:.3f}, precision {best.report.precision:.3f})")
    print(best.report.text())
    return 0 if best.report.passed else 1


def _cmd_calibrate_report(args: argparse.Namespace) -> int:
    from streamd.calibration.report import compare

    report = compare(args.fp32, args.int8, args.frames, args.threshold)
    print(report.text())
    return 0 if report.passed else 1


def _cmd_engine_build(args: argparse.Namespace) -> int:
    import os

    from streamd.config.schema import default_engine_cache
    from streamd.engine.cache import EngineCache
    from streamd.engine.tensorrt_backend import Profile, build_engine

    cache = EngineCache(args.cache or default_engine_cache(Path.cwd(), os.environ))
    print(build_engine(args.model, Profile(args.min, args.opt, args.max), cache, force=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. A command's modules are imported when it runs, not here
    (`streamd --version` and `streamd check` load neither the daemon nor onnx)."""
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

    check = commands.add_parser("check", help="validate streams.yaml files; exit 1 listing every error")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also load the model, run a batch on every engine instance, open the sinks and bind the "
        "metrics listener (cameras are not opened)",
    )
    check.set_defaults(func=_cmd_check)

    gpu = commands.add_parser("gpu-check", help="prove the GPU path here: NVDEC, GPU letterbox, TensorRT, NVML")
    _add_gpu_check_arguments(gpu)
    gpu.set_defaults(func=_cmd_gpu_check)

    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help="convert a YOLOv5-Face ONNX (either layout) to the canonical model")
    prepare.add_argument("source", metavar="IN.onnx")
    prepare.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    prepare.set_defaults(func=_cmd_model_prepare)

    detect = commands.add_parser("detect", help="detect faces in still images; one JSON record per image on stdout")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--model", required=True, help="canonical model (streamd model prepare)")
    detect.add_argument("--score", type=float, default=0.3, help="score threshold (default: %(default)s)")
    detect.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (default: %(default)s)")
    detect.add_argument("--max-faces", type=int, default=300, help="faces per image at most (default: %(default)s)")
    detect.set_defaults(func=_cmd_detect)

    engine = commands.add_parser("engine", help="TensorRT engines").add_subparsers(dest="engine_command", required=True)
    build = engine.add_parser("build", help="build (or find cached) the TensorRT engine for a canonical or Q/DQ model")
    build.add_argument("model", type=Path, metavar="MODEL.onnx")
    build.add_argument(
        "--cache", type=Path, help="engine cache (default: $STATE_DIRECTORY/engines, else ./engines/cache)"
    )
    build.add_argument("--min", type=int, default=1)
    build.add_argument("--opt", type=int, default=16)
    build.add_argument("--max", type=int, default=32)
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.set_defaults(func=_cmd_engine_build)

    calibrate = commands.add_parser("calibrate", help="INT8: calibration frames, Q/DQ model, accuracy report")
    steps = calibrate.add_subparsers(dest="calibrate_command", required=True)
    collect = steps.add_parser("collect", help="take frames from the configured cameras, with a manifest")
    collect.add_argument("-c", "--config", default="streams.yaml")
    collect.add_argument("-o", "--out", type=Path, default=Path("calibration/frames"))
    collect.add_argument("-n", "--count", type=int, default=200, help="frames to keep (default: %(default)s)")
    collect.add_argument("--interval", type=float, default=2.0, help="seconds between frames of one camera")
    collect.add_argument("--held-out", type=float, default=0.2, help="share kept aside for the report")
    collect.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    collect.set_defaults(func=_cmd_calibrate_collect)
    quant = steps.add_parser("quantize", help="canonical model -> INT8 Q/DQ ONNX (TensorRT settings)")
    quant.add_argument("model", type=Path, metavar="CANONICAL.onnx")
    quant.add_argument(
        "--frames", type=Path, action="append", help="frames folder (repeat to combine; default calibration/frames)"
    )
    quant.add_argument("-o", "--output", type=Path, required=True, metavar="INT8.onnx")
    quant.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    quant.add_argument(
        "--all-int8", action="store_true", help="quantize the first and the head convolutions too (less accurate)"
    )
    quant.set_defaults(func=_cmd_calibrate_quantize)
    crowd = steps.add_parser("crowd", help="crowd mosaics or scenes of photos (small faces) with a manifest")
    crowd.add_argument("images", type=Path, nargs="+", metavar="PHOTO")
    crowd.add_argument("--model", type=Path, required=True, help="canonical model: measures the photos' faces")
    crowd.add_argument("-o", "--out", type=Path, required=True)
    crowd.add_argument("-n", "--count", type=int, default=40, help="frames (default: %(default)s)")
    crowd.add_argument("--held-out", type=float, default=1.0, help="share for the report (default: all)")
    crowd.add_argument("--seed", type=int, default=0, help="other seeds give other mosaics")
    crowd.add_argument("--min-face", type=float, default=10.0, help="smallest face, model-input pixels")
    crowd.add_argument("--max-face", type=float, default=30.0, help="largest face, model-input pixels")
    crowd.add_argument(
        "--scene", action="store_true", help="seamless 1920x1080 scenes of blended faces instead of mosaics"
    )
    crowd.set_defaults(func=_cmd_calibrate_crowd)
    pick = steps.add_parser(
        "choose", help="quantize with every method, with and without float layers; keep the best on held-out frames"
    )
    pick.add_argument("model", type=Path, metavar="MODEL.onnx")
    pick.add_argument("--frames", type=Path, action="append", required=True, help="calibration frames (repeat)")
    pick.add_argument(
        "--held-out", type=Path, action="append", required=True, help="folders whose held-out frames judge (repeat)"
    )
    pick.add_argument("-o", "--output", type=Path, required=True, metavar="INT8.onnx")
    pick.add_argument(
        "--methods", nargs="+", choices=["minmax", "percentile", "entropy"], default=["minmax", "percentile", "entropy"]
    )
    pick.add_argument("--threshold", type=float, default=0.95, help="recall and precision needed")
    pick.set_defaults(func=_cmd_calibrate_choose)
    report = steps.add_parser("report", help="INT8 against FP32 on the held-out frames; exit 1 on FAIL")
    report.add_argument("fp32", type=Path, metavar="FP32.onnx")
    report.add_argument("int8", type=Path, metavar="INT8.onnx")
    report.add_argument("--frames", type=Path, default=Path("calibration/frames"))
    report.add_argument("--threshold", type=float, default=0.95, help="recall and precision needed")
    report.set_defaults(func=_cmd_calibrate_report)

    return parser


_EARLY_SIGNALS = EarlySignals()


def main(argv: list[str] | None = None) -> int:
    if "run" in (sys.argv[1:] if argv is None else argv):
        _EARLY_SIGNALS.install()  # first thing: a signal during start-up must not kill the daemon
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
