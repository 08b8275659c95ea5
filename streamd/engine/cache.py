"""Where built TensorRT engines and timing caches live, and how they are written.

An engine is valid only for one model file, GPU model, TensorRT version and batch
profile, so its file name carries a hash of all four. The timing cache (layer timings
that make rebuilds fast) is just as specific to the GPU and the TensorRT version, so
there is one per pair rather than one shared file that every other build rejects.

Files are written atomically (a temporary file renamed over the old one), so a build
killed half way never leaves a truncated engine for the next start to load. Under the
shipped systemd unit the cache lives in the service's state directory
(`$STATE_DIRECTORY`, /var/lib/streamd): the configuration directory is read-only there
(`ProtectSystem=strict`). A directory that cannot be written is an EngineError, so
`engine.backend: auto` falls back to ONNX Runtime and says why instead of dying.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streamd.engine.base import EngineError


@dataclass(frozen=True)
class Profile:
    """TensorRT optimization profile over the batch size."""

    min: int = 1
    opt: int = 16
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def engine_cache_key(model_sha256: str, gpu_name: str, trt_version: str, profile: Profile) -> str:
    """The cache key: an engine is valid only for this model, GPU, TensorRT and profile."""
    identity = {
        "model": model_sha256,
        "gpu": gpu_name,
        "tensorrt": trt_version,
        "profile": [profile.min, profile.opt, profile.max],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


class EngineCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        """Create the directory and prove it writable, before minutes of building."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass
        except OSError as error:
            raise EngineError(
                f"the engine cache {self.directory} is not writable ({error.strerror or error}); "
                "set engine.cache_dir to a writable directory (the service's state directory by default)"
            ) from error

    def plan_path(self, model: Path, gpu_name: str, trt_version: str, profile: Profile) -> Path:
        key = engine_cache_key(file_sha256(model), gpu_name, trt_version, profile)
        return self.directory / f"{model.stem}-{key}.plan"

    def timing_path(self, gpu_name: str, trt_version: str) -> Path:
        return self.directory / f"timing-{_slug(gpu_name)}-trt{_slug(trt_version)}.cache"

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise EngineError(f"cannot read {path}: {error.strerror or error}") from error

    def write(self, path: Path, data: bytes) -> None:
        """Replace `path` with `data` atomically; an EngineError names the file on failure."""
        temporary: str | None = None
        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as output:
                output.write(data)
                output.flush()
                os.fsync(output.fileno())
            os.replace(temporary, path)
            temporary = None
        except OSError as error:
            raise EngineError(f"cannot write {path}: {error.strerror or error}") from error
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
