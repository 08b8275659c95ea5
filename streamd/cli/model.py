"""`streamd model prepare`: any YOLOv5-Face ONNX to the canonical model;
`streamd model embedder [MODEL.onnx]`: check and describe a face embedder."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamd.cli.commands import Commands


def _cmd_prepare(args: argparse.Namespace) -> int:
    from streamd.model.prepare import prepare_model

    result = prepare_model(args.source, args.output)
    print(
        f"{result.path}: canonical model from a {result.source_layout} source, input uint8 "
        f"[batch, {result.input_height}, {result.input_width}, 3], {result.candidates} candidates per image"
    )
    return 0


def _cmd_embedder(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from streamd.frames.face_crop import ARCFACE_TEMPLATE, CHIP_SIZE, FaceCrop
    from streamd.recognition.embedders import make_embedder

    embedder = make_embedder("onnx" if args.model else "dlib", args.model)
    # A grey chip with the template's landmarks: it runs the model, whatever it sees.
    chip = FaceCrop(
        np.full((CHIP_SIZE, CHIP_SIZE, 3), 128, np.uint8), ARCFACE_TEMPLATE.copy(), np.array([16.0, 16, 96, 104])
    )
    started = time.perf_counter()
    vector = embedder.embed([chip])[0]
    took = time.perf_counter() - started
    print(
        f"{embedder.name}: {vector.shape[0]}-d embeddings, threshold {embedder.threshold:g}, "
        f"one face in {took * 1000:.0f} ms here"
    )
    return 0


def add_to(commands: Commands) -> None:
    model = commands.add_parser("model", help="model tools").add_subparsers(dest="model_command", required=True)
    prepare = model.add_parser("prepare", help="convert a YOLOv5-Face ONNX (either layout) to the canonical model")
    prepare.add_argument("source", metavar="IN.onnx")
    prepare.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    prepare.set_defaults(func=_cmd_prepare)
    embedder = model.add_parser("embedder", help="check and describe a face embedder (default: dlib's)")
    embedder.add_argument("model", nargs="?", type=Path, metavar="MODEL.onnx", help="an ArcFace-layout ONNX model")
    embedder.set_defaults(func=_cmd_embedder)
