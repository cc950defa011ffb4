"""SpecQuant's two promises on this machine, checked in one command: a verdict per target.

1. Plain decoding through SpecQuant against stock llama.cpp's ``llama-bench`` tg, same F16 file
   (``native_compare.py``, rounds interleaved).
2. ``specquant bench`` over the bundled prompts and over the held-out set
   (``benchmarks/heldout_prompts.json``, written once and never tuned on): policy auto, and
   each draft forced with k = auto; every output must be identical to plain decoding.

Targets (issue "Never slower, on any machine"): plain >= 0.97x stock; policy auto >= 1.0x plain
in total, >= 0.95x the per-prompt oracle, no prompt below 0.95x; a forced draft with k = auto:
no prompt below 0.90x (per-prompt figures are medians of interleaved rounds).

The targets hold per CPU profile, so the result records the CPU's vector extensions and what
the installed llama.cpp was built with. On an AVX-512 machine run it twice: with the native
build, then with SpecQuant's build and the stock tools both built for AVX2 only (each cached
apart, keyed by CMAKE_ARGS; about 30 minutes of building on 2 cores):

    python benchmarks/never_slower.py --out-dir bench-results/never-slower-native
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
    python scripts/build_llama_cpp.py && python benchmarks/never_slower.py --out-dir bench-results/never-slower-avx2
    unset CMAKE_ARGS; python scripts/build_llama_cpp.py     # the native build back

    python benchmarks/never_slower.py [--native-bin DIR] [--out-dir bench-results/never-slower]
    python benchmarks/never_slower.py --evaluate DIR    # verdicts from results already there

Takes about 75 minutes on 2 cores (the stock tools' build, ~15 minutes, once more the first time).
Exit status 0 when every target is met.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, write_result  # noqa: E402 - also puts the project on sys.path

PLAIN_VS_STOCK = 0.97
POLICY_TOTAL, POLICY_VS_ORACLE, POLICY_WORST = 1.0, 0.95, 0.95
FORCED_WORST = 0.90
SETS = {"bundled": None, "held-out": "benchmarks/heldout_prompts.json"}


def noise_floor(res: dict) -> float | None:
    """The worst prompt of a configuration that changes nothing: plain runs judged exactly as the
    bench judges a configuration, against the plain runs either side of them, over the same rounds
    (each round of the bench runs plain between every two configurations). On a shared 2-core VM
    this alone came out at 0.93-0.95x with 2-12 rounds a prompt, 0.97x with 8-16 (the defaults):
    below it, a worst prompt is not told apart from noise."""
    n = sum(1 for c in res["summary"] if not c.startswith("oracle"))  # configurations per round
    worst = []
    for j in range(1, n):  # the plain runs with a plain run on either side (two slots away)
        meds = []
        for e in res["prompts"]:
            runs = e["plain_runs_s"]
            rounds = [runs[i:i + n + 1] for i in range(0, len(runs) - n, n + 1)]
            meds.append(statistics.median((r[j - 1] + r[j + 1]) / 2 / r[j] for r in rounds))
        worst.append(min(meds))
    return statistics.median(worst) if worst else None


def verdicts(native: dict | None, benches: dict[str, dict]) -> list[dict]:
    """Each target against the measured figure: ``native`` is native_compare's result,
    ``benches`` maps a prompt set's name to ``specquant bench``'s result on it. A worst prompt
    below its target but not below the set's noise floor (``noise_floor``) says so."""
    out = []

    def check(what: str, value, target: float | int, note: str = "", floor: float | None = None) -> None:
        ok = value is not None and value >= target
        if not ok and value is not None and floor is not None and value >= floor:
            note += f"; within the noise: plain decoding judged the same way has its worst prompt at {floor:.3f}x"
        out.append({"check": what, "value": value, "target": target, "ok": ok, "note": note})

    def note_row(what: str, value, note: str) -> None:  # a figure to read the others by, with no target
        out.append({"check": what, "value": value, "target": "-", "ok": None, "note": note})

    if native is not None:  # every round times each side: judged like the bench, by the rounds' own ratios
        tg = native["tg"]
        check("plain vs stock llama-bench tg (median of the rounds' ratios)", tg.get("ratio_of_pairs"),
              PLAIN_VS_STOCK, _spread(tg))
        if "build_ratio_of_pairs" in tg:  # llama-bench relinked against SpecQuant's build: its kernels alone
            check("llama-bench on SpecQuant's build vs stock (its kernels, no Python)", tg["build_ratio_of_pairs"],
                  PLAIN_VS_STOCK, _spread(tg, "build_"))
            note_row("SpecQuant's loop vs llama-bench, both on SpecQuant's build", tg["python_ratio_of_pairs"],
                     _spread(tg, "python_"))
        if "loop_outside_share" in tg:  # the loop's own cost, apart from the machine's noise
            note_row("SpecQuant's plain loop: share of decoding outside llama_decode",
                     f"{tg['loop_outside_share']:.1%}", "median of the rounds; llama-bench's is near 0")
    for name, res in benches.items():
        n, floor = len(res["prompts"]), noise_floor(res)
        configs = {c: s for c, s in res["summary"].items() if not c.startswith("oracle")}
        if res.get("of_prompts", n) != n:  # a pinned run stopped at its deadline before every part ran
            check(f"{name}: prompts measured", n, res["of_prompts"], "the rest were not run before the deadline")
        note_row(f"{name}: noise floor (plain decoding judged as a configuration), worst prompt", floor,
                 "for reference")
        differ = [c for c, s in configs.items() if s["identical"] < n]
        check(f"{name}: every output identical to plain", min(s["identical"] for s in configs.values()), n,
              f"differing: {', '.join(differ)}" if differ else f"{len(configs)} configurations")
        for config, s in configs.items():
            if config == "policy auto":
                check(f"{name}: policy auto, total", s["speedup"], POLICY_TOTAL)
                check(f"{name}: policy auto, vs the oracle", s.get("vs_oracle"), POLICY_VS_ORACLE)
                check(f"{name}: policy auto, worst prompt", s["min_speedup"], POLICY_WORST, _worst(res, config), floor)
            elif config.endswith("k=auto"):
                check(f"{name}: {config}, worst prompt", s["min_speedup"], FORCED_WORST, _worst(res, config), floor)
    return out


