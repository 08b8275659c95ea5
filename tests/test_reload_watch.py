"""The daemon's watch on streams.yaml, in process: no save is lost to a moment it was not watching."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamd.analysis.discard import DiscardingConsumer
from streamd.config.loader import read_config
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.service.reload import WATCH_IDLE_S
from tests.support.streams import write_atomically
from tests.support.waiting import run, wait_for


def streams_yaml(*camera_ids: str) -> str:
    lines = [
        f"  - {{id: {camera_id}, url: 'rtsp://127.0.0.1:9/{camera_id}', enabled: false}}" for camera_id in camera_ids
    ]
    return "\n".join(["reload: {settle_s: 0.1}", "cameras:", *lines]) + "\n"


def reloads_counted(daemon: Daemon) -> dict[str, float]:
    """Reload results counted so far (every result's series starts at zero)."""
    return {
        sample.labels["result"]: sample.value
        for metric in daemon.metrics.config_reloads.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }


def started_on(path: Path, save_before_start: str | None = None) -> Daemon:
    loaded = read_config(path)
    if save_before_start is not None:
        # Saved after the file was read and before the daemon watches it (as while an
        # engine loads): no change event will ever tell of this save.
        write_atomically(path, save_before_start)
    return Daemon(loaded, DaemonOptions(consumer=DiscardingConsumer(), metrics_port=0))


def test_a_save_made_before_the_watch_is_in_place_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "streams.yaml"
    path.write_text(streams_yaml("a"))

    async def scenario() -> tuple[list[str], dict[str, float]]:
        daemon = started_on(path, save_before_start=streams_yaml("a", "b"))
        await daemon.start()
        try:
            await wait_for(lambda: len(daemon.config.cameras) == 2, 4 * WATCH_IDLE_S, "the save made while starting")
            return [camera.id for camera in daemon.config.cameras], reloads_counted(daemon)
        finally:
            await daemon.stop()

    cameras, reloads = run(scenario())
    assert cameras == ["a", "b"]
    assert reloads == {"applied": 1.0}


def test_an_unedited_file_is_not_reread_when_the_watch_is_in_place_and_later_saves_apply(tmp_path: Path) -> None:
    path = tmp_path / "streams.yaml"
    path.write_text(streams_yaml("a"))

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        daemon = started_on(path)
        await daemon.start()
        try:
            await asyncio.sleep(WATCH_IDLE_S + 1.5)  # past the watcher's first idle pass
            before_save = reloads_counted(daemon)
            write_atomically(path, streams_yaml("a", "b"))
            await wait_for(lambda: len(daemon.config.cameras) == 2, 10, "a save to the watched file")
            return before_save, reloads_counted(daemon)
        finally:
            await daemon.stop()

    before_save, after_save = run(scenario())
    assert before_save == {}, "the file the daemon runs was compared, not reloaded"
    assert after_save == {"applied": 1.0}
