"""Reading what a daemon's listener serves: a route's text, `/metrics` as Prometheus reads it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        text: str = response.read().decode()
        return text


def scrape(port: int) -> str:
    return fetch(port, "/metrics")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` with exactly `labels` (any order), or None when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None