def _spread(tg: dict, prefix: str = "") -> str:
    """The ratio of the medians and the 90% interval of the rounds' median ratio (native_compare)."""
    note = f"ratio of the medians {tg[prefix + 'ratio']:.3f}x"
    if prefix + "interval" in tg:
        lo, hi = tg[prefix + "interval"]
        note += f", 90% interval {lo:.3f}-{hi:.3f}x"
    return note


def _worst(res: dict, config: str) -> str:
    """The worst prompt, what it drafted, and its rounds (a prompt that drafted nothing ran plain
    decoding: its figure is the measurement's noise)."""
    rows = [(r["speedup"], e["id"], r) for e in res["prompts"] if (r := e["runs"][config])["speedup"] is not None]
    if not rows:
        return ""
    _, pid, r = min(rows, key=lambda x: x[0])
    chose = f"chose {r['decision']}, " if "decision" in r else ""
    rounds = " / ".join(f"{x:.2f}" for x in r.get("speedup_rounds", []))
    return f"{pid}: {chose}{r['drafted']} tokens drafted; rounds {rounds}"


def cpu_profile() -> dict:
    """The CPU's vector extensions and what the installed llama.cpp uses of them."""
    import llama_cpp

    from backends.cpus import cpuinfo_blocks

    flags = set(next((b["flags"] for b in cpuinfo_blocks() if "flags" in b), "").split())

    info = llama_cpp.llama_print_system_info().decode()
    return {"cpu_avx512": sorted(f for f in flags if f.startswith("avx512")), "cpu_avx2": "avx2" in flags,
            "llama_cpp": llama_cpp.__version__, "llama_cpp_features": info.strip(),
            "build_avx512": bool(re.search(r"AVX512\w* = 1", info))}


def to_markdown(profile: dict, rows: list[dict]) -> str:
    ok = all(r["ok"] is not False for r in rows)
    out = ["# Never slower: this machine's verdict", "",
           f"CPU: AVX-512 {', '.join(profile['cpu_avx512']) or 'none'}; AVX2 {'yes' if profile['cpu_avx2'] else 'no'}. "
           f"llama.cpp {profile['llama_cpp']} built with AVX-512: {'yes' if profile['build_avx512'] else 'no'}.", "",
           "| check | measured | target | |", "|---|---|---|---|"]
    for r in rows:
        v = r["value"]
        shown = f"{v:.3f}x" if isinstance(v, float) else ("-" if v is None else str(v))
        tgt = f">= {r['target']:.2f}x" if isinstance(r["target"], float) else f"{r['target']}"
        note = f" ({r['note']})" if r["note"] else ""
        verdict = "" if r["ok"] is None else "met" if r["ok"] else "**missed**"
        out.append(f"| {r['check']}{note} | {shown} | {tgt} | {verdict} |")
    out += ["", "Every target met." if ok else "Some targets missed (above)."]
    return "\n".join(out)


