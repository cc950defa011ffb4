"""The costs the router weighs at the Space's default size, measured on this machine.

Writes GGUF files with the exact shape of SmolLM2-1.7B-Instruct (llama, 24 layers, hidden 2048,
FFN 8192, 32 heads, 32 KV heads, context 8192, rope base 130000, SmolLM2's real vocabulary and
tokenizer) and random weights, F16 plus Q8_0, Q4_K_M and Q4_0 made by llama.cpp's quantizer, under the
names bartowski's repo uses; takes the real SmolLM2-135M as the sibling draft. Then, with the
engine's own calibration (loading and quantizing outside every timing):

* a target pass over n = 1..9 tokens, in one-token steps;
* a step of each draft (Q8_0, Q4_K_M, Q4_0, the 135M sibling at F16 and Q8_0), in target steps;
* what the router expects from each source at acceptance 0.6 and 0.8 (best draft length).

Random weights make acceptance meaningless, but the costs are real. About 10 minutes on 2 cores
the first time (the files are kept in $SPECQUANT_HOME/models/rehearsal, 6.6 GB).

    python benchmarks/rehearsal_costs.py [--out bench-results/rehearsal_costs.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import write_result  # noqa: E402 - also puts the project on sys.path

from specquant.costs import best_k, expected_speedup, measure_costs  # noqa: E402
from specquant.engine import CALIBRATION_TEXT, Engine  # noqa: E402
from specquant.models import _vocab_fields, prepare_smol, write_tiny_gguf  # noqa: E402
from specquant.paths import models_dir  # noqa: E402
from specquant.quantize import quantize  # noqa: E402

SHAPE = dict(n_embd=2048, n_layer=24, n_head=32, n_head_kv=32, n_ff=8192, n_ctx=8192, rope_base=130000.0)
NAME = "SmolLM2-1.7B-Instruct"


def target_f16() -> Path:
    """The F16 file of the 1.7B shape (written once, about a minute)."""
    d = models_dir() / "rehearsal"
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{NAME}-f16.gguf"
    if not f.exists():
        t0 = time.perf_counter()
        write_tiny_gguf(f, _vocab_fields(prepare_smol()["F16"]), seed=7, **SHAPE)
        print(f"wrote {f.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return f


def prepare() -> dict:
    smol = prepare_smol()
    f16 = target_f16()
    files = {q: f16.with_name(f"{NAME}-{q.lower()}.gguf") for q in ("F16", "Q8_0", "Q4_K_M", "Q4_0")}
    for q in ("Q8_0", "Q4_K_M", "Q4_0"):
        if not files[q].exists():
            t0 = time.perf_counter()
            quantize(files["F16"], q, out_path=files[q])
            print(f"quantized {files[q].name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return {**files, **{f"sibling {q}": smol[q] for q in ("F16", "Q8_0", "Q4_K_M", "Q4_0")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-results/rehearsal_costs.json")
    args = ap.parse_args()
    files = prepare()
    eng = Engine(files["F16"], n_ctx=2048, draft_files={"q8": files["Q8_0"], "q4": files["Q4_K_M"], "q4_0": files["Q4_0"]},
                 sibling=files["sibling F16"])
    ctx = eng.target.tokenize(CALIBRATION_TEXT)
    t0 = time.perf_counter()
    curve = measure_costs(eng.target, context=ctx, ns=tuple(range(1, 10)), budget_s=10.0)
    res = {"machine_note": "see README 'Measured here'", "target": files["F16"].name,
           "exact": eng.exact, "calibration_s": {"target curve": time.perf_counter() - t0},
           "T1_s": curve.T(1), "T_steps": {n: curve.T(n) / curve.T(1) for n in range(1, 10)}, "drafts": {}}
    print(f"target: one-token step {curve.T(1) * 1000:.0f} ms ({1 / curve.T(1):.1f} tok/s); pass of n tokens in steps: "
          + ", ".join(f"{n}: {curve.T(n) / curve.T(1):.2f}" for n in range(2, 10)), flush=True)
    drafts = {"q8": eng.draft("q8").model, "q4 (Q4_K_M)": eng.draft("q4").model, "q4_0": eng.draft("q4_0").model,
              "sibling": eng.draft("sibling").model}
    from backends import load_model

    drafts["sibling Q8_0"] = load_model(files["sibling Q8_0"], n_ctx=2048)
    for name, model in drafts.items():
        t0 = time.perf_counter()
        c = measure_costs(eng.target, model, context=ctx, budget_s=10.0, curve=curve)  # one curve for every source
        took = time.perf_counter() - t0
        row = {"draft_step": c.draft_step / c.T(1), "draft_round": c.draft_round / c.T(1),
               "draft_prefill_per_token": c.draft_prefill / c.T(1), "calibration_s": took}
        for a in (0.6, 0.8):
            k, s = best_k(c, a, 8)
            row[f"expected_at_{a}"] = {"k": k, "speedup": s if k else expected_speedup(c, a, 1)}
        res["drafts"][name] = row
        print(f"{name}: step {row['draft_step']:.3f} of a target step, round extra {row['draft_round']:.3f}; "
              f"expected at 0.6: {row['expected_at_0.6']['speedup']:.2f}x (k={row['expected_at_0.6']['k']}), "
              f"at 0.8: {row['expected_at_0.8']['speedup']:.2f}x (k={row['expected_at_0.8']['k']})", flush=True)
    lookup = curve.target_only()
    res["drafts"]["lookup"] = {f"expected_at_{a}": {"k": best_k(lookup, a, 8)[0], "speedup": best_k(lookup, a, 8)[1]}
                               for a in (0.6, 0.8)}
    print("lookup: expected at 0.6: {:.2f}x, at 0.8: {:.2f}x".format(
        res["drafts"]["lookup"]["expected_at_0.6"]["speedup"], res["drafts"]["lookup"]["expected_at_0.8"]["speedup"]))
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
