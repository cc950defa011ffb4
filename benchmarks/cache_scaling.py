"""How much a bigger answer cache gives suffix drafting, offline: tokens per target pass along the target's
own greedy answers to one prompt set, as the cache of earlier answers grows from none to every other
question of the set and then to other sets' answers too (a served page that has answered more people).

SuffixDecoding (arXiv 2411.04975) reaches its speed-ups with a cache of many earlier responses from the same
workload; SpecQuant's sets are small and varied. This replays (``draft_replay.replay``; copies at k = 4,
every proposal verified) the engine's source with the cache filled from:

* ``none``: the context only (prompt lookup's copies);
* ``set``: every other question of the set (never the question's own, nor its other turns);
* ``set + FILE``: that, plus every answer to each further prompt set named, in order;
* ``... + FILE`` for each ``--fill`` set: answers that only fill the cache, never measured (a corpus of the
  target's answers to other requests, as a page that served many visitors would hold).

``oracle``: the ceiling of any copy from the same matches: at each point the longest continuation, of any
occurrence of any match (2..MAX_MATCH tokens, in the context or the cache), that the answer goes on with,
chosen knowing the answer. No source that copies after a match can keep more tokens per pass.

With ``+recycled`` the recycling table is learnt along the same answers as well, as the engine's judged runs
use it. The first set named is the one measured, the others only fill the cache; ``--each`` measures every
set named in turn, the others filling its cache.

    python benchmarks/cache_scaling.py SET [MORE_SETS ...] [--each] [--fill SET ...] [--cache-tokens N]
        [--answers FILE] [--max-tokens 96] [--out bench-results/cache_scaling.json]

SET: a prompt set file (``bundled``: the bundled set); Spec-Bench's .jsonl too.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import greedy_answers, recycled_tops, target_rows, write_result  # noqa: E402 - also puts the project on sys.path
from draft_replay import replay  # noqa: E402

from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.sampling import Sampler  # noqa: E402
from specquant.suffix import CACHE_TOKENS, MAX_MATCH, MIN_MATCH, AnswerCache, SuffixDraft, _Index  # noqa: E402

K = 4


def answers(eng, name: str, max_tokens: int) -> list[tuple]:
    """(source set, question id, turn, prompt tokens, greedy answer, what recycling learns along it)."""
    out = []
    for p, turn, prompt, answer in greedy_answers(eng, load_prompts(None if name == "bundled" else name), max_tokens):
        if len(answer) >= 2:
            tops = recycled_tops(prompt, answer, target_rows(eng.target, prompt, answer))
            out.append((name, p["id"], turn, prompt, answer, tops))
    return out


def _others(pool: list[tuple], name: str, qid, cache_tokens: int) -> tuple[AnswerCache, list]:
    """A cache of the ``pool``'s answers other than question (``name``, ``qid``)'s, bounded to
    ``cache_tokens``, and what the recycling table learnt along them."""
    cache, learnt = AnswerCache(cache_tokens), []
    for q_name, q_id, _, q_prompt, q_answer, q_tops in pool:
        if (q_name, q_id) != (name, qid):
            cache.add(q_prompt, q_answer)
            learnt += q_tops
    return cache, learnt


def _summed(replays) -> dict:
    """Tokens per pass over several replays (each a dict with ``passes`` and ``tokens``)."""
    passes = tokens = 0
    for r in replays:
        passes += r["passes"]
        tokens += r["tokens"]
    return {"tokens_per_pass": tokens / passes, "passes": passes, "tokens": tokens}


def replays(measured: list[tuple], pool: list[tuple], recycled: bool, cache_tokens: int = CACHE_TOKENS) -> list[dict]:
    """One replay for each of ``measured``, with a cache (and, if ``recycled``, a table) of the ``pool``'s
    answers other than its own question's, in a cache bounded to ``cache_tokens``."""
    def one(name, qid, prompt, answer, tops):
        cache, learnt = _others(pool, name, qid, cache_tokens)
        src = SuffixDraft(cache if pool else None)
        if recycled:
            src.recycle = True
            if src.cache is not None:
                src.cache.recycled.update(learnt)
        # the table learns the rows each pass verified
        learn = (lambda i0, i1: src.recycled.update(tops[i0:i1])) if recycled else None
        src.begin(prompt, Sampler())
        return replay(src.propose, prompt, answer, K, learn, src.accepted_tree if recycled else None)

    return [one(name, qid, prompt, answer, tops) for name, qid, _, prompt, answer, tops in measured]


def tokens_per_pass(measured: list[tuple], pool: list[tuple], recycled: bool,
                    cache_tokens: int = CACHE_TOKENS) -> dict:
    """``replays`` summed over ``measured``."""
    return _summed(replays(measured, pool, recycled, cache_tokens))


def oracle_replays(measured: list[tuple], pool: list[tuple]) -> list[dict]:
    """One replay for each of ``measured`` with the best copy any occurrence of any match could give (the
    ``pool``'s answers other than its own question's, unbounded, and the context), chosen knowing the
    answer: the ceiling of copying after a match."""
    def one(name, qid, prompt, answer):
        cached = _others(pool, name, qid, sys.maxsize)[0]._index  # nothing dropped: every entry is live
        full, in_context, done = list(prompt) + list(answer), _Index(), [1]

        def propose(context, k):
            at = len(context)  # the context is full[:at]: index the n-grams it can now continue
            in_context.add(full, done[0], at, full)
            done[0] = at
            truth, best = full[at:at + k], 0
            for n in range(MIN_MATCH, min(MAX_MATCH, at) + 1):
                gram = tuple(full[at - n:at])
                for index, limit in ((in_context, at), (cached, None)):
                    for seq, e in index.ends[n].get(gram, ()):
                        cont = seq[e:min(e + k, limit or len(seq))]
                        a = 0
                        while a < len(cont) and a < len(truth) and cont[a] == truth[a]:
                            a += 1
                        best = max(best, a)
            return truth[:best]

        return replay(propose, prompt, answer, K)

    return [one(name, qid, prompt, answer) for name, qid, _, prompt, answer, _tops in measured]


