"""Prompt lookup (k = auto) with and without token recycling's candidates where nothing matches, side by
side against plain decoding.

Where no copy matches, a judged run may verify the target's top tokens after the last token, as the target
gave them before (``specquant.suffix.Recycled``), side by side in one pass: a tree of candidates for the
next token on a backend that verifies trees, the first alone elsewhere. The controller verifies them only
where the machine's pass costs and the candidates' record promise the bar (``costs.best_width``). Variants:

* ``copies only``: recycled candidates left out (``suffix.RECYCLE = False``);
* ``as decided``: what the engine does (``RECYCLE = None``): recycled candidates only where, at the hit
  rates the replay measured, some width is expected to pay at this machine's costs;
* ``recycled``: tried in every run (``RECYCLE = True``), the table learnt in the run alone (the answer
  cache is emptied before it);
* ``recycled, warm``: the same, the table also holding what the target gave along every *other* prompt's
  plain answer of the set (a process that answered them; never the prompt's own).

For each prompt, rounds of plain, the variants in alternating order, and plain again
(``common.variant_rounds``). Every answer must equal the plain one.

    python benchmarks/recycled_candidates.py [--prompts FILE] [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import sys

from common import (lookup_with, prompt_rounds, recycled_tops, target_rows,  # noqa: E402 - also puts the project
                    variant_rounds)  # on sys.path

from specquant import suffix  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402

VARIANTS = {"copies only": False, "as decided": None, "recycled": True, "recycled, warm": True}


def main() -> int:
    args, eng = prompt_rounds(__doc__, "bench-results/recycled_candidates.json")
    learnt = {}  # prompt id -> what the table learns along its plain answer
    for path in args.prompts or [None]:
        for p in load_prompts(path):
            tokens = eng.prompt_tokens(p["prompt"])
            answer = eng.run(tokens, draft="none", max_tokens=args.max_tokens, private=True).tokens
            learnt[(path, p["id"])] = recycled_tops(tokens, answer, target_rows(eng.target, tokens, answer))

    def run(tokens, variant, p):
        eng.forget_answers()
        if variant == "recycled, warm":
            for key, tops in learnt.items():
                if key[1] != p["id"]:
                    eng.answers.recycled.update(tops)
        return lookup_with(eng, args, tokens, suffix, "RECYCLE", VARIANTS[variant])

    variant_rounds(args, eng, VARIANTS, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
