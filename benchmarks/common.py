"""What the benchmark scripts share."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_result(res: dict, out: str | Path) -> Path:
    """Write a benchmark's result as JSON (making the folder) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return out


def prompt_rounds(doc: str, out: str):
    """The arguments of a script that runs rounds over prompt sets (--model, --prompts, repeatable,
    --rounds, --max-tokens, --out), and the engine, loaded and calibrated (with prompt lookup's costs
    and the floor) before any timing."""
    import argparse

    from specquant.engine import load_engine

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--prompts", action="append", help="a prompt set (default: the bundled one); repeatable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=out)
    args = ap.parse_args()
    eng = load_engine(args.model)
    eng.costs("lookup")
    eng.pass_costs()
    return args, eng


def variant_summary(name: str, rows: list[dict], variants) -> dict:
    """Totals of a set's rows, per variant: ``rows[i][v]`` holds ``plain_s`` and ``spec_s`` (seconds summed
    over rounds), ``speedup`` (the prompt's median) and ``tokens_per_pass``; each row ``identical`` and
    ``grounded``. Speed-ups are sums of time; printed as one line."""
    import statistics

    def ratio(part, v):
        spec = sum(r[v]["spec_s"] for r in part)
        return sum(r[v]["plain_s"] for r in part) / spec if spec else None

    grounded = [r for r in rows if r.get("grounded")]
    out = {v: {"speedup": ratio(rows, v), "grounded": ratio(grounded, v) if grounded else None,
               "worst": min(r[v]["speedup"] for r in rows),
               "tokens_per_pass": statistics.mean(r[v]["tokens_per_pass"] for r in rows)} for v in variants}
    out["identical"] = f"{sum(r['identical'] for r in rows)}/{len(rows)}"
    print(f"\n{name}: " + "; ".join(
        f"{v}: {x['speedup']:.3f}x overall" + (f", {x['grounded']:.3f}x grounded" if x["grounded"] else "")
        + f", worst {x['worst']:.2f}x, {x['tokens_per_pass']:.2f} tokens/pass" for v, x in out.items() if v in variants)
        + f"; identical {out['identical']}\n", flush=True)
    return out


def variant_rounds(args, eng, variants, run_variant) -> None:
    """For each prompt of ``args.prompts``: rounds of plain, each variant (``run_variant(tokens, v, p)``
    returns its ``Done``; the order alternates between rounds) and plain again; each variant's speed-up is
    against the mean of the round's two plain runs, a prompt's the median over rounds, totals sums of time
    (``variant_summary``). Every answer must equal the plain one. Writes ``args.out``."""
    import statistics

    from specquant.prompts import load_prompts

    rows = []
    for path in args.prompts or [None]:
        for p in load_prompts(path):
            tokens = eng.prompt_tokens(p["prompt"])
            ratios = {v: [] for v in variants}
            time = {v: [0.0, 0.0] for v in variants}  # plain, variant
            passes = {v: [0, 0] for v in variants}  # tokens, target passes
            identical = True
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                eng.forget_answers()
                first = eng.run(tokens, draft="none", max_tokens=args.max_tokens)
                done = {v: run_variant(tokens, v, p) for v in order}
                eng.forget_answers()
                last = eng.run(tokens, draft="none", max_tokens=args.max_tokens)
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
                          "tokens_per_pass": passes[v][0] / passes[v][1]} for v in variants}}
            rows.append(row)
            print(f"{p['id']}: " + ", ".join(f"{v} {row[v]['speedup']:.2f}x ({row[v]['tokens_per_pass']:.2f}/pass)"
                                             for v in variants) + ("" if identical else "  NOT IDENTICAL"), flush=True)
    summary = {s: variant_summary(s, [r for r in rows if r["set"] == s], variants)
               for s in sorted({r["set"] for r in rows})}
    write_result({"model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds, "summary": summary,
                  "prompts": rows}, args.out)


def lookup_with(eng, args, tokens, module, name, value):
    """A prompt lookup run (k = auto) with ``module.name`` set to ``value`` while it runs (the answer cache as
    the caller left it)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        return eng.run(tokens, draft="lookup", k="auto", max_tokens=args.max_tokens)
    finally:
        setattr(module, name, old)


def greedy_answers(eng, prompts, max_tokens):
    """(prompt, turn, prompt tokens, the target's greedy answer) for each turn of each prompt: a later turn
    of a conversation (Spec-Bench's multi-turn questions) follows the earlier turns and their answers."""
    for p in prompts:
        history = []
        for turn, text in enumerate(p.get("turns") or [p["prompt"]], 1):
            prompt = eng.prompt_tokens(text, history=history)
            done = eng.run(prompt, draft="none", max_tokens=max_tokens, private=True)
            yield p, turn, prompt, done.tokens
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": done.text}]


def target_rows(model, prompt: list[int], answer: list[int]):
    """The target's logits along its own answer, in one exact pass: row j is its view before answer[j]
    (the cache is left empty)."""
    model.reset()
    model.prefill(prompt[:-1])
    rows = model.eval([prompt[-1]] + answer[:-1])
    model.reset()
    return rows


def recycled_tops(prompt: list[int], answer: list[int], rows) -> list[tuple]:
    """What token recycling's table learns along an answer (``suffix.Recycled.update`` takes it): each
    token with the target's top tokens after it, from ``target_rows``."""
    from specquant.suffix import WIDTH, top_tokens

    return [(t, top_tokens(r, WIDTH)) for t, r in zip([prompt[-1]] + answer[:-1], rows)]
