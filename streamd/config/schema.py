"""`streams.yaml`'s schema: every section as a strict pydantic model.

Unknown keys are errors, every field has a bound and a description (its docstring),
and the `defaults` section applies to every camera; a camera's own keys win (the
`backoff` block merges key by key). Reading a file is `streamd.config.loader`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streamd.base.redact import register_secrets
from streamd.config.shard import Shard

CAMERA_ID_PATTERN = r"^[a-z0-9_-]+$"
_REPORT_AT = "report_at"  # context key of an error: the key paths to report it at, best first
NETWORK_SCHEMES = ("rtsp", "rtsps")


class StrictModel(BaseModel):
    # allow_inf_nan=False: `fps: .nan` or `rotate_mb: .inf` pass every bound check
    # (comparisons with NaN are all false) and only fail once running.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class Transport(StrEnum):
    tcp = "tcp"
    udp = "udp"
    auto = "auto"


class DecodeMode(StrEnum):
    auto = "auto"
    nvdec = "nvdec"
    cpu = "cpu"


class DecodeFrames(StrEnum):
    all = "all"
    keyframes = "keyframes"
    auto = "auto"


class BackoffConfig(StrictModel):
    initial_s: float = Field(1.0, gt=0, le=600)
    """Upper bound of the first retry delay, seconds (full jitter picks 0..bound)."""
    max_s: float = Field(30.0, gt=0, le=3600)
    """Cap of the retry delay bound, seconds; the bound doubles per failure up to it."""
    reset_after_s: float = Field(30.0, ge=0, le=86400)
    """Streaming this long without trouble resets the backoff to `initial_s`."""

    @model_validator(mode="after")
    def _initial_within_cap(self) -> BackoffConfig:
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s ({self.initial_s}) must not exceed max_s ({self.max_s})")
        return self


class CameraSettings(StrictModel):
    """Everything about a camera that `defaults` may set for all cameras."""

    fps: float = Field(5.0, gt=0, le=120)
    """Analysis rate: frames per second taken from the stream for detection."""
    enabled: bool = True
    """A disabled camera is kept in the file but not opened."""
    transport: Transport = Transport.tcp
    """RTSP transport: tcp (interleaved in the RTSP connection: passes NAT and firewalls,
    no loss, the default); udp (RTP over UDP: for servers that refuse TCP; a lost packet is
    a damaged frame); auto (TCP, then UDP for as long as the camera runs once the server
    refuses TCP with 461)."""
    decode: DecodeMode = DecodeMode.auto
    """auto: NVDEC where it works, else CPU; nvdec: NVDEC or fail; cpu: CPU only."""
    decode_frames: DecodeFrames = DecodeFrames.auto
    """Which frames to decode: all; keyframes only (skips the rest: a fraction of the CPU,
    analysed at most at the keyframe rate); auto: keyframes only while they come at least
    as often as `fps`, else all."""
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    """Give up connecting (RTSP handshake and first packets) after this many seconds."""
    stall_timeout_s: float = Field(10.0, gt=0, le=3600)
    """Reconnect when no frame arrives, or timestamps do not advance, for this long."""
    backoff: BackoffConfig = BackoffConfig()
    """Reconnect delays: exponential with full jitter."""
    priority: int = Field(0, ge=0, le=9)
    """Under overload, cameras of higher priority are analysed first and keep their rate;
    lower ones give way. Cameras of equal priority share what is left equally."""


class CameraConfig(CameraSettings):
    id: str = Field(pattern=CAMERA_ID_PATTERN, min_length=1, max_length=64)
    """Unique name of the camera: lower-case letters, digits, '_' and '-'."""
    url: str = Field(min_length=1)
    """rtsp:// or rtsps:// URL, or a local video file (replayed in a loop at its own rate)."""

    @field_validator("url")
    @classmethod
    def _url_is_supported(cls, url: str, info: ValidationInfo) -> str:
        # Messages here never quote the URL: it may hold a password.
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in NETWORK_SCHEMES:
            _check_network_url(parts)
            return url
        if _MISTYPED_SCHEME.match(url):
            raise ValueError("looks like a mistyped rtsp:// URL (the scheme must be followed by '://')")
        if scheme == "file":
            url = parts.path
        elif len(scheme) > 1:  # one letter would be a Windows drive, not a scheme
            raise ValueError(f"unsupported scheme '{scheme}': use rtsp://, rtsps:// or a local video file")
        base_dir = Path((info.context or {}).get("base_dir", "."))
        path = (base_dir / url).resolve()
        if not path.is_file():
            raise ValueError(f"no such video file: {path}")
        return str(path)

    @property
    def is_file(self) -> bool:
        return urlsplit(self.url).scheme.lower() not in NETWORK_SCHEMES


