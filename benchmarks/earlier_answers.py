"""Drafting from SpecQuant's earlier answers to *other* questions, live: what the answer cache adds where no
question repeats (``benchmarks/repeat_question.py`` measures a repeated question).

Every prompt of a set is answered once (plain, greedy). Then, for each prompt, rounds of: plain decoding
(private: no cache), policy auto with an empty answer cache, and policy auto with a cache holding every other
prompt's answer (never its own), the two policy runs in alternating order; the cache is emptied and refilled
before each run, so no run drafts from its own answer. Speed-ups are against the round's plain run; a
prompt's is the median over rounds, totals are sums of time. Every answer must equal the plain one.

    python benchmarks/earlier_answers.py [--prompts FILE] [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import statistics
import sys

from common import prompt_rounds, variant_summary, write_result  # noqa: E402 - also puts the project on sys.path

from specquant.prompts import load_prompts  # noqa: E402
from specquant.speculative import finish  # noqa: E402

VARIANTS = ("empty cache", "others' answers")


def main() -> int:
    args, eng = prompt_rounds(__doc__, "bench-results/earlier_answers.json")
    if eng.answers is None:
        print("this engine keeps no answer cache", file=sys.stderr)
        return 2
    kw = {"max_tokens": args.max_tokens}
    rows, summary = [], {}
    for path in args.prompts or [None]:
        name = path or "bundled"
        prompts = load_prompts(path)
        recorded = {}
        for p in prompts:  # every answer once, outside every timing
            tokens = eng.prompt_tokens(p["prompt"])
            recorded[p["id"]] = (tokens, eng.run(tokens, draft="none", private=True, **kw).tokens)

        def fill(own: str | None) -> None:
            eng.forget_answers()
            for pid, (tokens, answer) in recorded.items():
                if own is not None and pid != own:
                    eng.answers.add(tokens, answer)

        part = []
        for p in prompts:
            ratios = {v: [] for v in VARIANTS}
            secs = {v: [0.0, 0.0] for v in VARIANTS}
            per_pass = {v: [0, 0] for v in VARIANTS}
            same = True
            for r in range(args.rounds):
                fill(None)
                plain = finish(eng.answer(p["prompt"], draft="none", private=True, **kw).events)
                for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                    fill(p["id"] if v == "others' answers" else None)
                    done = finish(eng.answer(p["prompt"], **kw).events)
                    same &= done.tokens == plain.tokens
                    ratios[v].append(plain.stats.wall_s / done.stats.wall_s * done.stats.tokens / plain.stats.tokens)
                    secs[v][0] += plain.stats.wall_s
                    secs[v][1] += done.stats.wall_s
                    per_pass[v][0] += done.stats.tokens
                    per_pass[v][1] += done.stats.target_passes
            row = {"id": p["id"], "set": name, "identical": same, "grounded": bool(p.get("grounded")),
                   **{v: {"speedup": statistics.median(ratios[v]), "plain_s": secs[v][0], "spec_s": secs[v][1],
                          "tokens_per_pass": per_pass[v][0] / max(1, per_pass[v][1])} for v in VARIANTS}}
            part.append(row)
            print(f"{p['id']}: " + ", ".join(f"{v} {row[v]['speedup']:.2f}x ({row[v]['tokens_per_pass']:.2f}/pass)"
                                             for v in VARIANTS) + ("" if same else "  NOT IDENTICAL"), flush=True)
        fill(None)
        summary[name] = variant_summary(name, part, VARIANTS)
        rows += part
    write_result({"model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds, "summary": summary,
                  "prompts": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
