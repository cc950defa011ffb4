"""A fleet: ``specquant serve`` routing each request to one of several OpenAI-compatible endpoints
(llama-server replicas), each with one fixed way of drafting, declared in a TOML file:

    [[endpoint]]
    kind = "plain"          # plain, lookup, q8, q4_0, q4 or sibling
    model = "demo"
    url = "http://127.0.0.1:8081"
    exact = true            # its verify passes are batch-invariant (the patched build): greedy
                            # answers are the plain endpoint's, token for token

In the pinned llama.cpp a server drafts one way for every request (its per-request speculative
settings are compiled out), so choosing how to draft means choosing the endpoint. The prompt's
tier and whether it is grounded give a preference over kinds; the decode speed each kind reached
here (llama-server's ``timings``, a running average per kind and prompt class) decides once each
preferred kind has answered ``MIN_SAMPLES`` prompts of that class. Among a kind's replicas the
least busy one serves; a kind without a healthy replica falls back to plain. A replica that
fails or times out is taken out of rotation and checked again later; a request not yet
streaming is retried on another replica; one that fails mid-stream ends with an error event.

``specquant fleet up`` starts a local fleet (one llama-server per kind, from the same model
files) and writes the file.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import routing, sources
from .server import APIError, Delta, Final, Request, Start, UpstreamError, exactness, sse_chunks, wait_ready

KINDS = ("plain", "lookup", "q8", "q4_0", "q4", "sibling")
KIND_OF = {"none": "plain", "plain": "plain", "lookup": "lookup", "q8": "q8", "q4_0": "q4_0", "q4": "q4",
           "sibling": "sibling"}  # a request's draft (a source name) -> the kind that drafts that way
MIN_SAMPLES = 2  # answers of a prompt class a preferred kind gives before measured speed decides
SMOOTHING = 0.3  # weight of the newest answer in a kind's running decode speed
HEALTH_EVERY_S = 2.0
RETRY_AFTER_S = 5.0  # a failed replica is checked again after this long
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # the longest silence from a replica while it streams


@dataclass
class Replica:
    kind: str
    model: str
    url: str
    exact: bool = True
    pid: int | None = None
    healthy: bool = True
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    retry_at: float = 0.0

    def down(self) -> None:
        self.healthy, self.failures, self.retry_at = False, self.failures + 1, time.monotonic() + RETRY_AFTER_S


def load_fleet(path: str | Path) -> list[Replica]:
    """The endpoints a fleet file declares; ValueError with the reason when it is wrong."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read the fleet file {path}: {e}") from None
    eps = data.get("endpoint")
    if not isinstance(eps, list) or not eps:
        raise ValueError(f"{path}: no [[endpoint]] entries")
    out = []
    for i, e in enumerate(eps):
        kind, url, model = e.get("kind"), e.get("url"), e.get("model", "default")
        if kind not in KINDS:
            raise ValueError(f"{path}: endpoint {i + 1}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{path}: endpoint {i + 1}: url must be http(s)://host:port, got {url!r}")
        out.append(Replica(kind, str(model), url.rstrip("/"), bool(e.get("exact", True)), e.get("pid")))
    if len({r.model for r in out}) != 1:
        raise ValueError(f"{path}: every endpoint must serve the same model (found {sorted({r.model for r in out})})")
    if not any(r.kind == "plain" for r in out):
        raise ValueError(f"{path}: a fleet needs a plain endpoint (the reference, and the fallback)")
    return out


def write_fleet(path: str | Path, replicas: list[Replica]) -> None:
    lines = ["# written by `specquant fleet up`; `specquant serve --fleet FILE` routes over these endpoints", ""]
    for r in replicas:
        lines += ["[[endpoint]]", f'kind = "{r.kind}"', f"model = {json.dumps(r.model)}", f'url = "{r.url}"',
                  f"exact = {'true' if r.exact else 'false'}"] + ([f"pid = {r.pid}"] if r.pid else []) + [""]
    Path(path).write_text("\n".join(lines))


