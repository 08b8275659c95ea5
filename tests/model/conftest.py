"""The shared model, prepared once per session, and upstream-style references."""

from __future__ import annotations
