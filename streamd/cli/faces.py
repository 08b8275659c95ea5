"""`streamd faces enroll NAME PHOTO...`, `faces list`, `faces remove NAME`: the gallery.

Enrolment finds the face in each photo with the configured detector (the largest, when
there are several), cuts it as the daemon cuts a tracked face, and stores its embedding.
Only names and counts are ever printed: embeddings are biometric data.
"""

from __future__ import annotations

import argparse
from typing import Any

from streamd.cli.commands import Commands


def _gallery(args: argparse.Namespace) -> tuple[Any, Any]:
    from streamd.config.loader import load_config
    from streamd.recognition.embedders import make_embedder
    from streamd.recognition.gallery import Gallery

    config = load_config(args.config)
    embedder = make_embedder(config.recognition.embedder, config.recognition.model_path)
    return config, (embedder, Gallery(config.recognition.gallery_path, embedder.name))


def _cmd_enroll(args: argparse.Namespace) -> int:
    from streamd.analysis.postprocess import PostprocessSettings
    from streamd.analysis.still_images import detect_images
    from streamd.base.errors import InputError
    from streamd.frames.face_crop import crop_from_picture
    from streamd.frames.letterbox import load_image

    config, (embedder, gallery) = _gallery(args)
    model = args.model or (config.engine.model if config.engine is not None else None)
    if model is None:
        raise InputError(f"{args.config}: no engine.model to find the faces with (or give --model)")
    crops = []
    for record in detect_images(args.photos, model, PostprocessSettings.of(config.postprocess)):
        if not record["faces"]:
            raise InputError(f"{record['image']}: no face found; nothing was enrolled")
        face = max(record["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        if len(record["faces"]) > 1:
            print(f"{record['image']}: {len(record['faces'])} faces; the largest is enrolled")
        crops.append(crop_from_picture(load_image(record["image"]), face["box"], face["landmarks"], 0.25))
    gallery.add(args.name, embedder.embed(crops))
    print(f"{args.name}: {len(crops)} photo(s) enrolled; {gallery.path}: {len(gallery.people())} people")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    _, (embedder, gallery) = _gallery(args)
    people = gallery.people()
    for name, count in people.items():
        print(f"{name}\t{count} embedding(s)")
    print(f"{gallery.path}: {len(people)} people, embedder {embedder.name}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from streamd.base.errors import InputError

    _, (_, gallery) = _gallery(args)
    if not gallery.remove(args.name):
        raise InputError(f"{args.name}: not in {gallery.path}")
    print(f"{args.name}: removed; {gallery.path}: {len(gallery.people())} people")
    return 0


def add_to(commands: Commands) -> None:
    faces = commands.add_parser("faces", help="the gallery of known people: enroll, list, remove")
    steps = faces.add_subparsers(dest="faces_command", required=True)
    enroll = steps.add_parser("enroll", help="add a person from photos of their face")
    enroll.add_argument("name")
    enroll.add_argument("photos", nargs="+", metavar="PHOTO")
    enroll.add_argument("--model", help="the detector (default: the config's engine.model)")
    enroll.set_defaults(func=_cmd_enroll)
    listing = steps.add_parser("list", help="the names enrolled, with how many photos each")
    listing.set_defaults(func=_cmd_list)
    remove = steps.add_parser("remove", help="forget a person")
    remove.add_argument("name")
    remove.set_defaults(func=_cmd_remove)
    for step in (enroll, listing, remove):
        step.add_argument("-c", "--config", default="streams.yaml", help="streams.yaml (default: %(default)s)")
