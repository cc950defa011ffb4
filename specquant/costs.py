"""The cost model: what a target pass over n tokens and a draft step cost here, measured on the
loaded models, and what drafting is expected to gain with them.

With per-position acceptance ``a`` (each draft token kept with probability ``a`` given its
predecessors were), drafting ``k`` tokens yields on average
``E(k) = (1 - a^(k+1)) / (1 - a)`` tokens per target pass, at a cost of
``k * c_draft + c_round + T(k+1)`` where ``T(n)`` is the time of a target pass over ``n``
tokens. Plain decoding is ``k = 0``: one token per ``T(1)``. Pure functions and one
measurement routine.

``best_k`` is the one scorer of "does drafting pay, and at which length": the router calls it to
choose a source before a run (``routing.decide``), the online controller at each step of the run
(``control.py``), with the bars below.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from .drafts import top_probability


@dataclass
class Costs:
    """Seconds per target pass over n tokens (``verify[n]``), per draft token, and per drafting
    round on top of that (``draft_round``: the draft first catches up on the two tokens the
    target settled, a 2-token pass, dearer than a one-token step).

    As decoding meets them: a one-token pass follows one-token passes, a longer pass follows a
    one-token pass, and ``settle`` is what the one-token pass after a longer one costs extra.
    (llama.cpp reuses its computation graph while passes keep their shape and rebuilds it when
    the shape changes: on 2 CPU cores with SmolLM2-135M the step after a longer pass costs
    5-10% more than a step after a step. Timed back to back, every one-token pass paid that
    and batches looked that much cheaper than they are.)"""

    verify: dict[int, float] = field(default_factory=dict)
    draft_step: float = 0.0
    draft_round: float = 0.0
    settle: float = 0.0
    draft_prefill: float = 0.0  # seconds per prompt token for the draft to prefill the prompt

    def T(self, n: int) -> float:
        v = self.verify
        if n in v:
            return v[n]
        if not v:
            raise ValueError("no target timing measured yet")
        xs = sorted(v)
        if len(xs) == 1:
            return v[xs[0]] * n / xs[0] if n > xs[0] else v[xs[0]]
        lo = max((x for x in xs if x < n), default=None)
        hi = min((x for x in xs if x > n), default=None)
        if lo is None:
            return v[xs[0]]
        if hi is None:  # extrapolate along the last segment, never cheaper than the last point
            a, b = xs[-2], xs[-1]
            slope = max((v[b] - v[a]) / (b - a), 0.0)
            return v[b] + slope * (n - b)
        w = (n - lo) / (hi - lo)
        return v[lo] * (1 - w) + v[hi] * w

    def target_only(self) -> "Costs":
        """The target's part: what a draft that costs nothing to make (prompt lookup) pays."""
        return Costs(dict(self.verify), settle=self.settle)

    def round_cost(self, n: int) -> float:
        """A target pass over n tokens among one-token steps, the next step's extra included."""
        return self.T(n) + (self.settle if n > 1 else 0.0)

    def to_dict(self) -> dict:
        return {"verify": {str(k): v for k, v in sorted(self.verify.items())}, "draft_step": self.draft_step,
                "draft_round": self.draft_round, "settle": self.settle, "draft_prefill": self.draft_prefill}

    @classmethod
    def from_dict(cls, d: dict) -> "Costs":
        return cls({int(n): v for n, v in d["verify"].items()}, d.get("draft_step", 0.0), d.get("draft_round", 0.0),
                   d.get("settle", 0.0), d.get("draft_prefill", 0.0))

    def draft_cost(self, k: int) -> float:
        return k * self.draft_step + self.draft_round if k else 0.0


def expected_tokens(a: float, k: int) -> float:
    if a >= 1.0:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def expected_run_tokens(first: float, a: float, k: int) -> float:
    """Tokens per target pass when the first draft token is kept with probability ``first`` and
    each later one, given its predecessors were, with ``a`` (a copied passage goes on)."""
    return 1.0 + first * (k if a >= 1.0 else (1.0 - a**k) / (1.0 - a))


def expected_speedup(costs: Costs, a: float, k: int, first: float | None = None) -> float:
    """Throughput of drafting k tokens relative to plain decoding (``first``: the first
    token's acceptance where it differs from the rest's)."""
    if k == 0:
        return 1.0
    e = expected_tokens(a, k) if first is None else expected_run_tokens(first, a, k)
    return e / (costs.draft_cost(k) + costs.round_cost(k + 1)) * costs.T(1)


