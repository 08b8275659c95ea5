"""A camera's decode session on a local clip, read as fast as it decodes, as from a live stream.

For tests and benchmarks of what the decoder does with real H.264 (which frames it
decodes, what it delivers) without a server or the real-time pacing of file cameras.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from av.codec.hwaccel import HWAccel

from streamd.camera.decoder import Converter, DecodeSession, open_container
from streamd.camera.errors import CameraError, Reason
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig
from streamd.frames.frame import Frame
from streamd.metrics.registry import Metrics


def decode_as_live(
    video: Path, camera: CameraConfig, convert: Converter
) -> tuple[list[Frame], int, CameraRun, list[str]]:
    """The frames delivered, the number decoded, the camera's run and what it logged."""
    delivered: list[Frame] = []
    metrics = Metrics().camera(camera.id)
    run, said = CameraRun(camera.fps), list[str]()

    def the_clip(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        return open_container(str(video), {}, timeout, hw)

    session = DecodeSession(
        camera,
        delivered.append,
        metrics,
        threading.Event(),
        lambda: None,
        convert=convert,
        camera_run=run,
        log=said.append,
        opener=the_clip,
    )
    try:
        session.run()
    except CameraError as ended:
        if ended.reason is not Reason.end_of_stream:
            raise
    return delivered, metrics.decoded, run, said
