"""Progress of a run over recorded inputs, in three forms: a bar on a terminal (rich),
a plain line every few seconds otherwise (logs, CI), JSON lines for scripts.

All three count the same way: frames analysed of the frames the inputs are expected to
give (from their duration and the analysis rate), frames/s since the start, and the time
left at that rate. Frames are counted from the engine's deliver thread; the rest runs on
the event loop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from streamd.recorded.inputs import Input


@dataclass
class Count:
    files: int = 0
    frames_total: int = 0
    frames_done: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    """Files by how they ended: done, failed, partial, skipped."""
    started_mono: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_mono
        return self.frames_done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        left = max(0, self.frames_total - self.frames_done)
        return left / rate if rate > 0 else None


class Progress:
    """The counting; the forms below say it."""

    def __init__(self) -> None:
        self.count = Count()
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}  # frames done per running input

    def begin(self, inputs: list[Input]) -> None:
        self.count = Count(files=len(inputs), frames_total=sum(source.frames for source in inputs))

    def started(self, source: Input) -> None:
        with self._lock:
            self._running[source.name] = 0

    def frames(self, name: str, count: int) -> None:
        """`count` more frames of `name` analysed (deliver thread)."""
        with self._lock:
            self.count.frames_done += count
            if name in self._running:
                self._running[name] += count

    def ended(self, source: Input, status: str, outcome: dict[str, Any]) -> None:
        with self._lock:
            self._running.pop(source.name, None)
            self.count.finished[status] = self.count.finished.get(status, 0) + 1
            if status == "skipped":  # its frames count as done: the ETA is for what is left
                self.count.frames_done += source.frames

    def tick(self) -> None:
        """Every `interval` seconds while the run lasts."""

    def end(self, summary: dict[str, Any]) -> None:
        """The run is over."""

    def running(self) -> dict[str, int]:
        with self._lock:
            return dict(self._running)

    def line(self) -> str:
        count = self.count
        percent = f" ({100 * count.frames_done / count.frames_total:.0f}%)" if count.frames_total else ""
        eta = count.eta_s()
        finished = ", ".join(f"{number} {status}" for status, number in sorted(count.finished.items()))
        return (
            f"{count.frames_done}/{count.frames_total} frames{percent}, {count.rate():.1f} frames/s, "
            f"ETA {_duration(eta)}; files: {len(self.running())} running"
            + (f", {finished}" if finished else "")
            + f" of {count.files}"
        )


class LineProgress(Progress):
    """A plain line per interval and per finished input, on stderr."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr

    def tick(self) -> None:
        self._say(self.line())

    def ended(self, source: Input, status: str, outcome: dict[str, Any]) -> None:
        super().ended(source, status, outcome)
        if status == "failed":
            self._say(f"{source.name}: failed: {outcome['error']}")
        elif status == "done":
            self._say(
                f"{source.name}: done, {outcome['frames']} frames, {outcome['faces']} faces, {outcome['tracks']} tracks"
            )
        else:
            self._say(f"{source.name}: {status}")

    def end(self, summary: dict[str, Any]) -> None:
        self._say(summary_line(summary))

    def _say(self, text: str) -> None:
        print(f"streamd detect: {text}", file=self.stream, flush=True)


class JsonProgress(Progress):
    """One JSON object a line, on stdout: `progress`, `file` and `summary` events."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def begin(self, inputs: list[Input]) -> None:
        super().begin(inputs)
        self._emit({"event": "start", "files": self.count.files, "frames_total": self.count.frames_total})

    def tick(self) -> None:
        count, eta = self.count, self.count.eta_s()
        self._emit(
            {
                "event": "progress",
                "frames_done": count.frames_done,
                "frames_total": count.frames_total,
                "frames_per_s": round(count.rate(), 2),
                "eta_s": round(eta, 1) if eta is not None else None,
                "running": self.running(),
                "finished": dict(count.finished),
            }
        )

    def ended(self, source: Input, status: str, outcome: dict[str, Any]) -> None:
        super().ended(source, status, outcome)
        self._emit({"event": "file", "file": source.name, "status": status, **outcome})

    def end(self, summary: dict[str, Any]) -> None:
        self._emit({"event": "summary", **summary})

    def _emit(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()


class BarProgress(Progress):
    """rich's progress bar on a terminal: frames done of all, frames/s, time left, and a
    line per running input."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True)
        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}

    def begin(self, inputs: list[Input]) -> None:
        super().begin(inputs)
        self.bar.start()
        self._overall = self.bar.add_task("all files", total=self.count.frames_total or None, rate="")

    def started(self, source: Input) -> None:
        super().started(source)
        self._tasks[source.name] = self.bar.add_task(f"  {source.name}", total=source.frames or None, rate="")

    def tick(self) -> None:
        if self._overall is None:
            return
        rate = f"{self.count.rate():.1f} frames/s"
        self.bar.update(self._overall, completed=self.count.frames_done, rate=rate)
        for name, done in self.running().items():
            task = self._tasks.get(name)
            if task is not None:
                self.bar.update(task, completed=done)

    def ended(self, source: Input, status: str, outcome: dict[str, Any]) -> None:
        super().ended(source, status, outcome)
        task = self._tasks.pop(source.name, None)
        if task is not None:
            self.bar.remove_task(task)
        if status == "failed":
            self.console.print(f"[red]{source.name}: failed:[/red] {outcome['error']}", markup=True, highlight=False)
        elif status != "skipped":
            self.console.print(f"{source.name}: {status}, {outcome.get('frames', 0)} frames", highlight=False)

    def end(self, summary: dict[str, Any]) -> None:
        self.tick()
        self.bar.stop()
        self.console.print(summary_line(summary), highlight=False)


def choose(json_lines: bool) -> Progress:
    if json_lines:
        return JsonProgress()
    return BarProgress() if sys.stderr.isatty() else LineProgress()


def summary_line(summary: dict[str, Any]) -> str:
    statuses = ", ".join(f"{summary[status]} {status}" for status in ("done", "failed", "partial", "skipped"))
    return (
        f"{summary['files']} file(s): {statuses}; {summary['frames']} frames, {summary['faces']} faces, "
        f"{summary['tracks']} tracks in {summary['seconds']:.1f}s ({summary['frames_per_s']:.1f} frames/s)"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
