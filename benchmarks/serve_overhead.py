"""What ``specquant serve`` costs over calling the engine as the CLI does, side by side in one process.

One engine answers each prompt three ways, in rotating order, round after round: directly
(``Engine.answer`` consumed to the end, the CLI's path), through the HTTP endpoint as one JSON
response, and through it streamed (server-sent events, read to ``[DONE]``). Each HTTP request is
timed at the client, from sending to the last byte; the direct run from the call to its last
event. Same prompt, same draft and settings (greedy): the texts must be identical. The ratio is
tokens/s over HTTP against tokens/s direct, per round, and its median.

    python benchmarks/serve_overhead.py [--prompts benchmarks/heldout_prompts.json] [--limit 8]
        [--draft none] [--rounds 3] [--max-tokens 64] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from common import free_port, write_result  # noqa: E402 - also puts the project on sys.path

from specquant.model_thread import MODELS  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.server import InProcess, create_app  # noqa: E402
from specquant.service import Service  # noqa: E402
from specquant.speculative import Done  # noqa: E402


def _serve(executor) -> str:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(executor), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def direct(eng, prompt, draft, max_tokens) -> tuple[str, int, float]:
    """The CLI's path, on the thread every model call of this process runs on (``model_thread``)."""
    def run():
        t0 = time.perf_counter()
        with eng.lock:
            ans = eng.answer(prompt, draft=None if draft == "auto" else draft, k="auto", max_tokens=max_tokens,
                             temperature=0.0)
            done = next(ev for ev in ans.events if isinstance(ev, Done))
        return done.text, done.stats.tokens, time.perf_counter() - t0

    return MODELS.call(run)


def http(client, url, prompt, draft, max_tokens, stream) -> tuple[str, int, float]:
    body = {"model": "demo", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "draft": draft, "stream": stream, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    if not stream:
        r = client.post(url + "/v1/chat/completions", json=body).json()
        return r["choices"][0]["message"]["content"], r["usage"]["completion_tokens"], time.perf_counter() - t0
    text, n = [], 0
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                text.append(chunk["choices"][0]["delta"].get("content") or "")
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    return "".join(text), n, time.perf_counter() - t0


def main() -> int:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--prompts", default="benchmarks/heldout_prompts.json")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--draft", default="none", help="the draft every side uses: none, lookup, auto, ...")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default="bench-results/serve_overhead.json")
    args = ap.parse_args()
    service = Service(args.model)
    executor = InProcess(service, args.model)
    eng = service.engine()
    url = _serve(executor)
    prompts = load_prompts(args.prompts)[: args.limit]
    ways = {"direct": lambda p: direct(eng, p, args.draft, args.max_tokens)}
    with httpx.Client(timeout=300) as client:
        ways["json"] = lambda p: http(client, url, p, args.draft, args.max_tokens, False)
        ways["stream"] = lambda p: http(client, url, p, args.draft, args.max_tokens, True)
        for p in prompts[:2]:  # warm-up: both paths, not timed
            for way in ways.values():
                way(p["prompt"])
        rounds = []
        for r in range(args.rounds):
            order = list(ways)[r % 3:] + list(ways)[: r % 3]
            times = {w: 0.0 for w in ways}
            toks = {w: 0 for w in ways}
            for p in prompts:
                texts = {}
                for w in order:
                    eng.forget_answers()  # no side drafts from another side's answer
                    texts[w], n, s = ways[w](p["prompt"])
                    times[w] += s
                    toks[w] += n
                assert len(set(texts.values())) == 1, (p["id"], texts)
            rounds.append({w: toks[w] / times[w] for w in ways})
            print(f"round {r + 1}: " + ", ".join(f"{w} {v:.1f} tok/s" for w, v in rounds[-1].items()), flush=True)
    res = {"model": eng.label, "draft": args.draft, "prompts": [p["id"] for p in prompts],
           "max_tokens": args.max_tokens, "rounds": rounds}
    for w in ("json", "stream"):
        ratios = [r[w] / r["direct"] for r in rounds]
        res[f"{w}_vs_direct"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        print(f"{w} over HTTP vs direct: median {statistics.median(ratios):.3f}x "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f}); texts identical", flush=True)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
