"""Tier -> decision: which draft source and how many tokens to draft, and why.

policy ``tier-rule`` (formerly ``seed``, still accepted) is the first project's rule: tier low
-> Q4 draft, medium -> Q8 draft, high -> no draft (k = 4). policy ``auto`` (default) treats the
tier as a prior on acceptance and picks the draft source and draft length with the highest
expected throughput on this machine, from costs measured on the loaded models and the
acceptance each source has achieved here; "no draft" when nothing is expected to beat plain
decoding. Either way, a user override
wins, and every decision carries its reason as data and as a sentence.
"""
from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass

from . import sources
from .acceptance import BOOK_PRIOR_WEIGHT, Tally
from .costs import BET_MIN_GAIN, FREE_MIN_GAIN, Costs, best_k

TIER_RULE = {"low": "q4", "medium": "q8", "high": "none"}
TIER_RULE_K = 4
POLICIES = ("auto", "tier-rule")
POLICY_ALIASES = {"seed": "tier-rule"}  # the rule's first name (it clashed with the sampler's seed)


def as_policy(name: str) -> str | None:
    """The policy ``name`` means ("seed": the tier rule), or None when it names none."""
    name = POLICY_ALIASES.get(name, name)
    return name if name in POLICIES else None


def policy_name(policy: str) -> str:
    """The policy a name means ("seed" is the tier rule's old name); ValueError for an unknown one."""
    name = POLICY_ALIASES.get(policy, policy)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use auto or tier-rule")
    return name


TIERS = ("low", "medium", "high")
# Measured (specquant bench, SmolLM2-135M, 9 grounded prompts): prompt lookup kept 62% of the
# tokens it drafted at k=2, i.e. about 0.75 per position.
GROUNDED_LOOKUP = 0.75
# Simple prompts are predicted more easily; the prior's error rate scales with the tier.
TIER_ERROR_SCALE = {"low": 0.8, "medium": 1.0, "high": 1.3}

_GROUNDED_WORDS = re.compile(
    r"\b(summari[sz]e|rewrite|rephrase|paraphrase|edit|fix|refactor|rename|translate|proofread|correct|"
    r"convert|copy|extract|quote|reformat|format|turn .{0,20} into|add .{0,30} to|"
    r"read the|according to|based on|the (?:text|passage|following))\b", re.I)


def is_grounded(prompt: str) -> bool:
    """A prompt that carries its own material (text or code to summarise, rewrite, edit or
    answer from): the answer will copy from it, which is what prompt lookup drafts from. (A
    wrong guess costs little: lookup verifies a copy only after matches it can trust.)"""
    long_material = len(prompt) > 200 and ("\n" in prompt.strip() or "```" in prompt or ":" in prompt)
    return bool(long_material and _GROUNDED_WORDS.search(prompt)) or "```" in prompt and len(prompt) > 200


def _copies(source: str) -> bool:
    """A free source that copies from the context (prompt lookup): how much it keeps depends on the
    prompt carrying material, not on its tier."""
    kind = sources.find(source)
    return kind is not None and kind.free


def prior_acceptance(source: str, tier: str, grounded: bool) -> float:
    if _copies(source):
        return GROUNDED_LOOKUP if grounded else sources.prior(source)
    base = sources.prior(source)
    err = (1 - base) * TIER_ERROR_SCALE.get(tier, 1.0)
    return max(0.01, min(0.995, 1 - err))


@dataclass(frozen=True)
class Decision:
    """Which draft a run uses and how, built once by ``decide`` and run as built (``run_settings``)."""

    draft: str  # "q8", "q4", "q4_0", "lookup", "none", or a draft spec / path
    k: int | str  # what the run does: a draft length, or "auto" (adapted to the acceptance seen); 0: no draft
    policy: str  # "auto", "tier-rule" or "override"
    tier: str
    reason: str
    expected_speedup: float = 1.0
    acceptance: float | None = None  # the acceptance believed: the run's prior
    draft_cost: float | None = None  # one draft step, as a fraction of a target step
    k_start: int = 0  # with k = "auto": the length expected to pay best as the run starts
    grounded: bool = False  # the prompt carries material to copy from (what the run's acceptance is filed under)
    candidates: tuple = ()

    @property
    def adaptive(self) -> bool:
        """Run with k adapted to the acceptance seen (auto), or with exactly ``k``."""
        return self.k == "auto"

    def run_settings(self) -> dict:
        """The run that carries out this decision: draft, k, and (adapted) the acceptance prior."""
        if self.draft == "none":
            return {"draft": "none", "k": 1}
        if self.adaptive:
            return {"draft": self.draft, "k": "auto", "prior": self.acceptance}
        return {"draft": self.draft, "k": self.k}

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return sources.label(self.draft)


