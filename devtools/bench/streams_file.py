"""The streams.yaml the daemon benchmarks run `streamd run` on."""

from __future__ import annotations

from pathlib import Path


def streams_yaml(
    urls: dict[str, str], port: int, records: Path, fps: float, model: Path | None = None, tracking: str = ""
) -> str:
    """Cameras `urls` (id -> URL) analysed at `fps`, metrics on loopback `port`, records to
    one unrotated JSON Lines file, the engine on `model` when given, and `tracking` as the
    section's YAML (empty: the defaults)."""
    engine = f"engine: {{model: '{model.resolve()}'}}\n" if model else ""
    engine += f"tracking: {tracking}\n" if tracking else ""
    cameras = "".join(f"  - {{id: {name}, url: '{url}'}}\n" for name, url in urls.items())
    return (
        f"metrics: {{listen: '127.0.0.1:{port}'}}\n"
        f"{engine}"
        f"sinks: [{{type: jsonl, path: '{records}', rotate_mb: null, rotate_daily: false}}]\n"
        f"defaults: {{fps: {fps}}}\n" + (f"cameras:\n{cameras}" if cameras else "cameras: []\n")
    )
