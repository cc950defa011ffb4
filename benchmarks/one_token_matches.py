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

import statistics
import sys

from common import prompt_rounds, variant_summary, write_result  # noqa: E402 - also puts the project on sys.path

from specquant import suffix  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402

VARIANTS = {"2+ tokens": 2, "1+ tokens": 1}


def main() -> int:
    args, eng = prompt_rounds(__doc__, "bench-results/one_token_matches.json")
    judged_min = suffix.JUDGED_MIN_MATCH

    def run(tokens, variant):
        eng.forget_answers()
        if variant is None:
            return eng.run(tokens, draft="none", max_tokens=args.max_tokens)
        suffix.JUDGED_MIN_MATCH = VARIANTS[variant]
        try:
            return eng.run(tokens, draft="lookup", k="auto", max_tokens=args.max_tokens)
        finally:
            suffix.JUDGED_MIN_MATCH = judged_min

    rows = []
    for path in args.prompts or [None]:
        for p in load_prompts(path):
            tokens = eng.prompt_tokens(p["prompt"])
            ratios = {v: [] for v in VARIANTS}
            time = {v: [0.0, 0.0] for v in VARIANTS}  # plain, lookup
            passes = {v: [0, 0] for v in VARIANTS}  # tokens, target passes
            identical = True
            for r in range(args.rounds):
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                first = run(tokens, None)
                done = {v: run(tokens, v) for v in order}
                last = run(tokens, None)
                plain_s = (first.stats.wall_s + last.stats.wall_s) / 2
                for v, d in done.items():
                    identical &= d.tokens == first.tokens == last.tokens
                    ratios[v].append((d.stats.tokens / d.stats.wall_s) / (first.stats.tokens / plain_s))
                    time[v][0] += plain_s
                    time[v][1] += d.stats.wall_s
                    passes[v][0] += d.stats.tokens
                    passes[v][1] += d.stats.target_passes
            row = {"id": p["id"], "set": path or "bundled", "grounded": bool(p.get("grounded")),
                   "identical": identical,
                   **{v: {"speedup": statistics.median(ratios[v]), "plain_s": time[v][0], "spec_s": time[v][1],
                          "tokens_per_pass": passes[v][0] / passes[v][1]} for v in VARIANTS}}
            rows.append(row)
            print(f"{p['id']}: " + ", ".join(f"{v} {row[v]['speedup']:.2f}x ({row[v]['tokens_per_pass']:.2f}/pass)"
                                             for v in VARIANTS) + ("" if identical else "  NOT IDENTICAL"), flush=True)
    summary = {}
    for s in sorted({r["set"] for r in rows}):
        part = [r for r in rows if r["set"] == s]
        summary[s] = variant_summary(s, part, VARIANTS)
    write_result({"model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds, "summary": summary,
                  "prompts": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