def native_cmd(out_dir: Path, native_bin: str | None, rounds: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "native_compare.py"), "--drafts", "", "--rounds", str(rounds),
           "--max-tokens", "64", "--out", str(out_dir / "native.json")]
    return cmd + (["--native-bin", native_bin] if native_bin else [])


def bench_cmd(prompts: str | None, out: Path, model: str, min_seconds: float, max_repeats: int,
              ids: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "specquant", "bench", "--model", model, "--drafts", "q4_0,q8,lookup", "--k", "auto",
           "--policies", "auto", "--alone", "", "--min-seconds", str(min_seconds), "--max-repeats", str(max_repeats),
           "--out", str(out)]
    return cmd + (["--prompts", str(ROOT / prompts)] if prompts else []) + (["--ids", ",".join(ids)] if ids else [])


def measure(out_dir: Path, native_bin: str | None, model: str, min_seconds: float, max_repeats: int,
            native_rounds: int) -> None:
    write_result(cpu_profile(), out_dir / "profile.json")
    subprocess.run(native_cmd(out_dir, native_bin, native_rounds), check=True, cwd=ROOT)
    for name, prompts in SETS.items():
        subprocess.run(bench_cmd(prompts, out_dir / name, model, min_seconds, max_repeats), check=True, cwd=ROOT)


PIN_SETS_MAX = 6  # side-by-side 2-core jobs at most: each streams the F16 model's weights every token (~30 GB/s
# on an AVX-512 core pair), and more would make memory bandwidth, not the cores, the thing measured
PART_PROMPTS = 3  # prompts per bench process in a pinned run: parts are handed out as workers come free


def core_pairs(cpuinfo: str | None = None, allowed: set[int] | None = None,
               most: int = PIN_SETS_MAX) -> list[list[int]]:
    """Pairs of logical CPUs, each on its own physical core of the first socket, so that 2-thread
    jobs side by side each have two whole cores (a hyper-thread twin shares its core's units)."""
    from backends.cpus import cpu_topology, usable_cpus

    allowed = usable_cpus() if allowed is None else allowed
    first: dict[tuple[str, str], int] = {}  # a core's first allowed logical CPU
    for cpu, core in cpu_topology(cpuinfo).items():
        if allowed is None or cpu in allowed:
            first.setdefault(core, cpu)
    if not first:
        raise SystemExit("--pin auto: no CPU topology in /proc/cpuinfo; name the CPU sets instead")
    socket = next(iter(first))[0]
    cpus = [c for (sock, _), c in first.items() if sock == socket]
    return [cpus[i:i + 2] for i in range(0, len(cpus) - 1, 2)][:most]


def measure_pinned(out_dir: Path, cpu_sets: list[list[int]], native_bin: str | None, model: str, min_seconds: float,
                   max_repeats: int, native_rounds: int, deadline_s: float | None) -> None:
    """The same measurements side by side on a many-core machine standing in for 2-core ones: the
    native comparison on the first CPU set, and both prompt sets in parts of ``PART_PROMPTS`` on the
    others, each process pinned to its set (SpecQuant and llama-bench then run one thread per core
    of it). No part starts after ``deadline_s``; the sets' results merge (``specquant.bench.merge``)."""
    import itertools
    import queue
    import threading
    import time

    from specquant.bench import merge, to_markdown as bench_markdown
    from specquant.prompts import load_prompts

    if len(cpu_sets) < 2:
        raise SystemExit("--pin needs at least two CPU sets: one for the native comparison, one for the benches")
    t0 = time.monotonic()
    write_result(cpu_profile() | {"pinned": cpu_sets, "side_by_side": len(cpu_sets)}, out_dir / "profile.json")
    plan, per_set = {}, []
    for name, prompts in SETS.items():
        ids = [p["id"] for p in load_prompts(str(ROOT / prompts) if prompts else None)]
        plan[name] = len(ids)
        per_set.append([(name, i, bench_cmd(prompts, out_dir / name / f"part-{i:02d}", model, min_seconds,
                                            max_repeats, ids[j:j + PART_PROMPTS]))
                        for i, j in enumerate(range(0, len(ids), PART_PROMPTS))])
    parts: queue.Queue = queue.Queue()
    for part in itertools.chain.from_iterable(itertools.zip_longest(*per_set)):  # the sets in turn: a
        if part:  # deadline cuts both alike
            parts.put(part)
    failed = []

    def pinned(cmd: list[str], cpus: list[int], log: Path) -> int:
        with log.open("w") as f:
            return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: os.sched_setaffinity(0, cpus)).returncode

    def worker(cpus: list[int]) -> None:
        while deadline_s is None or time.monotonic() - t0 < deadline_s:
            try:
                name, i, cmd = parts.get_nowait()
            except queue.Empty:
                return
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            if pinned(cmd, cpus, out_dir / name / f"part-{i:02d}.log"):
                failed.append(f"{name} part {i}")

    out_dir.mkdir(parents=True, exist_ok=True)
    threads = [threading.Thread(target=worker, args=(c,)) for c in cpu_sets[1:]]
    for t in threads:
        t.start()
    native_rc = pinned(native_cmd(out_dir, native_bin, native_rounds), cpu_sets[0], out_dir / "native.log")
    for t in threads:
        t.join()
    for name, total in plan.items():
        done = [json.loads(f.read_text()) for f in sorted((out_dir / name).glob("part-*/bench.json"))]
        if done:
            res = merge(done) | {"of_prompts": total}
            write_result(res, out_dir / name / "bench.json")
            (out_dir / name / "bench.md").write_text(bench_markdown(res) + "\n")
    if native_rc or failed:
        print(f"failed: {'native comparison ' if native_rc else ''}{', '.join(failed)} (logs in {out_dir})",
              file=sys.stderr)


