"""A local fleet's speed, side by side, in one run:

1. the plain endpoint's decode speed (llama-server's own timings, 64 tokens, EOS ignored) against
   llama-bench tg on the same file, the same build's libraries, interleaved rounds;
2. routed requests (``specquant serve --fleet``, draft auto) on grounded prompts against the plain
   endpoint, beside the in-process engine's prompt lookup against its plain decoding on the same
   prompts: the share of the in-process speed-up the fleet keeps;
3. aggregate tokens/s of a plain replica started with -np 4 at 4 concurrent clients against 1.

    python benchmarks/fleet_bench.py [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, free_port, write_result  # noqa: E402 - also puts the project on sys.path

from native_compare import llama_bench_tg  # noqa: E402

from specquant.fleet import load_fleet  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.server import wait_ready  # noqa: E402


def _complete(url: str, prompt: str, n: int, ignore_eos: bool = False, draft: str | None = None) -> dict:
    import httpx

    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": n, "temperature": 0,
            "cache_prompt": False}
    if ignore_eos:
        body["ignore_eos"] = True
    if draft:
        body["draft"] = draft
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
    r.raise_for_status()
    return r.json()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", default="benchmarks/heldout_prompts.json",
                    help="the grounded prompts of this set (default: the held-out set, never tuned on)")
    ap.add_argument("--out", default="bench-results/fleet_bench.json")
    args = ap.parse_args()
    server = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_llama_server.py")], check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    tmp = Path(tempfile.mkdtemp(prefix="specquant-fleet-bench-"))
    toml, port = tmp / "fleet.toml", free_port()
    up = subprocess.Popen([sys.executable, "-m", "specquant", "fleet", "up", "--model", "demo", "--kinds",
                           "plain,lookup", "--port", str(free_port() + 20), "--llama-server", server,
                           "--out", str(toml)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [up]
    res: dict = {"max_tokens": args.max_tokens, "rounds": args.rounds}
    try:
        while not toml.exists():
            if up.poll() is not None:
                raise SystemExit("fleet up failed")
            time.sleep(0.3)
        reps = {r.kind: r for r in load_fleet(toml)}
        serve = subprocess.Popen([sys.executable, "-m", "specquant", "serve", "--fleet", str(toml), "--port",
                                  str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(serve)
        routed = f"http://127.0.0.1:{port}"
        wait_ready(routed, serve, 300, "specquant serve --fleet")
        from specquant.engine import resolve_models

        ms, hw, _ = resolve_models("demo")
        threads = hw.physical_cores

        # 1. plain endpoint vs llama-bench tg
        plain_url = reps["plain"].url
        q = "Write a long story about a lighthouse keeper and a storm."
        _complete(plain_url, q, 8)
        ratios = []
        bin_dir = Path(server).parent
        tool = "llama-bench-installed" if (bin_dir / "llama-bench-installed").exists() else "llama-bench"
        for _ in range(args.rounds):
            tg = llama_bench_tg(bin_dir, ms.target, args.max_tokens, threads, tool)
            ep = _complete(plain_url, q, args.max_tokens, ignore_eos=True)["timings"]["predicted_per_second"]
            ratios.append(ep / tg)
        res["plain_vs_llama_bench"] = {"median": statistics.median(ratios), "rounds": ratios}
        print(f"plain endpoint vs llama-bench tg: {statistics.median(ratios):.3f}x", flush=True)

        # 2. routed on grounded prompts vs in-process lookup
        grounded = [p["prompt"] for p in load_prompts(args.prompts) if p.get("grounded")]
        for p in grounded:  # the router measures each kind on these prompts' class first (not timed)
            for _ in range(2):
                _complete(routed, p, 16, draft="auto")
        fleet_sp, lookup_sp, chosen = [], [], []
        for _ in range(args.rounds):
            for p in grounded:
                a = _complete(routed, p, args.max_tokens, draft="none")["timings"]["predicted_per_second"]
                r = _complete(routed, p, args.max_tokens, draft="auto")
                c = _complete(routed, p, args.max_tokens, draft="lookup")["timings"]["predicted_per_second"]
                fleet_sp.append(r["timings"]["predicted_per_second"] / a)
                lookup_sp.append(c / a)
                chosen.append(r["specquant"]["draft"])
        from specquant.engine import Engine

        eng = Engine.from_model_set(ms)
        eng.costs("lookup")
        proc_sp = []
        for _ in range(args.rounds):
            for p in grounded:
                eng.forget_answers()
                a = eng.run(p, max_tokens=args.max_tokens, draft="none").stats.decode_tokens_per_s
                b = eng.run(p, max_tokens=args.max_tokens, draft="lookup", k="auto",
                            private=True).stats.decode_tokens_per_s
                proc_sp.append(b / a)
        del eng
        gf, gp = statistics.geometric_mean(fleet_sp), statistics.geometric_mean(proc_sp)
        gl = statistics.geometric_mean(lookup_sp)
        res["grounded"] = {"fleet_routed_speedup": gf, "fleet_lookup_endpoint_speedup": gl,
                           "in_process_lookup_speedup": gp, "routed_to": {k: chosen.count(k) for k in set(chosen)},
                           "prompts": len(grounded)}
        print(f"grounded: fleet routed {gf:.3f}x (to {res['grounded']['routed_to']}), fleet lookup endpoint "
              f"{gl:.3f}x, in-process lookup {gp:.3f}x (routed / in-process: {gf / gp:.3f})", flush=True)

        # 3. -np 4: aggregate throughput at 4 clients vs 1
        port4 = free_port()
        p4 = subprocess.Popen([server, "-m", str(ms.target), "--host", "127.0.0.1", "--port", str(port4), "-c", "8192",
                               "-np", "4", "-t", str(threads), "--no-webui"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(p4)
        url4 = f"http://127.0.0.1:{port4}"
        wait_ready(url4, p4, 300, "llama-server -np 4")

        def burst(n_clients: int) -> float:
            t0 = time.perf_counter()
            toks = []

            def go():
                toks.append(_complete(url4, q, args.max_tokens, ignore_eos=True)["usage"]["completion_tokens"])

            ts = [threading.Thread(target=go) for _ in range(n_clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return sum(toks) / (time.perf_counter() - t0)

        burst(1)
        agg = [burst(4) / burst(1) for _ in range(args.rounds)]
        res["np4_aggregate_4_vs_1"] = {"median": statistics.median(agg), "rounds": agg}
        print(f"-np 4: 4 clients {statistics.median(agg):.2f}x one client's tokens/s", flush=True)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
