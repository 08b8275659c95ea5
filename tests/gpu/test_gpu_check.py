"""`streamd gpu-check` runs its parts in the daemon's own start order and lets
every part report: on a machine without a GPU (here) each says why, none stops the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The daemon's order: the context set up for NVDEC, CUDA started by the engine and the
# GPU letterbox, and only then NVDEC, sharing that context.
DAEMON_ORDER = [
    "CUDA primary context:",
    "NVML:",
    "TensorRT:",
    "GPU letterbox kernel:",
    "NVDEC decode:",
    "NVDEC -> GPU letterbox -> engine buffer:",
]


def test_gpu_check_runs_in_the_daemons_order_and_every_part_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "--log-level", "WARNING", "gpu-check", "--seconds", "1",
         "--model", str(tmp_path / "absent.onnx"), "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line in DAEMON_ORDER]
    assert headers == DAEMON_ORDER, result.stdout
    for header in DAEMON_ORDER:  # each part says PASS, FAIL or SKIP, with its reason
        verdict = lines[lines.index(header) + 1]
        assert any(word in verdict for word in ("PASS", "FAIL", "SKIP")), (header, verdict)
    assert lines[-1].startswith("gpu-check: ") and "failed" in lines[-1]
    assert result.returncode == (1 if "FAIL" in result.stdout else 0)
