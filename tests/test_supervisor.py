from __future__ import annotations

import asyncio
from pathlib import Path

from streamd.analysis.discard import DiscardingConsumer
from streamd.config.schema import StreamsConfig
from streamd.metrics.registry import Metrics
from streamd.service.cameras import Supervisor, diff_cameras
from tests.support.waiting import run, wait_for


def config(cameras: dict[str, dict[str, object]]) -> StreamsConfig:
    return StreamsConfig.model_validate({"cameras": [{"id": cid, **fields} for cid, fields in cameras.items()]})


def test_diff_sorts_cameras_into_added_removed_changed_unchanged() -> None:
    old = config({"a": {"url": "rtsp://h/a"}, "b": {"url": "rtsp://h/b"}, "c": {"url": "rtsp://h/c"}})
    new = config({"a": {"url": "rtsp://h/a"}, "b": {"url": "rtsp://h/b", "fps": 2}, "d": {"url": "rtsp://h/d"}})
    diff = diff_cameras({c.id: c for c in old.cameras}, new.cameras)
    assert [c.id for c in diff.added] == ["d"]
    assert diff.removed == ["c"]
    assert [c.id for c in diff.changed] == ["b"]
    assert diff.unchanged == ["a"]


def test_apply_leaves_untouched_cameras_alone(test_video: Path) -> None:
    url: dict[str, object] = {"url": str(test_video)}

    async def scenario() -> None:
        metrics = Metrics()
        supervisor = Supervisor(metrics, DiscardingConsumer())
        await supervisor.apply(config({"a": url, "b": url, "c": url}))
        first = {s.camera_id: s for s in supervisor.sources()}
        await wait_for(lambda: all(s.state == "streaming" for s in first.values()), 10, "streaming")
        a_sampled = first["a"].metrics.sampled

        await supervisor.apply(config({"a": url, "b": {**url, "fps": 2}, "d": url}))
        second = {s.camera_id: s for s in supervisor.sources()}
        assert set(second) == {"a", "b", "d"}
        assert second["a"] is first["a"] and second["a"].state == "streaming"
        assert second["b"] is not first["b"] and second["b"].camera.fps == 2
        assert first["c"].state == "stopped" and first["b"].state == "stopped"
        await asyncio.sleep(1.0)
        assert second["a"].metrics.sampled > a_sampled and second["a"].metrics.reconnects == 0
        exposed = {m.name: m for m in metrics.registry.collect()}
        cameras_in_counters = {s.labels["camera"] for s in exposed["streamd_frames_sampled"].samples}
        assert "c" not in cameras_in_counters and {"a", "b", "d"} <= cameras_in_counters
        await supervisor.stop()
        assert all(s.state == "stopped" for s in second.values())

    run(scenario())
