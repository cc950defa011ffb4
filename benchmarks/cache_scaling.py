"""How much a bigger answer cache gives suffix drafting, offline: tokens per target pass along the target's
own greedy answers to one prompt set, as the cache of earlier answers grows from none to every other
question of the set and then to other sets' answers too (a served page that has answered more people).

SuffixDecoding (arXiv 2411.04975) reaches its speed-ups with a cache of many earlier responses from the same
workload; SpecQuant's sets are small and varied. This replays (``draft_replay.replay``; copies at k = 4,
every proposal verified) the engine's source with the cache filled from:

* ``none``: the context only (prompt lookup's copies);
* ``set``: every other question of the set (never the question's own, nor its other turns);
* ``set + FILE``: that, plus every answer to each further prompt set named, in order.

With ``+recycled`` the recycling table is learnt along the same answers as well, as the engine's judged runs
use it. The first set named is the one measured, the others only fill the cache; ``--each`` measures every
set named in turn, the others filling its cache.

    python benchmarks/cache_scaling.py SET [MORE_SETS ...] [--each] [--max-tokens 96] [--out bench-results/cache_scaling.json]

SET: a prompt set file (``bundled``: the bundled set); Spec-Bench's .jsonl too.
"""
from __future__ import annotations

import argparse
import sys

from common import greedy_answers, recycled_tops, target_rows, write_result  # noqa: E402 - also puts the project on sys.path
from draft_replay import replay  # noqa: E402

from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.sampling import Sampler  # noqa: E402
from specquant.suffix import AnswerCache, SuffixDraft  # noqa: E402

K = 4


def answers(eng, name: str, max_tokens: int) -> list[tuple]:
    """(source set, question id, turn, prompt tokens, greedy answer, what recycling learns along it)."""
    out = []
    for p, turn, prompt, answer in greedy_answers(eng, load_prompts(None if name == "bundled" else name), max_tokens):
        if len(answer) >= 2:
            tops = recycled_tops(prompt, answer, target_rows(eng.target, prompt, answer))
            out.append((name, p["id"], turn, prompt, answer, tops))
    return out


def tokens_per_pass(measured: list[tuple], pool: list[tuple], recycled: bool) -> dict:
    """Replays each of ``measured`` with a cache (and, if ``recycled``, a table) of the ``pool``'s answers
    other than its own question's."""
    passes = tokens = 0
    for name, qid, _, prompt, answer, tops in measured:
        cache = AnswerCache()
        learnt = []
        for q_name, q_id, _, q_prompt, q_answer, q_tops in pool:
            if (q_name, q_id) != (name, qid):
                cache.add(q_prompt, q_answer)
                learnt += q_tops
        src = SuffixDraft(cache if pool else None)
        if recycled:
            src.recycle = True
            if src.cache is not None:
                src.cache.recycled.update(learnt)
        # the table learns the rows each pass verified
        learn = (lambda i0, i1, src=src, tops=tops: src.recycled.update(tops[i0:i1])) if recycled else None
        src.begin(prompt, Sampler())
        r = replay(src.propose, prompt, answer, K, learn, src.accepted_tree if recycled else None)
        passes += r["passes"]
        tokens += r["tokens"]
    return {"tokens_per_pass": tokens / passes, "passes": passes, "tokens": tokens}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="the set measured, then sets whose answers fill the cache too")
    ap.add_argument("--each", action="store_true", help="measure every set named, the others filling the cache")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default="bench-results/cache_scaling.json")
    args = ap.parse_args()
    eng = load_engine(args.model, n_ctx=4096)
    got = {name: answers(eng, name, args.max_tokens) for name in dict.fromkeys(args.sets)}
    results = {}
    for measured_name in (list(got) if args.each else list(got)[:1]):
        measured = got[measured_name]
        pools, pool = [("none", [])], list(measured)
        pools.append(("set", list(pool)))
        for name in got:
            if name != measured_name:
                pool += got[name]
                pools.append((f"{pools[-1][0]} + {name}", list(pool)))
        rows = [{"cache": label, "pool_answers": len(pool),
                 "copies": tokens_per_pass(measured, pool, False)["tokens_per_pass"],
                 "copies_recycled": tokens_per_pass(measured, pool, True)["tokens_per_pass"]} for label, pool in pools]
        lookup = rows[0]["copies"]  # no cache: the context's copies alone, prompt lookup's
        print(f"{measured_name}: {len(measured)} answers; tokens per target pass at k = {K}, copies / copies + "
              f"recycled (prompt lookup: {lookup:.2f})", flush=True)
        for r in rows:
            print(f"  cache {r['cache']} (of {r['pool_answers']} answers): {r['copies']:.2f} "
                  f"({r['copies'] / lookup:.2f}x lookup) / {r['copies_recycled']:.2f} "
                  f"({r['copies_recycled'] / lookup:.2f}x)", flush=True)
        results[measured_name] = {"answers": len(measured), "lookup_tokens_per_pass": lookup, "rows": rows}
    write_result({"model": args.model, "max_tokens": args.max_tokens, "k": K, "sets": args.sets,
                  "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
