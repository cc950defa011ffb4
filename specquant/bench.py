"""``specquant bench``: the bundled prompt set, plain vs each draft source and draft length.

Models load and calibrate before any timing; one warm-up run per configuration is thrown
away. For every prompt the runs go plain, config 1, plain, config 2, ..., plain, so each
configuration is compared with the plain runs on either side of it and drift of a shared
machine hits both sides alike. Writes ``bench.json`` and ``bench.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .options import count, engine_args
from .prompts import SPEC_BENCH, correct, load_prompts
from . import sources
from .compare import agreement, chain
from .speculative import Done, finish


def _row(done: Done) -> dict:
    s = done.stats
    return {
        "tokens": s.tokens, "seconds": s.wall_s, "tok_s": s.tokens_per_s, "ttft_s": s.ttft_s,
        "acceptance": s.acceptance_rate if s.drafted else None, "drafted": s.drafted, "accepted": s.accepted,
        "tokens_per_pass": s.tokens_per_pass, "target_passes": s.target_passes,
        "draft_s": s.draft_s, "verify_s": s.verify_s, "finish": s.finish_reason,
    }


def _tok_s(runs) -> float:
    return sum(d.stats.tokens for d in runs) / sum(d.stats.wall_s for d in runs)


def _summarise(name: str, rows: list[dict], per_prompt: list[dict], **extra) -> dict:
    t_spec = sum(r["seconds"] for r in rows)
    t_plain = sum(r["plain_seconds"] for r in rows)
    toks = sum(r["tokens"] for r in rows)
    toks_plain = sum(e["plain"]["tokens"] for e in per_prompt)
    drafted = sum(r.get("drafted", 0) for r in rows)
    graded = [(e["plain"]["correct"], r["correct"]) for e, r in zip(per_prompt, rows) if r.get("correct") is not None]
    grounded = [r for e, r in zip(per_prompt, rows) if e["grounded"]]
    return {
        **extra, "prompts": len(rows),
        "seconds_plain": t_plain, "seconds_spec": t_spec,
        "tok_s_plain": toks_plain / t_plain if t_plain else 0.0, "tok_s_spec": toks / t_spec if t_spec else 0.0,
        "speedup": (toks / t_spec) / (toks_plain / t_plain) if t_spec and t_plain else None,
        "min_speedup": min((r["speedup"] for r in rows if r["speedup"] is not None), default=None),
        "no_tokens": sum(r["tokens"] == 0 for r in rows),
        "grounded_speedup": (sum(r["tokens"] for r in grounded) / sum(r["seconds"] for r in grounded))
        / (sum(r["tokens"] for r in grounded) / sum(r["plain_seconds"] for r in grounded)) if grounded else None,
        "acceptance": sum(r.get("accepted", 0) for r in rows) / drafted if drafted else None,
        "tokens_per_pass": toks / passes if (passes := sum(r.get("target_passes", 0) for r in rows)) else None,
        "identical": sum(bool(r.get("identical")) for r in rows),
        "first_diff_mean": statistics.mean(d) if (d := [r["first_diff"] for r in rows
                                                         if r.get("first_diff") is not None]) else None,
        "differing": sum(r.get("first_diff") is not None for r in rows),
        "equal_share": statistics.mean(r["equal_share"] for r in rows) if all("equal_share" in r for r in rows) else None,
        "accuracy_plain": sum(bool(a) for a, _ in graded) / len(graded) if graded else None,
        "accuracy_spec": sum(bool(b) for _, b in graded) / len(graded) if graded else None,
    }


ORACLE = "oracle (best fixed per prompt)"
SPEC_KEYS = ("draft", "k", "policy", "alone")  # what names a configuration in its summary


def summarise(per_prompt: list[dict], specs: list[tuple[str, dict]], *, oracle: bool) -> dict:
    """Each configuration's totals over ``per_prompt`` (``specs``: its name and what names it),
    and the per-prompt oracle's, which each policy is measured against."""
    summary = {name: _summarise(name, [e["runs"][name] for e in per_prompt], per_prompt, **extra)
               for name, extra in specs}
    if oracle:
        o = summary[ORACLE] = _summarise("oracle", [e["oracle"] | {"correct": None} for e in per_prompt], per_prompt)
        for name, extra in specs:
            if "policy" in extra:
                s = summary[name]
                s["vs_oracle"] = s["tok_s_spec"] / o["tok_s_spec"] if o["tok_s_spec"] else None
    return summary