_MISTYPED_SCHEME = re.compile(r"^\s*rtsps?(?::/?(?!/)|//)", re.IGNORECASE)
_ENCODE_HINT = "percent-encode '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"


def _check_network_url(parts: SplitResult) -> None:
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{scheme}:// URL has a port that is not a number from 0 to 65535; {_ENCODE_HINT}") from None
    if port == 0:
        raise ValueError(f"{scheme}:// URL has port 0")
    if not parts.hostname:
        raise ValueError(f"{scheme}:// URL has no host")
    if "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(f"{scheme}:// URL has an '@' after the host; {_ENCODE_HINT}")


class MetricsConfig(StrictModel):
    listen: str = "127.0.0.1:9108"
    """host:port of the Prometheus endpoint."""
    web_config: str | None = None
    """TLS and basic auth for the listener: a file in the Prometheus exporters' web-config
    format (relative to this file); absent: plain HTTP, no authentication."""
    pictures: bool = True
    """Serve pictures of the cameras (`/cameras/<id>/latest.jpg`, the status page's
    images); false keeps every face off the listener while metrics and status stay."""

    @field_validator("web_config")
    @classmethod
    def _resolve_web_config(cls, web_config: str | None, info: ValidationInfo) -> str | None:
        return None if web_config is None else str(_resolve_path(web_config, info))

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port with a port from 1 to 65535")
        return listen

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _resolve_path(value: str, info: ValidationInfo) -> Path:
    return (Path((info.context or {}).get("base_dir", ".")) / value).resolve()


def _state_path(value: str | None, default: str, info: ValidationInfo) -> Path:
    """`value` beside this file; unset: `default` in the service's state directory under
    systemd ($STATE_DIRECTORY), else beside this file."""
    if value is None:
        state = (info.context or {}).get("env", {}).get("STATE_DIRECTORY", "").split(":")[0]
        if state:
            return Path(state) / default
    return _resolve_path(value or default, info)


def default_engine_cache(base_dir: Path, env: Mapping[str, str]) -> Path:
    """The service's state directory when systemd gives one ($STATE_DIRECTORY: the unit's
    StateDirectory=, writable under ProtectSystem=strict), else engines/cache beside the file."""
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "engines" if state else (base_dir / "engines" / "cache").resolve()


