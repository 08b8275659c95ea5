"""The package's floor plan, read from its imports: every module lives in a wing, a wing
imports only from the wings below it (or itself), and no modules import each other in
a circle. The wings, lowest first, read as the flow and the service around it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamd"
WINGS = (
    "base",  # shared helpers: failures, tasks, threads, redaction, logs, memory
    "config",  # streams.yaml: schema, loader, YAML source, shards
    "metrics",  # the Prometheus names
    "model",  # the canonical ONNX model
    "frames",  # a camera's frame and its letterbox into the model input
    "gpu",  # CUDA context, NVDEC budget, GPU letterbox
    "machine",  # what this machine gives: cores, memory, GPUs; the `auto` rules
    "engine",  # inference backends and the runner
    "camera",  # one camera: connect, decode, sample; NVDEC placement
    "sinks",  # where records go
    "recognition",  # embedders and the gallery: who a face is
    "tracks",  # tracks per camera, their events, best-face crops
    "analysis",  # batcher, detector, postprocess, snapshots
    "recorded",  # recorded video and images as batch jobs (streamd detect)
    "monitor",  # health, rates, overload, HTTP, status page, systemd
    "service",  # the daemon, its cameras, lifecycle, signals, checks
    "calibration",  # INT8 tools (they run cameras as the service does)
    "cli",  # the command line
)
LOOSE = {"streamd", "streamd.__main__"}  # the package's face and `python -m streamd`


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The streamd modules `path` imports, wherever in the file (function-level too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("streamd"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamd"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def test_every_module_lives_in_a_wing() -> None:
    loose = [name for name in modules() if wing(name) is None and name not in LOOSE]
    assert loose == [], f"modules outside the wings {WINGS}: {loose}"
    assert {path.parent.name for path in PACKAGE.glob("*/__init__.py")} <= set(WINGS), "a folder that is no wing"


def test_no_wing_imports_from_a_wing_above_it() -> None:
    known = set(modules())
    rank = {name: index for index, name in enumerate(WINGS)}
    against = []
    for name, path in modules().items():
        here = wing(name)
        if here is None:
            continue
        for imported in imports_of(path, known):
            there = wing(imported)
            if there is not None and rank[there] > rank[here]:
                against.append(f"{name} ({here}) imports {imported} ({there})")
    assert against == [], "imports against the layering:\n" + "\n".join(against)


def test_no_modules_import_each_other_in_a_circle() -> None:
    known = set(modules())
    graph = {name: imports_of(path, known) - {name} for name, path in modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                circles.append([*path[path.index(following) :], following])
            elif following not in state:
                visit(following, [*path, following])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert circles == [], "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_tests_share_helpers_only_through_tests_support() -> None:
    """No test module imports another test module or a conftest: what they share lives in
    tests/support (fixtures stay in the conftests, which pytest hands out by name)."""
    tests = PACKAGE.parent / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in (node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)):
            module = node.module or ""
            if module.startswith("tests.") and not module.startswith("tests.support"):
                offenders.append(f"{path.relative_to(tests)}:{node.lineno} imports {module}")
    assert offenders == []
