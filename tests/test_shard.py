"""Rendezvous sharding of cameras across instances that read one streams.yaml."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from streamd.config.schema import Overrides, StreamsConfig
from streamd.config.shard import Shard, shard_of
from streamd.metrics.gpu import visible_gpus

IDS = [f"cam-{n:04d}" for n in range(3000)]


def owners(count: int) -> dict[str, int]:
    return {camera_id: shard_of(camera_id, count) for camera_id in IDS}


def test_every_camera_lives_in_exactly_one_shard_and_the_shards_are_even() -> None:
    shards = [Shard(index, 4) for index in range(4)]
    taken = Counter(camera_id for shard in shards for camera_id in IDS if shard.owns(camera_id))
    assert set(taken) == set(IDS) and set(taken.values()) == {1}
    sizes = [sum(shard.owns(camera_id) for camera_id in IDS) for shard in shards]
    assert all(abs(size - 750) < 100 for size in sizes), sizes


def test_adding_an_instance_moves_only_what_the_new_shard_wins() -> None:
    before, after = owners(3), owners(4)
    moved = [camera_id for camera_id in IDS if before[camera_id] != after[camera_id]]
    assert all(after[camera_id] == 3 for camera_id in moved)
    assert 0.2 < len(moved) / len(IDS) < 0.3  # about 1/4
    # A plain modulo would have moved about three quarters.
    modulo = sum(hash(c) % 3 != hash(c) % 4 for c in IDS) / len(IDS)
    assert modulo > 0.5


def test_removing_the_last_instance_moves_only_its_cameras() -> None:
    before, after = owners(3), owners(2)
    moved = {camera_id for camera_id in IDS if before[camera_id] != after[camera_id]}
    assert moved == {camera_id for camera_id in IDS if before[camera_id] == 2}


def test_the_shard_of_a_camera_is_the_same_in_every_process() -> None:
    # Python's own hash() is salted per process; the instances must agree regardless.
    code = "from streamd.config.shard import shard_of; print([shard_of(f'cam-{n:04d}', 5) for n in range(200)])"
    answers = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert answers == {str([shard_of(camera_id, 5) for camera_id in IDS[:200]]) + "\n"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("3/3", "index must be from 0 to 2"), ("0/0", "count must be from 1"), ("one/2", "write I/N"), ("1", "I/N")],
)
def test_a_bad_shard_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)
    with pytest.raises(ValueError, match="--shard: .*" + message):
        Overrides(shard=text)


def config(**extra: object) -> StreamsConfig:
    cameras: list[dict[str, object]] = [{"id": c, "url": f"rtsp://127.0.0.1:9/{c}"} for c in IDS[:60]]
    cameras[0]["enabled"] = False
    return StreamsConfig.model_validate({"cameras": cameras, **extra})


def test_the_file_names_the_shard_and_the_options_override_it() -> None:
    assert [c.id for c in config().cameras_to_run] == IDS[1:60]  # one shard: everything enabled
    in_file = config(shard="1/3", metrics={"listen": "127.0.0.1:9108", "pictures": False, "web_config": "/etc/web.yml"})
    assert in_file.this_shard == Shard(1, 3)
    assert {c.id for c in in_file.cameras_to_run} == {c for c in IDS[1:60] if shard_of(c, 3) == 1}
    overridden = Overrides(shard="2/3", metrics_listen="0.0.0.0:9111").apply(in_file)
    assert overridden.shard == "2/3" and overridden.metrics.port == 9111 and overridden.metrics.host == "0.0.0.0"
    # The address only: a shard's listener keeps the file's TLS, passwords and pictures setting.
    assert overridden.metrics.web_config == "/etc/web.yml" and overridden.metrics.pictures is False
    assert {c.id for c in overridden.cameras_to_run} == {c for c in IDS[1:60] if shard_of(c, 3) == 2}
    with pytest.raises(ValueError, match=r"--metrics-listen: .*host:port"):
        Overrides(metrics_listen="9111")


def test_a_bad_shard_in_the_file_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"shard\n.*index must be from 0 to 1"):
        config(shard="2/2")


def test_each_instance_reports_the_gpu_it_was_given() -> None:
    assert visible_gpus(None, 2) == [0, 1]
    assert visible_gpus("1", 2) == [1]
    assert visible_gpus("0,1,7", 2) == [0, 1]
    assert visible_gpus("GPU-8a3c7f0e", 2) == [0, 1]  # UUIDs are not mapped: report them all