class EngineBackend(StrEnum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


# 64 frames of 640x640 take ONNX Runtime about 1.1 GB per instance on a CPU (measured);
# 256 took 7 GB and then failed. The default TensorRT profile tops out at 32.
MAX_BATCH = 64


class BatchProfileConfig(StrictModel):
    min: int = Field(1, ge=1, le=MAX_BATCH)
    """Smallest batch the TensorRT engine accepts."""
    opt: int | None = Field(None, ge=1, le=MAX_BATCH)
    """The batch TensorRT optimizes for; default `batcher.max_batch`, the batch the
    daemon sends whenever it has work for more than one."""
    max: int = Field(32, ge=1, le=MAX_BATCH)
    """Largest batch the TensorRT engine accepts (>= batcher.max_batch)."""

    @model_validator(mode="after")
    def _ordered(self) -> BatchProfileConfig:
        opt = self.min if self.opt is None else self.opt
        if not self.min <= opt <= self.max:
            raise ValueError(f"needs min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self

    def optimize_for(self, max_batch: int) -> int:
        """`opt`, or the batcher's largest batch kept within min..max."""
        return self.opt if self.opt is not None else max(self.min, min(max_batch, self.max))


class EngineConfig(StrictModel):
    model: str = Field(min_length=1)
    """Canonical model file (`streamd model prepare`), relative to this file's directory."""
    backend: EngineBackend = EngineBackend.auto
    """auto: TensorRT where it can run, ONNX Runtime otherwise; or name one."""
    instances: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = "auto"
    """Engine instances running batches in parallel; auto: one per usable core on a CPU
    (fewer when memory holds fewer), one on a GPU (docs/operations.md, "auto")."""
    threads: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    """ONNX Runtime threads per instance; auto: the usable cores shared among the instances."""

    @field_validator("instances", "threads", mode="before")
    @classmethod
    def _zero_is_auto(cls, value: Any) -> Any:
        return "auto" if value == 0 and not isinstance(value, bool) else value  # 0 meant auto before

    providers: list[str] | None = None
    """ONNX Runtime execution providers in order; default: the best installed."""
    warmup: bool = True
    """Run one full batch at start so the first real batch is not slow."""
    spin_wait: bool = False
    """Let ONNX Runtime's CPU threads spin between batches (faster alone, steals CPU from decoding)."""
    profile: BatchProfileConfig = BatchProfileConfig()
    """TensorRT optimization profile over the batch size."""
    cache_dir: str | None = Field(None, validate_default=True)
    """Built TensorRT engines and timing caches (relative to this file); default:
    $STATE_DIRECTORY/engines under systemd, else engines/cache beside this file."""

    @field_validator("cache_dir")
    @classmethod
    def _cache_absolute(cls, cache_dir: str | None, info: ValidationInfo) -> str:
        if cache_dir is None:
            context = info.context or {}
            return str(default_engine_cache(Path(context.get("base_dir", ".")), context.get("env", {})))
        return str(_resolve_path(cache_dir, info))

    @property
    def cache_path(self) -> Path:
        assert self.cache_dir is not None  # the validator always fills it in
        return Path(self.cache_dir)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str, info: ValidationInfo) -> str:
        path = _resolve_path(model, info)
        if not path.is_file():
            raise ValueError(f"no such model file: {path}")
        return str(path)


class BatcherConfig(StrictModel):
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] | Literal["auto"] = "auto"
    """Frames per batch at most (the engine's batch profile must allow it); auto: 1 on a
    CPU, the cameras rounded up to a power of two (at most 32) on a GPU."""
    max_delay_ms: float = Field(10.0, ge=0, le=1000)
    """The oldest waiting frame waits at most this long for a fuller batch."""
    max_age_ms: float = Field(1000.0, gt=0, le=60000)
    """Frames older than this when a batch forms are dropped (reason="stale")."""


class PostprocessConfig(StrictModel):
    score_threshold: float = Field(0.3, gt=0, le=1)
    """Faces scoring below this are discarded."""
    iou_threshold: float = Field(0.5, gt=0, le=1)
    """Non-maximum suppression: boxes overlapping a better one by more are removed."""
    max_faces: int = Field(300, ge=1, le=10000)
    """Faces per frame at most (the best scoring are kept)."""


class RecordKind(StrEnum):
    frames = "frames"
    events = "events"


