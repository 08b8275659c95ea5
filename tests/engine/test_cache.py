"""The TensorRT engine cache: where it lives under the shipped unit, and how it is written.
No TensorRT needed: the cache is plain files."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from streamd.config.loader import ConfigError, parse_config
from streamd.engine.base import EngineError
from streamd.engine.cache import EngineCache

ROOT = Path(__file__).resolve().parents[2]


def _unit() -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=False, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "streamd.service")
    return unit


def test_default_engine_cache_is_writable_under_the_shipped_unit() -> None:
    service = _unit()["Service"]
    assert service["ProtectSystem"] == "strict", "the premise: everything but the listed paths is read-only"
    config_path = Path(service["ExecStart"].split("--config")[1].split()[0])
    # What systemd gives the service for StateDirectory=streamd.
    state = Path("/var/lib") / service["StateDirectory"]
    config = parse_config(
        "engine: {model: README.md}\ncameras: []\n",
        str(config_path),
        base_dir=ROOT,
        env={"STATE_DIRECTORY": str(state)},
    )
    assert config.engine is not None
    cache = Path(config.engine.cache_dir or "")
    writable = [state, *(Path(p) for p in service["ReadWritePaths"].split())]
    assert any(cache.is_relative_to(path) for path in writable), f"{cache} is read-only under the unit"
    assert not cache.is_relative_to(config_path.parent)


def test_without_systemd_the_cache_sits_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    config = parse_config("engine: {model: m.onnx}\ncameras: []\n", "s.yaml", base_dir=tmp_path, env={})
    assert config.engine is not None and config.engine.cache_dir == str(tmp_path / "engines" / "cache")
    explicit = parse_config(
        "engine: {model: m.onnx, cache_dir: /srv/engines}\ncameras: []\n", "s.yaml", base_dir=tmp_path, env={}
    )
    assert explicit.engine is not None and explicit.engine.cache_dir == "/srv/engines"


def test_a_cache_that_cannot_be_written_is_an_engine_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(EngineError, match=r"engine cache .*a-file/engines is not writable.*engine.cache_dir"):
        EngineCache(blocker / "engines").prepare()
    with pytest.raises(EngineError, match="cannot write"):
        EngineCache(tmp_path).write(blocker / "x.plan", b"engine")


def test_writes_replace_whole_files_and_leave_no_temporary(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.prepare()
    plan = tmp_path / "face-123.plan"
    cache.write(plan, b"old engine")
    cache.write(plan, b"new engine")
    assert cache.read(plan) == b"new engine" and cache.read(tmp_path / "missing.plan") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face-123.plan"]


def test_timing_caches_are_kept_per_gpu_and_tensorrt_version(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    paths = {
        cache.timing_path("NVIDIA A10", "10.13.0.35"),
        cache.timing_path("NVIDIA A10", "11.0.0"),
        cache.timing_path("NVIDIA H100 80GB HBM3", "10.13.0.35"),
    }
    assert len(paths) == 3 and all(p.parent == tmp_path and " " not in p.name for p in paths)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("engine: {model: m.onnx, profile: {max: 16}}\nbatcher:\n  max_batch: 32\n", "s.yaml:3 batcher.max_batch"),
        (  # the batcher's (auto: within the profile) is the one named
            "engine:\n  model: m.onnx\n  profile: {min: 9, opt: 9, max: 16}\nbatcher: {max_batch: 8}\n",
            "s.yaml:4 batcher.max_batch",
        ),
    ],
)
def test_a_batch_the_engine_profile_cannot_take_is_refused(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ConfigError) as caught:
        parse_config(text + "cameras: []\n", "s.yaml", base_dir=tmp_path, env={})
    assert str(caught.value).startswith(where) and "must lie within engine.profile" in str(caught.value)
