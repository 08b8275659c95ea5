"""The second stage as `recognition:` configures it, for the daemon and for recorded video."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streamd.base.errors import StreamdError
from streamd.config.schema import StreamsConfig
from streamd.frames.face_crop import FaceCrop
from streamd.metrics.registry import Metrics
from streamd.recognition.embedders import make_embedder
from streamd.recognition.gallery import Gallery
from streamd.recognition.stage import Recognition

log = logging.getLogger(__name__)

Record = dict[str, Any]
RecognitionFactory = Callable[[Callable[[Record, FaceCrop | None], None]], Recognition]


def recognition_from_config(
    config: StreamsConfig, emit: Callable[[list[Record]], None], metrics: Metrics
) -> RecognitionFactory | None:
    """The stage's factory when `recognition` is on (by default: once a gallery exists);
    the tracks hand it the callback for ended tracks. One that cannot load is logged and
    left out: detection and tracks go on."""
    settings = config.recognition
    wanted = settings.enabled if settings.enabled is not None else settings.gallery_path.exists()
    if not wanted:
        return None
    if not config.tracking.enabled:
        log.warning("recognition is on but tracking is off: faces are identified per track; nothing is")
        return None
    try:
        embedder = make_embedder(settings.embedder, settings.model_path)
        gallery = Gallery(settings.gallery_path, embedder.name)
    except StreamdError as error:
        log.error("recognition left out: %s", error)
        return None
    threshold = settings.threshold or embedder.threshold
    log.info(
        "recognition: %s embedder, threshold %g, gallery %s (%d people)",
        embedder.name,
        threshold,
        gallery.path,
        len(gallery.people()),
    )
    batch = (settings.max_batch, settings.max_delay_ms / 1000, settings.queue)
    return lambda ended: Recognition(embedder, gallery, threshold, emit, ended, metrics, *batch)
