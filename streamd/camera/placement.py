"""Which cameras decode on NVDEC: placed by priority within the GPU's NVDEC budget.

Each camera costs the frames it decodes a second, in 1080p equivalents
(`streamd.gpu.nvdec_budget`). Before a camera has been measured it is taken to be 1080p
at 25 fps, what a typical IP camera sends; once it streams, its measured decode rate and
picture size replace the estimate. `decode: nvdec` cameras are placed first, whatever
the budget (they demand it); then `decode: auto` cameras by priority, highest first,
each that still fits (a small camera may fit where a large one did not). Among equal
priorities, cameras already on NVDEC come first, so a replan does not shuffle them.

The plan is made when the set of cameras changes (start, reload), when the budget
changes (reload), and when a camera's measured cost moves by more than a fifth from the
cost it was planned with. A camera that NVDEC refused (`nvdec_failure`) decodes on the
CPU anyway and takes no budget. A streaming camera the plan moves reconnects at its
next keyframe with the other decoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamd.camera.source import CameraSource
from streamd.camera.state import CameraState
from streamd.config.schema import DecodeMode
from streamd.gpu.nvdec_budget import NvdecBudget

log = logging.getLogger(__name__)

REFERENCE_PIXELS = 1920 * 1080
ESTIMATED_COST = 25.0
"""A camera not yet measured: 1080p at 25 frames/s."""
_REPLAN_CHANGE = 0.2


@dataclass(frozen=True)
class DecodeDemand:
    camera_id: str
    priority: int
    demands_nvdec: bool
    """`decode: nvdec`: placed whatever the budget."""
    cost: float
    """1080p-equivalent frames a second it decodes."""
    on_nvdec: bool = False
    """Placed on NVDEC by the previous plan."""


@dataclass(frozen=True)
class NvdecPlan:
    on_nvdec: frozenset[str]
    planned_fps: float
    """The cost of the cameras placed on NVDEC."""


def plan_nvdec(demands: Iterable[DecodeDemand], budget_fps: float) -> NvdecPlan:
    """Place `demands` (in configuration order) on NVDEC within `budget_fps`."""
    ordered = list(demands)
    placed = [d for d in ordered if d.demands_nvdec]
    used = sum(d.cost for d in placed)
    position = {d.camera_id: index for index, d in enumerate(ordered)}
    candidates = sorted(
        (d for d in ordered if not d.demands_nvdec),
        key=lambda d: (-d.priority, not d.on_nvdec, position[d.camera_id]),
    )
    for demand in candidates:
        if used + demand.cost <= budget_fps:
            placed.append(demand)
            used += demand.cost
    return NvdecPlan(frozenset(d.camera_id for d in placed), used)


def decode_cost(decoded_fps: float, width: int, height: int) -> float:
    return decoded_fps * width * height / REFERENCE_PIXELS


class DecoderPlacement:
    """Keeps the cameras' NVDEC placement true to the budget as cameras come, go and change."""

    def __init__(self, budget: NvdecBudget | None, on_plan: Callable[[float, float], None] | None = None) -> None:
        self.budget = budget
        """None: NVDEC is not possible in this process; nothing is placed."""
        self.plan: NvdecPlan | None = None
        self._on_plan = on_plan or (lambda budget_fps, planned_fps: None)
        """Told the budget and the planned frames/s after every plan."""
        self._measured: dict[str, float] = {}
        self._planned: dict[str, float] = {}

    def set_budget(self, budget: NvdecBudget | None, sources: list[CameraSource]) -> None:
        if budget != self.budget:
            self.budget = budget
            if budget is not None:
                log.info("NVDEC budget %g 1080p frames/s (%s)", budget.fps, budget.source)
            self.replan(sources)

    def cost(self, camera_id: str) -> float:
        return self._measured.get(camera_id, ESTIMATED_COST)

    def replan(self, sources: list[CameraSource]) -> None:
        """Place every camera again; before new cameras start, so their first connection
        already uses the decoder the plan gives them."""
        current = {source.camera_id for source in sources}
        for gone in set(self._measured) - current:
            del self._measured[gone]
        if self.budget is None:
            return
        demands = [
            DecodeDemand(
                source.camera_id,
                source.camera.priority,
                source.camera.decode is DecodeMode.nvdec,
                self.cost(source.camera_id),
                source.placed_on_nvdec,
            )
            for source in sources
            if source.camera.decode is not DecodeMode.cpu and source.run.nvdec_failure is None
        ]
        plan = plan_nvdec(demands, self.budget.fps)
        for source in sources:
            on_nvdec = source.camera_id in plan.on_nvdec
            if on_nvdec != source.placed_on_nvdec and source.camera.decode is DecodeMode.auto:
                if source.run.nvdec_failure is None:
                    source.log.info(
                        "NVDEC budget: decoding on %s (%.0f of %g 1080p frames/s placed on NVDEC)",
                        "NVDEC" if on_nvdec else "the CPU",
                        plan.planned_fps,
                        self.budget.fps,
                    )
                source.place_on_nvdec(on_nvdec)
        self._planned = {d.camera_id: d.cost for d in demands}
        self.plan = plan
        self._on_plan(self.budget.fps, plan.planned_fps)

    def measured(self, sources: list[CameraSource], decoded_fps: dict[str, float]) -> None:
        """New decode rates (from the rate clock); replans when a cost moved enough."""
        moved = False
        for source in sources:
            rate, picture = decoded_fps.get(source.camera_id), source.run.picture
            if not rate or picture is None or source.state is not CameraState.streaming:
                continue  # keep what it cost while it streamed, or the estimate
            cost = decode_cost(rate, *picture)
            self._measured[source.camera_id] = cost
            planned = self._planned.get(source.camera_id)
            if planned is not None and abs(cost - planned) > _REPLAN_CHANGE * planned:
                moved = True
        if moved:
            self.replan(sources)