# The bars a bet must clear. A draft is verified (and a model draft chosen, or run at all) only
# when expected to gain BET_MIN_GAIN at its best length: a cautious bound on a free source's
# estimate kept its copies a token long (held-out prompts, Zen 4: lookup k=auto 1.07x with the
# bound, 1.16x without); the run's loss allowance bounds what a wrong estimate costs. A free source
# (prompt lookup) is chosen to run at a lower bar, FREE_MIN_GAIN: choosing it verifies nothing by
# itself, and each of its proposals must then clear BET_MIN_GAIN on its own evidence.
BET_MIN_GAIN = 1.2
FREE_MIN_GAIN = 1.02


class Bet(NamedTuple):
    k: int  # draft length; 0: plain decoding
    speedup: float  # expected, over plain decoding


def with_prefill(c: Costs, speedup: float, answer: tuple[int, int] | None) -> float:
    """A decoding speed-up over a whole answer of ``answer[1]`` tokens once the draft's prefill
    of an ``answer[0]``-token prompt is paid (nothing for a free source)."""
    if not answer or not c.draft_prefill or speedup <= 0:
        return speedup
    n_prompt, n_new = answer
    plain = n_new * c.T(1)
    return plain / (plain / speedup + n_prompt * c.draft_prefill)


def best_k(costs: Costs, a: float, ks: int | Iterable[int], min_gain: float = 1.0, first: float | None = None,
           answer: tuple[int, int] | None = None) -> Bet:
    """The draft length (of 1..ks, or of the lengths ``ks``) with the highest expected speed-up,
    a model draft's prefill of the prompt included where ``answer`` = (prompt tokens, new tokens)
    is given; (0, min_gain) unless one beats ``min_gain``."""
    best = Bet(0, min_gain)
    for k in (range(1, ks + 1) if isinstance(ks, int) else ks):
        s = with_prefill(costs, expected_speedup(costs, a, k, first), answer)
        if s > best.speedup + 1e-9:
            best = Bet(k, s)
    return best


def best_width(costs: Costs, hits: list[float], min_gain: float = 1.0) -> Bet:
    """How many candidates for the next token (siblings, each a draft of one token) to verify in one
    pass of w + 1 tokens, where ``hits[w - 1]`` is the chance one of the first w is the target's: the
    width with the highest expected speed-up; (0, min_gain) unless one beats ``min_gain``."""
    best = Bet(0, min_gain)
    for w, h in enumerate(hits, 1):
        s = (1.0 + h) / (costs.draft_cost(1) + costs.round_cost(w + 1)) * costs.T(1)
        if s > best.speedup + 1e-9:
            best = Bet(w, s)
    return best


def _measure_once(target, draft_model, context: list[int], ns, rounds: int, budget_s: float) -> Costs:
    base = list(context)[: max(1, min(len(context), target.n_ctx - max(ns) - 1))]
    filler = [base[-1]] * max(*ns, 2)  # the draft's catch-up pass is 2 tokens
    target.reset()
    target.prefill(base)
    if draft_model is not None:
        draft_model.reset()
        draft_model.prefill(base)

    def timed(model, n):
        t0 = time.perf_counter()
        logits = model.eval(filler[:n])
        t1 = time.perf_counter()
        if model is draft_model:
            top_probability(logits[-1])  # part of a draft step: the p_min check
        model.rollback(len(base))
        return t1 - t0, time.perf_counter() - t0

    longer = [n for n in ns if n > 1]
    steady: list[float] = []  # one-token passes after one-token passes
    times: dict[int, list[float]] = {n: [] for n in longer}  # an n-token pass after a one-token pass
    after: list[float] = []  # the one-token pass after it
    d_steady: list[float] = []
    d_two: list[float] = []  # the draft's catch-up (2 tokens) after one-token steps
    d_after: list[float] = []
    r, t_start = 0, time.perf_counter()
    while r <= rounds:  # round 0 warms every shape up and is not counted
        if not longer:  # the target's curve is known: its one-token step, to scale the draft's by
            timed(target, 1)
            s1, _ = timed(target, 1)
            if r:
                steady.append(s1)
        for n in longer:
            timed(target, 1)
            s1, _ = timed(target, 1)
            tn, _ = timed(target, n)
            ta, _ = timed(target, 1)
            if r:
                steady.append(s1)
                times[n].append(tn)
                after.append(ta)
        if draft_model is not None:
            timed(draft_model, 1)
            _, s1 = timed(draft_model, 1)
            t2, _ = timed(draft_model, 2)
            _, ta = timed(draft_model, 1)
            if r:
                d_steady.append(s1)
                d_two.append(t2)
                d_after.append(ta)
        if r == 0:  # a large model on a small machine: fewer rounds, calibration stays short
            per_round = time.perf_counter() - t_start
            rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-9))))
        r += 1
    target.reset()
    prefill_s = 0.0
    if draft_model is not None:  # warm by now: a prefill of the prompt, per token
        draft_model.reset()
        t0 = time.perf_counter()
        draft_model.prefill(base)
        prefill_s = (time.perf_counter() - t0) / len(base)
        draft_model.reset()
    med = statistics.median
    t1 = med(steady)
    verify = {1: t1, **{n: med(t) for n, t in times.items()}}
    settle = max(0.0, med(after) - t1) if after else 0.0
    if not d_steady:
        return Costs(verify, settle=settle)
    step = med(d_steady)
    return Costs(verify, step, max(0.0, med(d_two) + med(d_after) - 2 * step), settle, prefill_s)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat (None elsewhere). Steal time,
    taken by other guests of a VM's host, counts as busy."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    busy = sum(v[:8]) - idle if len(v) >= 8 else sum(v) - idle
    return busy, busy + idle


