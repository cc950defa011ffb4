"""How far token recycling's candidates could go as deeper trees, offline: tokens per target pass along
the target's own greedy answers when, where no copy is proposed, the recycling table's candidates form a
tree of a given shape (branching per depth), every path verified in one pass.

The engine verifies recycled candidates for the next token only (one level, the table's top
``suffix.WIDTH``, at most ``TREE_PATHS`` root-to-leaf paths). This replays what deeper and wider trees would
keep, to say whether the issue's bar (the new source's tokens per pass at 1.3x prompt lookup's) is within
reach of recycling at all, before any live cost is paid. As in ``draft_replay.py``: copies come first
(suffix drafting, k = 4), the table learns the target's top ``--width`` tokens after each kept row (the
answer's own rows; a live tree pass would also see its rejected branches' rows), in the run alone or
along every other question's answer too (``others``: the answer cache and the table, never the question's
own). A shape ``()`` proposes copies alone.

    python benchmarks/recycled_trees.py [--prompts FILE] [--width 8] [--out bench-results/recycled_trees.json]
"""
from __future__ import annotations

import argparse
import sys

from common import greedy_answers, target_rows, write_result  # noqa: E402 - also puts the project on sys.path

from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.sampling import Sampler  # noqa: E402
from specquant.suffix import AnswerCache, SuffixDraft, top_tokens  # noqa: E402

SHAPES = ((), (3,), (3, 2), (3, 2, 1), (8,), (8, 2, 1), (6, 3, 2, 1), (8, 4, 2, 1))
K = 4  # a copy's length, as lookup's figure it is compared with


def tree(table: dict, last: int, shape: tuple) -> tuple[list[int], list[int]]:
    """Candidates after ``last``: ``shape[d]`` children per node at depth d, from the table."""
    tokens, parents, frontier = [], [], [(-1, last)]
    for b in shape:
        below = []
        for parent, t in frontier:
            for c in table.get(t, ())[:b]:
                tokens.append(c)
                parents.append(parent)
                below.append((len(tokens) - 1, c))
        frontier = below
    return tokens, parents


def kept(tokens: list[int], parents: list[int], answer: list[int], i: int) -> int:
    """How many of the answer's tokens from ``i`` on a tree holds along one path."""
    node, n = -1, 0
    while i + n < len(answer):
        child = next((j for j, p in enumerate(parents) if p == node and tokens[j] == answer[i + n]), None)
        if child is None:
            break
        node, n = child, n + 1
    return n


def replay(prompt, answer, tops, shape, cache=None, table=None) -> int:
    """Passes to settle ``answer``: a copy where suffix drafting has one, else the shape's tree."""
    table = dict(table or {})
    src = SuffixDraft(cache)
    src.begin(prompt, Sampler())
    i = passes = 0
    while i < len(answer):
        n = 0
        if i < len(answer) - 1:
            ctx = prompt + answer[:i]
            copy = src.propose(ctx, min(K, len(answer) - i - 1)).tokens
            if copy:
                while n < len(copy) and copy[n] == answer[i + n]:
                    n += 1
            elif shape:
                n = kept(*tree(table, ctx[-1], shape), answer, i)
        passes += 1
        table.update(tops[i : i + n + 1])  # the rows this pass kept
        i += n + 1
    return passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", help="a prompt set (default: the bundled one); Spec-Bench's .jsonl too")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--width", type=int, default=8, help="top tokens the table keeps per token")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default="bench-results/recycled_trees.json")
    args = ap.parse_args()
    eng = load_engine(args.model, n_ctx=4096)
    recorded = [a for a in greedy_answers(eng, load_prompts(args.prompts), args.max_tokens) if len(a[3]) >= 2]
    tops = {(p["id"], turn): [(t, top_tokens(r, args.width))
                              for t, r in zip([prompt[-1]] + answer[:-1], target_rows(eng.target, prompt, answer))]
            for p, turn, prompt, answer in recorded}
    tokens = sum(len(a) for *_, a in recorded)
    res = {"prompts": args.prompts or "bundled", "width": args.width, "k": K, "tokens": tokens, "tokens_per_pass": {}}
    for others in (False, True):
        for shape in SHAPES:
            passes = 0
            for p, turn, prompt, answer in recorded:
                cache, table = None, {}
                if others:
                    cache = AnswerCache()
                    for q, q_turn, q_prompt, q_answer in recorded:
                        if q["id"] != p["id"]:
                            cache.add(q_prompt, q_answer)
                            table.update(tops[(q["id"], q_turn)])
                passes += replay(prompt, answer, tops[(p["id"], turn)], shape, cache, table)
            name = f"{'suffix+others' if others else 'suffix'} tree {shape or 'none'}"
            res["tokens_per_pass"][name] = round(tokens / passes, 3)
            print(f"{name}: {tokens / passes:.3f} tokens per pass", flush=True)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
