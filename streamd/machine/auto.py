"""The rules behind `auto`: engine instances, their threads and the batch size, from the
machine and what the model was measured to cost on it. Pure: the same rules make the
table in docs/operations.md for machines this one is not.

On a CPU (ONNX Runtime):
- `batcher.max_batch` 1: ONNX Runtime on a CPU runs no faster per frame in batches
  (measured on 2 cores: 85 frames/s at batch 1, 77 at 4), and a batch holds its first
  frame back for the rest.
- `engine.instances`: one per usable core, each single-threaded: a session splitting
  every layer over the cores waits at each layer for its slowest thread, the slower the
  busier the decoders keep the cores (measured on 2 cores: 89 against 55 frames/s alone,
  60 against 31 beside decoding). At most as many as memory holds: each instance keeps
  the arena of its first full batch (measured, per machine and model, at the first
  start; 230 MiB assumed before), and the instances may take 70% of what is available.
- `engine.threads`: the usable cores shared among the instances.

On a GPU (TensorRT, or ONNX Runtime's CUDA provider):
- `engine.instances` 1: one instance keeps the GPU busy when its batches are large; more
  only split the same GPU.
- `batcher.max_batch`: the camera count rounded up to a power of two, within 1..32 (a
  batch of every camera's frame, never bigger than the cameras can fill; 32 is the
  default profile's maximum; within `engine.profile`), and no more than half the GPU's
  free memory holds at an assumed 64 MiB a frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamd.machine.hardware import Machine

_MIB = 2**20
# Before the model was measured on this machine: a CPU instance of yolov5n-0.5 at 640x640
# held 216 MB after its first batch (measured); a little more for larger models' sake.
ASSUMED_INSTANCE_BYTES = 230 * _MIB
ASSUMED_GPU_FRAME_BYTES = 64 * _MIB
MEMORY_SHARE = 0.7
"""Of the available memory, what the engine instances may take; the rest is the decoders'."""
GPU_MEMORY_SHARE = 0.5
MAX_AUTO_BATCH = 32


@dataclass(frozen=True)
class ModelCost:
    """What the model was measured to take on this machine (`engine.cost` caches it)."""

    instance_bytes: int
    """Resident memory of one instance after its first full batch (CPU)."""
    frame_s: float
    """Seconds of one instance per frame, at the batch it was measured with."""


@dataclass(frozen=True)
class Choice:
    knob: str
    value: int
    why: str
    auto: bool = True
    """False: the configuration set it."""

    def as_dict(self) -> dict[str, object]:
        return {"knob": self.knob, "value": self.value, "auto": self.auto, "why": self.why or None}

    def line(self) -> str:
        return f"{self.knob}={self.value} " + (f"because {self.why}" if self.auto else "(set in the configuration)")


@dataclass(frozen=True)
class EngineChoices:
    instances: Choice
    threads: Choice
    max_batch: Choice

    def all(self) -> list[Choice]:
        return [self.instances, self.threads, self.max_batch]


def engine_choices(
    machine: Machine,
    on_gpu: bool,
    cameras: int,
    instances: int | None = None,
    threads: int | None = None,
    max_batch: int | None = None,
    cost: ModelCost | None = None,
    profile: tuple[int, int] = (1, MAX_AUTO_BATCH),
) -> EngineChoices:
    """The engine's settings: the configured ones (not None) as they are, `auto` by the
    rules; `profile`: the batches a GPU engine accepts (TensorRT's `engine.profile`)."""
    cores = machine.cores
    if on_gpu:
        batch = _given("batcher.max_batch", max_batch) or _within(_gpu_batch(machine, cameras), *profile)
        count = _given("engine.instances", instances) or Choice(
            "engine.instances", 1, "a GPU is kept busy by one instance's batches"
        )
    else:
        batch = _given("batcher.max_batch", max_batch) or Choice(
            "batcher.max_batch", 1, "ONNX Runtime on a CPU runs no faster per frame in batches"
        )
        count = _given("engine.instances", instances) or _cpu_instances(machine, cost)
    share = max(1, cores // count.value)
    thread_choice = _given("engine.threads", threads) or Choice(
        "engine.threads", share, f"{cores} usable core(s) shared by {count.value} instance(s)"
    )
    return EngineChoices(count, thread_choice, batch)


def _within(choice: Choice, low: int, high: int) -> Choice:
    if low <= choice.value <= high:
        return choice
    value = min(max(choice.value, low), high)
    return Choice(choice.knob, value, f"{choice.why}, within engine.profile {low}..{high}")


def _given(knob: str, value: int | None) -> Choice | None:
    return Choice(knob, value, "", auto=False) if value is not None else None


def _cpu_instances(machine: Machine, cost: ModelCost | None) -> Choice:
    cores = machine.cores
    why = f"one single-threaded instance per usable core ({machine.limits.cores_why})"
    available = machine.limits.memory_available
    if available is None:
        return Choice("engine.instances", cores, why)
    per_instance = cost.instance_bytes if cost is not None else ASSUMED_INSTANCE_BYTES
    measured = "measured" if cost is not None else "assumed before a measurement"
    fits = max(1, int(MEMORY_SHARE * available // per_instance))
    if fits >= cores:
        return Choice("engine.instances", cores, why)
    return Choice(
        "engine.instances",
        fits,
        f"memory holds {fits}: {MEMORY_SHARE:g} x {available / 2**30:.1f} GiB available "
        f"({machine.limits.memory_why}) / {per_instance / _MIB:.0f} MiB an instance ({measured}), "
        f"fewer than the {cores} usable cores",
    )


def batch_for_cameras(cameras: int) -> int:
    """A frame of each camera: their count rounded up to a power of two, at most 32."""
    return min(MAX_AUTO_BATCH, 1 << math.ceil(math.log2(max(1, cameras))))


def _gpu_batch(machine: Machine, cameras: int) -> Choice:
    wanted = batch_for_cameras(cameras)
    why = f"{cameras} camera(s): a frame of each per batch, at most {MAX_AUTO_BATCH}"
    gpus = machine.gpus.gpus
    if not gpus:
        return Choice("batcher.max_batch", wanted, why)
    free = gpus[0].memory_free
    fits = max(1, int(GPU_MEMORY_SHARE * free // ASSUMED_GPU_FRAME_BYTES))
    if fits >= wanted:
        return Choice("batcher.max_batch", wanted, why)
    fits = 1 << int(math.log2(fits))
    return Choice(
        "batcher.max_batch",
        fits,
        f"half of {free / 2**30:.1f} GiB free on {gpus[0].name} holds {fits} frames of "
        f"{ASSUMED_GPU_FRAME_BYTES / _MIB:.0f} MiB",
    )