class JsonlSinkConfig(StrictModel):
    type: Literal["jsonl"] = "jsonl"
    """JSON Lines files, one record per analysed frame and one per track event."""
    path: str = Field("detections.jsonl", validate_default=True)
    """The current file, relative to this file's directory; rotated files sit beside it."""
    rotate_mb: float | None = Field(100.0, ge=1, le=1_000_000)
    """Start a new file when the current one would pass this size; null: never."""
    rotate_daily: bool = True
    """Start a new file when the day changes."""
    queue: int = Field(10000, ge=1, le=1_000_000)
    """Records waiting to be written at most; beyond, records are dropped and counted."""
    kinds: list[RecordKind] = Field(default_factory=lambda: [RecordKind.frames, RecordKind.events], min_length=1)
    """What this sink gets: `frames` (a record per analysed frame), `events` (tracks
    started and ended); default both."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str, info: ValidationInfo) -> str:
        return str(_resolve_path(path, info))


class RedisSinkConfig(StrictModel):
    type: Literal["redis"]
    """Redis Streams: one entry per analysed frame and per track event (XADD)."""
    url: str = "redis://127.0.0.1:6379/0"
    """redis:// or rediss:// URL; a password belongs in `${credential:NAME}` or `${ENV}`."""
    stream: str = Field("streamd:{camera}", min_length=1, max_length=256)
    """Stream key; `{camera}` is replaced by the camera id (one stream per camera), without
    it all cameras share one stream."""
    maxlen: int = Field(100_000, ge=1, le=1_000_000_000)
    """Entries kept per stream, approximately (`XADD MAXLEN ~`: up to one node more)."""
    queue: int = Field(10000, ge=1, le=1_000_000)
    """Records kept while Redis is unreachable; beyond, the newest are dropped and counted."""
    timeout_s: float = Field(5.0, gt=0, le=300)
    """Connect and command timeout."""
    kinds: list[RecordKind] = Field(default_factory=lambda: [RecordKind.frames, RecordKind.events], min_length=1)
    """What this sink gets: `frames` (a record per analysed frame), `events` (tracks
    started and ended); default both."""

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if urlsplit(url).scheme.lower() not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url


class MqttSinkConfig(StrictModel):
    type: Literal["mqtt"]
    """MQTT: one message per analysed frame on `<prefix>/<camera>/faces`, one per track
    event on `<prefix>/<camera>/events`, retained
    `<prefix>/available` (online/offline, with a Last Will) and `<prefix>/<camera>/state`."""
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("streamd", pattern=r"^[^#+\s]+$", max_length=128)
    """Topic prefix (no wildcards)."""
    client_id: str | None = Field(None, min_length=1, max_length=128)
    """Default: streamd-<host name>-<process id>."""
    username: str | None = None
    password: str | None = None
    """Through `${credential:NAME}` or `${ENV}`, not in the file."""
    tls: bool = False
    ca_file: str | None = None
    """CA certificates for TLS; default: the system's."""
    qos: int = Field(1, ge=0, le=2)
    retain: bool = False
    """Retain the last `faces` message of each camera."""
    only_faces: bool = False
    """Publish only frames with at least one face."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    """The broker declares streamd gone (Last Will: `offline`) after 1.5 times this."""
    queue: int = Field(10000, ge=1, le=1_000_000)
    """Records kept while the broker is unreachable; beyond, the newest are dropped and counted."""
    timeout_s: float = Field(10.0, gt=0, le=300)
    """A group of messages not acknowledged within this long is retried."""
    kinds: list[RecordKind] = Field(default_factory=lambda: [RecordKind.frames, RecordKind.events], min_length=1)
    """What this sink gets: `frames` (a record per analysed frame), `events` (tracks
    started and ended); default both."""

    @model_validator(mode="after")
    def _password_is_a_secret(self) -> MqttSinkConfig:
        if self.password:
            register_secrets([self.password])
        return self


def _sink_type(value: Any) -> str:
    found = value.get("type", "jsonl") if isinstance(value, Mapping) else getattr(value, "type", "jsonl")
    return str(found)


SinkConfig = Annotated[
    Annotated[JsonlSinkConfig, Tag("jsonl")]
    | Annotated[RedisSinkConfig, Tag("redis")]
    | Annotated[MqttSinkConfig, Tag("mqtt")],
    Discriminator(_sink_type),
]


def _default_sinks() -> list[SinkConfig]:
    return [JsonlSinkConfig()]


class CropsConfig(StrictModel):
    enabled: bool = True
    """Write each ended track's best face: a crop at the camera's resolution and an
    aligned 112x112 chip (JPEG)."""
    directory: str | None = Field(None, validate_default=True)
    """Where (relative to this file); default: $STATE_DIRECTORY/crops under systemd,
    else crops beside this file. Files: `<camera>/<date>/<time>-<track>.jpg` and `-chip.jpg`."""
    margin: float = Field(0.25, ge=0, le=2)
    """Around the face's box, as a share of its width and height on each side."""
    max_age_h: float = Field(168.0, gt=0, le=87600)
    """Crops older than this are removed."""
    max_mb: float = Field(1000.0, gt=0, le=10_000_000)
    """The oldest crops are removed while the directory holds more."""
    jpeg_quantizer: int = Field(3, ge=2, le=31)
    """JPEG quality as FFmpeg's worst quantizer allowed: 2 is the best, 31 the worst."""

    @field_validator("directory")
    @classmethod
    def _directory_absolute(cls, directory: str | None, info: ValidationInfo) -> str:
        return str(_state_path(directory, "crops", info))


