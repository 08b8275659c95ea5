"""`streamd model prepare`: any YOLOv5-Face ONNX to the canonical model."""

from __future__ import annotations

import argparse

from streamd.cli.commands import Commands


def _cmd_prepare(args: argparse.Namespace) -> int:
    from streamd.model.prepare import prepare_model

    result = prepare_model(args.source, args.output)
    print(
        f"{result.path}: canonical model from a {result.source_layout} source, input uint8 "
        f"[batch, {result.input_height}, {result.input_width}, 3], {result.candidates} candidates per image"
    )
    return 0


def add_to(commands: Commands) -> None:
    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help="convert a YOLOv5-Face ONNX (either layout) to the canonical model")
    prepare.add_argument("source", metavar="IN.onnx")
    prepare.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    prepare.set_defaults(func=_cmd_prepare)
