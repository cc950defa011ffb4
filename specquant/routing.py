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
from dataclasses import asdict, dataclass, field

from . import sources
from .control import BET_MIN_GAIN
from .costs import Costs, expected_speedup

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
PRIOR_WEIGHT = 8.0  # observations worth the prior
MIN_GAIN = 1.02  # drafting must be expected to beat plain decoding by this much

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


@dataclass
class Decision:
    draft: str  # "q8", "q4", "q4_0", "lookup", "none", or a draft spec / path
    k: int | str  # draft length: an int, or "auto" for adaptive control
    policy: str  # "auto", "tier-rule" or "override"
    tier: str
    expected_speedup: float
    acceptance: float | None
    draft_cost: float | None  # one draft step, as a fraction of a target step
    reason: str
    candidates: list[dict] = field(default_factory=list)

    @property
    def adaptive(self) -> bool:
        """Run with k adapted to the acceptance seen (auto), or with exactly ``k``."""
        return self.k == "auto" or (self.policy == "auto" and not self.k_fixed)

    k_fixed: bool = False  # the user fixed k
    grounded: bool = False  # the prompt carries material to copy from (what the run's acceptance is filed under)

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
    """What each draft source achieved on this machine, per kind of prompt (``evidence``): draft
    positions the target examined and how many of them it kept (per-position acceptance, as the
    cost model uses)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], list[int]] = {}

    def record(self, source: str, kind: str, examined: int, accepted: int) -> None:
        if examined <= 0:
            return
        with self._lock:
            c = self.counts.setdefault((source, kind), [0, 0])
            c[0] += examined
            c[1] += accepted

    def estimate(self, source: str, kind: str, prior: float) -> float:
        examined, accepted = self.counts.get((source, kind), (0, 0))
        return (accepted + prior * PRIOR_WEIGHT) / (examined + PRIOR_WEIGHT)


def with_prefill(c: Costs, speedup: float, answer: tuple[int, int] | None) -> float:
    """A decoding speed-up over a whole answer of ``answer[1]`` tokens once the draft's prefill
    of an ``answer[0]``-token prompt is paid (nothing for prompt lookup)."""
    if not answer or not c.draft_prefill or speedup <= 0:
        return speedup
    n_prompt, n_new = answer
    plain = n_new * c.T(1)
    return plain / (plain / speedup + n_prompt * c.draft_prefill)


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
) -> Decision:
    """costs: measured costs per available draft source (keys like "q8", "q4_0", "lookup").
    answer: (prompt tokens, most new tokens): a model draft must first prefill the prompt,
    which the expectation then includes."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: use low, medium or high")
    policy = policy_name(policy)
    book = book or AcceptanceBook()

    def acc_for(src):
        return book.estimate(src, evidence(src, tier, grounded), prior_acceptance(src, tier, grounded))

    def rel_cost(src):
        c = costs.get(src)
        free = (sources.find(src) or sources.find("sibling")).free
        return c.draft_step / c.T(1) if c and c.verify and not free else None

    fixed = k_override is not None and k_override != "auto"
    if draft_override:
        d = draft_override.lower()
        k = k_override if fixed else "auto"
        if d in ("none", "plain"):
            return Decision("none", 0, "override", tier, 1.0, None, None, f"no draft (chosen by you); tier {tier}")
        acc = acc_for(d) if d in costs else None
        exp = None
        if d in costs and costs[d].verify:  # with k = auto: the best length's expectation
            ks = [k] if isinstance(k, int) else range(1, k_max + 1)
            exp = max(with_prefill(costs[d], expected_speedup(costs[d], acc, j), answer) for j in ks)
        reason = f"{sources.label(d)} draft, k={k} (chosen by you)"
        if exp is not None:
            reason += f": expected {exp:.2f}x here"
        return Decision(d, k, "override", tier, exp or 0.0, acc, rel_cost(d), reason + f"; tier {tier}", k_fixed=fixed)

    if policy == "tier-rule":
        d = TIER_RULE[tier]
        k = k_override if fixed else (TIER_RULE_K if d != "none" else 0)
        if d == "none":
            return Decision("none", 0, "tier-rule", tier, 1.0, None, None, f"tier rule: tier {tier} -> no draft")
        acc = acc_for(d)
        exp = expected_speedup(costs[d], acc, k) if d in costs and isinstance(k, int) else 0.0
        return Decision(d, k, "tier-rule", tier, exp, acc, rel_cost(d),
                        f"tier rule: tier {tier} -> {sources.label(d)} draft, k={k}"
                        + (f" (expected {exp:.2f}x here)" if exp else ""), k_fixed=True)

    candidates = []
    for src, c in costs.items():
        if not c.verify:
            continue
        acc = acc_for(src)
        ks = [k_override] if fixed else range(1, k_max + 1)
        best = max(((with_prefill(c, expected_speedup(c, acc, k), answer), k) for k in ks), default=(0.0, 0))
        candidates.append({"draft": src, "k": best[1], "expected_speedup": round(best[0], 4),
                           "acceptance": round(acc, 4), "draft_cost": rel_cost(src)})
    candidates.sort(key=lambda x: -x["expected_speedup"])
    # A model draft must clear the controller's bar for a bet, or the run would stop it at once.
    paying = [x for x in candidates if x["expected_speedup"] >= (MIN_GAIN if x["draft_cost"] is None else BET_MIN_GAIN)]
    if not paying:
        return _below_the_bar(candidates, costs, book, tier, grounded, k_max)
    top = paying[0]
    k = top["k"]
    how = "" if fixed else " to start, adapted to the acceptance seen"
    return Decision(top["draft"], k, "auto", tier, top["expected_speedup"], top["acceptance"], top["draft_cost"],
                    _sentence(top["draft"], k, top["expected_speedup"], top["draft_cost"], top["acceptance"])
                    + f"{how}; tier {tier}{', grounded prompt' if grounded else ''}", candidates, k_fixed=fixed)


