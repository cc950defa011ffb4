"""The machine's floor: the least a target pass over n tokens can cost here, from two rates measured
in about a second — how fast the cores read memory, and how fast they do float32 multiply-adds.

A pass over n tokens reads every weight once and does two FLOPs per weight per token, so it takes at
least ``max(weight_bytes / bandwidth, 2 * params * n / flops)``. In one-token steps of that floor:
``T_floor(n) = max(mem, n * fl) / max(mem, fl)``: about 1 while the pass is bound by memory, then
growing with n once the arithmetic outlasts the read. A measured T(n) far above it is the kernel's
cost, not the machine's (``specquant hardware --model``, the bench's header, the page's hardware tab).
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

READ_BYTES = 256 * 2**20  # well past any L3 cache, so the read comes from memory
GEMM_N = 768  # float32 matrices for the FMA rate: 0.9 GFLOP a product, cache-resident


@dataclass(frozen=True)
class Floor:
    bandwidth: float  # bytes per second, read by every core at once
    flops: float  # float32 FLOPs per second (an FMA is two), every core
    threads: int

    def step_s(self, weight_bytes: float, params: float, n: int = 1) -> float:
        """The least a pass over ``n`` tokens can take: the weights' read or their arithmetic."""
        return max(weight_bytes / self.bandwidth, 2.0 * params * n / self.flops)

    def pass_steps(self, n: int, weight_bytes: float, params: float) -> float:
        """``T_floor(n)`` in one-token steps of the floor."""
        return self.step_s(weight_bytes, params, n) / self.step_s(weight_bytes, params, 1)

    def memory_bound_upto(self, weight_bytes: float, params: float) -> int:
        """The longest pass that still costs no more than a one-token step's read."""
        return max(1, int(weight_bytes / self.bandwidth * self.flops / (2.0 * params)))

    def to_dict(self) -> dict:
        return asdict(self)


def _read_rate(threads: int, rounds: int) -> float:
    """Bytes per second with ``threads`` threads each streaming its share of a large buffer: numpy's
    float32 maximum is vectorized for the CPU it runs on and releases the GIL, so the threads read at
    once, at the memory's pace (on a 2-core Zen 4: 51 GB/s, where llama.cpp's one-token step reads
    44-49; a sum or a bitwise reduction came out 30-38, below what llama.cpp reaches)."""
    buf = np.ones(READ_BYTES // 4, dtype=np.float32)
    parts = np.array_split(buf, threads)
    best = 0.0
    for _ in range(rounds):
        workers = [threading.Thread(target=np.max, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
    return best


def _fma_rate(rounds: int) -> float:
    """float32 FLOPs per second of numpy's BLAS on every core (a matrix product runs near the vector
    units' peak)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    b = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    a @ b  # warm-up: threads started, pages touched
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2.0 * GEMM_N**3 / (time.perf_counter() - t0))
    return best


@functools.lru_cache(maxsize=4)
def measure(threads: int | None = None) -> Floor:
    """Both rates, the best of a few rounds each (a busy moment only lowers a round), about a second."""
    from backends.cpus import physical_cores

    threads = threads or physical_cores()
    return Floor(_read_rate(threads, 15), _fma_rate(12), threads)


def curve_lines(floor: Floor, weight_bytes: float, params: float, measured: dict[int, float] | None = None,
                ns=(1, 2, 3, 5, 9, 17)) -> list[str]:
    """A pass's cost in one-token steps, the floor beside what was measured (``measured``: steps by n)."""
    head = (f"floor here: memory {floor.bandwidth / 1e9:.0f} GB/s, float32 FMA {floor.flops / 1e9:.0f} GFLOP/s "
            f"({floor.threads} threads); one-token step >= {floor.step_s(weight_bytes, params) * 1e3:.1f} ms; "
            f"bound by memory up to {floor.memory_bound_upto(weight_bytes, params)} tokens a pass")
    rows = [f"  n={n:<3d} floor {floor.pass_steps(n, weight_bytes, params):5.2f}"
            + (f"   measured {measured[n]:5.2f}" if measured and n in measured else "") for n in ns]
    return [head, *rows]
