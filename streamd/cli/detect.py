"""`streamd detect IMAGE...`: faces in still images, one JSON record per image."""

from __future__ import annotations

import argparse

from streamd.cli.commands import Commands, options_as


def _cmd_detect(args: argparse.Namespace) -> int:
    import json

    from streamd.analysis.postprocess import PostprocessSettings
    from streamd.analysis.still_images import detect_images
    from streamd.config.schema import PostprocessConfig

    given = {"score_threshold": args.score, "iou_threshold": args.iou, "max_faces": args.max_faces}
    settings = PostprocessSettings.of(options_as(PostprocessConfig, given))
    for record in detect_images(args.images, args.model, settings):
        print(json.dumps(record))
    return 0


def add_to(commands: Commands) -> None:
    detect = commands.add_parser("detect", help="detect faces in still images; one JSON record per image on stdout")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--model", required=True, help="canonical model (streamd model prepare)")
    # Defaults (None here): the `postprocess` section's, written once in the config models.
    detect.add_argument("--score", type=float, help="score threshold (default: postprocess.score_threshold's)")
    detect.add_argument("--iou", type=float, help="NMS IoU threshold (default: postprocess.iou_threshold's)")
    detect.add_argument("--max-faces", type=int, help="faces per image at most (default: postprocess.max_faces')")
    detect.set_defaults(func=_cmd_detect)
