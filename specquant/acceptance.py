"""Acceptance: one count and one estimate, wherever a draft's record is kept.

A verify pass of ``d`` drafted tokens that kept ``a`` of them examined ``min(a + 1, d)`` draft
positions: every kept one, and the first rejected one (those after it were never judged). A
``Tally`` counts examined positions and kept ones, per position, which is what the cost model's
acceptance means (``costs.expected_tokens``). Four records use it:

* a run's controller, its acceptance so far (``control.DraftControl``);
* the engine's book of what each source kept on each kind of prompt here, across runs
  (``routing.AcceptanceBook``, fed the run's ``Stats.tally`` when the run ends);
* prompt lookup's record per kind of match: two tallies, the first copied token's and each later
  one's given its predecessors were kept (``drafts.PromptLookup``);
* the run's statistics (``speculative.Stats.tally``).

Each estimate starts from a prior worth a stated number of observations (``estimate``); the
weights below say how fast a record's own counts overrule its prior, and why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# The router's acceptance for a run, as the run's controller starts: the book's estimate already
# holds earlier runs' counts, so the run's own evidence should overrule it within a few passes.
RUN_PRIOR_WEIGHT = 2.0
# A controller given no prior from the router (a forced draft run directly) trusts a generic one a
# little longer.
DEFAULT_PRIOR_WEIGHT = 4.0
# The book's priors (by tier, or grounded / open for a copy) are measured on other prompts: worth a
# few proposals' positions.
BOOK_PRIOR_WEIGHT = 8.0
# Prompt lookup's prior per kind of match (drafts.MATCH_PRIOR), worth this many proposals.
MATCH_PRIOR_WEIGHT = 2.0


@dataclass
class Tally:
    """Draft positions the target examined, and how many of them it kept."""

    examined: int = 0
    kept: int = 0

    def add(self, drafted: int, accepted: int) -> None:
        """A verify pass of ``drafted`` tokens that kept ``accepted`` of them."""
        if drafted > 0:
            self.examined += min(accepted + 1, drafted)
            self.kept += accepted

    def merge(self, other: "Tally") -> None:
        self.examined += other.examined
        self.kept += other.kept

    def estimate(self, prior: float, weight: float) -> float:
        """The acceptance: the counts, with ``prior`` worth ``weight`` examined positions."""
        return (self.kept + prior * weight) / (self.examined + weight)

    def optimistic(self, prior: float, weight: float) -> float:
        """The estimate plus one standard error (at most 1): whether drafting could pay at all."""
        a = self.estimate(prior, weight)
        return min(1.0, a + math.sqrt(a * (1 - a) / (self.examined + weight + 1)))
