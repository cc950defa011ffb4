"""How each free draft source would have done along the target's own answers, offline: acceptance by
position and mean tokens per target pass at k = 1..8, from recorded greedy answers.

For every prompt of a set, the target's greedy answer is decoded once (plain) and its logits recomputed in
one exact pass (the patched build makes batched logits equal one-token ones). Then each source is replayed
along that answer: at each point it proposes k tokens after the prompt and the answer so far, the longest
prefix equal to the answer is "accepted", and the replay moves on by that plus one token, as a verify pass
would. No timing is involved: this says what a source *could* keep, so choices rest on data, not single runs.

Sources replayed:

* ``lookup``: prompt lookup (``specquant.drafts.PromptLookup``);
* ``suffix``: suffix drafting over the context (``specquant.suffix.SuffixDraft``, no answer cache);
* ``recycling``: token recycling (arXiv 2408.08696) as a single chain: after each verified row the
  target's top-8 candidates are remembered for the token that row followed; a draft follows the top
  candidate of each token from the last one. Kept as a source only if its acceptance pays on the cost
  curves measured (break-even for one token: about 10% at T(2) = 1.1 steps, 30% at T(2) = 1.4);
* ``suffix+others``: suffix drafting with an answer cache holding every *other* question's answers (the
  question's own never): what SpecQuant's earlier answers add where no question repeats;
* ``suffix-1``: the same, with one-token matches too (the weakest kind of match; with greedy decoding
  token recycling's chain amounts to a one-token match in the answer so far);
* ``lookup+recycling``: prompt lookup's copy where it has one, else the recycling chain (learning as
  above): what recycling adds as a fallback, with ``fallback_first`` its first token's acceptance
  where lookup had nothing.

    python benchmarks/draft_replay.py [--prompts FILE] [--max-tokens 96] [--out bench-results/replay.json]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from common import greedy_answers, recycled_tops, target_rows, write_result  # noqa: E402 - also puts the project on sys.path

from specquant.drafts import Draft, PromptLookup  # noqa: E402
from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.sampling import Sampler  # noqa: E402
from specquant.suffix import WIDTH, AnswerCache, SuffixDraft  # noqa: E402

KS = range(1, 9)
TOP = 8  # candidates remembered per token (Token Recycling's table)


class Recycling:
    """Token recycling as one chain: ``adj[token]`` = the top candidates the target gave after it."""

    def __init__(self):
        self.adj: dict[int, list[int]] = {}

    def learn(self, inputs: list[int], logits: np.ndarray) -> None:
        for t, row in zip(inputs, logits):
            self.adj[t] = list(np.argpartition(-row, TOP)[:TOP][np.argsort(-row[np.argpartition(-row, TOP)[:TOP]])])

    def propose(self, last: int, k: int) -> list[int]:
        out = []
        for _ in range(k):
            nxt = self.adj.get(last)
            if not nxt:
                break
            last = nxt[0]
            out.append(last)
        return out


def replay(propose, prompt: list[int], answer: list[int], k: int, learn=None, feedback=None) -> dict:
    """Walk ``answer`` as verify passes with drafts of up to k tokens; ``learn(i0, i1)``: feedback after a
    pass that settled the answer from position i0 up to i1 (recycling learns the rows it verified). A
    proposal is a list of tokens, or a ``Draft``: a chain, or candidates for the next token side by side
    (a tree of depth one), after which ``feedback(draft, path)`` says which one was kept, if any; its
    ``tree_hits[j]`` counts proposals whose candidate j was kept, ``tree_proposals`` all of them."""
    i, passes, drafted_by_pos, kept_by_pos = 0, 0, [0] * k, [0] * k
    tree_hits, trees = [0] * k, 0
    while i < len(answer):
        d = propose(prompt + answer[:i], min(k, len(answer) - i - 1)) if i < len(answer) - 1 else []
        if isinstance(d, Draft) and d.parents is not None:
            assert all(p == -1 for p in d.parents), "replayed trees are candidates for the next token"
            path = [d.tokens.index(answer[i])] if answer[i] in d.tokens else []
            trees += 1
            if path:
                tree_hits[path[0]] += 1
            if feedback is not None:
                feedback(d, path)
            d = [answer[i]] if path else d.tokens[:1]  # as a chain: one position, kept or not
        elif isinstance(d, Draft):
            d = d.tokens
        acc = 0
        while acc < len(d) and d[acc] == answer[i + acc]:
            acc += 1
        for j in range(len(d)):
            drafted_by_pos[j] += 1
            kept_by_pos[j] += j < acc
        passes += 1
        if learn is not None:
            learn(i, i + acc + 1)
        i += acc + 1
    return {"passes": passes, "tokens": len(answer), "drafted_by_pos": drafted_by_pos, "kept_by_pos": kept_by_pos,
            "tree_hits": tree_hits, "tree_proposals": trees}


def columns(rows: list[dict], k: int = 4) -> dict:
    """Tokens per target pass at draft length k, per source, by column (Spec-Bench's categories, or the
    bundled set's), over every turn, and over later turns alone."""
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["column"] or "all", []).append(r)
        if r["turn"] > 1:
            groups.setdefault("later turns", []).append(r)
    groups["overall"] = rows
    for col, part in groups.items():
        for name in part[0]["sources"]:
            runs = [r["sources"][name][k] for r in part]
            out.setdefault(name, {})[col] = sum(x["tokens"] for x in runs) / sum(x["passes"] for x in runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", help="a prompt set (default: the bundled one); Spec-Bench's .jsonl too")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default="bench-results/replay.json")
    args = ap.parse_args()
    eng = load_engine(args.model, n_ctx=4096)
    m = eng.target
    totals: dict[str, dict[int, dict]] = {}
    per_prompt = []
    recorded = [a for a in greedy_answers(eng, load_prompts(args.prompts), args.max_tokens) if len(a[3]) >= 2]

    tops = {(p["id"], turn): recycled_tops(prompt, answer, target_rows(m, prompt, answer))
            for p, turn, prompt, answer in recorded}  # what token recycling learns along each answer
    for p, turn, prompt, answer in recorded:
        others = AnswerCache()  # every other question's answers: what a process that answered them holds
        learnt = []
        for q, q_turn, q_prompt, q_answer in recorded:
            if q["id"] != p["id"]:
                others.add(q_prompt, q_answer)
                learnt += tops[(q["id"], q_turn)]
        logits = target_rows(m, prompt, answer)
        inputs = [prompt[-1]] + answer[:-1]
        row = {"id": p["id"], "turn": turn, "column": p.get("column") or p.get("category"),
               "grounded": bool(p.get("grounded")), "tokens": len(answer), "sources": {}}
        for name in ("lookup", "suffix", "suffix+others", "suffix-1", "recycling", "lookup+recycling",
                     "suffix+recycled", "suffix+others+recycled"):
            for k in KS:
                if name.endswith("recycled"):  # the engine's source as a judged run has it, every proposal verified
                    others.recycled.clear()  # (learnt along the other answers, afresh for each k)
                    others.recycled.update(learnt)
                    src = SuffixDraft(others if "others" in name else None)
                    src.recycle = True
                    src.begin(prompt, Sampler())

                    def learn(i0, i1, src=src):
                        src.verified(inputs[i0:i1], logits[i0:i1])
                    r = replay(src.propose, prompt, answer, k, learn, src.accepted_tree)
                elif "recycling" in name:
                    rec = Recycling()
                    fallback = {"drafted": 0, "kept": 0}

                    def learn(i0, i1, rec=rec, inputs=inputs):
                        rec.learn(inputs[i0:i1], logits[i0:i1])

                    if name == "recycling":
                        def propose(ctx, kk, rec=rec):
                            return rec.propose(ctx[-1], kk)
                    else:
                        pl = PromptLookup()
                        pl.begin(prompt, Sampler())

                        def propose(ctx, kk, rec=rec, pl=pl, fallback=fallback):
                            copy = pl.propose(ctx, kk).tokens
                            if copy:
                                return copy
                            d = rec.propose(ctx[-1], kk)
                            if d:
                                i = len(ctx) - len(prompt)
                                fallback["drafted"] += 1
                                fallback["kept"] += int(d[0] == answer[i])
                            return d
                    r = replay(propose, prompt, answer, k, learn)
                    r["fallback"] = fallback
                else:
                    src = (PromptLookup() if name == "lookup" else
                           SuffixDraft(others) if name == "suffix+others" else SuffixDraft())
                    if name == "suffix-1":
                        src.ngram_min = 1
                    src.begin(prompt, Sampler())
                    r = replay(lambda ctx, kk, src=src: src.propose(ctx, kk).tokens, prompt, answer, k)
                row["sources"].setdefault(name, {})[k] = r
                t = totals.setdefault(name, {}).setdefault(k, {"passes": 0, "tokens": 0, "drafted_by_pos": [0] * k,
                                                               "kept_by_pos": [0] * k, "fb_drafted": 0, "fb_kept": 0})
                t.setdefault("tree_hits", [0] * k)
                t["tree_hits"] = [a + b for a, b in zip(t["tree_hits"], r["tree_hits"])]
                t["trees"] = t.get("trees", 0) + r["tree_proposals"]
                t["fb_drafted"] += r.get("fallback", {}).get("drafted", 0)
                t["fb_kept"] += r.get("fallback", {}).get("kept", 0)
                t["passes"] += r["passes"]
                t["tokens"] += r["tokens"]
                t["drafted_by_pos"] = [a + b for a, b in zip(t["drafted_by_pos"], r["drafted_by_pos"])]
                t["kept_by_pos"] = [a + b for a, b in zip(t["kept_by_pos"], r["kept_by_pos"])]
        per_prompt.append(row)
        print(f"{p['id']}{f' turn {turn}' if turn > 1 else ''}: {len(answer)} tokens; tokens per pass at k=4: " + ", ".join(
            f"{n} {row['sources'][n][4]['tokens'] / row['sources'][n][4]['passes']:.2f}" for n in row["sources"]),
            flush=True)
    summary = {}
    for name, by_k in totals.items():
        summary[name] = {}
        for k, t in by_k.items():
            acc = [kept / dr if dr else None for kept, dr in zip(t["kept_by_pos"], t["drafted_by_pos"])]
            # the chance a position is kept given every earlier one was: kept[j] / kept[j-1]
            cond = [t["kept_by_pos"][0] / t["drafted_by_pos"][0] if t["drafted_by_pos"][0] else None] + [
                t["kept_by_pos"][j] / t["kept_by_pos"][j - 1] if t["kept_by_pos"][j - 1] else None for j in range(1, k)]
            summary[name][k] = {"tokens_per_pass": t["tokens"] / t["passes"], "acceptance_by_pos": acc,
                                "kept_given_earlier": cond, "drafted_first": t["drafted_by_pos"][0]}
            if t["trees"]:  # recycled candidates: the chance one of the first w is kept, w = 1..k
                summary[name][k]["recycled_hits"] = [sum(t["tree_hits"][:w]) / t["trees"] for w in range(1, k + 1)]
                summary[name][k]["recycled_proposals"] = t["trees"]
            if t["fb_drafted"]:
                summary[name][k]["fallback_first"] = t["fb_kept"] / t["fb_drafted"]
                summary[name][k]["fallback_drafted"] = t["fb_drafted"]
    print("\nmean tokens per target pass (every pass drafting up to k), and the first position's acceptance:")
    print(f"{'source':17} " + " ".join(f"k={k:<5d}" for k in KS) + "  first-token acceptance (k=1)")
    for name, by_k in summary.items():
        a1 = by_k[1]["acceptance_by_pos"][0]
        fb = by_k[1].get("fallback_first")
        print(f"{name:17} " + " ".join(f"{by_k[k]['tokens_per_pass']:<7.2f}" for k in KS)
              + (f"  {a1:.1%}" if a1 is not None else "  -")
              + (f" (the fallback's, where lookup had nothing: {fb:.1%})" if fb is not None else ""))
    for name, by_k in summary.items():
        if "recycled_hits" in by_k[WIDTH]:
            print(f"{name}: recycled candidates kept within the first w (w = 1..{WIDTH}): "
                  + ", ".join(f"{h:.1%}" for h in by_k[WIDTH]["recycled_hits"])
                  + f" of {by_k[WIDTH]['recycled_proposals']} proposals (k = {WIDTH})")
    by_column = columns(per_prompt)
    cols = list(next(iter(by_column.values())))
    print("\ntokens per target pass at k=4, by column:")
    print(f"| source | {' | '.join(cols)} |")
    print("|---|" + "---|" * len(cols))
    for name, row in by_column.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    write_result({"model": args.model, "max_tokens": args.max_tokens, "summary": summary, "by_column_k4": by_column,
                  "prompts": per_prompt}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
