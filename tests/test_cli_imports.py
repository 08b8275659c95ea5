"""`streamd --version` and `streamd check FILE` load neither the daemon nor onnx, and the
product never loads the developer tools: counted in a fresh interpreter, as an
operator's shell runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI's entry as the `streamd` script does, then prints every module loaded.
PROBE = """
import json, sys
from streamd.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
HEAVY = ("streamd.service.daemon", "streamd.analysis.detector", "onnx", "onnxruntime", "av", "numpy")


def loaded(*argv: str) -> tuple[int, list[str]]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    report = json.loads(result.stdout.splitlines()[-1])
    return int(report["code"] or 0), report["modules"]


def test_version_and_check_load_neither_the_daemon_nor_onnx(tmp_path: Path) -> None:
    config = tmp_path / "streams.yaml"
    config.write_text("cameras:\n  - {id: lobby, url: 'rtsp://127.0.0.1:8554/lobby', fps: 5}\n")
    for argv in (["--version"], ["check", str(config)]):
        code, modules = loaded(*argv)
        assert code == 0, argv
        heavy = [m for m in modules if m in HEAVY or m.startswith(("devtools", "onnx."))]
        assert heavy == [], (argv, heavy)
        # Modules, not the wings' package faces (streamd.config, ...), which hold no code;
        # and beside the CLI's own command modules, which only declare their arguments.
        ours = [
            m for m in modules if m.startswith("streamd.") and m.count(".") >= 2 and not m.startswith("streamd.cli.")
        ]
        assert len(ours) <= 10, (argv, ours)


def test_the_product_never_imports_the_developer_tools() -> None:
    """`make install` copies `streamd/` alone: an import of `devtools` in it would fail there."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "streamd").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(("import devtools", "from devtools"))
    ]
    assert offenders == []


def test_a_benchmark_still_gets_its_own_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "scale", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0 and "--out" in result.stdout, result.stderr


def test_detect_options_follow_the_postprocess_sections_rules(tmp_path: Path) -> None:
    """The flags default to the `postprocess` section's values and are held to its rules."""
    for flag, value in (("--score", "1.5"), ("--max-faces", "0")):
        result = subprocess.run(
            [sys.executable, "-m", "streamd", "detect", "x.jpg", "--model", "m.onnx", flag, value],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert result.returncode == 1 and result.stderr.startswith(f"streamd detect: {flag}: "), result.stderr