def _below_the_bar(candidates: list[dict], costs: dict[str, Costs], book: AcceptanceBook, tier: str, grounded: bool,
                   k_max: int) -> Decision:
    """Policy auto's choice when no source is expected to clear its bar. A free source is still
    tried where its copies pay: prompt lookup costs nothing until the answer repeats the prompt,
    verifies a copy only after matches it can trust and stops copying when copies fail, so how
    often it copies is found in the run, not guessed from a prior. What a copy keeps: what its
    copies kept in runs here, or, before any, on grounded prompts. Else no draft."""
    floor = [x for x in candidates if x["draft_cost"] is None and max(
        expected_speedup(costs[x["draft"]], book.estimate(x["draft"], evidence(x["draft"], tier, grounded),
                                                          GROUNDED_LOOKUP), k)
        for k in range(1, k_max + 1)) >= MIN_GAIN]
    tail = f"; tier {tier}{', grounded prompt' if grounded else ''}"
    if floor:
        top, why = floor[0], _best([x for x in candidates if x["draft_cost"] is not None], 2)
        return Decision(top["draft"], top["k"], "auto", tier, 1.0, top["acceptance"], None,
                        f"{sources.label(top['draft'])}, k={top['k']} to start, adapted to the acceptance seen: "
                        f"no draft model is expected at the {BET_MIN_GAIN:.2f}x a model draft must promise here"
                        f"{f' (best: {why})' if why else ''}, but prompt "
                        "lookup is free: it drafts only where the answer repeats the prompt and stops when its "
                        f"copies fail, so where nothing repeats it costs little{tail}", candidates)
    why = _best(candidates, 3)
    return Decision("none", 0, "auto", tier, 1.0, None, None,
                    "no draft: nothing is expected to beat plain decoding by enough on this machine (a model "
                    f"draft must be expected at {BET_MIN_GAIN:.2f}x, prompt lookup at {MIN_GAIN:.2f}x)"
                    + (f"; best: {why}" if why else ""), candidates)


def _best(candidates: list[dict], n: int) -> str:
    """The first ``n`` candidates' expectations, in words."""
    return "; ".join(_sentence(x["draft"], x["k"], x["expected_speedup"], x["draft_cost"], x["acceptance"])
                     for x in candidates[:n])
