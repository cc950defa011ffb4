"""Draft-length control: how many tokens to draft next, from measured costs and acceptance.

With per-position acceptance ``a`` (each draft token kept with probability ``a`` given its
predecessors were), drafting ``k`` tokens yields on average
``E(k) = (1 - a^(k+1)) / (1 - a)`` tokens per target pass, at a cost of
``k * c_draft + T(k+1)`` where ``T(n)`` is the time of a target pass over ``n`` tokens.
Plain decoding is ``k = 0``: one token per ``T(1)``. The controller drafts the ``k`` with the
highest tokens per second, and ``k = 0`` is a normal answer: a draft that does not pay here
stops drafting instead of slowing the answer.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

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
                "draft_round": self.draft_round, "settle": self.settle}

    @classmethod
    def from_dict(cls, d: dict) -> "Costs":
        return cls({int(n): v for n, v in d["verify"].items()}, d.get("draft_step", 0.0), d.get("draft_round", 0.0),
                   d.get("settle", 0.0))

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


def best_k(costs: Costs, a: float, k_max: int, min_gain: float = 1.0, first: float | None = None) -> tuple[int, float]:
    """The draft length with the highest expected speed-up; 0 (plain) unless one beats
    ``min_gain``."""
    best = (0, min_gain)
    for k in range(1, k_max + 1):
        s = expected_speedup(costs, a, k, first)
        if s > best[1] + 1e-9:
            best = (k, s)
    return best


def _measure_once(target, draft_model, context: list[int], ns, rounds: int, budget_s: float) -> Costs:
    base = list(context)[: max(1, min(len(context), target.n_ctx - max(ns) - 1))]
    filler = [base[-1]] * max(ns)
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
    if draft_model is not None:
        draft_model.reset()
    med = statistics.median
    t1 = med(steady)
    verify = {1: t1, **{n: med(t) for n, t in times.items()}}
    settle = max(0.0, med(after) - t1)
    if not d_steady:
        return Costs(verify, settle=settle)
    step = med(d_steady)
    return Costs(verify, step, max(0.0, med(d_two) + med(d_after) - 2 * step), settle)


def plausible(c: Costs) -> bool:
    """A pass over more tokens never costs less (3% slack for timer noise)."""
    xs = sorted(c.verify)
    return all(c.verify[b] >= 0.97 * c.verify[a] for a, b in zip(xs, xs[1:]))


def measure_costs(target, draft_model=None, *, context: list[int], ns=(1, 2, 3, 5, 9), rounds: int = 8,
                  attempts: int = 3, budget_s: float = 2.0) -> Costs:
    """Time target passes of n tokens (and draft steps) on ``context``, then roll back.

    Each pass is timed as decoding meets it (see ``Costs``): one-token passes after one-token
    passes, each longer pass after a one-token pass, and the one-token pass after that. The
    shapes are measured in interleaved rounds and the median of each kept, so a busy moment on
    a shared machine neither inflates one shape against another nor the level. (Not the
    fastest: one-token passes now and then run far faster than their usual.) Up to ``rounds``
    rounds, fewer where one round takes long (about ``budget_s`` in all).
    A measurement in which a longer pass came out cheaper than a shorter one (another program
    took the cores for a while) is taken again, up to ``attempts`` times; what remains is made
    monotone. Done once when models load: load time, never run time.
    """
    for _ in range(attempts):
        c = _measure_once(target, draft_model, context, ns, rounds, budget_s)
        if plausible(c):
            return c
    xs, top, mono = sorted(c.verify), 0.0, {}
    for n in xs:
        top = max(top, c.verify[n])
        mono[n] = top
    return Costs(mono, c.draft_step, c.draft_round, c.settle)


# Prompt lookup's drafts are judged by the n-gram match they were copied after: the longer the
# match, the likelier a passage is being copied; a two-token match is often a common phrase that
# goes on differently, more so in the answer so far than in the prompt's material. Measured with
# greedy SmolLM2-135M over the bundled prompts (64-token answers, drafts of up to 8): how often
# the first copied token was the target's own, and each later one given the ones before were,
# by match length (5 = 5 or more) and by where the match was (prompt / answer so far):
#   2: 59% then 72% / 39% then 66%      3: 62% then 79% / 64% then 67%
#   4: 65% then 86% / 67% then 68%      5: 90% then 91% / 78% then 82%
# (Whether the prompt was a grounded one made little difference once these were known.) They
# are the priors of each kind's acceptance; a run learns from its own matches.
MATCH_PRIOR = {(1, True): (0.20, 0.5), (1, False): (0.24, 0.5), (2, True): (0.59, 0.72), (2, False): (0.39, 0.66),
               (3, True): (0.62, 0.79), (3, False): (0.64, 0.67), (4, True): (0.65, 0.86), (4, False): (0.67, 0.68),
               (5, True): (0.90, 0.91), (5, False): (0.78, 0.82)}
MATCH_LONG = 5  # longer matches count as this long
MATCH_PRIOR_WEIGHT = 2.0
# A copied draft is verified only when expected to gain at least this much, with its first
# token's acceptance taken KEEP_CAUTION standard errors low (the prior counting as
# MATCH_PRIOR_WEIGHT observations): a miss costs a whole verify pass at once, two steps or
# more, hits pay back a token at a time, and on a short answer one unlucky bet is several per
# cent. Interleaved runs of the 9 grounded prompts on the 2-core VM: a 5% margin and no caution
# made 1.10x in all but single prompts fell to 0.93-0.96x; these settings 1.09-1.10x with the
# worst prompts at 0.97-0.99x (which is the noise of those measurements).
KEEP_MIN_GAIN = 1.2
KEEP_CAUTION = 1.5
# A kind of match not yet seen to work in this run is bet on only as far as a miss would cost
# no more than LOSS_ALLOWANCE missed one-token copies (0.45-1.0 steps each here, as 2-token
# passes come and go) beyond what drafting has already saved in the run: a probe, and a hit
# proves the kind and opens the long bets. A prompt where copying never works loses about a
# step in all, never several. (With 1.5 the worst prompt of the bundled set measured 0.980x.)
LOSS_ALLOWANCE = 1.0

# Longest draft: a verify pass of up to 33 tokens. (Past 63, llama.cpp's CPU attention takes a
# tiled kernel that sums differently from one-token steps; long drafts never pay anyway.)
MAX_DRAFT = 32


@dataclass
class Drift:
    """How the target's passes compare with their calibration lately: the level of one-token
    steps and the ratio of multi-token passes to them. Shared by the runs of one engine, so a
    run starts from what the last ones saw, not from a calibration taken when the machine was
    in another mood (on this VM one-token steps move between 6.7 and 8.8 ms within an hour
    while 9-token passes stay at 20-22 ms)."""

    scale: float = 1.0
    shape: float = 1.0
    shape_n: int = 0  # multi-token passes behind ``shape``

    def apply(self, c: Costs, draft_scale: float | None = None) -> Costs:
        """The calibrated costs at the level observed (an unobserved draft is assumed to have
        slowed down or sped up like the target)."""
        verify = {n: t * self.scale * (self.shape if n > 1 else 1.0) for n, t in c.verify.items()}
        ds = self.scale if draft_scale is None else draft_scale
        return Costs(verify, c.draft_step * ds, c.draft_round * ds, c.settle * self.scale)


class DraftControl:
    """Picks k for each step.

    k: a fixed draft length (int), or "auto" to choose it from costs and acceptance.
    costs: measured costs (``measure_costs``); auto needs them, and keeps them current
    from the timings it observes. prior: acceptance believed before any is observed.
    """

    def __init__(self, k: int | str = "auto", *, k_max: int = 8, costs: Costs | None = None,
                 prior: float = 0.7, prior_weight: float = 4.0, probe_every: int = 16, probe_gain: float = 1.05,
                 free_draft: bool = False, drift: Drift | None = None):
        if k != "auto":
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_DRAFT:
                raise ValueError(f"draft length must be an integer from 1 to {MAX_DRAFT} or 'auto', got {k!r}")
        if not 1 <= k_max <= MAX_DRAFT:
            raise ValueError(f"k_max must be from 1 to {MAX_DRAFT}, got {k_max}")
        self.auto = k == "auto"
        self.k_fixed = k if not self.auto else None
        self.k_max = k_max
        self.costs = costs  # as calibrated, never changed; a run tracks only their level (_costs)
        # e.g. prompt lookup: proposing costs nothing, so it proposes k_max tokens and keep()
        # decides how many of them are worth a verify pass.
        self.free_draft = free_draft
        self.prior, self.prior_weight = prior, prior_weight
        self.probe_every = probe_every
        self.probe_gain = probe_gain
        self.drift = drift if drift is not None else Drift()
        self.reset()

    def reset(self) -> None:
        self.attempts = 0  # draft positions examined by the target
        self.kept = 0
        self._since_draft = 0
        self._draft_scale, self._level_seen = None, False
        self.drift.shape_n = min(self.drift.shape_n, 3)  # earlier runs' passes count, this run's more
        # match kind -> [first tokens kept, first tokens examined, later kept, later examined]
        self._by_match: dict[tuple[int, bool], list[int]] = {}
        self.history: list[int] = []
        self.gain = 0.0  # one-token steps saved by drafting so far in this run (by the cost model)

    @property
    def acceptance(self) -> float:
        return (self.kept + self.prior * self.prior_weight) / (self.attempts + self.prior_weight)

    @staticmethod
    def _match_kind(match: int, in_prompt: bool) -> tuple[int, bool]:
        return max(1, min(match, MATCH_LONG)), bool(in_prompt)

    def match_acceptance(self, match: int, in_prompt: bool) -> tuple[float, float]:
        """Acceptance of the first token and of each later one, for drafts copied after an
        n-gram match of this length (prompt lookup), from the prompt or from the answer so far."""
        kind = self._match_kind(match, in_prompt)
        k1, n1, kc, nc = self._by_match.get(kind, (0, 0, 0, 0))
        p1, pc = MATCH_PRIOR[kind]
        w = MATCH_PRIOR_WEIGHT
        return (k1 + p1 * w) / (n1 + w), (kc + pc * w) / (nc + w)

    def _acceptance_ucb(self) -> float:
        n = self.attempts + self.prior_weight
        a = self.acceptance
        return min(1.0, a + math.sqrt(a * (1 - a) / (n + 1)))

    def _costs(self) -> Costs:
        """The calibrated costs, at the level observed lately."""
        c = self.drift.apply(self.costs, self._draft_scale)
        return c.target_only() if self.free_draft else c

    def next_k(self) -> int:
        if not self.auto:
            k = self.k_fixed
        elif self.costs is None or not self.costs.verify:
            k = min(4, self.k_max)
        elif self.free_draft:
            k = self.k_max  # proposing costs nothing: keep() judges the proposal once its match is known
        else:
            costs = self._costs()
            k, _ = best_k(costs, self.acceptance, self.k_max)
            if k == 0:
                # Probe now and then, when an optimistic acceptance would make drafting pay
                # clearly: a probe costs more than its draft steps (the draft must first
                # catch up on the tokens it skipped).
                self._since_draft += 1
                if self._since_draft >= self.probe_every:
                    k_opt, gain = best_k(costs, self._acceptance_ucb(), self.k_max)
                    if gain >= self.probe_gain:
                        k = k_opt
        if k > 0:
            self._since_draft = 0
        self.history.append(k)
        return k

    def keep(self, draft) -> int:
        """How many of a proposal's tokens to verify: all of them, except for a free draft with
        k = auto, where the cost model decides on the acceptance of its kind of match (or the
        run's, without one). Zero makes the step a plain one."""
        n = len(draft.tokens)
        if not (n and self.auto and self.free_draft and self.costs is not None and self.costs.verify):
            return n
        costs = self._costs()
        if draft.match:
            kind = self._match_kind(draft.match, draft.in_prompt)
            first, later = self.match_acceptance(draft.match, draft.in_prompt)
            k1, seen = self._by_match.get(kind, (0, 0))[:2]
            # Judged on a pessimistic first-token acceptance: a miss costs a whole verify pass at
            # once, while hits pay back a little at a time.
            first = max(0.0, first - KEEP_CAUTION * math.sqrt(first * (1 - first) / (seen + MATCH_PRIOR_WEIGHT + 1)))
            proven = k1 > 0  # a copy after this kind of match was kept in this run
        else:
            first, later, proven = None, self.acceptance, self.kept > 0
        k, _ = best_k(costs, later, n, KEEP_MIN_GAIN, first=first)
        if not k or proven:
            return k
        # Not yet seen to work in this run: bet no more than a miss may cost (a probe, when
        # that is shorter than the best bet; a hit proves the kind and opens the long bets).
        t1 = costs.T(1)
        probe = costs.round_cost(2) / t1 - 1.0  # what a missed one-token copy costs, in steps
        budget = LOSS_ALLOWANCE * probe + self.gain
        cap = k
        while cap and costs.round_cost(cap + 1) / t1 - 1.0 > budget:
            cap -= 1
        return best_k(costs, later, cap, 0.0, first=first)[0] if cap else 0

    def observe(self, drafted: int, accepted: int, *, draft_s: float = 0.0, verify_s: float = 0.0,
                match: int = 0, in_prompt: bool = False) -> None:
        if drafted:
            self.attempts += min(accepted + 1, drafted)
            self.kept += accepted
            if self.costs is not None and self.costs.verify:
                c = self._costs()
                self.gain += accepted + 1 - c.round_cost(drafted + 1) / c.T(1)
            if match:
                rec = self._by_match.setdefault(self._match_kind(match, in_prompt), [0, 0, 0, 0])
                rec[0] += accepted > 0
                rec[1] += 1
                if accepted:
                    rec[2] += accepted - 1
                    rec[3] += min(accepted + 1, drafted) - 1
        if not self.auto or self.costs is None:
            return
        # Follow the level of the costs (a longer context, a busier machine) from one-token
        # passes, and how multi-token passes compare with them (on a shared machine batches
        # can turn dearer than calibrated while single steps don't) from those. Both move
        # together otherwise: updating T(1) alone would make drafting look cheaper as the
        # context grows and trigger drafts the calibration knows don't pay.
        base, d = self.costs, self.drift
        if verify_s > 0 and base.verify:
            ratio = verify_s / base.T(drafted + 1)
            if drafted == 0 or not self._level_seen:
                d.scale = 0.8 * d.scale + 0.2 * ratio
                self._level_seen |= drafted == 0
            else:
                # The first observations count most (the calibration's ratio is an hour old on
                # a machine whose batches drift between 1.4 and 1.9 steps); later ones follow drift.
                d.shape_n += 1
                w = max(0.2, 1.0 / (d.shape_n + 1))
                d.shape = (1 - w) * d.shape + w * ratio / d.scale
        if drafted and draft_s > 0 and not self.free_draft and base.draft_step > 0:
            obs = draft_s / base.draft_cost(drafted)
            self._draft_scale = obs if self._draft_scale is None else 0.8 * self._draft_scale + 0.2 * obs

    def describe(self) -> dict:
        return {
            "mode": "auto" if self.auto else "fixed",
            "k": self.k_fixed,
            "k_max": self.k_max,
            "acceptance_estimate": round(self.acceptance, 4),
            "costs": self.costs.to_dict() if self.costs else None,
        }
