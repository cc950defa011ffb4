"""This machine's CPUs as llama.cpp's thread count needs them: which logical CPUs the process may use,
/proc/cpuinfo's fields, and the physical cores among them."""
from __future__ import annotations

import os


def usable_cpus() -> set[int] | None:
    """The logical CPUs this process may run on (taskset, a container's cpuset), where the OS says."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return None


def cpuinfo_blocks(cpuinfo: str | None = None) -> list[dict[str, str]]:
    """/proc/cpuinfo (or the text ``cpuinfo``) as one dict of fields per logical CPU, in its order;
    empty where there is no such file (macOS, Windows)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    blocks = ({k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines() if line.strip())}
              for block in cpuinfo.split("\n\n"))
    return [b for b in blocks if b]


def cpu_topology(cpuinfo: str | None = None) -> dict[int, tuple[str, str]]:
    """Each logical CPU's (socket, core) from /proc/cpuinfo (or the text ``cpuinfo``), in its order;
    empty where the file says nothing of cores (some VMs, other systems)."""
    return {int(f["processor"]): (f.get("physical id", "0"), f["core id"]) for f in cpuinfo_blocks(cpuinfo)
            if f.get("processor", "").isdigit() and "core id" in f}


def physical_cores(cpuinfo: str | None = None, allowed: set[int] | None = None) -> int:
    """Physical cores among the CPUs this process may run on: hyper-threads share a core's
    arithmetic units, so they don't help, and a thread per CPU outside the process's affinity
    (``taskset -c 0,1`` on a 16-core host, a container's cpuset) only waits for a turn on the
    others. ``cpuinfo`` and ``allowed`` stand in for /proc/cpuinfo and the affinity in tests."""
    if allowed is None:
        allowed = usable_cpus()
    cores = {c for cpu, c in cpu_topology(cpuinfo).items() if allowed is None or cpu in allowed}
    usable = len(allowed) if allowed else (os.cpu_count() or 1)
    return max(1, min(len(cores), usable) if cores else usable)