def merge(results: list[dict]) -> dict:
    """One result from benches of the same configurations over parts of a prompt set (run apart,
    e.g. each pinned to its own cores): the prompts together and the totals over all of them."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    names = [n for n in first["summary"] if n != ORACLE]
    for r in results[1:]:
        if [n for n in r["summary"] if n != ORACLE] != names or r["settings"] != first["settings"]:
            raise ValueError("these benches ran different configurations or settings: they don't merge")
    per_prompt = [e for r in results for e in r["prompts"]]
    specs = [(n, {k: first["summary"][n][k] for k in SPEC_KEYS if k in first["summary"][n]}) for n in names]
    return {**first, "summary": summarise(per_prompt, specs, oracle=ORACLE in first["summary"]),
            "prompts": per_prompt, "plain_seconds": sum(r["plain_seconds"] for r in results),
            "elapsed_s": max((r.get("elapsed_s", 0.0) for r in results), default=0.0), "parts": len(results)}


def run_bench(engine, prompts: list[dict], configs: list[tuple[str, object]], *, policies: list[str] = (),
              max_tokens: int = 64, temperature: float = 0.0, seed: int = 0, repeats: int = 1,
              min_seconds: float = 0.0, max_repeats: int = 12, progress=None, alone: list[str] = ()) -> dict:
    """Run every prompt plain, with every fixed (draft, k) configuration, with every routing
    policy ("auto", "tier-rule") and with each quantized copy in ``alone`` as the only model (plain
    decoding: faster, but not the FP16 answer). ``progress(done, total, msg)``. The oracle row
    is the best exact fixed choice per prompt (plain included), known only after the fact.
    A prompt with several ``turns`` (Spec-Bench's multi-turn questions) is a conversation: each
    turn is answered with the chat so far, that run's own earlier answers included, and the
    turns count as one run. Each run's answer is compared with the first plain answer
    (``agreement``) and graded where the prompt has a reference.

    Each prompt's interleaved sequence (plain, config, plain, config, ..., plain) runs
    ``repeats`` times, and more (up to ``max_repeats``) until every configuration has run for
    about ``min_seconds`` (rounds x one plain run's time): a 7-token answer takes a tenth of a
    second, where a scheduler hiccup is several per cent. A prompt's speed-up for a
    configuration is the median over rounds of its run against the plain runs just before and
    after it; totals are sums of time."""
    kw = dict(max_tokens=max_tokens, temperature=temperature, seed=seed)
    tokenized = [engine.prompt_tokens(p["prompt"]) for p in prompts]
    _prepare(engine, prompts, configs, policies, alone, max_tokens)
    plain, runners = _runners(engine, configs, policies, alone, kw)
    count = _Progress(progress, len(prompts) * (2 * len(runners) + 1) * repeats)
    per_prompt = []
    for p, toks in zip(prompts, tokenized):
        rounds = _interleave(p, toks, plain, runners, count, repeats=repeats, min_seconds=min_seconds,
                             max_repeats=max_repeats)
        per_prompt.append(_prompt_entry(p, rounds))
    specs = ([(f"{d} k={k}", {"draft": d, "k": k}) for d, k in configs]
             + [(f"policy {pol}", {"policy": pol}) for pol in policies]
             + [(f"{sources.label(q)} alone", {"alone": q}) for q in alone])
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "engine": engine.describe(),
        "plain_seconds": sum(statistics.mean(e["plain_runs_s"]) for e in per_prompt),
        "settings": {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "repeats": repeats,
                     "min_seconds": min_seconds, "max_repeats": max_repeats},
        "summary": summarise(per_prompt, specs, oracle=bool(configs)),
        "prompts": per_prompt,
    }


def _prepare(engine, prompts, configs, policies, alone, max_tokens) -> None:
    """Load, quantize and calibrate whatever a run may need, measure the floor, and warm every path up:
    all before any timing. The policies then learn from the benchmark itself, from zero."""
    for d, k in configs:
        engine.control(d, k) if engine.draft(d) is not None else None
    for q in alone:
        engine.alone_model(q)
    for pol in policies:
        for p in prompts:
            engine.route(p["prompt"], policy=pol, max_tokens=max_tokens)  # loads what a decision may need
    engine.costs("none")  # the target's curve, for the header
    engine.pass_costs()  # and the machine's floor beside it: about a second
    warm = engine.prompt_tokens("Say hello.")
    engine.run(warm, draft="none", max_tokens=8)
    for d, k in configs:
        engine.run(warm, draft=d, k=k, max_tokens=8)
    for q in alone:
        engine.run(warm, alone=q, max_tokens=8)
    engine.book = type(engine.book)()


def _runners(engine, configs, policies, alone, kw):
    """(plain, [(name, runner)]): a runner answers a prompt, every turn of a conversation, and returns
    (Done, the decision or None)."""
    def conversation(once):
        """A runner: ``once(text, tokens, history) -> (Done, decision)`` over every turn."""
        def go(p, toks):
            engine.forget_answers()  # no run drafts from an earlier run's answer (its turns may: one conversation)
            done, decision = once(p["prompt"], toks, [])
            dones, history = [done], []
            for prev, turn in zip(p.get("turns", [])[:-1], p.get("turns", [])[1:]):
                history += [{"role": "user", "content": prev}, {"role": "assistant", "content": dones[-1].text}]
                dones.append(once(turn, engine.prompt_tokens(turn, history=history), history)[0])
            return (chain(dones) if len(dones) > 1 else done), decision
        return go

    def fixed(d, k):
        return conversation(lambda text, toks, history: (engine.run(toks, draft=d, k=k, **kw), None))

    def routed(pol):
        def once(text, toks, history):
            ans = engine.answer(text, policy=pol, history=history, **kw)
            done = finish(ans.events)
            done.stats.wall_s += ans.route_s  # deciding is part of answering
            return done, ans.decision
        return conversation(once)

    def quantized_alone(q):
        return conversation(lambda text, toks, history: (engine.run(toks, alone=q, **kw), None))

    runners = [(f"{d} k={k}", fixed(d, k)) for d, k in configs] + [(f"policy {pol}", routed(pol)) for pol in policies]
    runners += [(f"{sources.label(q)} alone", quantized_alone(q)) for q in alone]
    return fixed("none", None), runners


class _Progress:
    def __init__(self, report, total: int):
        self.report, self.total, self.n = report, total, 0

    def tick(self, msg: str) -> None:
        self.n += 1
        if self.report:
            self.report(self.n, self.total, msg)


@dataclass
class _Rounds:
    """One prompt's interleaved runs: every plain run in order; per runner, its runs (Done, decision)
    and the plain runs just before and after each."""

    plains: list
    results: dict
    beside: dict
    rounds: int


def _interleave(p, toks, plain, runners, count: _Progress, *, repeats, min_seconds, max_repeats) -> _Rounds:
    """plain, runner 1, plain, runner 2, ..., plain: ``repeats`` rounds, and more while a round's plain
    runs add up to less than ``min_seconds`` (up to ``max_repeats``)."""
    r = _Rounds([], {name: [] for name, _ in runners}, {name: [] for name, _ in runners}, 0)
    one_slot_s = 0.0  # the time of one plain run per round, summed
    while r.rounds < repeats or (r.rounds < max_repeats and one_slot_s < min_seconds):
        if r.rounds >= repeats:
            count.total += 2 * len(runners) + 1
        r.rounds += 1
        seq = [plain(p, toks)[0]]
        one_slot_s += seq[0].stats.wall_s
        count.tick(f"{p['id']}: plain")
        for name, go in runners:
            r.results[name].append(go(p, toks))
            count.tick(f"{p['id']}: {name}")
            seq.append(plain(p, toks)[0])
            count.tick(f"{p['id']}: plain")
            r.beside[name].append(seq[-2:])
        r.plains += seq
    return r


def _prompt_entry(p: dict, r: _Rounds) -> dict:
    """A prompt's row per runner (speed-up as the median over rounds of its run against the plain runs
    beside it; agreement and grade against the first plain answer) and its oracle."""
    ref = r.plains[0]
    entry = {
        "id": p["id"], "category": p.get("category"), "column": p.get("column") or p.get("category"),
        "grounded": bool(p.get("grounded")),
        "plain": _row(ref) | {"correct": correct(ref.text, p.get("reference")), "text": ref.text},
        "plain_runs_s": [x.stats.wall_s for x in r.plains],
        "rounds": r.rounds,
        "runs": {},
    }
    for name, runs in r.results.items():
        done, decision = runs[-1]
        nb = [x for pair in r.beside[name] for x in pair]
        # tokens/s against the plain runs beside; none where a run produced no token (a quantized
        # model alone may end its answer at once): there is no speed to compare
        per_round = [_tok_s([d]) / _tok_s(pair) for (d, _), pair in zip(runs, r.beside[name])
                     if d.stats.tokens and _tok_s(pair)]
        row = _row(done)
        row.update(
            seconds=sum(d.stats.wall_s for d, _ in runs) / len(runs),
            tok_s=_tok_s([d for d, _ in runs]),
            plain_tok_s=sum(x.stats.tokens for x in nb) / sum(x.stats.wall_s for x in nb),
            plain_seconds=sum(x.stats.wall_s for x in nb) / len(nb),
            **{k: v for k, v in agreement(ref.tokens, done.tokens).items() if k != "identical"},
            identical=all(d.tokens == ref.tokens for d, _ in runs),
            correct=correct(done.text, p.get("reference")),
            speedup=statistics.median(per_round) if per_round else None,
            speedup_rounds=per_round,
        )
        later = [_tok_s(d.turns[1:]) / _tok_s(a.turns[1:] + b.turns[1:]) for (d, _), (a, b) in
                 zip(runs, r.beside[name]) if len(d.turns) > 1 and len(a.turns) > 1 and len(b.turns) > 1]
        if later:  # a conversation's later turns alone: they draft from the earlier turns too
            row["later_turns_speedup"] = statistics.median(later)
        if decision is not None:
            row.update(decision=decision.draft, decision_k=decision.k, decision_k_start=decision.k_start,
                       tier=decision.tier, reason=decision.reason)
        entry["runs"][name] = row
    entry["oracle"] = _oracle(entry, r.plains, ref)
    return entry


def _oracle(entry: dict, plains: list, ref) -> dict:
    """The best exact fixed choice for this prompt, plain included, known only after the fact."""
    fixed_rows = {name: r for name, r in entry["runs"].items()
                  if not name.startswith("policy ") and not name.endswith(" alone")}
    best = max(fixed_rows.items(), key=lambda kv: kv[1]["speedup"] or 0.0, default=None)
    if best is None or (best[1]["speedup"] or 0.0) < 1.0:
        mean_s = sum(x.stats.wall_s for x in plains) / len(plains)
        return {"choice": "none", "speedup": 1.0, "tokens": ref.stats.tokens, "seconds": mean_s,
                "plain_seconds": mean_s}
    return {"choice": best[0], **{k: best[1][k] for k in ("speedup", "tokens", "seconds", "plain_seconds")}}


def _f(x, fmt="{:.2f}", unit=""):
    return "-" if x is None else fmt.format(x) + unit


def to_markdown(res: dict) -> str:
    models = ", ".join(m["name"] for m in res["engine"]["models"])
    out = [
        "# SpecQuant benchmark", "",
        f"Models: {models}. Backend: {res['engine']['backend']}. Machine: {res['machine']['platform']}.",
        *pass_costs_lines(res["engine"].get("pass_costs")),
        f"Settings: max {res['settings']['max_tokens']} new tokens, temperature {res['settings']['temperature']}. "
        "Speed-ups compare each run with the plain runs just before and after it (per prompt: the median over "
        f"{res['settings']['repeats']}+ rounds, more for short answers; totals: sums of time); loading and "
        "warm-up excluded.", "",
        "## Results", "",
        "| configuration | time normal (s) | time SpecQuant (s) | speed-up | min per prompt | grounded | acceptance "
        "| tokens/pass | identical | accuracy normal | accuracy SpecQuant |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    n = len(res["prompts"])
    for name, s in res["summary"].items():
        out.append(
            f"| {name} | {s['seconds_plain']:.2f} | {s['seconds_spec']:.2f} | {_f(s['speedup'])}x "
            f"({_f((s['speedup'] or 0) * 100 - 100, '{:+.0f}')}%) | {_f(s['min_speedup'], unit='x')} "
            f"| {_f(s['grounded_speedup'], unit='x')} "
            f"| {_f(s['acceptance'], '{:.1%}')} | {_f(s['tokens_per_pass'])} | {s['identical']}/{n} "
            f"| {_f(s['accuracy_plain'], '{:.0%}')} | {_f(s['accuracy_spec'], '{:.0%}')} |"
        )
    out += ["", *seed_table(res), "", *category_table(res)]
    for name, s in res["summary"].items():
        if s.get("vs_oracle") is not None:
            out.append(f"\n{name}: {s['vs_oracle']:.3f}x the oracle's throughput; worst prompt "
                       f"{_f(s['min_speedup'])}x plain.")
    names = [n for n in res["summary"] if not n.startswith("oracle")]
    out += ["", "## Per prompt (speed-up; acceptance)", "",
            "| prompt | tokens | plain tok/s | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names)]
    for e in res["prompts"]:
        cells = []
        for name in names:
            r = e["runs"][name]
            mark = "" if r["identical"] else " ≠"
            chose = f" [{r['decision']}]" if "decision" in r else ""
            cells.append(f"{_f(r['speedup'])}x; {_f(r['acceptance'], '{:.0%}')}{mark}{chose}")
        out.append(f"| {e['id']} | {e['plain']['tokens']} | {e['plain']['tok_s']:.1f} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def pass_costs_lines(pc: dict | None) -> list[str]:
    """The target's verify pass costs (one-token steps) beside the machine's floor, for the header."""
    if not pc:
        return []
    fl = pc.get("floor")
    cells = [f"{n}: {v:.2f}" + (f" (floor {fl['steps'][n]:.2f})" if fl else "") for n, v in pc["steps"].items()]
    rates = (f"; floor from memory {fl['bandwidth'] / 1e9:.0f} GB/s and float32 FMA {fl['flops'] / 1e9:.0f} GFLOP/s"
             if fl else "")
    return [f"Target pass over n tokens, in one-token steps of {pc['step_ms']:.1f} ms: " + ", ".join(cells) + rates + "."]


def _agreement_cell(s: dict, n: int) -> str:
    if s["identical"] == n:
        return f"identical on {n}/{n}"
    cell = f"identical on {s['identical']}/{n}"
    if s.get("first_diff_mean") is not None:
        cell += f"; others differ from token {s['first_diff_mean']:.0f} on (mean)"
    if s.get("equal_share") is not None:
        cell += f"; {s['equal_share']:.0%} of tokens equal"
    if s.get("no_tokens"):
        cell += f"; no answer at all on {s['no_tokens']}"
    return cell


def seed_table(res: dict) -> list[str]:
    """The seed README's table, like for like: each configuration's time, speed-up, agreement
    with the FP16 answer and accuracy (where prompts have references), FP16 alone first."""
    n = len(res["prompts"])
    graded = [e for e in res["prompts"] if e["plain"].get("correct") is not None]
    acc = f"{sum(bool(e['plain']['correct']) for e in graded)}/{len(graded)}" if graded else "-"
    out = ["## Configurations side by side (the seed's table)", "",
           "| configuration | time (s) | speed-up | agreement with FP16 | accuracy |", "|---|---|---|---|---|",
           f"| FP16 alone (plain) | {res['plain_seconds']:.2f} | 1.00x | (the reference) | {acc} |"]
    for name, s in res["summary"].items():
        if name.startswith("oracle"):
            continue
        label = name if name.endswith(" alone") else f"SpecQuant {name}"
        a = "-" if s.get("accuracy_spec") is None else f"{round(s['accuracy_spec'] * len(graded))}/{len(graded)}"
        out.append(f"| {label} | {s['seconds_spec']:.2f} | {_f(s['speedup'])}x | {_agreement_cell(s, n)} | {a} |")
    return out


def category_table(res: dict) -> list[str]:
    """Speed-up per category in Spec-Bench's shape (its six columns first when present; a Spec-Bench
    file's MT-bench categories make one Multi-turn column), with the mean tokens per target pass
    (accepted draft tokens + 1) and the overall speed-up."""
    def column(e):
        return e.get("column") or e["category"]

    cats = sorted({column(e) for e in res["prompts"]}, key=lambda c: (c not in SPEC_BENCH, list(SPEC_BENCH).index(c)
                                                                      if c in SPEC_BENCH else 0, c))
    names = [n for n in res["summary"] if not n.startswith("oracle")]
    out = ["## Speed-up per category (Spec-Bench's shape)", "",
           "| configuration | " + " | ".join(SPEC_BENCH.get(c, c) for c in cats) + " | tokens per target pass | overall |",
           "|---|" + "---|" * (len(cats) + 2)]
    for name in names:
        cells = []
        for c in cats:
            entries = [e for e in res["prompts"] if column(e) == c]
            speedup = _summarise(name, [e["runs"][name] for e in entries], entries)["speedup"]
            cells.append(f"{_f(speedup)}x" if speedup else "-")
        s = res["summary"][name]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {_f(s['tokens_per_pass'])} | {_f(s['speedup'])}x |")
    later = {name: [e["runs"][name]["later_turns_speedup"] for e in res["prompts"]
                    if e["runs"].get(name, {}).get("later_turns_speedup")] for name in names}
    if any(later.values()):
        out += ["", "Multi-turn questions, the later turns alone (each drafts from the turns before it too; "
                    "median over questions): " + ", ".join(f"{name} {statistics.median(v):.2f}x ({len(v)})"
                                                           for name, v in later.items() if v) + "."]
    return out


def parse_configs(drafts: str, ks: str) -> list[tuple[str, object]]:
    from .engine import parse_k

    ds = [d.strip() for d in drafts.split(",") if d.strip()]
    kk = [parse_k(k.strip()) for k in ks.split(",") if k.strip()]
    if not ds or not kk:
        raise ValueError("need at least one draft and one draft length")
    return [(d, k) for d in ds for k in kk if d.lower() not in ("none", "plain")]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="specquant bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--drafts", help="comma-separated draft specs (default: what policy auto weighs, e.g. "
                                     "q8,q4_0,lookup on llama.cpp, q8,q4,lookup on MLX)")
    ap.add_argument("--k", default="2,4,auto", help="comma-separated draft lengths (default 2,4,auto)")
    ap.add_argument("--policies", default="auto,tier-rule",
                    help="routing policies to run beside (default auto,tier-rule; seed is tier-rule's old name; '' "
                         "for none)")
    ap.add_argument("--alone", default="auto",
                    help="quantized copies to run alone, plain, as the only model (their answers may differ from "
                         "FP16's): comma-separated, e.g. q8,q4,q4_0 (default auto: q8,q4,q4_0 on llama.cpp, q8,q4 on "
                         "MLX; '' for none)")
    ap.add_argument("--prompts", help="a prompts JSON file, or Spec-Bench's question.jsonl (default: the bundled set)")
    ap.add_argument("--ids", help="comma-separated prompt ids to run")
    ap.add_argument("--category", help="only prompts of this category (e.g. grounded)")
    ap.add_argument("--limit", type=count, help="only the first N prompts")
    ap.add_argument("--max-tokens", type=count, default=64)
    ap.add_argument("--repeats", type=count, default=1, help="run each prompt's interleaved sequence this many times")
    ap.add_argument("--min-seconds", type=float, default=5.0,
                    help="and more times (up to --max-repeats) until each configuration has run about this long "
                         "(default 5.0: a prompt's median ratio then varies by about 1%% on a quiet 2-core VM)")
    ap.add_argument("--max-repeats", type=count, default=30)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    engine_args(ap, model_default="demo")
    ap.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    args = ap.parse_args(argv)

    from .engine import warn_if_inexact
    prompts = load_prompts(args.prompts)
    if args.ids:
        want = set(args.ids.split(","))
        prompts = [p for p in prompts if p["id"] in want]
    if args.category:
        prompts = [p for p in prompts if p.get("category") == args.category]
    if args.limit:
        prompts = prompts[: args.limit]
    if not prompts:
        raise ValueError("no prompts selected")
    from .engine import load_engine

    engine = load_engine(args.target or args.model or "demo", n_ctx=args.ctx, n_threads=args.threads,
                         backend=args.backend)
    warn_if_inexact(engine)
    configs = parse_configs(args.drafts or ",".join(engine.auto_sources()), args.k)
    t0 = time.time()

    def progress(i, total, msg):
        print(f"[{i}/{total}] {msg}", flush=True)

    from .routing import policy_name

    policies = [policy_name(x.strip()) for x in args.policies.split(",") if x.strip()]
    alone = [x.strip() for x in args.alone.split(",") if x.strip()]
    if alone == ["auto"]:
        alone = ["q8", "q4"] + (["q4_0"] if engine.backend == "llama.cpp" else [])
    for q in alone:
        engine.alone_model(q)  # a clear error for a bad name, before any run
    res = run_bench(engine, prompts, configs, policies=policies, max_tokens=args.max_tokens,
                    temperature=args.temperature, seed=args.seed, repeats=args.repeats,
                    min_seconds=args.min_seconds, max_repeats=max(args.max_repeats, args.repeats), progress=progress,
                    alone=alone)
    res["elapsed_s"] = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (out / "bench.md").write_text(md)
    print(md)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
