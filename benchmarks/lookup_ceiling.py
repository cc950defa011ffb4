"""How fast prompt lookup could possibly be on the grounded prompts, with this model and machine.

Decodes each grounded prompt plainly, then replays prompt lookup over the answer with the
target pass costs calibrated on this machine (T(n) for a pass over n tokens), under three
draft-length policies: the one SpecQuant runs ("shipped": verify as much of a copy as the
record of its kind of match says pays), a fixed k, and an oracle that knows in advance how
many drafted tokens the target will keep (it drafts exactly those). The oracle bounds every policy that uses this draft source; a
"perfect copy" line bounds any draft at all (k tokens always kept).

    python benchmarks/lookup_ceiling.py [--model demo] [--max-tokens 64]

No timing of decoding here: the replay is exact arithmetic on the calibrated costs, so the
numbers say what the answers allow, not how busy the machine was.
"""
from __future__ import annotations

import argparse
import sys

from common import write_result  # noqa: E402 - also puts the project on sys.path

from specquant.prompts import load_prompts  # noqa: E402
from specquant.control import DraftControl  # noqa: E402
from specquant.drafts import PromptLookup  # noqa: E402
from specquant.engine import load_engine  # noqa: E402
from specquant.sampling import Sampler  # noqa: E402


def replay(prompt: list[int], answer: list[int], costs, policy: str, k_max: int) -> float:
    """Target-pass cost (in one-token steps) of producing ``answer`` with prompt lookup."""
    src = PromptLookup()
    src.begin(prompt, Sampler())
    ctl = DraftControl("auto", costs=costs, free_draft=True, k_max=k_max)
    ctx, i, cost = list(prompt), 0, 0.0
    while i < len(answer):
        k = min(k_max, len(answer) - i - 1)
        draft = src.propose(ctx, k) if k else None
        d = draft.tokens if draft else []
        if policy == "shipped" and d:
            d = d[: ctl.keep(len(d), src.estimate(draft))]
        kept = 0
        while kept < len(d) and i + kept < len(answer) and d[kept] == answer[i + kept]:
            kept += 1
        if policy == "oracle":
            d = d[:kept]
        if policy == "shipped" and d:
            src.accepted(len(d), kept)
            ctl.observe(len(d), kept, verify_s=costs.round_cost(len(d) + 1))
        n = min(kept + 1, len(answer) - i)
        cost += costs.round_cost(len(d) + 1) / costs.T(1)
        ctx += answer[i : i + n]
        i += n
    return cost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=8, help="longest draft (default 8)")
    ap.add_argument("--out", default="bench-results/lookup_ceiling.json")
    args = ap.parse_args()

    eng = load_engine(args.model)
    costs = eng.costs("lookup")
    rel = {n: round(costs.round_cost(n) / costs.T(1), 3) for n in (1, 2, 3, 5, 9)}
    print("calibrated verify cost, in one-token steps:", rel)
    rows, totals = [], {"tokens": 0, "shipped": 0.0, "fixed": 0.0, "oracle": 0.0, "perfect": 0.0}
    for p in [p for p in load_prompts() if p.get("grounded")]:
        toks = eng.prompt_tokens(p["prompt"])
        ans = eng.run(toks, draft="none", max_tokens=args.max_tokens).tokens
        row = {"id": p["id"], "tokens": len(ans)}
        for pol in ("shipped", "fixed", "oracle"):
            row[pol] = replay(toks, ans, costs, pol, args.k)
        full, rest = divmod(len(ans), args.k + 1)
        row["perfect"] = (full * costs.round_cost(args.k + 1) + (costs.round_cost(rest) if rest else 0.0)) / costs.T(1)
        rows.append(row)
        for key in totals:
            totals[key] += row[key]
        print(f"{p['id']:18s} " + "  ".join(f"{pol} {row['tokens'] / row[pol]:.2f}x"
                                            for pol in ("shipped", "fixed", "oracle", "perfect")), flush=True)
    summary = {pol: totals["tokens"] / totals[pol] for pol in ("shipped", "fixed", "oracle", "perfect")}
    print("all grounded prompts: " + "  ".join(f"{pol} {x:.2f}x" for pol, x in summary.items()))
    write_result({"model": args.model, "k_max": args.k, "verify_cost_steps": rel, "summary": summary,
                  "prompts": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
