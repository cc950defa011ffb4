"""What a target pass over n tokens costs, T(n) in one-token steps: stock llama.cpp beside SpecQuant's
build, at the demo size and the Space's 1.7B shape, with the machine's floor and the engine's own
calibration.

* stock: ``llama-bench`` built from the pinned llama.cpp without the patch (benchmarks/build_native.sh);
* ours: the same ``llama-bench`` relinked against the installed llama-cpp-python (SpecQuant's build);
* floor: from the memory bandwidth and float32 FMA rate measured here (``specquant.floor``), the best
  of a measurement before and one after the rounds (a VM's neighbours move them by a third);
* engine: ``costs.measure_costs`` in this process, logits of every row as a verify pass needs them
  (llama-bench computes the last row's only).

Rounds alternate the two builds (the order turns each round), each round one ``llama-bench -p
2,3,5,9,17 -n 16 -r 1`` per build; a pass's time is the median over rounds, and ours / stock the
median of the rounds' own ratios with a bootstrap 90% interval. ``-p n`` is one batch of n tokens
after an empty cache; ``tg`` is the one-token step.

    python benchmarks/pass_costs.py [--sizes demo,1.7b] [--rounds 7] [--out bench-results/pass_costs.json]

For another CPU profile build both sides for it (``CMAKE_ARGS=... bash benchmarks/build_native.sh`` and
``CMAKE_ARGS=... python scripts/build_llama_cpp.py``) and run this with the same CMAKE_ARGS set.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import write_result  # noqa: E402 - also puts the project on sys.path

from native_compare import installed_bench, interval, native_bin  # noqa: E402
from rehearsal_costs import target_f16  # noqa: E402

from specquant.costs import measure_costs  # noqa: E402
from specquant.engine import CALIBRATION_TEXT  # noqa: E402
from specquant.floor import Floor, measure as measure_floor  # noqa: E402
from specquant.models import prepare_smol  # noqa: E402

NS = (2, 3, 5, 9, 17)
TG = 16


def llama_bench(tool: Path, model: Path, threads: int) -> dict:
    """One run of ``tool``: milliseconds of a pass over n tokens (n in NS) and of a one-token step ("tg")."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(tool.parent)}
    out = subprocess.run([str(tool), "-m", str(model), "-p", ",".join(map(str, NS)), "-n", str(TG), "-t",
                          str(threads), "-r", "1", "-o", "json"], check=True, capture_output=True, text=True,
                         env=env).stdout
    got = {}
    for row in json.loads(out):
        key = "tg" if row["n_gen"] else row["n_prompt"]
        got[key] = row["avg_ns"] / 1e6 / (row["n_gen"] or 1)
    return got


def compare(tools: dict[str, Path], model: Path, threads: int, rounds: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    names = list(tools)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(llama_bench(tools[name], model, threads))
    return runs


def engine_curve(model_path: Path, threads: int):
    from backends import load_model

    m = load_model(model_path, n_ctx=2048, n_threads=threads)
    c = measure_costs(m, context=m.tokenize(CALIBRATION_TEXT), ns=(1, *NS), rounds=12, budget_s=20.0)
    facts = {"weight_bytes": m.size_bytes, "params": m.describe()["n_params"]}
    m.close()
    return {n: c.T(n) / c.T(1) for n in NS}, c.T(1), facts


def _floor_now(threads: int) -> Floor:
    measure_floor.cache_clear()  # measured again, not the process's first measurement
    return measure_floor(threads)


def size_report(size: str, model: Path, tools: dict[str, Path], threads: int, rounds: int) -> dict:
    print(f"\n== {size}: {model.name}", flush=True)
    eng_steps, eng_step_s, facts = engine_curve(model, threads)
    floors = [_floor_now(threads)]  # the rates move with the machine's neighbours: the best seen around the rounds
    runs = compare(tools, model, threads, rounds)
    floors.append(_floor_now(threads))
    floor = Floor(max(f.bandwidth for f in floors), max(f.flops for f in floors), threads)
    keys = ["tg", *NS]
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    res = {"model": str(model), **facts, "rounds": rounds, "runs": runs, "median_ms": med,
           "floor": {**floor.to_dict(), "steps": {n: floor.pass_steps(n, facts["weight_bytes"], facts["params"])
                                                  for n in NS},
                     "step_ms": floor.step_s(facts["weight_bytes"], facts["params"]) * 1e3},
           "engine": {"step_ms": eng_step_s * 1e3, "steps": eng_steps}, "ours_vs_stock": {}}
    print(f"{'':8} {'step ms':>8} " + " ".join(f"{'T(' + str(n) + ')':>7}" for n in NS))
    for name in tools:
        print(f"{name:8} {med[name]['tg']:8.2f} " + " ".join(f"{med[name][n] / med[name]['tg']:7.2f}" for n in NS))
    print(f"{'floor':8} {res['floor']['step_ms']:8.2f} " + " ".join(f"{res['floor']['steps'][n]:7.2f}" for n in NS))
    print(f"{'engine':8} {eng_step_s * 1e3:8.2f} " + " ".join(f"{eng_steps[n]:7.2f}" for n in NS)
          + "   (in-process calibration, logits of every row)")
    if "ours" in runs:
        for k in keys:
            pairs = [o[k] / s[k] for o, s in zip(runs["ours"], runs["stock"])]
            res["ours_vs_stock"][str(k)] = {"time_ratio": statistics.median(pairs), "interval": interval(pairs)}
        print("ours / stock time: " + ", ".join(
            f"{k}: {v['time_ratio']:.3f} ({v['interval'][0]:.2f}-{v['interval'][1]:.2f})"
            for k, v in res["ours_vs_stock"].items()), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="demo,1.7b", help="demo (SmolLM2-135M) and/or 1.7b (the Space's shape)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="default: the physical cores")
    ap.add_argument("--native-bin", help="a folder with stock llama-bench (default: benchmarks/build_native.sh)")
    ap.add_argument("--out", default="bench-results/pass_costs.json")
    args = ap.parse_args()
    from backends.cpus import physical_cores
    from backends.llama_cpp import patched_build

    threads = args.threads or physical_cores()
    bin_dir = Path(args.native_bin) if args.native_bin else native_bin()
    tools = {"stock": bin_dir / "llama-bench"}
    ours = installed_bench(bin_dir)
    if ours is None or not patched_build():
        print("no relinked llama-bench on SpecQuant's build: stock only", flush=True)
    else:
        tools["ours"] = ours
    files = {"demo": lambda: prepare_smol()["F16"], "1.7b": target_f16}
    res = {"threads": threads, "cmake_args": os.environ.get("CMAKE_ARGS", ""), "sizes": {}}
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size not in files:
            raise SystemExit(f"unknown size {size!r}: use demo or 1.7b")
        res["sizes"][size] = size_report(size, files[size](), tools, threads, args.rounds)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