class TrackingConfig(StrictModel):
    enabled: bool = True
    """Track faces per camera: every face gets a `track`, and tracks become events."""
    lost_after_s: float = Field(2.0, gt=0, le=3600)
    """A track not seen for this long ends (`track_ended`, reason `lost`)."""
    min_hits: int = Field(2, ge=1, le=100)
    """Analysed frames a face must be seen in before its track is confirmed
    (`track_started`); until then its `track` is null."""
    min_iou: float = Field(0.1, gt=0, lt=1)
    """The least overlap (IoU) of a face with a track's predicted place, both grown 2x
    about their centres, for them to match."""
    # Validated from {} with the file's context: the default directory is beside the file.
    crops: CropsConfig = Field(default_factory=dict, validate_default=True)
    """Best-face crops of ended tracks."""


class RecognitionConfig(StrictModel):
    enabled: bool | None = None
    """Identify tracked faces against the gallery; default (null): on once the gallery
    file exists (`streamd faces enroll` makes it)."""
    embedder: Literal["dlib", "onnx"] = "dlib"
    """`dlib`: dlib's 128-d ResNet, weights from PyPI's face_recognition_models; `onnx`:
    an ArcFace-layout ONNX model (`model`: 112x112 aligned RGB in, one embedding out)."""
    model: str | None = None
    """The ONNX embedder's file (relative to this file); for `embedder: onnx` only."""
    threshold: float | None = Field(None, gt=0, le=10)
    """The distance under which a face is the enrolled person; default: the embedder's
    (dlib 0.5, measured on the shared photos: docs/operations.md)."""
    gallery: str | None = Field(None, validate_default=True)
    """The gallery file (relative to this file); default: $STATE_DIRECTORY/gallery.json
    under systemd, else gallery.json beside this file. Mode 0600: it is biometric data."""

    max_batch: int = Field(16, ge=1, le=256)
    """Face crops per embedder batch at most."""
    max_delay_ms: float = Field(100.0, ge=0, le=10_000)
    """The oldest waiting crop waits at most this long for a fuller batch."""
    queue: int = Field(64, ge=1, le=100_000)
    """Early sightings waiting per camera at most; beyond, dropped and counted."""

    @field_validator("gallery")
    @classmethod
    def _gallery_absolute(cls, gallery: str | None, info: ValidationInfo) -> str:
        return str(_state_path(gallery, "gallery.json", info))

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str | None, info: ValidationInfo) -> str | None:
        if model is None:
            return None
        path = _resolve_path(model, info)
        if not path.is_file():
            raise ValueError(f"no such model file: {path}")
        return str(path)

    @model_validator(mode="after")
    def _model_for_onnx(self) -> RecognitionConfig:
        if (self.embedder == "onnx") != (self.model is not None):
            raise ValueError("embedder: onnx takes a model, and only it does")
        return self

    @property
    def model_path(self) -> Path | None:
        return Path(self.model) if self.model else None

    @property
    def gallery_path(self) -> Path:
        assert self.gallery is not None  # the validator always fills it in
        return Path(self.gallery)


