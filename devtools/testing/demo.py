"""Demo cameras: videos made from the shared photos when present, synthetic otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from devtools.testing.video import VideoSpec, cached_video

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("STREAMD_CACHE", PROJECT_ROOT / ".cache")) / "videos"
ASSETS = Path(os.environ.get("STREAMD_ASSETS", PROJECT_ROOT.parent / "shared" / "assets"))
DEMO_PHOTOS = ("group9.jpg", "two_people.jpg", "street_bus.jpg")


def shared_image(name: str) -> Path | None:
    path = ASSETS / "images" / name
    return path if path.is_file() else None


def demo_videos(count: int, width: int = 1920, height: int = 1080, fps: int = 25) -> dict[str, Path]:
    """`count` demo clips named cam1..camN, cycling through the shared photos."""
    videos = {}
    for index in range(count):
        image = shared_image(DEMO_PHOTOS[index % len(DEMO_PHOTOS)])
        spec = VideoSpec(width=width, height=height, fps=fps, seconds=10, image=str(image) if image else None)
        videos[f"cam{index + 1}"] = cached_video(spec, CACHE_DIR)
    return videos