class Speeds:
    """Each kind's running decode speed (tokens/s) per prompt class, from the replicas' timings."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by: dict[tuple[str, str], tuple[float, int]] = {}

    def record(self, kind: str, cls: str, tokens_per_s: float) -> None:
        with self._lock:
            v, n = self._by.get((kind, cls), (tokens_per_s, 0))
            self._by[(kind, cls)] = ((1 - SMOOTHING) * v + SMOOTHING * tokens_per_s if n else tokens_per_s, n + 1)

    def get(self, kind: str, cls: str) -> tuple[float, int]:
        with self._lock:
            return self._by.get((kind, cls), (0.0, 0))


def preference(tier: str, grounded: bool) -> list[str]:
    """The kinds worth trying for a prompt, best guess first: copies pay on grounded prompts, the
    tier rule's quantized copy elsewhere (low: 4-bit, medium: 8-bit), none on high. Plain is last:
    the reference every measurement is compared with."""
    model = {"low": ["q4_0", "q4", "q8"], "medium": ["q8"], "high": []}[tier]
    first = ["lookup"] + model if grounded else model + ["lookup"]
    return [k for k in first + ["sibling"] if k != "sibling" or tier != "high"] + ["plain"]


class Fleet:
    """The executor over a fleet's endpoints (``server.create_app`` serves it like ``InProcess``)."""

    name = "fleet"

    def __init__(self, replicas: list[Replica], *, health_every: float = HEALTH_EVERY_S):
        self.replicas, self.id = replicas, replicas[0].model
        self.speeds = Speeds()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.check_health()
        threading.Thread(target=self._watch, args=(health_every,), daemon=True, name="fleet health").start()

    # --- health ---------------------------------------------------------------------------
    def check_health(self) -> None:
        import httpx

        for r in self.replicas:
            if not r.healthy and time.monotonic() < r.retry_at:
                continue
            try:
                ok = httpx.get(r.url + "/health", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                r.healthy = True
            elif r.healthy:
                r.down()
            else:
                r.retry_at = time.monotonic() + RETRY_AFTER_S

    def _watch(self, every: float) -> None:
        while not self._stop.wait(every):
            self.check_health()

    def close(self) -> None:
        self._stop.set()

    def health(self) -> dict:
        up = [r for r in self.replicas if r.healthy]
        return {"status": "ok" if any(r.kind == "plain" for r in up) else "degraded" if up else "down",
                "model": self.id, "executor": self.name,
                "replicas": [{"kind": r.kind, "url": r.url, "healthy": r.healthy, "in_flight": r.in_flight,
                              "served": r.served, "failures": r.failures} for r in self.replicas]}

    def models(self) -> list[dict]:
        return [{"id": self.id, "object": "model", "created": 0, "owned_by": "specquant", "status": "fleet",
                 "kinds": sorted({r.kind for r in self.replicas})}]

    def knows(self, model: str | None) -> bool:
        return model in (None, self.id, "default")

    # --- routing --------------------------------------------------------------------------
    def route(self, req: Request) -> tuple[str, str, str, str]:
        """(kind, reason, tier, prompt class) for a request."""
        from .complexity import analyze

        tier = analyze(req.prompt).tier
        grounded = routing.is_grounded(req.prompt)
        cls = f"{tier}/{'grounded' if grounded else 'open'}"
        kinds = {r.kind for r in self.replicas if r.healthy}
        if req.draft not in routing.POLICIES:
            kind = KIND_OF.get(sources.find(req.draft).name)
            if kind is None:
                raise APIError(400, f"a fleet drafts as {', '.join(KINDS)}, not {req.draft!r}", param="draft")
            if kind not in {r.kind for r in self.replicas}:
                raise APIError(400, f"this fleet has no {kind!r} endpoint: it has {', '.join(sorted(kinds))}",
                               param="draft")
            return kind, f"asked for {kind}", tier, cls
        if req.draft == "tier-rule":
            kind = KIND_OF[routing.TIER_RULE[tier]]
            return kind, f"tier rule: tier {tier} -> {kind}", tier, cls
        prefs = [k for k in preference(tier, grounded) if k in kinds] or ["plain"]
        for k in prefs:  # a preferred kind not yet measured on this class is tried first
            seen = self.speeds.get(k, cls)[1]
            if seen < MIN_SAMPLES:
                return k, f"{cls} prompt: trying {k} ({seen} of {MIN_SAMPLES} answers measured)", tier, cls
        best = max(prefs, key=lambda k: self.speeds.get(k, cls)[0])
        plain = self.speeds.get("plain", cls)[0]
        return best, (f"{cls} prompt: {best} decodes fastest here ({self.speeds.get(best, cls)[0]:.0f} tok/s, "
                      f"plain {plain:.0f})"), tier, cls

    def _pick(self, kind: str, tried: set) -> Replica | None:
        with self._lock:
            ok = [r for r in self.replicas if r.kind == kind and r.healthy and r.url not in tried]
            if not ok:
                return None
            r = min(ok, key=lambda r: (r.in_flight, r.served))
            r.in_flight += 1
            return r

    # --- a request ------------------------------------------------------------------------
    def start(self, req: Request, cancel: threading.Event, put) -> None:
        """Route and proxy ``req`` (in the calling thread), calling ``put`` with each event and ``END``."""
        from .model_thread import END, Failed

        try:
            self._answer(req, cancel, put)
        except Exception as e:  # noqa: BLE001 - the reader raises it (APIError: the client's fault)
            put(Failed(e))
        finally:
            put(END)

    def _answer(self, req: Request, cancel: threading.Event, put) -> None:
        kind, reason, tier, cls = self.route(req)
        tried: set = set()
        started = False
        while True:
            rep = self._pick(kind, tried)
            if rep is None and kind != "plain":
                reason += f"; no healthy {kind} replica: plain instead"
                kind = "plain"
                continue
            if rep is None:
                put(APIError(503, "no healthy replica can serve this request", type="server_error",
                             code="no_replica"))
                return
            tried.add(rep.url)
            route = {"tier": tier, "policy": "fleet", "draft": kind, "reason": reason, "executor": self.name,
                     "replica": rep.url, "prompt_class": cls}
            try:
                for ev in self._proxy(rep, req, cancel, route):
                    if not started:
                        put(Start(route))
                        started = True
                    if isinstance(ev, Final):
                        self.speeds.record(kind, cls, ev.timings.get("predicted_per_second") or 0.0)
                    put(ev)
                rep.served += 1
                return
            except _ReplicaFailed as e:
                rep.down()
                if started:  # the client has part of an answer: say so, never hang
                    put(APIError(502, f"the {kind} replica at {rep.url} failed mid-answer: {e}", type="server_error",
                                 code="replica_failed"))
                    return
                reason += f"; {rep.url} failed ({e}), retried"
            finally:
                with self._lock:
                    rep.in_flight -= 1

    def _proxy(self, rep: Replica, req: Request, cancel: threading.Event, route: dict):
        """The replica's answer as Delta events, then Final; ``_ReplicaFailed`` when it fails, APIError
        when it refuses the request (a client error: not retried)."""
        import httpx

        body = {"max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p, "stream": True,
                "stream_options": {"include_usage": True}}
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = req.stop
        if req.kind == "chat":
            body["messages"], path = req.messages(), "/v1/chat/completions"
        else:
            body["prompt"], path = req.prompt, "/v1/completions"
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        reason, usage, timings, n, first = None, None, {}, 0, None
        try:
            with httpx.stream("POST", rep.url + path, json=body, timeout=timeout) as r:
                if r.status_code >= 500:
                    raise _ReplicaFailed(f"HTTP {r.status_code}")
                if r.status_code != 200:
                    r.read()
                    raise _client_error(r)
                for chunk in sse_chunks(r.iter_lines()):
                    if cancel.is_set():
                        return
                    timings = chunk.get("timings") or timings
                    usage = chunk.get("usage") or usage
                    for c in chunk.get("choices") or []:
                        text = (c.get("delta") or {}).get("content") if req.kind == "chat" else c.get("text")
                        if text:
                            n += 1
                            first = first or time.perf_counter()
                            yield Delta(text)
                        reason = c.get("finish_reason") or reason
        except (httpx.HTTPError, UpstreamError) as e:
            raise _ReplicaFailed(f"{type(e).__name__}: {e}") from None
        if reason is None:
            raise _ReplicaFailed("the stream ended without a finish reason")
        usage = usage or {}
        drafted, accepted = timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)
        tps = timings.get("predicted_per_second")
        if tps is None:  # a server without llama-server's timings (vLLM): measured here, first token to last
            took = time.perf_counter() - first if first else 0.0
            tps = (usage.get("completion_tokens", n) - 1) / took if took > 0 else 0.0
            timings = {"predicted_n": usage.get("completion_tokens", n), "predicted_per_second": round(tps, 2),
                       "measured_by": "specquant"}
        info = dict(route, drafted=drafted, accepted=accepted,
                    acceptance_rate=round(accepted / drafted, 4) if drafted else 0.0, tokens_per_s=round(tps, 2),
                    **exactness(rep.exact, req.temperature == 0, "the plain endpoint's answer", "the target's",
                                "this endpoint is not declared exact"))
        yield Final("stop" if reason == "stop" else "length", usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", n), info,
                    {k: timings[k] for k in ("prompt_n", "predicted_n", "predicted_ms", "predicted_per_second",
                                             "draft_n", "draft_n_accepted", "measured_by") if k in timings})