def _own_ticks() -> int | None:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, every thread of this process
    except (OSError, ValueError, IndexError):
        return None


def busy_meter():
    """Start watching the machine; the returned function says what share of every CPU's time other
    programs (and other guests of a VM's host) took since, or None where /proc is not there."""
    start, own = _cpu_ticks(), _own_ticks()

    def share() -> float | None:
        end, own_end = _cpu_ticks(), _own_ticks()
        if None in (start, own, end, own_end) or end[1] <= start[1]:
            return None
        return max(0.0, (end[0] - start[0]) - (own_end - own)) / (end[1] - start[1])

    return share


def plausible(c: Costs) -> bool:
    """A pass over more tokens never costs less (3% slack for timer noise)."""
    xs = sorted(c.verify)
    return all(c.verify[b] >= 0.97 * c.verify[a] for a, b in zip(xs, xs[1:]))


def measure_costs(target, draft_model=None, *, context: list[int], ns=(1, 2, 3, 5, 9), rounds: int = 8,
                  attempts: int = 3, budget_s: float = 2.0, curve: Costs | None = None) -> Costs:
    """Time target passes of n tokens (and draft steps) on ``context``, then roll back.

    Each pass is timed as decoding meets it (see ``Costs``): one-token passes after one-token
    passes, each longer pass after a one-token pass, and the one-token pass after that. The
    shapes are measured in interleaved rounds and the median of each kept, so a busy moment on
    a shared machine neither inflates one shape against another nor the level. (Not the
    fastest: one-token passes now and then run far faster than their usual.) Up to ``rounds``
    rounds, fewer where one round takes long (about ``budget_s`` in all).
    A measurement in which a longer pass came out cheaper than a shorter one (another program
    took the cores for a while) is taken again, up to ``attempts`` times while the time spent
    stays within 3 x ``budget_s``; what remains is made monotone (the run's own measured steps
    correct the rest: ``control.Drift``). Done once when models load: load time, never run time.

    With ``curve`` (the target's costs, measured for another draft of the same target), only the
    draft is measured, beside the target's one-token step: the draft's costs are scaled by the
    ratio of the two steps, so they keep their proportion to the target's curve even when the
    machine's speed moved in between (and loading at the Space's size waits far less: the
    measurement is in docs/measurements.md, "Notes moved from the code").
    """
    if curve is not None and draft_model is not None:
        c = _measure_once(target, draft_model, context, (1,), rounds, budget_s)
        f = curve.T(1) / c.T(1)
        return Costs(dict(curve.verify), c.draft_step * f, c.draft_round * f, curve.settle, c.draft_prefill * f)
    t0 = time.perf_counter()
    for _ in range(attempts):
        c = _measure_once(target, draft_model, context, ns, rounds, budget_s)
        if plausible(c) or time.perf_counter() - t0 > 3 * budget_s:  # a large model: no second try
            break
    if plausible(c):
        return c
    xs, top, mono = sorted(c.verify), 0.0, {}
    for n in xs:
        top = max(top, c.verify[n])
        mono[n] = top
    return Costs(mono, c.draft_step, c.draft_round, c.settle, c.draft_prefill)