class HealthConfig(StrictModel):
    ready_share: float = Field(0.5, ge=0, le=1)
    """/readyz answers 200 once the engine is loaded and this share of cameras streams."""
    engine_stuck_s: float = Field(30.0, gt=0, le=3600)
    """A batch in the engine for longer than this means a stuck engine: watchdog pings stop."""


class OverloadConfig(StrictModel):
    degrade: bool = False
    """Under sustained overload, lower the sampled rate of the lowest-priority cameras
    (never below `min_fps`) instead of decoding and converting frames that would be
    dropped, and raise it again when the load allows. Off: frames are sampled at each
    camera's `fps` and what the engine cannot take is dropped (counted)."""
    min_fps: float = Field(1.0, gt=0, le=120)
    """A degraded camera is still sampled at least this often (or its `fps`, if lower)."""
    after_s: float = Field(10.0, ge=1, le=3600)
    """Overload must last this long before a rate is lowered, and be gone this long
    before one is raised again."""


class LimitsConfig(StrictModel):
    max_cameras: int = Field(256, ge=1, le=4096)
    """Cameras one daemon accepts; a longer list is refused before it is validated."""


class ReloadConfig(StrictModel):
    settle_s: float = Field(1.0, gt=0, le=60)
    """An edited file is read once it has not changed for this long, so a save caught
    half-written is never applied (SIGHUP reads at once)."""


class NvdecConfig(StrictModel):
    budget_fps: float | None = Field(None, ge=0, le=100_000)
    """Frames a second (1080p-equivalent: a 4K frame counts 4) the GPU's NVDEC may
    decode. Cameras with `decode: auto` are placed on NVDEC by priority until it is
    spent and decode on the CPU beyond it. None: from the GPU's model (a table of NVDEC
    engines, about 748 frames/s of H.264 1080p each); 0: no camera on NVDEC unless it
    demands it (`decode: nvdec`)."""


DUPLICATE_ID = "duplicate_camera_id"


def duplicate_ids(ids: Sequence[object]) -> Iterator[tuple[int, int, str]]:
    """(index, index of its first use, id) for every camera id used again; the one rule,
    run on the models and, for line numbers beside every other error, on the raw file."""
    first_seen: dict[str, int] = {}
    for index, camera_id in enumerate(ids):
        if not isinstance(camera_id, str):
            continue
        if camera_id in first_seen:
            yield index, first_seen[camera_id], camera_id
        else:
            first_seen[camera_id] = index


