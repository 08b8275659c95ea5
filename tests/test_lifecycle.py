"""Start as a stack, stop within one deadline: the order, the shares, the failures."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from devtools.testing.ports import free_port
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.service.lifecycle import Lifecycle
from tests.support.waiting import run


def test_steps_stop_last_first_each_within_its_share_of_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, float]] = []

    def step(name: str, takes: float = 0.0, fails: bool = False, lossy: bool = False):  # type: ignore[no-untyped-def]
        async def stop(budget: float) -> bool:
            calls.append((name, budget))
            await asyncio.sleep(takes)
            if fails:
                raise RuntimeError(f"{name} broke")
            return not lossy

        return stop

    lifecycle = Lifecycle()
    lifecycle.started("listener", step("listener"), share=0.1)
    lifecycle.started("detector", step("detector"), share=0.6)
    lifecycle.started("cameras", step("cameras", takes=10.0), share=0.3)  # hangs
    lifecycle.started("loops", step("loops", fails=True), share=0.01)
    start = time.monotonic()
    clean = run(lifecycle.unwind(2.0))
    took = time.monotonic() - start
    assert [name for name, _ in calls] == ["loops", "cameras", "detector", "listener"], "every step is tried"
    budgets = dict(calls)
    assert budgets["cameras"] == pytest.approx(2.0 * 0.3 / 1.0, abs=0.05)
    # The hung camera step was abandoned at the end of its share (and a quarter second's
    # grace), and the detector got its share of what was left.
    left = 2.0 - budgets["cameras"] - 0.25
    assert budgets["detector"] == pytest.approx(max(0.0, left) * 0.6 / 0.7, abs=0.1)
    assert not clean and took < 2.0 + 1.0
    assert "stopping loops failed" in caplog.text and "stopping cameras took longer" in caplog.text
    assert len(lifecycle) == 0


def test_a_step_that_finishes_early_leaves_its_time_to_the_later_ones() -> None:
    budgets: dict[str, float] = {}

    def step(name: str):  # type: ignore[no-untyped-def]
        async def stop(budget: float) -> bool:
            budgets[name] = budget
            return True

        return stop

    lifecycle = Lifecycle()
    lifecycle.started("detector", step("detector"), share=0.7)
    lifecycle.started("cameras", step("cameras"), share=0.3)
    assert run(lifecycle.unwind(10.0))
    assert budgets["cameras"] == pytest.approx(3.0, abs=0.05)
    assert budgets["detector"] == pytest.approx(10.0, abs=0.05), "all the time the cameras did not use"


def test_a_start_that_fails_half_way_stops_what_it_had_started(caplog: pytest.LogCaptureFixture) -> None:
    # The listener starts, then the engine cannot load: the listener must be closed again
    # (its port free) and the error must reach the caller.
    port = free_port()
    config = StreamsConfig.model_validate({"metrics": {"listen": f"127.0.0.1:{port}"}, "cameras": []})

    class Broken:
        async def start(self) -> None:
            raise OSError(28, "No space left on device")

    async def scenario() -> None:
        daemon = Daemon(LoadedConfig(config), DaemonOptions(consumer=Broken()))  # type: ignore[arg-type]
        with pytest.raises(OSError):
            await daemon.run()
        # The port is free again: a new listener binds it.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.INFO):
        run(scenario())
    assert "streamd stopped" in caplog.text