class _ReplicaFailed(Exception):
    pass


def _client_error(r) -> APIError:
    try:
        err = r.json().get("error", {})
        msg = err.get("message") or r.text
    except ValueError:
        msg = r.text
    code = "context_length_exceeded" if "context" in str(msg).lower() else None
    return APIError(r.status_code if r.status_code < 500 else 400, f"the replica refused the request: {msg}",
                    code=code)


# --- specquant fleet up -----------------------------------------------------------------------
def server_args(kind: str, ms, *, port: int, ctx: int, threads: int, parallel: int, draft_len: int = 4) -> list[str]:
    """llama-server's arguments for one replica of ``kind`` serving the model set ``ms``."""
    args = ["-m", str(ms.target), "--host", "127.0.0.1", "--port", str(port), "-c", str(ctx * parallel),
            "-np", str(parallel), "-t", str(threads), "--no-webui"]
    if kind == "lookup":
        # prompt lookup: the last 2 tokens matched in the context, the next 4 copied. On the bundled grounded
        # prompts (demo model, Zen 4, 2 cores, against a plain llama-server) sizes n/m gave 2/4 1.40-1.42x,
        # 2/3 1.38x, 3/4 1.33x, 1/4 1.33x, 2/6 1.28x, 3/8 1.20x, 2/8 1.13x, 3/16 1.10x (the default 12/48 rarely
        # matches): short copies, as SpecQuant's own lookup finds (k=4).
        return args + ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "2",
                       "--spec-ngram-simple-size-m", "4"]
    if kind == "plain":
        return args
    draft = ms.sibling if kind == "sibling" else ms.drafts.get(kind)
    if draft is None:
        raise ValueError(f"the model has no {kind} draft file here")
    # a draft model given without --spec-type loads and does nothing (llama.cpp #25345)
    return args + ["--spec-type", "draft-simple", "-md", str(draft), "--spec-draft-n-max", str(draft_len),
                   "-td", str(threads)]


