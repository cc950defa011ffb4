"""SpecQuant's loop against llama.cpp's own tools, on the same files, side by side.

1. Plain decoding through our backend vs ``llama-bench`` tg (same GGUF, same threads); and stock's
   llama-bench relinked against the installed (patched) libraries vs stock, which splits the gap
   into the build's kernels and our Python loop.
2. Speculative decoding vs ``llama-speculative-simple`` (same target, draft, k, prompt).

Runs alternate (native, ours, native, ours, ...; the order turns each round) so machine drift hits both; only decode
speed is compared (prompt processing and loading are left out on both sides).

    python benchmarks/native_compare.py [--drafts q8,q4_0] [--k 1,3,4] [--prompts 4] [--native-bin DIR]

The native tools are built once by benchmarks/build_native.sh (about 15 min on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, write_result  # noqa: E402 - also puts the project on sys.path

sys.path.insert(0, str(ROOT / "scripts"))
from build_llama_server import relink  # noqa: E402

from specquant.prompts import load_prompts  # noqa: E402
from specquant.control import DraftControl  # noqa: E402
from specquant.engine import Engine  # noqa: E402
from specquant.models import prepare_smol  # noqa: E402
from specquant.speculative import run  # noqa: E402


def native_bin() -> Path:
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "build_native.sh")], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return Path(out)


REPS = 3  # llama-bench's -r: each round times this many runs on both sides and takes their mean


def llama_bench_tg(bin_dir: Path, model: Path, n: int, threads: int, tool: str = "llama-bench") -> float:
    env = {**os.environ, "LD_LIBRARY_PATH": str(bin_dir)}  # a shared-library build finds its own libraries
    out = subprocess.run([str(bin_dir / tool), "-m", str(model), "-p", "0", "-n", str(n),
                          "-t", str(threads), "-r", str(REPS), "-o", "json"], check=True, capture_output=True,
                         text=True, env=env).stdout
    return float(json.loads(out)[0]["avg_ts"])


def installed_bench(bin_dir: Path) -> Path | None:
    """Stock's llama-bench linked again, against the installed llama-cpp-python's libraries (SpecQuant's
    patched build): the same tool, the same objects, only the library differs. None where ``bin_dir``
    is not a build folder of build_native.sh or the installed package has no shared libraries."""
    import llama_cpp

    tools = bin_dir.parent / "tools" / "llama-bench"
    link = tools / "CMakeFiles" / "llama-bench.dir" / "link.txt"
    lib = Path(llama_cpp.__file__).parent / "lib"
    if not link.is_file() or not (lib / "libllama.so").exists():
        return None
    out = bin_dir / "llama-bench-installed"
    try:
        relink(tools, "llama-bench", out, lib)  # the link scripts/build_llama_server.py makes for llama-server
    except SystemExit as e:
        print(f"{e}: no relinked llama-bench", flush=True)
        return None
    return out


def plain_vs_stock(model, bin_dir: Path, path: Path, n: int, rounds: int) -> dict:
    """Plain decoding through our loop against llama-bench tg, and, where it can be relinked
    (``installed_bench``), llama-bench on our build against stock. Each round times every side, in
    an order that turns round by round, so a side is not always the one after a model load."""
    outside: list[float] = []  # per round: our loop's share outside llama_decode
    sides = {"native": lambda: llama_bench_tg(bin_dir, path, n, model.n_threads, "llama-bench"),
             "ours": lambda: ours_tg(model, n, outside)}
    relinked = installed_bench(bin_dir)
    if relinked is not None:
        sides["installed"] = lambda: llama_bench_tg(bin_dir, path, n, model.n_threads, relinked.name)
    got: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            got[name].append(sides[name]())
    res = {f"{name}_tok_s": v for name, v in got.items()}
    res.update(_ratios(got["ours"], got["native"]))
    res["loop_outside_share"] = statistics.median(outside)
    if relinked is not None:
        res.update(_ratios(got["installed"], got["native"], "build_"))
        res.update(_ratios(got["ours"], got["installed"], "python_"))
    return res


def _ratios(a: list[float], b: list[float], prefix: str = "") -> dict:
    """``a`` against ``b``: the ratio of their medians, the median of the rounds' own ratios and that
    median's 90% interval (``interval``)."""
    pairs = [x / y for x, y in zip(a, b)]
    return {f"{prefix}ratio": statistics.median(a) / statistics.median(b),
            f"{prefix}ratio_of_pairs": statistics.median(pairs), f"{prefix}interval": interval(pairs)}


def interval(values: list[float], level: float = 0.90, draws: int = 2000) -> list[float]:
    """A bootstrap interval of the median of ``values``: the rounds resampled with replacement,
    ``draws`` times (a fixed seed: the same rounds give the same interval)."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    tail = (1 - level) / 2
    return [meds[int(tail * draws)], meds[int((1 - tail) * draws) - 1]]


class _TimedDecode:
    """llama.cpp's functions as a model calls them, with the time spent in ``llama_decode`` summed."""

    def __init__(self, lc):
        self._lc, self.seconds = lc, 0.0

    def __getattr__(self, name):
        return getattr(self._lc, name)

    def llama_decode(self, ctx, batch):
        t = time.perf_counter()
        rc = self._lc.llama_decode(ctx, batch)
        self.seconds += time.perf_counter() - t
        return rc


