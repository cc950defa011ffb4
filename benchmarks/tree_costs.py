"""What a tree pass costs against a chain pass of as many tokens, at the demo size and the Space's 1.7B
shape, in one-token steps.

A tree of the root and n - 1 candidates side by side (``eval_tree``, each candidate its own sequence of the
cache) is priced by the controller as a chain of n tokens (``costs.best_width`` uses ``T(n)``). This times
both, interleaved with one-token steps as decoding meets them (a pass after a one-token step), with the
cache settled after each as a run would (``keep_path`` / ``rollback``): medians over rounds.

    python benchmarks/tree_costs.py [--rounds 30] [--out bench-results/tree_costs.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import write_result  # noqa: E402 - also puts the project on sys.path

from backends import load_model  # noqa: E402
from specquant.engine import CALIBRATION_TEXT  # noqa: E402
from specquant.models import prepare_smol  # noqa: E402
from specquant.paths import models_dir  # noqa: E402

NS = (2, 3, 4, 5)


def measure(path, rounds: int) -> dict:
    m = load_model(path, n_ctx=2048)
    if not m.trees:
        raise SystemExit(f"{path}: this build verifies chains only")
    base = m.tokenize(CALIBRATION_TEXT)[:256]
    m.prefill(base)
    n0 = m.n_past
    filler = base[:8]

    def step():
        t0 = time.perf_counter()
        m.eval([filler[0]])
        dt = time.perf_counter() - t0
        m.rollback(n0)
        return dt

    def chain(n):
        t0 = time.perf_counter()
        m.eval(filler[:n])
        dt = time.perf_counter() - t0
        m.rollback(n0)
        return dt

    def tree(n):
        tokens = filler[:n]
        t0 = time.perf_counter()
        m.eval_tree(tokens, [-1] + [0] * (n - 1))
        dt = time.perf_counter() - t0
        m.keep_path(tokens, [0])
        m.rollback(n0)
        return dt

    times = {"step": [], **{f"chain {n}": [] for n in NS}, **{f"tree {n}": [] for n in NS}}
    for r in range(rounds + 1):  # round 0 warms every shape up
        for n in NS:
            for kind, f in (("chain", chain), ("tree", tree)) if r % 2 else (("tree", tree), ("chain", chain)):
                step()
                s = step()
                t = f(n)
                if r:
                    times["step"].append(s)
                    times[f"{kind} {n}"].append(t)
    m.close()
    one = statistics.median(times["step"])
    return {"step_s": one, **{k: statistics.median(v) / one for k, v in times.items() if k != "step"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", default="bench-results/tree_costs.json")
    args = ap.parse_args()
    sizes = {"demo (SmolLM2-135M F16)": prepare_smol()["F16"],
             "1.7B shape (random weights, F16)": models_dir() / "rehearsal" / "SmolLM2-1.7B-Instruct-f16.gguf"}
    out = {}
    for name, path in sizes.items():
        if not path.exists():
            print(f"{name}: {path} missing (benchmarks/rehearsal_costs.py writes it)")
            continue
        out[name] = r = measure(path, args.rounds)
        print(f"{name}: one-token step {r['step_s'] * 1e3:.1f} ms; in steps, chain / tree of n tokens: "
              + ", ".join(f"n={n} {r[f'chain {n}']:.2f} / {r[f'tree {n}']:.2f}" for n in NS), flush=True)
    write_result({"rounds": args.rounds, "sizes": out}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