class StreamsConfig(StrictModel):
    metrics: MetricsConfig = MetricsConfig()
    """Where Prometheus scrapes streamd."""
    engine: EngineConfig | None = None
    """The face detector; without it streamd only ingests (frames are discarded)."""
    batcher: BatcherConfig = BatcherConfig()
    """How frames from all cameras are batched for the engine."""
    postprocess: PostprocessConfig = PostprocessConfig()
    """Score threshold, NMS and the cap on faces per frame."""
    tracking: TrackingConfig = Field(default_factory=dict, validate_default=True)
    """Tracks per camera, track events and best-face crops."""
    recognition: RecognitionConfig = Field(default_factory=dict, validate_default=True)
    """Who a tracked face is: a second model on face crops and the gallery."""
    sinks: list[SinkConfig] = Field(default_factory=lambda: _default_sinks())
    """Where detections and track events go (default: one JSON Lines file)."""
    health: HealthConfig = HealthConfig()
    """Readiness and the systemd watchdog."""
    reload: ReloadConfig = ReloadConfig()
    """How edits to this file are picked up."""
    overload: OverloadConfig = OverloadConfig()
    """What happens when cameras offer more frames than the engine can analyse."""
    nvdec: NvdecConfig = NvdecConfig()
    """How much decoding the GPU's NVDEC takes on (the rest decodes on the CPU)."""
    limits: LimitsConfig = LimitsConfig()
    """Bounds on what one file may ask of the daemon."""
    shard: str = "0/1"
    """I/N: this instance runs only the cameras whose id hashes to shard I of N
    (rendezvous hashing), so N instances share one file; `streamd run --shard` overrides it."""
    defaults: CameraSettings = CameraSettings()
    """Settings applied to every camera unless the camera sets them itself."""
    cameras: list[CameraConfig]
    """The cameras to ingest; required, so a file emptied by an interrupted save is
    refused rather than read as "no cameras" (`cameras: []` says none)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        defaults, cameras = data.get("defaults"), data.get("cameras")
        if not isinstance(defaults, Mapping) or not isinstance(cameras, list):
            return data
        merged = [_merge(defaults, cam) if isinstance(cam, Mapping) else cam for cam in cameras]
        return {**data, "cameras": merged}

    @model_validator(mode="after")
    def _batch_fits_the_engine_profile(self) -> StreamsConfig:
        # Checked here so `streamd check` refuses it, instead of `auto` quietly running
        # ONNX Runtime because TensorRT cannot take the batches.
        profile = self.engine.profile if self.engine is not None else None
        max_batch = self.batcher.max_batch
        if profile is not None and max_batch != "auto" and not profile.min <= max_batch <= profile.max:
            raise PydanticCustomError(
                "batch_outside_profile",
                "batcher.max_batch {max_batch} must lie within engine.profile min..max ({min}..{max})",
                {
                    "max_batch": max_batch,
                    "min": profile.min,
                    "max": profile.max,
                    _REPORT_AT: [("batcher", "max_batch"), ("engine", "profile"), ("engine",)],
                },
            )
        return self

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        for index, first, camera_id in duplicate_ids([camera.id for camera in cameras]):
            raise PydanticCustomError(
                DUPLICATE_ID,
                "duplicate id '{id}' (first used by cameras[{first}])",
                {"id": camera_id, "first": first, _REPORT_AT: [("cameras", index, "id")]},
            )
        return cameras

    @field_validator("shard")
    @classmethod
    def _shard(cls, shard: str) -> str:
        return str(Shard.parse(shard))

    @property
    def enabled_cameras(self) -> list[CameraConfig]:
        return [camera for camera in self.cameras if camera.enabled]

    @property
    def this_shard(self) -> Shard:
        return Shard.parse(self.shard)

    @property
    def cameras_to_run(self) -> list[CameraConfig]:
        """The enabled cameras of this instance's shard."""
        shard = self.this_shard
        return [camera for camera in self.enabled_cameras if shard.owns(camera.id)]


@dataclass(frozen=True)
class Overrides:
    """What `streamd run`'s options set over the file, on every read of it (reloads too)."""

    shard: str | None = None
    metrics_listen: str | None = None

    def __post_init__(self) -> None:
        # The file's own rules, with messages that name the option.
        try:
            if self.shard is not None:
                Shard.parse(self.shard)
            if self.metrics_listen is not None:
                MetricsConfig(listen=self.metrics_listen)
        except ValidationError as error:
            raise ValueError(f"--metrics-listen: {error.errors()[0]['msg']}") from None
        except ValueError as error:
            raise ValueError(f"--shard: {error}") from None

    def apply(self, config: StreamsConfig) -> StreamsConfig:
        update: dict[str, Any] = {}
        if self.shard is not None:
            update["shard"] = str(Shard.parse(self.shard))
        if self.metrics_listen is not None:
            # Only the address: the file's TLS, passwords and pictures setting stay.
            update["metrics"] = config.metrics.model_copy(update={"listen": self.metrics_listen})
        return config.model_copy(update=update) if update else config


def _merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in own.items():
        base = merged.get(key)
        merged[key] = _merge(base, value) if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return merged
