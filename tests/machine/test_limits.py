"""Usable cores and memory: the affinity mask, cgroup v2 and v1 CPU quotas and memory
limits over the cgroup and its ancestors; fixture trees of the real files, and a real
cgroup where this machine lets a test make one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamd.machine.limits import read_limits

GIB = 2**30
MIB = 2**20


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MEMINFO = "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   20971520 kB\n"


def test_cgroup_v2_quota_and_memory_limit_of_a_systemd_service(tmp_path: Path) -> None:
    # As systemd writes them for CPUQuota=150% and MemoryMax=2G.
    service = "sys/fs/cgroup/system.slice/streamd.service"
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/system.slice/streamd.service\n",
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/system.slice/cpu.max": "max 100000\n",
            f"{service}/cpu.max": "150000 100000\n",
            f"{service}/memory.max": f"{2 * GIB}\n",
            f"{service}/memory.current": f"{512 * MIB}\n",
            f"{service}/memory.stat": f"anon 400000000\nfile 200000000\ninactive_file {128 * MIB}\n",
            "sys/fs/cgroup/system.slice/memory.max": "max\n",
        },
    )
    limits = read_limits(root, affinity=16, host=16)
    assert limits.cores == 2, "1.5 cores of quota keep 2 cores busy at most"
    assert limits.cores_why == f"cgroup CPU quota of 1.5 core(s) ({service}/cpu.max)"
    assert limits.memory_available == 2 * GIB - 512 * MIB + 128 * MIB
    assert limits.memory_why == f"cgroup memory limit ({service}/memory.max)"
    assert limits.memory_total == 65536000 * 1024


def test_an_ancestors_tighter_limit_wins(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/machine.slice/box/app\n",
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/machine.slice/box/cpu.max": "50000 100000\n",  # the container: half a core
            "sys/fs/cgroup/machine.slice/box/app/cpu.max": "400000 100000\n",
            "sys/fs/cgroup/machine.slice/box/memory.max": f"{GIB}\n",
            "sys/fs/cgroup/machine.slice/box/memory.current": f"{GIB - 100 * MIB}\n",
            "sys/fs/cgroup/machine.slice/box/app/memory.max": f"{8 * GIB}\n",
            "sys/fs/cgroup/machine.slice/box/app/memory.current": f"{GIB}\n",
        },
    )
    limits = read_limits(root, affinity=8, host=8)
    assert limits.cores == 1 and "machine.slice/box/cpu.max" in limits.cores_why
    assert limits.memory_available == 100 * MIB and "machine.slice/box/memory.max" in limits.memory_why


def test_cgroup_v1_quota_and_limit(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{4 * GIB}\n",
            "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{GIB}\n",
            "sys/fs/cgroup/memory/docker/abc/memory.stat": f"cache 0\ninactive_file {256 * MIB}\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        },
    )
    limits = read_limits(root, affinity=32, host=32)
    assert (limits.host_cores, limits.cores) == (32, 3)
    assert limits.memory_available == 3 * GIB + 256 * MIB


def test_without_limits_the_affinity_mask_and_memavailable(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/user.slice\n",
            "proc/meminfo": MEMINFO,
            "sys/fs/cgroup/user.slice/cpu.max": "max 100000\n",
            "sys/fs/cgroup/user.slice/memory.max": "max\n",
        },
    )
    limits = read_limits(root, affinity=3, host=4)
    assert (limits.host_cores, limits.cores, limits.cores_why) == (4, 3, "3 CPU(s) in the affinity mask")
    assert limits.memory_available == 20971520 * 1024 and limits.memory_why == "MemAvailable"


def _v1_cgroup(controller: str, name: str) -> Path | None:
    path = Path("/sys/fs/cgroup") / controller / name
    try:
        path.mkdir()
    except OSError:
        return None
    return path


def test_check_hardware_inside_a_real_cgroup_sees_its_quota_and_memory_limit() -> None:
    name = f"streamd-test-{os.getpid()}"
    cpu, memory = _v1_cgroup("cpu", name), _v1_cgroup("memory", name)
    try:
        if cpu is None or memory is None:
            pytest.skip("this machine lets no test make a cgroup (v1 cpu and memory); the fixture trees cover it")
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("100000")  # one core
        (memory / "memory.limit_in_bytes").write_text(str(GIB))
        enter = f'echo $$ > {cpu}/cgroup.procs && echo $$ > {memory}/cgroup.procs && exec "$@"'
        command = [sys.executable, "-m", "streamd", "check", "--hardware", "--json"]
        result = subprocess.run(["sh", "-c", enter, "sh", *command], capture_output=True, text=True, timeout=60)
    finally:
        for path in (cpu, memory):
            if path is not None:
                path.rmdir()
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["machine"]
    assert found["cpu"]["cores"] == 1 and found["cpu"]["cores_from"].startswith("cgroup CPU quota of 1 core(s)")
    assert found["memory"]["available_bytes"] <= GIB
    assert found["memory"]["available_from"].startswith("cgroup memory limit")