def find_llama_server(path: str | None = None) -> Path:
    """``path``, or the patched llama-server scripts/build_llama_server.py makes (cached)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"no llama-server at {p}")
        return p
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_llama_server.py"
    if not script.exists():
        raise ValueError("give --llama-server PATH (scripts/build_llama_server.py is not in this install)")
    print("finding or building the patched llama-server (the first time: ~25 min on 2 cores)", file=sys.stderr,
          flush=True)
    out = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise ValueError("building llama-server failed (see above); or give --llama-server PATH")
    return Path(out.stdout.strip().splitlines()[-1])


def parse_kinds(text: str) -> list[tuple[str, int]]:
    """"plain:2,lookup,q8" -> [("plain", 2), ("lookup", 1), ("q8", 1)]"""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, n = part.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: use {', '.join(KINDS)}")
        if n and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"replicas of {kind} must be a whole number from 1, got {n!r}")
        out.append((kind, int(n or 1)))
    if not any(k == "plain" for k, _ in out):
        out.insert(0, ("plain", 1))
    return out


def up(model: str | None, kinds: list[tuple[str, int]], out: Path, *, port: int = 8081, ctx: int = 4096,
       parallel: int = 1, threads: int | None = None, llama_server: str | None = None, ready_s: float = 300) -> int:
    """Start the replicas, wait until each is healthy, write the fleet file, and keep them running until
    this process is stopped (SIGINT / SIGTERM stops them too)."""
    from .engine import resolve_models

    ms, hw, _ = resolve_models(model, with_sibling=any(k == "sibling" for k, _ in kinds), backend="llama.cpp")
    binary = find_llama_server(llama_server)
    threads = threads or hw.physical_cores
    n = sum(c for _, c in kinds)
    need = sum(Path(ms.target).stat().st_size + (0 if k in ("plain", "lookup") else
                                                  Path(ms.drafts.get(k) or ms.sibling).stat().st_size)
               for k, c in kinds for _ in range(c))
    if need > 0.8 * hw.ram_available_bytes:
        raise ValueError(f"{n} replicas need about {need / 2**30:.1f} GiB of weights; "
                         f"{hw.ram_available_bytes / 2**30:.1f} GiB of RAM is available")
    procs: list[subprocess.Popen] = []
    replicas: list[Replica] = []
    logs = out.parent / (out.stem + "-logs")
    logs.mkdir(parents=True, exist_ok=True)

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        for kind, count in kinds:
            for i in range(count):
                args = server_args(kind, ms, port=port, ctx=ctx, threads=threads, parallel=parallel)
                log = open(logs / f"{kind}-{i + 1}.log", "w")
                procs.append(subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT))
                replicas.append(Replica(kind, model or "default", f"http://127.0.0.1:{port}", True, procs[-1].pid))
                port += 1
        t0 = time.monotonic()
        for r, p in zip(replicas, procs):
            left = max(1.0, ready_s - (time.monotonic() - t0))
            wait_ready(r.url, p, left, f"the {r.kind} llama-server (logs: {logs})")
        write_fleet(out, replicas)
        print(f"fleet up: {len(replicas)} llama-server replicas of {ms.label} ({threads} threads, -np {parallel} "
              f"each); wrote {out}\nserve it: specquant serve --fleet {out}", flush=True)
        while any(p.poll() is None for p in procs):  # a replica that dies leaves the others serving
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop()