def evaluate(out_dir: Path) -> tuple[dict, list[dict]]:
    native_f = out_dir / "native.json"
    native = json.loads(native_f.read_text()) if native_f.exists() else None
    benches = {}
    for name in SETS:
        f = out_dir / name / "bench.json"
        if not f.exists():
            raise SystemExit(f"{f} is missing: run without --evaluate first (or, with --pin, give the parts "
                             "more time than --deadline allowed)")
        benches[name] = json.loads(f.read_text())
    return native, verdicts(native, benches)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="bench-results/never-slower",
                    help="where the results and the verdicts go (default bench-results/never-slower)")
    ap.add_argument("--native-bin", help="a folder with stock llama.cpp's llama-bench (default: build it)")
    ap.add_argument("--model", default="demo", help="the model to bench (default: demo)")
    ap.add_argument("--min-seconds", type=float, default=10.0,
                    help="bench rounds per prompt: until plain has run this long (default 10; with 5 the noise "
                         "floor, plain judged against plain, sat at 0.93-0.95x on a 2-core VM, on the per-prompt "
                         "target; with 10 at 0.97x)")
    ap.add_argument("--max-repeats", type=int, default=16, help="at most this many rounds per prompt (default 16)")
    ap.add_argument("--native-rounds", type=int, default=25,
                    help="rounds of plain vs stock llama-bench (default 25, 2-3 minutes: a round's ratio ranges "
                         "+-6%% on a 2-core VM, so 11 rounds' median still moved by +-1%%)")
    ap.add_argument("--evaluate", metavar="DIR", help="only judge the results already in DIR")
    ap.add_argument("--pin", metavar="SETS",
                    help="on a many-core machine: run the measurements side by side, each pinned to its own CPU "
                         "set ('0,1 2,3 4,5': the native comparison on the first, the benches in parts on the rest), "
                         f"or 'auto': pairs of physical cores of the first socket, at most {PIN_SETS_MAX}")
    ap.add_argument("--deadline", type=float, metavar="S",
                    help="with --pin: start no bench part after S seconds (the verdicts say what was not run)")
    args = ap.parse_args()
    out_dir = Path(args.evaluate or args.out_dir)
    if args.pin and not args.evaluate:
        sets = core_pairs() if args.pin == "auto" else [
            [int(c) for c in grp.split(",")] for grp in args.pin.split()]
        measure_pinned(out_dir, sets, args.native_bin, args.model, args.min_seconds, args.max_repeats,
                       args.native_rounds, args.deadline)
    elif not args.evaluate:
        measure(out_dir, args.native_bin, args.model, args.min_seconds, args.max_repeats, args.native_rounds)
    native, rows = evaluate(out_dir)
    f = out_dir / "profile.json"  # the machine that measured, not necessarily this one
    profile = json.loads(f.read_text()) if f.exists() else cpu_profile()
    write_result({"profile": profile, "verdicts": rows}, out_dir / "verdicts.json")
    md = to_markdown(profile, rows)
    (out_dir / "verdicts.md").write_text(md + "\n")
    print(md)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
