"""The engine's `auto` settings on this machine, and the model's measured cost behind them.

The rules are `streamd.machine.auto`'s; this applies them to a configuration. What the
first instance took at its warm-up (resident memory, time per frame) is kept per model
and machine in the engine cache (the service's state directory), so later starts size
the engine by the model's real cost instead of an assumption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, replace
from typing import Literal

from streamd.config.schema import EngineConfig
from streamd.machine.auto import Choice, EngineChoices, ModelCost, engine_choices
from streamd.machine.hardware import Machine

log = logging.getLogger(__name__)


class EngineSizing:
    def __init__(self, config: EngineConfig, max_batch: int | Literal["auto"], cameras: int, machine: Machine) -> None:
        self.config = config
        self.max_batch = max_batch
        self.cameras = cameras
        self.machine = machine
        self.cost_file = config.cache_path / f"cost-{_key(config.model, machine)}.json"
        self.chosen: EngineChoices | None = None
        """What `choices` gave last: the engine runs with it (for the log, /status, check --deep)."""

    @property
    def instances_auto(self) -> bool:
        return self.config.instances == "auto"

    def choices(self, on_gpu: bool) -> EngineChoices:
        config = self.config
        self.chosen = engine_choices(
            self.machine,
            on_gpu,
            self.cameras,
            None if config.instances == "auto" else config.instances,
            None if config.threads == "auto" else config.threads,
            None if self.max_batch == "auto" else self.max_batch,
            self.cached_cost(),
            (config.profile.min, config.profile.max),
        )
        return self.chosen

    def fitted(self, instances: int) -> None:
        """The warm-up closed the instances memory could not hold (`auto` only)."""
        chosen = self.chosen
        if chosen is None or instances >= chosen.instances.value:
            return
        why = f"memory holds {instances} at what the first instance was measured to take"
        self.chosen = replace(chosen, instances=Choice("engine.instances", instances, why))

    def log_choices(self) -> None:
        """Once at start: each `auto` value and why."""
        for choice in self.chosen.all() if self.chosen is not None else []:
            if choice.auto:
                log.info("auto: %s", choice.line())

    def cached_cost(self) -> ModelCost | None:
        try:
            return ModelCost(**json.loads(self.cost_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # never measured here (or a file of another version): assumed

    def remember(self, cost: ModelCost) -> None:
        """Keep what the warm-up measured; a cache that cannot be written only costs the next start an assumption."""
        try:
            self.cost_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.cost_file.with_name(self.cost_file.name + ".part")
            partial.write_text(json.dumps(asdict(cost)))
            os.replace(partial, self.cost_file)
        except OSError as error:
            log.warning("auto: cannot keep the model's measured cost in %s: %s", self.cost_file, error)


def _key(model: str, machine: Machine) -> str:
    digest = hashlib.sha256()
    try:
        with open(model, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        digest.update(model.encode())
    digest.update(machine.key().encode())
    return digest.hexdigest()[:16]
