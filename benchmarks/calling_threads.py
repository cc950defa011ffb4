"""Why a served process makes every model call on one thread (``specquant.model_thread``).

The same plain runs, timed: on the thread that made the first calls; on a fresh thread per run;
on one other long-lived thread; then on the first thread again. llama.cpp's CPU backend runs
each pass in an OpenMP team owned by the calling thread; a second calling thread gets a second
team, and the idle one competes for the cores. Each ratio is a sum of run times against the
first thread's, in one process.

    python benchmarks/calling_threads.py [--limit 4] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import queue
import threading
import time

from common import write_result  # noqa: E402 - also puts the project on sys.path

from specquant.engine import load_engine  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--prompts", default="benchmarks/heldout_prompts.json")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default="bench-results/calling_threads.json")
    args = ap.parse_args()
    eng = load_engine(args.model)
    prompts = [p["prompt"] for p in load_prompts(args.prompts)[: args.limit]]

    def runs() -> float:
        t0 = time.perf_counter()
        for p in prompts:
            eng.run(p, max_tokens=args.max_tokens)
        return time.perf_counter() - t0

    jobs, results = queue.Queue(), queue.Queue()
    threading.Thread(target=lambda: [results.put(jobs.get()()) for _ in iter(int, 1)], daemon=True).start()

    def other_thread() -> float:
        jobs.put(runs)
        return results.get()

    def fresh() -> float:
        out = []
        t = threading.Thread(target=lambda: out.append(runs()))
        t.start()
        t.join()
        return out[0]

    runs()  # warm-up, on the main thread: its team exists from here
    res = {"model": eng.label, "prompts": len(prompts), "max_tokens": args.max_tokens}
    res["first_thread_s"] = runs()
    res["fresh_thread_s"] = fresh()
    res["other_thread_s"] = other_thread()
    res["first_thread_again_s"] = runs()
    for k in ("fresh_thread_s", "other_thread_s", "first_thread_again_s"):
        res[k.replace("_s", "_ratio")] = res[k] / res["first_thread_s"]
        print(f"{k[:-2].replace('_', ' ')}: {res[k.replace('_s', '_ratio')]:.2f}x the first thread's time", flush=True)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