def evidence(source: str, tier: str, grounded: bool) -> str:
    """Which runs' acceptance a decision for this source learns from, as its prior is chosen: a
    model draft's by tier (how hard the text is), a copying source's by whether the prompt carries
    material (its copies on open questions say nothing of its copies on a passage to summarise:
    pooled per tier, they priced lookup on a summary at 0.40 acceptance where it kept 0.71)."""
    if _copies(source):
        return "grounded" if grounded else "open"
    return tier


class AcceptanceBook:
    """What each draft source achieved on this machine, per kind of prompt (``evidence``): a
    ``Tally`` of the draft positions the target examined and kept, fed each run's own."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], Tally] = {}

    def record(self, source: str, kind: str, tally: Tally) -> None:
        if tally.examined <= 0:
            return
        with self._lock:
            self.counts.setdefault((source, kind), Tally()).merge(tally)

    def estimate(self, source: str, kind: str, prior: float) -> float:
        return self.counts.get((source, kind), Tally()).estimate(prior, BOOK_PRIOR_WEIGHT)


def _sentence(draft: str, k, speedup: float, cost: float | None, acc: float | None) -> str:
    parts = [f"{sources.label(draft)} draft, k={k}: expected {speedup:.2f}x"]
    details = []
    if cost is not None:
        details.append(f"draft cost {cost:.2f} of a step")
    if acc is not None:
        details.append(f"acceptance {acc:.2f}")
    return parts[0] + (f" ({', '.join(details)})" if details else "")


def decide(
    tier: str,
    costs: dict[str, Costs],
    *,
    policy: str = "auto",
    grounded: bool = False,
    book: AcceptanceBook | None = None,
    k_max: int = 8,
    draft_override: str | None = None,
    k_override: int | str | None = None,
    answer: tuple[int, int] | None = None,
    tier_set: bool = False,
) -> Decision:
    """costs: measured costs per available draft source (keys like "q8", "q4_0", "lookup").
    answer: (prompt tokens, most new tokens): a model draft must first prefill the prompt,
    which the expectation then includes. tier_set: the tier was chosen by the user."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: use low, medium or high")
    policy = policy_name(policy)
    book = book or AcceptanceBook()
    mark = " (tier set by you)" if tier_set else ""
    common = {"tier": tier, "grounded": grounded}

    def acc_for(src):
        return book.estimate(src, evidence(src, tier, grounded), prior_acceptance(src, tier, grounded))

    def rel_cost(src):
        c = costs.get(src)
        free = (sources.find(src) or sources.find("sibling")).free
        return c.draft_step / c.T(1) if c and c.verify and not free else None

    fixed = k_override is not None and k_override != "auto"
    lengths = [k_override] if fixed else k_max
    if draft_override:
        d = draft_override.lower()
        if d in ("none", "plain"):
            return Decision(draft="none", k=0, policy="override", reason=f"no draft (chosen by you); tier {tier}{mark}",
                            **common)
        k = k_override if fixed else "auto"
        acc = acc_for(d) if d in costs else None
        bet = best_k(costs[d], acc, lengths, 0.0, answer=answer) if d in costs and costs[d].verify else None
        reason = f"{sources.label(d)} draft, k={k} (chosen by you)"
        if bet is not None:  # with k = auto: the best length's expectation
            reason += f": expected {bet.speedup:.2f}x here"
        return Decision(draft=d, k=k, policy="override", reason=reason + f"; tier {tier}{mark}",
                        expected_speedup=bet.speedup if bet else 0.0, acceptance=acc, draft_cost=rel_cost(d),
                        k_start=bet.k if bet and not fixed else 0, **common)

    if policy == "tier-rule":
        d = TIER_RULE[tier]
        if d == "none":
            return Decision(draft="none", k=0, policy="tier-rule", reason=f"tier rule: tier {tier} -> no draft{mark}",
                            **common)
        k = k_override if fixed else TIER_RULE_K
        acc = acc_for(d)
        exp = best_k(costs[d], acc, [k], 0.0, answer=answer).speedup if d in costs and costs[d].verify else 0.0
        return Decision(draft=d, k=k, policy="tier-rule",
                        reason=f"tier rule: tier {tier} -> {sources.label(d)} draft, k={k}"
                        + (f" (expected {exp:.2f}x here)" if exp else "") + mark,
                        expected_speedup=exp, acceptance=acc, draft_cost=rel_cost(d), **common)

    candidates = []
    for src, c in costs.items():
        if not c.verify:
            continue
        acc = acc_for(src)
        bet = best_k(c, acc, lengths, 0.0, answer=answer)
        candidates.append({"draft": src, "k": bet.k, "expected_speedup": round(bet.speedup, 4),
                           "acceptance": round(acc, 4), "draft_cost": rel_cost(src)})
    candidates.sort(key=lambda x: -x["expected_speedup"])
    # A model draft must clear the controller's bar for a bet, or the run would stop it at once.
    paying = [x for x in candidates
              if x["expected_speedup"] >= (FREE_MIN_GAIN if x["draft_cost"] is None else BET_MIN_GAIN)]
    tail = f"; tier {tier}{', grounded prompt' if grounded else ''}{mark}"
    if not paying:
        return _below_the_bar(candidates, costs, book, lengths, tail, common)
    top = paying[0]
    how = "" if fixed else " to start, adapted to the acceptance seen"
    return Decision(draft=top["draft"], k=top["k"] if fixed else "auto", policy="auto",
                    reason=_sentence(top["draft"], top["k"], top["expected_speedup"], top["draft_cost"],
                                     top["acceptance"]) + how + tail,
                    expected_speedup=top["expected_speedup"], acceptance=top["acceptance"],
                    draft_cost=top["draft_cost"], k_start=0 if fixed else top["k"], candidates=tuple(candidates),
                    **common)


