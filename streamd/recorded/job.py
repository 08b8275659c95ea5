"""A batch job over recorded inputs: the daemon's detector, fed by files, not cameras.

Several inputs are read at once (`jobs`), each in its own thread into its own slot, and
the daemon's batcher, engines, postprocess, tracks and second stage take them from
there, as fast as the machine allows: each reader waits for its slot to empty instead of
being replaced (`streamd.recorded.reader`), so nothing is dropped and nothing queues.
An input is finished once every frame it gave is accounted for by the detector and the
`track_ended` event of every track it started has been written; its file is then made
whole and the manifest says so.

A stop (Ctrl-C, SIGTERM) ends the readers at once; the engine finishes what it holds,
open tracks end (`stopped`), and the inputs being read stay `.partial`, marked so in the
manifest, for `--resume` to read again from their start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamd.analysis.assembly import assemble_detector
from streamd.analysis.detector import Detector
from streamd.base.failures import Failures
from streamd.base.threads import run_in_thread
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import Detached
from streamd.config.schema import EngineConfig, StreamsConfig
from streamd.frames.frame import Frame
from streamd.machine.limits import read_limits
from streamd.metrics.registry import Metrics
from streamd.recorded.inputs import Input
from streamd.recorded.manifest import Manifest, write_atomically
from streamd.recorded.outputs import RecordFiles
from streamd.recorded.progress import Progress
from streamd.recorded.reader import ReadOutcome, ReadSettings, read

log = logging.getLogger(__name__)

# A frame waits in its slot only for the engine (the readers wait instead of replacing),
# so only an engine stuck for this long makes one stale (dropped, and counted as such).
_MAX_AGE_MS = 60_000.0
# How long a finished input waits for its tracks' ends (crops written, identities in).
_TRACK_ENDS_S = 30.0
_POLL_S = 0.02


@dataclass(frozen=True)
class JobOptions:
    out: Path | None
    """Folder of the outputs, the manifest and the summary; None: records to stdout."""
    fps: float | None
    """Analysis rate; None: every frame."""
    jobs: int
    """Inputs read at once."""
    resume: bool = False
    progress_interval_s: float = 10.0


class DetectJob:
    def __init__(
        self, config: StreamsConfig, engine: EngineConfig, inputs: list[Input], options: JobOptions, progress: Progress
    ) -> None:
        self.options = options
        self.inputs = inputs
        self.progress = progress
        self.engine = engine
        self.config = _for_recordings(config, options.out)
        self.files = RecordFiles(options.out, progress.frames)
        self.stopping = threading.Event()
        self.stop_reason: str | None = None
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._reading: list[Input] = []

    def settings(self) -> dict[str, Any]:
        """What decides the records: a resumed run must have the same."""
        model = Path(self.engine.model)
        stat = model.stat()
        config = self.config
        return {
            "model": str(model.resolve()),
            "model_size": stat.st_size,
            "model_mtime_ns": stat.st_mtime_ns,
            "fps": self.options.fps,
            "postprocess": config.postprocess.model_dump(mode="json"),
            "tracking": config.tracking.model_dump(mode="json"),
            "recognition": config.recognition.model_dump(mode="json"),
        }

    def stop(self, reason: str) -> None:
        """Stop reading (any thread; a signal handler); what was read is still analysed."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()

    async def run(self) -> dict[str, Any]:
        """Every input read, analysed and written (or failed, or stopped); the summary."""
        out = self.options.out
        manifest: Manifest | None = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            settings = self.settings()
            manifest = Manifest.resume(out, settings) if self.options.resume else Manifest(out, settings)
            manifest.save()
        metrics = Metrics()
        detector = await run_in_thread(
            lambda: assemble_detector(self.config, self.engine, self.files, metrics, Failures(), self._at_once()),
            name="engine-load",
        )
        await detector.start()
        started = time.monotonic()  # the rate is the analysis's, without loading the model
        self.progress.begin(self.inputs)
        ticker = asyncio.create_task(self._tick(), name="progress")
        gate = asyncio.Semaphore(max(1, self.options.jobs))
        # The cores left to each file's decoder by the files decoded beside it.
        threads = max(1, read_limits().cores // self._at_once())
        read_settings = ReadSettings(self.options.fps, threads, detector.convert, detector.keeps_pictures())

        async def one(source: Input) -> None:
            async with gate:
                await self._one(source, detector, manifest, read_settings)

        try:
            await asyncio.gather(*(one(source) for source in self.inputs))
        finally:
            drained = await detector.stop()
            ticker.cancel()
            for source in self._reading:  # stopped midway: what was analysed stays, marked partial
                self.files.leave_partial(source.name)
                self._ended(source, "partial", manifest, self._written(source))
            self.files.close()
        if not drained:
            log.error("the engine did not finish in time: the last records may be missing")
        summary = self._summary(time.monotonic() - started)
        if out is not None:
            write_atomically(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        self.progress.end(summary)
        return summary

    def _at_once(self) -> int:
        """Inputs read at the same time."""
        return max(1, min(self.options.jobs, len(self.inputs)))

    async def _one(
        self, source: Input, detector: Detector[RecordFiles], manifest: Manifest | None, settings: ReadSettings
    ) -> None:
        if source.problem is not None:
            self._ended(source, "failed", manifest, {"error": source.problem})
            return
        if manifest is not None and manifest.finished(source, self.files.path_of(source)):
            self._ended(source, "skipped", None, manifest.entries[source.name])
            return
        if self.stopping.is_set():
            return  # not begun: still to do
        self.progress.started(source)
        self.files.open(source)
        self._reading.append(source)
        slot: LatestFrameSlot[Frame] = LatestFrameSlot(asyncio.get_running_loop())
        detector.attach(source.name, slot)
        outcome = await run_in_thread(lambda: read(source, slot, settings, self.stopping), name=f"decode-{source.name}")
        if outcome.stopped or not await self._analysed(source, detector, outcome):
            return  # the stop marks it partial once the engine is drained
        self._reading.remove(source)
        await detector.detach(source.name, Detached.finished)
        await self._track_ends(source)
        written = self._written(source, outcome)
        if outcome.error is not None:  # said by the progress, kept in the summary and the manifest
            self.files.leave_partial(source.name)
            self._ended(source, "failed", manifest, {**written, "error": outcome.error})
        else:
            self.files.finish(source.name)
            self._ended(source, "done", manifest, written)

    async def _analysed(self, source: Input, detector: Detector[RecordFiles], outcome: ReadOutcome) -> bool:
        """Wait until each frame `source` gave is analysed or dropped; False when stopped first."""
        while detector.accounted(source.name) < outcome.frames:
            if self.stopping.is_set():
                return False
            await asyncio.sleep(_POLL_S)
        return True

    async def _track_ends(self, source: Input) -> None:
        deadline = time.monotonic() + _TRACK_ENDS_S
        while time.monotonic() < deadline:
            tally = self.files.tally(source.name)
            if tally.tracks_ended >= tally.tracks_started:
                return
            await asyncio.sleep(_POLL_S)
        log.warning(
            "%s: not every track's end came within %gs; its file is closed without them", source.name, _TRACK_ENDS_S
        )

    def _written(self, source: Input, outcome: ReadOutcome | None = None) -> dict[str, Any]:
        tally = self.files.tally(source.name)
        written: dict[str, Any] = {"frames": tally.frames, "faces": tally.faces, "tracks": tally.tracks_started}
        if outcome is not None and outcome.decode_errors:
            written["decode_errors"] = outcome.decode_errors
        return written

    def _ended(self, source: Input, status: str, manifest: Manifest | None, outcome: dict[str, Any]) -> None:
        outcome = {key: value for key, value in outcome.items() if key not in ("path", "size", "mtime_ns", "status")}
        self._outcomes[source.name] = {"status": status, **outcome}
        if manifest is not None and status != "skipped":
            output = str(source.output) if status == "done" else f"{source.output}.partial"
            manifest.record(source, {"status": status, "output": output, **outcome})
        self.progress.ended(source, status, outcome)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_interval_s)
            self.progress.tick()

    def _summary(self, seconds: float) -> dict[str, Any]:
        outcomes = self._outcomes.values()
        analysed = [o for o in outcomes if o["status"] != "skipped"]
        frames = sum(o.get("frames", 0) for o in analysed)
        summary: dict[str, Any] = {"files": len(self.inputs)}
        for status in ("done", "failed", "partial", "skipped"):
            summary[status] = sum(o["status"] == status for o in outcomes)
        summary["not_started"] = len(self.inputs) - len(self._outcomes)
        summary |= {
            "frames": frames,
            "faces": sum(o.get("faces", 0) for o in analysed),
            "tracks": sum(o.get("tracks", 0) for o in analysed),
            "errors": [{"file": name, "error": o["error"]} for name, o in self._outcomes.items() if "error" in o],
            "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 2) if seconds > 0 else 0.0,
            "stopped_by": self.stop_reason,
        }
        return summary


def _for_recordings(config: StreamsConfig, out: Path | None) -> StreamsConfig:
    """The configuration as recordings need it: frames never go stale while the engine
    works through them, and best faces go under the output folder (none without one)."""
    crops = config.tracking.crops
    crops = (
        crops.model_copy(update={"directory": str(out.resolve() / "crops")})
        if out is not None
        else crops.model_copy(update={"enabled": False})
    )
    return config.model_copy(
        update={
            "batcher": config.batcher.model_copy(update={"max_age_ms": _MAX_AGE_MS}),
            "tracking": config.tracking.model_copy(update={"crops": crops}),
        }
    )
