"""An older PyAV shadowing the required one is named at start, not met as a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streamd.base.dependencies import pyav_problem


def _fake_pyav(root: Path, version: str) -> None:
    (root / "av").mkdir()
    (root / "av" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = root / f"av-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: av\nVersion: {version}\n")


def test_the_installed_pyav_is_new_enough() -> None:
    assert pyav_problem() is None


def test_an_old_pyav_stops_the_command_line_with_its_version(tmp_path: Path) -> None:
    _fake_pyav(tmp_path, "17.0.1")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "streamd", "check", "streams.yaml"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "PyAV 17.0.1 is installed; streamd needs PyAV >= 18.1" in done.stderr
    assert "Traceback" not in done.stderr