def _below_the_bar(candidates: list[dict], costs: dict[str, Costs], book: AcceptanceBook, lengths, tail: str,
                   common: dict) -> Decision:
    """Policy auto's choice when no source is expected to clear its bar. A free source is still
    tried where its copies pay: prompt lookup costs nothing until the answer repeats the prompt,
    verifies a copy only after matches it can trust and stops copying when copies fail, so how
    often it copies is found in the run, not guessed from a prior. What a copy keeps: what its
    copies kept in runs here, or, before any, on grounded prompts. Else no draft."""

    def copies_pay(src):
        kept = book.estimate(src, evidence(src, common["tier"], common["grounded"]), GROUNDED_LOOKUP)
        return best_k(costs[src], kept, lengths, FREE_MIN_GAIN).k > 0

    floor = [x for x in candidates if x["draft_cost"] is None and copies_pay(x["draft"])]
    if floor:
        top, why = floor[0], _best([x for x in candidates if x["draft_cost"] is not None], 2)
        fixed = not isinstance(lengths, int)
        return Decision(draft=top["draft"], k=top["k"] if fixed else "auto", policy="auto",
                        reason=f"{sources.label(top['draft'])}, k={top['k']} to start, adapted to the acceptance "
                        f"seen: no draft model is expected at the {BET_MIN_GAIN:.2f}x a model draft must promise here"
                        f"{f' (best: {why})' if why else ''}, but prompt "
                        "lookup is free: it drafts only where the answer repeats the prompt and stops when its "
                        f"copies fail, so where nothing repeats it costs little{tail}",
                        acceptance=top["acceptance"], k_start=0 if fixed else top["k"], candidates=tuple(candidates),
                        **common)
    why = _best(candidates, 3)
    return Decision(draft="none", k=0, policy="auto",
                    reason="no draft: nothing is expected to beat plain decoding by enough on this machine (a model "
                    f"draft must be expected at {BET_MIN_GAIN:.2f}x, prompt lookup at {FREE_MIN_GAIN:.2f}x)"
                    + (f"; best: {why}" if why else "") + tail, candidates=tuple(candidates), **common)


def _best(candidates: list[dict], n: int) -> str:
    """The first ``n`` candidates' expectations, in words."""
    return "; ".join(_sentence(x["draft"], x["k"], x["expected_speedup"], x["draft_cost"], x["acceptance"])
                     for x in candidates[:n])