def ours_tg(model, n: int, outside: list[float] | None = None) -> float:
    """Our plain decoding from a one-token prompt (no prefill pass), as tg starts: the mean of REPS runs.
    ``outside`` gets the share of the time spent outside llama.cpp's ``llama_decode`` (the batch filled in,
    the logits read, sampling, the answer's text, the loop's bookkeeping): the loop's own cost, which the
    machine's noise hardly moves (on the Zen 4 VM 2.0-2.3% of a demo-size step on the native and the
    AVX2-only build alike; llama-bench's is near 0)."""
    one = model.tokenize("Hello")[:1]
    timed = model._lc = _TimedDecode(model._lc)
    try:
        runs = [run(model, one, max_tokens=n, stop_at_eos=False).stats for _ in range(REPS)]
    finally:
        model._lc = timed._lc
    if outside is not None:
        outside.append(1 - timed.seconds / sum(s.wall_s - s.prefill_s for s in runs))
    return statistics.mean(s.decode_tokens_per_s for s in runs)


def native_spec(bin_dir: Path, target: Path, draft: Path, prompt: str, k: int, n: int, threads: int) -> dict:
    cmd = [str(bin_dir / "llama-speculative-simple"), "-m", str(target), "-md", str(draft),
           "--spec-type", "draft-simple", "--spec-draft-n-max", str(k), "--spec-draft-n-min", "0",
           "--spec-draft-p-min", "0", "-p", prompt, "-n", str(n), "-t", str(threads), "--temp", "0",
           "-c", "4096"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    log = out.stdout + out.stderr
    m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
    if not m:
        raise RuntimeError(f"llama-speculative-simple failed:\n{log[-2000:]}")
    acc = re.search(r"accept\s+=\s+([\d.]+)%", log)
    return {"tokens": int(m.group(1)), "seconds": float(m.group(2)),
            "tok_s": int(m.group(1)) / float(m.group(2)), "acceptance": float(acc.group(1)) / 100 if acc else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="F16 GGUF (default: the prepared SmolLM2-135M)")
    ap.add_argument("--drafts", default="q8,q4_0")
    ap.add_argument("--k", default="1,3,4")
    ap.add_argument("--prompts", type=int, default=4, help="how many prompts of the bundled set")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-results/native.json")
    ap.add_argument("--native-bin", help="a folder with llama.cpp's own tools already built (default: "
                                         "build them with benchmarks/build_native.sh)")
    args = ap.parse_args()

    target = Path(args.target) if args.target else prepare_smol()["F16"]
    bin_dir = Path(args.native_bin) if args.native_bin else native_bin()
    eng = Engine(target)
    threads = eng.target.n_threads
    res = {"target": str(target), "threads": threads, "tg": {}, "spec": []}

    # 1. plain decoding vs llama-bench tg (and llama-bench on our build vs stock)
    res["tg"] = plain_vs_stock(eng.target, bin_dir, target, args.max_tokens, args.rounds)
    tg = res["tg"]
    print(f"plain: ours {statistics.median(tg['ours_tok_s']):.1f} tok/s vs llama-bench tg{args.max_tokens} "
          f"{statistics.median(tg['native_tok_s']):.1f} -> {tg['ratio']:.3f}x (median of the {args.rounds} rounds' "
          f"own ratios: {tg['ratio_of_pairs']:.3f}x, 90% interval {tg['interval'][0]:.3f}-{tg['interval'][1]:.3f})",
          flush=True)
    if "installed_tok_s" in tg:
        print(f"llama-bench on SpecQuant's build vs stock: {tg['build_ratio_of_pairs']:.3f}x (median of the rounds' "
              f"ratios); SpecQuant's loop vs llama-bench on the same build: {tg['python_ratio_of_pairs']:.3f}x",
              flush=True)
    print(f"our plain loop outside llama_decode: {tg['loop_outside_share']:.1%} of the decoding time",
          flush=True)

    # 2. speculative decoding vs llama-speculative-simple
    prompts = load_prompts()[: args.prompts]
    for spec in [d for d in args.drafts.split(",") if d]:
        draft_src = eng.draft(spec)
        for k in [int(x) for x in args.k.split(",")]:
            rows = []
            for p in prompts:
                text = eng.target.apply_chat_template([{"role": "user", "content": p["prompt"]}])
                toks = eng.target.tokenize(text)
                for _ in range(args.rounds):
                    nat = native_spec(bin_dir, target, draft_src.model.path, text, k, args.max_tokens, threads)
                    draft_src.p_min = 0.0
                    d = run(eng.target, toks, draft=draft_src, control=DraftControl(k), max_tokens=nat["tokens"])
                    rows.append({"prompt": p["id"], "native": nat, "ours": {
                        "tokens": d.stats.tokens, "tok_s": d.stats.decode_tokens_per_s,
                        "acceptance": d.stats.acceptance_rate}})
            t_nat = sum(r["native"]["tokens"] / r["native"]["tok_s"] for r in rows)
            t_our = sum(r["ours"]["tokens"] / r["ours"]["tok_s"] for r in rows)
            tok_nat = sum(r["native"]["tokens"] for r in rows)
            tok_our = sum(r["ours"]["tokens"] for r in rows)
            ratio = (tok_our / t_our) / (tok_nat / t_nat)
            res["spec"].append({"draft": spec, "file": draft_src.model.path.name, "k": k, "ratio": ratio,
                                "native_tok_s": tok_nat / t_nat, "ours_tok_s": tok_our / t_our, "runs": rows})
            print(f"{spec} k={k}: ours {tok_our / t_our:.1f} tok/s vs native {tok_nat / t_nat:.1f} -> {ratio:.3f}x",
                  flush=True)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