def oracle_tokens_per_pass(measured: list[tuple], pool: list[tuple]) -> dict:
    """``oracle_replays`` summed over ``measured``."""
    return _summed(oracle_replays(measured, pool))


def _row(measured: list[tuple], label: str, pool: list[tuple], cache_tokens: int) -> dict:
    """A row of the table: tokens per pass over ``measured`` with this pool's cache; and, where ``measured``
    holds conversations' later turns (after the earlier answers), theirs apart, from the same replays."""
    copies, oracle = replays(measured, pool, False, cache_tokens), oracle_replays(measured, pool)
    row = {"cache": label, "pool_answers": len(pool), "cache_tokens": cache_tokens,
           "copies": _summed(copies)["tokens_per_pass"],
           "copies_recycled": tokens_per_pass(measured, pool, True, cache_tokens)["tokens_per_pass"],
           "oracle": _summed(oracle)["tokens_per_pass"]}
    one = {str(m[1]) + (f" turn {m[2]}" if m[2] > 2 else ""): (_summed([c]), _summed([o]))
           for m, c, o in zip(measured, copies, oracle) if m[2] > 1}
    if one:
        row["later_turns"] = {"answers": len(one),
                              "copies": _summed(c for c, _ in one.values())["tokens_per_pass"],
                              "oracle": _summed(o for _, o in one.values())["tokens_per_pass"],
                              "median_copies": statistics.median(c["tokens_per_pass"] for c, _ in one.values()),
                              "median_oracle": statistics.median(o["tokens_per_pass"] for _, o in one.values()),
                              "by_question": {q: {"copies": c["tokens_per_pass"], "oracle": o["tokens_per_pass"]}
                                              for q, (c, o) in one.items()}}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="the set measured, then sets whose answers fill the cache too")
    ap.add_argument("--each", action="store_true", help="measure every set named, the others filling the cache")
    ap.add_argument("--fill", nargs="+", default=[], metavar="SET",
                    help="sets whose answers only fill the cache, after the others; never measured")
    ap.add_argument("--fill-steps", type=int, default=1, metavar="N",
                    help="add each --fill set's answers in N equal parts, measuring after each")
    ap.add_argument("--cache-tokens", type=int, default=CACHE_TOKENS,
                    help=f"the cache's bound in tokens (the engine's: {CACHE_TOKENS}); oldest answers go first")
    ap.add_argument("--answers", metavar="FILE", help="keep the greedy answers here, and reuse them if there "
                    "(they depend on the model, --max-tokens and the sets only)")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default="bench-results/cache_scaling.json")
    args = ap.parse_args()
    eng = load_engine(args.model, n_ctx=4096)
    kept = json.loads(Path(args.answers).read_text()) if args.answers and Path(args.answers).exists() else {}
    key = f"{args.model} {args.max_tokens}"
    got = {}
    for name in dict.fromkeys(args.sets + args.fill):
        if name in kept.get(key, {}):
            got[name] = [(*a[:5], [(t, tuple(top)) for t, top in a[5]]) for a in kept[key][name]]
        else:
            got[name] = answers(eng, name, args.max_tokens)
    if args.answers:
        kept.setdefault(key, {}).update(got)
        Path(args.answers).write_text(json.dumps(kept))
    measurable = [name for name in got if name not in args.fill]
    results = {}
    for measured_name in (measurable if args.each else measurable[:1]):
        measured = got[measured_name]
        pools, pool = [("none", [])], list(measured)
        pools.append(("set", list(pool)))
        for name in got:
            if name != measured_name:
                steps, base, n = (args.fill_steps if name in args.fill else 1), pools[-1][0], len(got[name])
                for i in range(1, steps + 1):  # in parts: the first i * n / steps answers
                    pool += got[name][(i - 1) * n // steps:i * n // steps]
                    pools.append((f"{base} + {name}" + (f"[:{i * n // steps}]" if steps > 1 else ""), list(pool)))
        rows = [_row(measured, label, pool, args.cache_tokens) for label, pool in pools]
        lookup = rows[0]["copies"]  # no cache: the context's copies alone, prompt lookup's
        print(f"{measured_name}: {len(measured)} answers; tokens per target pass at k = {K}, copies / copies + "
              f"recycled / the copies' oracle (prompt lookup: {lookup:.2f})", flush=True)
        for r in rows:
            print(f"  cache {r['cache']} (of {r['pool_answers']} answers): {r['copies']:.2f} "
                  f"({r['copies'] / lookup:.2f}x lookup) / {r['copies_recycled']:.2f} "
                  f"({r['copies_recycled'] / lookup:.2f}x) / {r['oracle']:.2f} ({r['oracle'] / lookup:.2f}x)",
                  flush=True)
            if "later_turns" in r:
                lt = r["later_turns"]
                print(f"    later turns ({lt['answers']}): copies {lt['copies']:.2f}, the copies' oracle "
                      f"{lt['oracle']:.2f}; the median turn {lt['median_copies']:.2f} / {lt['median_oracle']:.2f}",
                      flush=True)
        results[measured_name] = {"answers": len(measured), "lookup_tokens_per_pass": lookup, "rows": rows}
    write_result({"model": args.model, "max_tokens": args.max_tokens, "k": K, "sets": args.sets, "fill": args.fill,
                  "cache_tokens": args.cache_tokens,
                  "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
