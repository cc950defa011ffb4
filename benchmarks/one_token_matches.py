"""Prompt lookup (k = auto) with and without one-token matches, side by side against plain decoding.

A one-token match's copy is the weakest kind of proposal (``specquant.suffix.JUDGED_MIN_MATCH``, measured
and left out on a 2-core Zen 4): the controller would judge it by its kind's record, so whether it pays
is decided per machine by the bar. This
measures what they change: for each prompt, rounds of plain, lookup with matches of 2+ tokens only, lookup
with one-token matches too, and plain again, the two lookup runs in alternating
order; each lookup run's speed-up is against the mean of the round's two plain runs, and a prompt's is the
median over rounds. Totals are sums of time. Every answer must equal the plain one. The answer cache is
emptied before every run (no run drafts from another's answer).

    python benchmarks/one_token_matches.py [--prompts FILE] [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import sys

from common import lookup_with, prompt_rounds, variant_rounds  # noqa: E402 - also puts the project on sys.path

from specquant import suffix  # noqa: E402

VARIANTS = {"2+ tokens": 2, "1+ tokens": 1}


def main() -> int:
    args, eng = prompt_rounds(__doc__, "bench-results/one_token_matches.json")

    def run(tokens, variant, _prompt):
        eng.forget_answers()
        return lookup_with(eng, args, tokens, suffix, "JUDGED_MIN_MATCH", VARIANTS[variant])

    variant_rounds(args, eng, VARIANTS, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
