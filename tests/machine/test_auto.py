"""The `auto` rules on the machine shapes docs/operations.md shows, and that table current."""

from __future__ import annotations

from devtools.auto_reference import DOC, SHAPES, current_doc
from streamd.machine.auto import ModelCost, engine_choices
from streamd.machine.gpus import GpuReport
from streamd.machine.hardware import Machine
from streamd.machine.limits import Limits

GIB, MIB = 2**30, 2**20


def chosen(index: int) -> tuple[int, int, int]:
    _, machine, cameras, on_gpu = SHAPES[index]
    choices = engine_choices(machine, on_gpu, cameras)
    return choices.instances.value, choices.threads.value, choices.max_batch.value


def test_the_documented_shapes() -> None:
    assert SHAPES[0][0].startswith("this project's box")
    assert chosen(0) == (2, 1, 1), "2 cores: two single-threaded instances, frames as they come"
    assert chosen(1) == (16, 1, 1)
    assert chosen(2) == (3, 1, 1), "a 4-core quota and 1 GiB: memory holds three instances"
    assert chosen(3) == (1, 16, 32), "an A10 with 70 cameras: one instance, batches of 32"
    assert chosen(4) == (1, 32, 32) and chosen(5) == (1, 32, 32)


def test_the_table_in_the_docs_is_the_rules_own() -> None:
    assert DOC.read_text() == current_doc(), "run python -m devtools.auto_reference --write"


def test_a_measured_cost_replaces_the_assumption_and_settings_in_the_file_win() -> None:
    machine = Machine(Limits(8, 8, "8 CPU(s)", 16 * GIB, 2 * GIB, "MemAvailable"), GpuReport(()))
    assumed = engine_choices(machine, on_gpu=False, cameras=8)
    assert assumed.instances.value == 6 and "assumed" in assumed.instances.why  # 0.7 x 2 GiB / 230 MiB
    measured = engine_choices(machine, False, 8, cost=ModelCost(700 * MIB, 0.03))
    assert measured.instances.value == 2 and "measured" in measured.instances.why
    given = engine_choices(machine, False, 8, instances=4, threads=2, max_batch=2)
    assert [(c.value, c.auto) for c in given.all()] == [(4, False), (2, False), (2, False)]
    few_cameras = engine_choices(machine, on_gpu=True, cameras=3)
    assert few_cameras.max_batch.value == 4, "a frame of each of 3 cameras: a batch of 4"
    assert engine_choices(machine, True, 40, profile=(1, 16)).max_batch.value == 16
