"""Temperature / top-k / top-p, seeded. One sampler serves plain and speculative decoding.

``probs(logits)`` turns one row of logits into the distribution the sampler draws from;
verification compares the target's and the draft's distributions built by the same rules.
At temperature 0 the sampler is argmax and ``probs`` is one-hot.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sampler:
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not (isinstance(self.seed, numbers.Integral) and self.seed >= 0):
            raise ValueError(f"seed must be a whole number >= 0 (or none for a fresh one), got {self.seed!r}")
        self.rng = np.random.default_rng(self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def spawn(self) -> "Sampler":
        """A sampler with the same rules and an independent random stream (for a draft)."""
        child = Sampler(self.temperature, self.top_k, self.top_p, None)
        child.rng = np.random.default_rng(self.rng.integers(2**63))
        return child

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """float64 distribution over the vocabulary for one row of logits."""
        logits = np.asarray(logits, dtype=np.float64)
        if self.greedy:
            p = np.zeros_like(logits)
            p[int(np.argmax(logits))] = 1.0
            return p
        x = logits / self.temperature
        if self.top_k and self.top_k < x.size:
            kth = np.partition(x, -self.top_k)[-self.top_k]
            x = np.where(x >= kth, x, -np.inf)
        x = x - np.max(x)
        p = np.exp(x)
        p /= p.sum()
        if self.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cum, self.top_p) + 1)]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return p

    def draw(self, p: np.ndarray) -> int:
        return draw(p, self.rng)

    def sample(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(logits))
        return self.draw(self.probs(logits))


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """One token from distribution ``p`` (inverse CDF on one uniform draw)."""
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), p.size - 1))
