"""The online controller: how many tokens to draft at each step of one run.

It weighs three things, each measured or stated where it comes from:

* the cost model (``costs.py``): the calibrated costs at the level this engine's runs have
  seen lately (``Drift``), and the acceptance believed for this proposal (the draft
  source's own estimate, e.g. prompt lookup's by kind of match, or the run's);
* a ledger of what drafting has measurably gained or lost in this run (``Ledger``): each
  drafting step's time (drafting, the draft's catch-up, verifying) against the tokens it
  produced, priced at this run's own plain step time;
* one rule for risk: a draft is verified only if a complete miss would cost no more than
  the run can still afford to lose, ``max(LOSS_FLOOR steps, LOSS_SHARE of the answer)`` plus
  what drafting has saved, where the answer is its expected length (``max_tokens``, or what
  the engine has seen answers run to) or what it has already reached, if longer. A model
  draft that can afford nothing more stops for the rest of the run (a restart pays for
  catching the draft up on everything since), and one whose prefill of the prompt would cost
  more than what would leave it at the bar never starts; a free source (prompt lookup)
  only pauses: a later proposal with stronger evidence is verified when its miss fits what
  is left of the same allowance. Whether a bet pays, and at which length, is ``costs.best_k``
  against ``costs.BET_MIN_GAIN``: the router's scorer and bar, so a model draft the router chose
  is one the controller runs.
* probes: while no pass of this engine has checked what a 2-token pass costs, a free source's
  proposal is tried now and then as the shortest bet (one drafted token) when that bet's miss
  fits the allowance, so a calibration that priced passes too high (taken while the machine
  was busy) corrects itself within an answer instead of keeping drafting off; a cheaper price
  found at 2 tokens carries to longer passes until they are timed (``Drift.shape_of``).

``k = 0`` is a normal answer: a draft that does not pay here stops instead of slowing
the answer, and the run goes on as plain decoding.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from .acceptance import DEFAULT_PRIOR_WEIGHT, Tally
from .costs import BET_MIN_GAIN, Costs, best_k, best_width

# Longest draft: a verify pass of up to 33 tokens. (Past 48 tokens the patched llama.cpp's float
# matmuls on ARM CPUs, and past 63 its CPU attention, take kernels that sum differently from
# one-token steps: scripts/build_llama_cpp.py. Long drafts never pay anyway.)
MAX_DRAFT = 32

# Risk: what drafting may lose in a run before it stops. A few per cent of the answer is the
# promise ("never slower" within measurement noise); half a step lets a first, short bet be
# made at all (a one-token copy costs 0.05-0.5 of a step extra when it misses, on the CPUs
# and GPU measured: docs/measurements.md).
LOSS_SHARE = 0.03
LOSS_FLOOR = 0.5
# Plain steps kept among a model draft's steps until the run has timed this many (its own
# reference for the ledger), one every REFERENCE_EVERY steps.
REFERENCE_STEPS = 3
REFERENCE_EVERY = 8


# A probe (see the module's docstring) at most once in this many tokens of an answer.
PROBE_EVERY = 16


@dataclass
class Drift:
    """How the target's passes compare with their calibration lately: the level of one-token
    steps (``scale``) and, per calibrated pass length, the ratio of multi-token passes to them
    (``shape``), and how a draft's steps compare with theirs (``draft``, per source). An engine
    keeps one and hands each run a copy; the run's copy goes back when it ends, so the next run
    starts from what this one saw, not from a calibration taken when the machine was in another
    mood (shared machines change speed within minutes).

    ``shape`` is kept per length because a calibration can be off at some lengths only: on a
    busy 2-core VM one measured 3- and 5-token passes at 1.21 steps where runs paid 2.4 for 5.
    A single factor learnt from the long passes then priced 2-token passes at twice their cost,
    drafting stopped, and with no multi-token pass left to observe it never came back. A length
    not yet observed keeps its calibrated cost: a price set too low is corrected by the first pass
    that pays it, one set too high would never be tried again."""

    scale: float = 1.0
    shape: dict[int, float] = field(default_factory=dict)  # calibrated length -> observed / calibrated
    shape_n: dict[int, int] = field(default_factory=dict)  # passes behind each ``shape`` entry
    draft: dict[str, float] = field(default_factory=dict)

    def copy(self) -> "Drift":
        return replace(self, shape=dict(self.shape), shape_n=dict(self.shape_n), draft=dict(self.draft))

    @staticmethod
    def _nearest(n: int, lengths) -> int | None:
        return min(lengths, key=lambda m: (abs(math.log(m / n)), m), default=None)

    def shape_of(self, n: int) -> float:
        """Observed / calibrated for a pass length: its own, or, unobserved, the largest discount
        observed at a shorter length (a curve that was too dear at 2 tokens was too dear above:
        pricing longer passes lower is corrected by the first one that pays it, and pricing them
        higher never would be), or 1."""
        if n in self.shape:
            return self.shape[n]
        return min([1.0] + [v for m, v in self.shape.items() if m < n])

    def observed(self, n: int, calibrated: Costs) -> bool:
        """Whether a pass of about n tokens has been timed (by this engine's runs)."""
        key = self._nearest(n, [m for m in calibrated.verify if m > 1]) or n
        return self.shape_n.get(key, 0) > 0

    def apply(self, c: Costs, source: str | None = None) -> Costs:
        """The calibrated costs at the level observed (a draft not yet observed is assumed
        to have slowed down or sped up like the target)."""
        verify = {n: t * self.scale * (self.shape_of(n) if n > 1 else 1.0) for n, t in c.verify.items()}
        ds = self.draft.get(source, self.scale) if source else self.scale
        return Costs(verify, c.draft_step * ds, c.draft_round * ds, c.settle * self.scale, c.draft_prefill * ds)

    def observe_target(self, n: int, seconds: float, calibrated: Costs, first: bool) -> None:
        """A pass of n tokens took ``seconds``: one-token passes set the level, longer ones the shape
        at the level seen so far (``first``: the run's first pass; a run's first pass of one token
        counts as much as the level's history, since the machine may have changed since)."""
        ratio = seconds / calibrated.T(n)
        if n == 1:
            w = 0.5 if first else 0.2
            self.scale = (1 - w) * self.scale + w * ratio
            return
        # a pass of n tokens informs the calibrated length nearest to it; the first observation sets
        # it (half of the way left a length priced too dear that no later bet would check), the next
        # ones average, later ones follow drift
        key = self._nearest(n, [m for m in calibrated.verify if m > 1]) or n
        seen = self.shape_n[key] = self.shape_n.get(key, 0) + 1
        w = max(0.2, 1.0 / seen)
        self.shape[key] = (1 - w) * self.shape.get(key, 1.0) + w * ratio / self.scale

    def observe_draft(self, source: str, ratio: float) -> None:
        old = self.draft.get(source)
        self.draft[source] = ratio if old is None else 0.8 * old + 0.2 * ratio


@dataclass
class Ledger:
    """What drafting has gained (+) or lost (-) in this run, in seconds, measured: every
    drafting step's tokens at this run's plain step time, minus what the step took. The
    plain step time is the median of this run's one-token passes once three are timed, the
    calibration's (at the level runs see lately) before. ``expected``: the answer's expected
    length in tokens, which the allowance is a share of from the start."""

    fallback_s: float
    expected: int = 0
    balance_s: float = 0.0
    tokens: int = 0  # tokens produced so far, by every step
    plain: list[float] = field(default_factory=list)

    def step_s(self) -> float:
        return statistics.median(self.plain[-15:]) if len(self.plain) >= REFERENCE_STEPS else self.fallback_s

    def allowance_s(self) -> float:
        """What drafting may still lose before it must stop."""
        return max(LOSS_FLOOR, LOSS_SHARE * max(self.tokens, self.expected)) * self.step_s() + self.balance_s

    def record(self, drafted: int, accepted: int, spent_s: float) -> None:
        self.tokens += accepted + 1
        if drafted:
            self.balance_s += (accepted + 1) * self.step_s() - spent_s
        elif spent_s > 0:
            self.plain.append(spent_s)


class DraftControl:
    """Picks k for each step of a run.

    k: a fixed draft length (int), or "auto" to choose it from costs, acceptance and the
    ledger. costs: measured costs (``costs.measure_costs``); auto needs them. prior: the
    acceptance believed before any is observed, worth ``prior_weight`` observations.
    free_draft: proposing costs nothing (prompt lookup), so it proposes ``k_max`` tokens and
    ``keep`` decides how many are worth a verify pass. source: the draft's name, for the
    per-source draft speed ``Drift`` keeps. drift: this run's copy of the engine's.
    """

    def __init__(self, k: int | str = "auto", *, k_max: int = 8, costs: Costs | None = None,
                 prior: float = 0.7, prior_weight: float = DEFAULT_PRIOR_WEIGHT, free_draft: bool = False,
                 drift: Drift | None = None, source: str = "draft", expected: int | None = None):
        if k != "auto":
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_DRAFT:
                raise ValueError(f"draft length must be an integer from 1 to {MAX_DRAFT} or 'auto', got {k!r}")
        if not 1 <= k_max <= MAX_DRAFT:
            raise ValueError(f"k_max must be from 1 to {MAX_DRAFT}, got {k_max}")
        self.auto = k == "auto" and costs is not None and bool(costs.verify)
        self.k_fixed = None if k == "auto" else k
        self.k_max = k_max
        self.costs = costs  # as calibrated, never changed; the run tracks their level in `drift`
        self.free_draft = free_draft
        self.prior, self.prior_weight = prior, prior_weight
        self.drift = drift if drift is not None else Drift()
        self.source = source
        self.expected = expected  # how long answers run here (the engine's recent ones), if known
        self.start()

    def start(self, prompt_len: int = 0, max_tokens: int = 0, expected: int | None = None) -> None:
        """A run begins: its prompt is ``prompt_len`` tokens, its answer at most ``max_tokens``
        and expected to run to ``expected`` (default: the length given when the controller was
        made, else ``max_tokens``)."""
        self.tally = Tally()  # draft positions the target examined in this run, and kept
        self.history: list[int] = []
        self.dropped = ""  # why drafting stopped (a model draft: for the rest of this run)
        self.probes = 0
        self._level_seen = False
        self._steps_since_plain = 0
        self._last_probe = -PROBE_EVERY
        # earlier runs' passes count, this run's more
        self.drift.shape_n = {n: min(c, 3) for n, c in self.drift.shape_n.items()}
        expected = min(expected or self.expected or max_tokens, max_tokens) if max_tokens else 0
        self.ledger = Ledger(self._costs().T(1) if self.auto else 0.0, expected)
        if self.auto and not self.free_draft and prompt_len and max_tokens:
            self._check_prefill(prompt_len, max_tokens)

    # --- estimates ------------------------------------------------------------------------
    @property
    def acceptance(self) -> float:
        return self.tally.estimate(self.prior, self.prior_weight)

    def _costs(self) -> Costs:
        """The calibrated costs, at the level observed lately."""
        c = self.drift.apply(self.costs, self.source)
        return c.target_only() if self.free_draft else c

    def _check_prefill(self, prompt_len: int, max_tokens: int) -> None:
        c = self._costs()
        if not best_k(c, self.acceptance, self.k_max, BET_MIN_GAIN).k:
            return  # not expected to pay at all: the first step says so
        bet = best_k(c, self.acceptance, self.k_max, 0.0, answer=(prompt_len, max_tokens))
        if bet.speedup < BET_MIN_GAIN:
            self.dropped = (f"the draft's prefill of the {prompt_len}-token prompt would leave drafting at "
                            f"{bet.speedup:.2f}x over the answer, below the {BET_MIN_GAIN:.2f}x a bet must promise")

    @staticmethod
    def miss_cost(c: Costs, k: int) -> float:
        """Seconds a draft of k tokens costs beyond a plain step when none of it is kept."""
        return c.draft_cost(k) + c.round_cost(k + 1) - c.T(1)

    def _affordable(self, c: Costs, k: int) -> int:
        """The longest draft up to k whose complete miss the run can still afford."""
        room = self.ledger.allowance_s()
        while k and self.miss_cost(c, k) > room:
            k -= 1
        return k

    # --- decisions --------------------------------------------------------------------------
    def next_k(self) -> int:
        """Tokens to ask the draft for."""
        if not self.auto:
            k = self.k_fixed or 4
        elif self.free_draft:
            k = self.k_max  # proposing costs nothing: keep() judges the proposal (a paused source's too)
        elif self.dropped:
            k = 0
        elif len(self.ledger.plain) < REFERENCE_STEPS and self._steps_since_plain >= REFERENCE_EVERY:
            k = 0  # a plain step: the ledger's reference
        else:
            k = self._model_k()
        self._steps_since_plain = 0 if k == 0 else self._steps_since_plain + 1
        self.history.append(k)
        return k

    def _bet(self, c: Costs, later: float, n: int, first: float | None = None) -> int:
        """A draft worth verifying (expected to gain BET_MIN_GAIN at its best length), cut to
        the longest whose complete miss the run can afford: the cut bet is a probe, and a hit
        lets the next bets be longer. Failing that, a probe of the price of a pass length no
        pass has checked yet (one drafted token, at most once in PROBE_EVERY tokens)."""
        if best_k(c, later, n, BET_MIN_GAIN, first).k:
            room = self._affordable(c, n)
            k = best_k(c, later, room, 0.0, first).k if room else 0
            if k:
                return k
        return self._probe(c, n)

    def _probe(self, c: Costs, n: int) -> int:
        """Free sources only: a model draft would pay for catching up on every token since its last
        proposal; its costs are checked at load instead (``Engine.costs``)."""
        if (not self.free_draft or n < 1 or self.tally.examined or self.drift.observed(2, self.costs)
                or self.ledger.tokens - self._last_probe < PROBE_EVERY):
            return 0  # (a drafted pass of this run, or an earlier run's, has told the price already)
        if self.miss_cost(c, 1) > self.ledger.allowance_s():
            return 0
        self._last_probe = self.ledger.tokens
        self.probes += 1
        return 1

    def _model_k(self) -> int:
        c = self._costs()
        k = self._bet(c, self.acceptance, self.k_max)
        if k:
            return k
        hopeful = self.tally.optimistic(self.prior, self.prior_weight)
        if not best_k(c, hopeful, self.k_max, BET_MIN_GAIN).k:  # not even optimistically
            self.dropped = (f"drafting is not expected to pay here (at acceptance {self.acceptance:.2f}, with a "
                            f"draft step at {c.draft_step / c.T(1):.2f} of a target step)")
        elif not self._affordable(c, self.k_max):
            self.dropped = ("drafting lost more than the run allows" if self.ledger.balance_s < 0 else
                            "a missed draft would cost more than this answer can risk")
        return 0

    def keep(self, n: int, estimate: tuple[float, float, int] | None = None) -> int:
        """How many of ``n`` proposed tokens to verify: all of them with a fixed k; with k =
        auto and a free draft, the bet the cost model and the ledger allow, on the
        source's ``estimate`` (first token's acceptance, each later one's, and how many
        proposals of this kind it has seen) or the run's acceptance. A free source that paused
        resumes here when a proposal is worth its risk."""
        if not (n and self.auto and self.free_draft):
            return n
        c = self._costs()
        first, later = (None, self.acceptance) if estimate is None else estimate[:2]
        k = self._bet(c, later, n, first)
        if k:
            self.dropped = ""
        return k

    def width_can_pay(self, hits: list[float]) -> bool:
        """Whether candidates for the next token with these chances of a hit (``Draft.hits``) would be
        verified at this machine's costs: a judged run that answers no tries none, nor learns what to try."""
        return self.auto and self.free_draft and bool(best_width(self._costs(), hits, BET_MIN_GAIN).k)

    def keep_width(self, hits: list[float]) -> int:
        """How many of a tree's candidates for the next token to verify (``Draft.hits``): all of them
        with a fixed k (up to k); with k = auto, the width the cost model expects to gain
        BET_MIN_GAIN at, cut to what the run can afford to miss, or none."""
        if not hits:
            return 0
        if not self.auto:
            return min(len(hits), self.k_fixed or len(hits))
        c = self._costs()
        if not best_width(c, hits, BET_MIN_GAIN).k:
            return 0
        room = self._affordable(c, len(hits))
        return best_width(c, hits[:room], 0.0).k if room else 0

    def observe(self, drafted: int, accepted: int, *, draft_s: float = 0.0, verify_s: float = 0.0,
                rows: int | None = None, candidates: bool = False) -> None:
        """What a step did: draft positions verified and tokens kept, seconds spent drafting
        (catch-up included, the draft's first prefill not) and verifying; ``rows``: the pass's
        size where it differs from drafted + 1 (a tree, or tokens evaluated again); ``candidates``:
        a tree of candidates, which the ledger counts and the run's acceptance of copies does not."""
        n = rows or drafted + 1
        self.ledger.record(n - 1, accepted, draft_s + verify_s)  # (a pass of several rows is never a plain step)
        if not candidates:
            self.tally.add(drafted, accepted)
        if not self.auto:
            return
        if verify_s > 0:
            self.drift.observe_target(n, verify_s, self.costs, first=not self._level_seen and n == 1)
            self._level_seen |= n == 1
        if drafted and draft_s > 0 and not self.free_draft and self.costs.draft_step > 0:
            self.drift.observe_draft(self.source, draft_s / self.costs.draft_cost(drafted))
        if drafted and self.ledger.allowance_s() <= 0:
            self.dropped = "drafting lost more than the run allows" + (
                " (paused: a copy with stronger evidence may still be tried)" if self.free_draft else "")

    def describe(self) -> dict:
        return {
            "mode": "auto" if self.auto else "fixed",
            "k": self.k_fixed,
            "k_max": self.k_max,
            "acceptance_estimate": round(self.acceptance, 4),
            "ledger_s": round(self.ledger.balance_s, 6),
            "dropped": self.dropped,
            "probes": self.probes,
            "costs": self.costs.to_dict() if self.costs else None,
        }
