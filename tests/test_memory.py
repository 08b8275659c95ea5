"""Resident memory by kind of mapping, as the memory bench reads it."""

from __future__ import annotations

import numpy as np

from devtools.bench.resident import resident_by_kind
from streamd.base.memory import rss_bytes


def test_a_large_allocation_shows_as_anonymous_memory_and_the_kinds_add_up_to_the_resident_size() -> None:
    before = resident_by_kind()
    block = np.ones(64 * 2**20, dtype=np.uint8)  # touched, so resident
    after = resident_by_kind()
    grown = after.get("anonymous", 0) + after.get("heap", 0) - before.get("anonymous", 0) - before.get("heap", 0)
    assert grown >= 60 * 2**20, f"grew {grown / 2**20:.1f} MB for a 64 MB array"
    assert after["files"] > 0, "the interpreter and its libraries are mapped files"
    resident = rss_bytes()
    assert resident is not None
    assert abs(sum(after.values()) - resident) < 0.05 * resident
    del block
