"""A question asked again: policy auto drafting from the engine's earlier answers (``specquant.suffix``),
against plain decoding of the same prompt, side by side. This measures repetition on purpose (the bench
clears the answer cache before every run so that no run drafts from another's answer).

For each prompt: one answer fills the cache (not timed), then rounds of plain (private: no cache) and the
repeated question (policy auto) alternate; the speed-up is the median of each round's ratio. Every repeated
answer must equal the plain one.

    python benchmarks/repeat_question.py [--ids a,b] [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys

from common import write_result  # noqa: E402 - also puts the project on sys.path

from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.speculative import finish  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--ids", help="comma-separated ids of the bundled prompts (default: every non-grounded one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default="bench-results/repeat_question.json")
    args = ap.parse_args()
    eng = load_engine(args.model)
    prompts = [p for p in load_prompts() if (p["id"] in args.ids.split(",") if args.ids else not p.get("grounded"))]
    kw = {"max_tokens": args.max_tokens}
    eng.costs("lookup")
    eng.pass_costs()  # calibration and the floor before any timing
    rows = []
    for p in prompts:
        eng.forget_answers()
        finish(eng.answer(p["prompt"], **kw).events)  # the first time: fills the cache
        ratios, same, drafted = [], True, 0
        for _ in range(args.rounds):
            plain = finish(eng.answer(p["prompt"], draft="none", private=True, **kw).events)
            again = finish(eng.answer(p["prompt"], **kw).events)
            ratios.append(plain.stats.wall_s / again.stats.wall_s)
            same &= again.tokens == plain.tokens
            drafted += again.stats.drafted
        row = {"id": p["id"], "tokens": len(plain.tokens), "speedup": statistics.median(ratios), "identical": same,
               "tokens_per_pass": again.stats.tokens_per_pass, "rounds": ratios}
        rows.append(row)
        print(f"{p['id']}: {row['tokens']} tokens, {row['speedup']:.2f}x, {row['tokens_per_pass']:.1f} tokens per "
              f"pass, identical: {same}", flush=True)
    total = statistics.median(r["speedup"] for r in rows)
    print(f"median over {len(rows)} prompts: {total:.2f}x; worst {min(r['speedup'] for r in rows):.2f}x; "
          f"identical {sum(r['identical'] for r in rows)}/{len(rows)}")
    write_result({"model": args.model, "max_tokens": args.max_tokens, "median_speedup": total, "prompts": rows},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
