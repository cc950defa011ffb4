"""What this machine is (CUDA GPU, Apple Silicon, or CPU), which backend runs here, and the
largest model family that fits and answers a side-by-side comparison in about 30 seconds."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

HEADROOM_BYTES = 1.5 * 2**30  # OS, Python, KV caches
DRAFT_FACTOR = 1.0 + 0.53 + 0.28  # F16 target + Q8_0 + Q4_0 drafts, relative to F16 size
COMPARE_TOKENS = 128
COMPARE_BUDGET_S = 30.0
# Decode on a CPU is memory-bound: tok/s ~ bandwidth / model bytes. Measured here: SmolLM2-135M
# F16 (0.27 GB) 116 tok/s and a 1.9B F16 (3.8 GB) 7.5 tok/s on 2 cores -> ~30 GB/s for 2 cores.
CPU_BYTES_PER_S_PER_CORE = 14e9
CPU_BYTES_PER_S_MAX = 80e9
GPU_BYTES_PER_S = 1.0e12  # H100: 7B F16 (15 GB) in 5.5 ms/token -> ~2.7 TB/s; be conservative
APPLE_BYTES_PER_S = 100e9


@dataclass
class Hardware:
    kind: str  # "cuda", "apple" or "cpu"
    backend: str  # "llama.cpp" or "mlx"
    device: str
    physical_cores: int
    logical_cores: int
    ram_bytes: int
    ram_available_bytes: int
    gpu_memory_bytes: int = 0
    gpu_free_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def model_memory_bytes(self) -> int:
        """Memory the models may use: free GPU memory on CUDA, else available RAM."""
        return self.gpu_free_bytes if self.kind == "cuda" else self.ram_available_bytes

    @property
    def bytes_per_s(self) -> float:
        if self.kind == "cuda":
            return GPU_BYTES_PER_S
        if self.kind == "apple":
            return APPLE_BYTES_PER_S
        return min(CPU_BYTES_PER_S_MAX, CPU_BYTES_PER_S_PER_CORE * self.physical_cores)

    def summary(self) -> str:
        gib = 2**30
        if self.kind == "cuda":
            mem = f"{self.gpu_free_bytes / gib:.1f} of {self.gpu_memory_bytes / gib:.1f} GiB GPU memory free"
        else:
            mem = f"{self.ram_available_bytes / gib:.1f} of {self.ram_bytes / gib:.1f} GiB RAM available"
        return f"{self.device} ({self.kind}, {self.physical_cores} cores) via {self.backend}; {mem}"


def _meminfo() -> tuple[int, int]:
    total = avail = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                if k == "MemTotal":
                    total = int(v.split()[0]) * 1024
                elif k == "MemAvailable":
                    avail = int(v.split()[0]) * 1024
    except OSError:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 0
    return total, avail or total


def _nvidia_smi() -> tuple[str, int, int] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        name, total, free = [x.strip() for x in out[0].split(",")]
        return name, int(float(total)) * 2**20, int(float(free)) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def detect() -> Hardware:
    from backends.cpus import cpuinfo_blocks, physical_cores, usable_cpus

    total, avail = _meminfo()
    cores = physical_cores()
    logical = len(usable_cpus() or ()) or os.cpu_count() or cores
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Hardware("apple", "mlx", "Apple Silicon", cores, logical, total, avail)
    named = [b["model name"] for b in cpuinfo_blocks() if b.get("model name")]
    cpu_name = named[0] if named else platform.processor() or platform.machine()
    gpu = None
    try:
        from backends.llama_cpp import gpu_offload

        if gpu_offload():
            gpu = _nvidia_smi() or ("GPU (llama.cpp offload)", 0, 0)
    except Exception:  # noqa: BLE001 - no llama.cpp: still a CPU
        gpu = None
    if gpu:
        return Hardware("cuda", "llama.cpp", gpu[0], cores, logical, total, avail, gpu[1], gpu[2])
    return Hardware("cpu", "llama.cpp", cpu_name, cores, logical, total, avail)


def set_bytes(params_b: float) -> float:
    """Memory for a family's F16 target with its Q8_0 and Q4_0 drafts."""
    return params_b * 2e9 * DRAFT_FACTOR


def compare_seconds(hw: Hardware, params_b: float) -> float:
    """Estimated time of a side-by-side comparison (plain + speculative) of a 128-token answer."""
    tok_s = hw.bytes_per_s / (params_b * 2e9)
    return 2 * COMPARE_TOKENS / tok_s


def check_fits(hw: Hardware, params_b: float, name: str) -> None:
    need = set_bytes(params_b) + HEADROOM_BYTES
    have = hw.model_memory_bytes
    if have and need > have:
        raise MemoryError(
            f"{name} does not fit here: its F16 target and drafts need about {need / 2**30:.1f} GiB, "
            f"{have / 2**30:.1f} GiB is available ({hw.summary()}). Pick a smaller family."
        )


def default_family(hw: Hardware, fams=None) -> str:
    """The largest family that fits with headroom and compares 128 tokens in about 30 s."""
    from .catalog import families

    fams = fams or families()
    ok = [f for f in fams.values()
          if set_bytes(f.params_b) + HEADROOM_BYTES <= (hw.model_memory_bytes or float("inf"))
          and compare_seconds(hw, f.params_b) <= COMPARE_BUDGET_S * 1.2]
    if not ok:
        return min(fams.values(), key=lambda f: f.params_b).key
    return max(ok, key=lambda f: (f.params_b, f.key)).key
