"""The gallery file: biometric data written atomically with mode 0600, read again when
another process changes it, refused when it is not one or belongs to another embedder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from streamd.recognition.gallery import Gallery, GalleryError


def vectors(*rows: float) -> np.ndarray:
    return np.array([[row] * 4 for row in rows], dtype=np.float32)


def test_written_0600_whatever_the_umask_and_matched_by_the_nearest(tmp_path: Path) -> None:
    path = tmp_path / "state" / "gallery.json"
    old = os.umask(0)
    try:
        gallery = Gallery(path, "dlib-resnet-v1")
        gallery.add("Alice", vectors(0.0, 0.1))
        gallery.add("Bob", vectors(1.0))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["gallery.json"], "no partial file left"
    assert gallery.people() == {"Alice": 2, "Bob": 1}
    near_alice = gallery.match(vectors(0.12)[0], threshold=0.5)
    assert near_alice.name == "Alice" and near_alice.distance == pytest.approx(0.04, abs=1e-6)
    assert gallery.match(vectors(0.55)[0], threshold=0.5).name is None, "nearest, but beyond the threshold"


def test_another_process_enrolling_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "gallery.json"
    running = Gallery(path, "dlib-resnet-v1")
    assert running.people() == {} and not running.reload()
    Gallery(path, "dlib-resnet-v1").add("Carol", vectors(2.0))  # `streamd faces enroll` elsewhere
    assert running.reload() and running.people() == {"Carol": 1}
    assert not running.reload(), "read once per change"
    Gallery(path, "dlib-resnet-v1").remove("Carol")
    assert running.reload() and running.people() == {}


def test_a_gallery_of_another_embedder_or_no_gallery_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "gallery.json"
    Gallery(path, "onnx-arcface").add("Dave", vectors(0.3))
    with pytest.raises(GalleryError, match="made with the onnx-arcface embedder, not dlib-resnet-v1"):
        Gallery(path, "dlib-resnet-v1")
    path.write_text("[1, 2, 3]")
    with pytest.raises(GalleryError, match="not a streamd gallery"):
        Gallery(path, "dlib-resnet-v1")


@pytest.mark.parametrize("name", ["", " Eve", "unknown-3", "a\nb", "x" * 65])
def test_names_that_would_mislead_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(GalleryError):
        Gallery(tmp_path / "gallery.json", "dlib-resnet-v1").add(name, vectors(0.0))
