"""docs/configuration.md is generated from the models' field docstrings: it fails when a
field is added, removed or changed without regenerating it, and when a field has no
description."""

from __future__ import annotations

from devtools.config_reference import REFERENCE, reference


def test_the_configuration_reference_is_the_models_own() -> None:
    assert REFERENCE.read_text() == reference(), "stale: run `python -m devtools.config_reference --write`"


def test_every_key_says_what_it_does() -> None:
    rows = [line for line in reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 60
    undocumented = [row.split("|")[1].strip() for row in rows if not row.rstrip(" |").split("|")[-1].strip()]
    assert undocumented == []
