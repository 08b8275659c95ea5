"""`streamd calibrate ...`: INT8 calibration frames, the Q/DQ model and its accuracy report."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from streamd.cli.commands import Commands


def _cmd_collect(args: argparse.Namespace) -> int:
    from streamd.calibration.collect import collect
    from streamd.config.loader import load_config

    config = load_config(args.config)
    entries = asyncio.run(collect(config, args.out, args.count, args.interval, args.held_out, args.timeout))
    print(f"{args.out}: {len(entries)} frames")
    return 0 if len(entries) == args.count else 1


def _cmd_quantize(args: argparse.Namespace) -> int:
    from streamd.calibration.quantize import quantize

    frames = args.frames or [Path("calibration/frames")]
    used = quantize(args.model, frames, args.output, args.method, keep_sensitive_float=not args.all_int8)
    print(f"{args.output}: INT8 Q/DQ model calibrated on {used} frames ({args.method})")
    return 0


def _cmd_crowd(args: argparse.Namespace) -> int:
    from streamd.calibration.crowd import write_crowd_frames, write_scene_frames

    write = write_scene_frames if args.scene else write_crowd_frames
    faces = (args.min_face, args.max_face)
    entries = write(args.model, args.images, args.out, args.count, args.held_out, args.seed, faces)
    kind = "crowd scenes" if args.scene else "crowd mosaics"
    print(f"{args.out}: {len(entries)} {kind}, faces {args.min_face:g} to {args.max_face:g} px in the model input")
    return 0


def _cmd_choose(args: argparse.Namespace) -> int:
    from streamd.calibration.choose import choose

    best, _ = choose(args.model, args.frames, args.held_out, args.output, tuple(args.methods), args.threshold)
    print(f"{args.output}: {best.name} (recall {best.report.recall:.3f}, precision {best.report.precision:.3f})")
    print(best.report.text())
    return 0 if best.report.passed else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from streamd.calibration.report import compare

    report = compare(args.fp32, args.int8, args.frames, args.threshold)
    print(report.text())
    return 0 if report.passed else 1


def add_to(commands: Commands) -> None:
    calibrate = commands.add_parser("calibrate", help="INT8: calibration frames, Q/DQ model, accuracy report")
    steps = calibrate.add_subparsers(dest="calibrate_command", required=True)
    collect = steps.add_parser("collect", help="take frames from the configured cameras, with a manifest")
    collect.add_argument("-c", "--config", default="streams.yaml")
    collect.add_argument("-o", "--out", type=Path, default=Path("calibration/frames"))
    collect.add_argument("-n", "--count", type=int, default=200, help="frames to keep (default: %(default)s)")
    collect.add_argument("--interval", type=float, default=2.0, help="seconds between frames of one camera")
    collect.add_argument("--held-out", type=float, default=0.2, help="share kept aside for the report")
    collect.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    collect.set_defaults(func=_cmd_collect)
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
    quant.set_defaults(func=_cmd_quantize)
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
    crowd.set_defaults(func=_cmd_crowd)
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
    pick.set_defaults(func=_cmd_choose)
    report = steps.add_parser("report", help="INT8 against FP32 on the held-out frames; exit 1 on FAIL")
    report.add_argument("fp32", type=Path, metavar="FP32.onnx")
    report.add_argument("int8", type=Path, metavar="INT8.onnx")
    report.add_argument("--frames", type=Path, default=Path("calibration/frames"))
    report.add_argument("--threshold", type=float, default=0.95, help="recall and precision needed")
    report.set_defaults(func=_cmd_report)
