"""CPU time of this process's threads, by what they do (Linux /proc; benchmarks only).

Python names its threads and streamd names every one it starts, so the CPU of a run
splits by role: the event loop, the cameras' decode threads, the engine's stages, the
sinks. Threads Python does not know (ONNX Runtime's own pool, FFmpeg's) are `native`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# Thread name prefix -> role, first match wins ("engine-deliver" before "engine-").
_ROLES = (
    ("MainThread", "loop"),
    ("decode-", "decode"),
    ("camera-", "camera"),
    ("engine-infer", "inference"),
    ("engine-assemble", "assemble"),
    ("engine-deliver", "deliver"),
    ("sink-", "sink"),
)


def role_of(thread_name: str) -> str:
    return next((role for prefix, role in _ROLES if thread_name.startswith(prefix)), "other")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far (user + system) of this process's threads, summed by role."""
    roles = {thread.native_id: role_of(thread.name) for thread in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        role = roles.get(int(task.name), "native")
        spent[role] = spent.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return spent


def spent_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds by role between two `cpu_by_role` readings (threads that ended are lost)."""
    return {role: after[role] - before.get(role, 0.0) for role in sorted(after) if after[role] > before.get(role, 0.0)}
