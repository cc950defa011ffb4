"""``specquant serve``: an OpenAI-compatible HTTP endpoint over the one answer path.

``POST /v1/chat/completions`` and ``/v1/completions`` (with ``stream: true`` as server-sent
events, or one JSON object), ``GET /v1/models``, ``/health`` and ``/metrics`` (Prometheus
text). Every request is routed as the page and the CLI route it (``Engine.answer``): the
prompt's tier, then the draft and its length expected fastest here. A request may say how to
draft with an extra body field, ``draft``: ``auto`` (default), ``none``, ``tier-rule`` or a
source name (``lookup``, ``q8``, ``q4_0``, ``sibling``...), and ``draft_len`` (K or ``auto``).
Each response adds a ``specquant`` object (tier, decision and its reason, drafted, accepted,
tokens/s, whether the text is identical to plain decoding by construction) and llama-server's
``timings`` fields (``draft_n``, ``draft_n_accepted``...), which clients already read.

The executor runs requests; ``InProcess`` is the engine in this process (one model, requests
queue on its lock). Bad requests get OpenAI-style error objects and a 4xx status.
"""

import asyncio
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import routing, sources
from .model_thread import END, MODELS, Failed
from .speculative import ContextTooLong, Done, InputError

MAX_STOPS = 4  # as OpenAI's API
LOAD_WAIT_S = 600.0  # a request made while the model loads waits this long for it


class APIError(Exception):
    """An error the client caused or should see, as OpenAI's API reports it."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- requests ---------------------------------------------------------------------------------
@dataclass
class Request:
    """One completion request, parsed and checked."""

    kind: str  # "chat" or "text"
    model: str | None
    prompt: str  # the last user message (chat) or the raw prompt (text)
    history: list[dict] = field(default_factory=list)  # earlier user / assistant turns
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    draft: str = "auto"  # a policy (routing.POLICIES) or a draft source's name
    draft_len: str = "auto"

    def messages(self) -> list[dict]:
        """The chat as OpenAI messages: the system message, the earlier turns, the new prompt."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": self.prompt}]


def _number(body: dict, name: str, default, *, lo: float, hi: float, integer: bool = False):
    v = body.get(name)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not (lo <= v <= hi) or (not integer and not math.isfinite(v)):
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"{name} must be {kind} from {lo:g} to {hi:g}, got {v!r}", param=name)
    return v


def _text(content, where: str) -> str:
    """A message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise APIError(400, f"{where}: only text content parts are supported", param="messages")
            parts.append(p["text"])
        return "".join(parts)
    raise APIError(400, f"{where}: content must be a string or a list of text parts", param="messages")


def _messages(msgs) -> tuple[str | None, list[dict], str]:
    """(system, history, last user message) from OpenAI chat messages."""
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    system, turns = [], []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m:
            raise APIError(400, f"messages[{i}] must be an object with a role and a content", param="messages")
        role, text = m["role"], _text(m.get("content"), f"messages[{i}]")
        if role in ("system", "developer"):
            if turns:
                raise APIError(400, f"messages[{i}]: a system message must come before the conversation",
                               param="messages")
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": text})
        else:
            raise APIError(400, f"messages[{i}]: role {role!r} is not supported (system, user, assistant)",
                           param="messages")
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "the last message must be the user's", param="messages")
    if not turns[-1]["content"].strip():
        raise APIError(400, "the last user message is empty", param="messages")
    return ("\n\n".join(system) or None), turns[:-1], turns[-1]["content"]


def _draft_field(body: dict) -> tuple[str, str]:
    draft = body.get("draft", "auto")
    if not isinstance(draft, str):
        raise APIError(400, "draft must be a string: auto, none, tier-rule or a source name", param="draft")
    draft = draft.strip().lower() or "auto"
    draft = routing.as_policy(draft) or draft  # a policy by its one name ("seed" is the tier rule)
    if draft not in routing.POLICIES and sources.find(draft) is None:
        # a remote client names a source; a model file path is for the one who starts the server
        raise APIError(400, f"unknown draft {draft!r}: use auto, none, tier-rule or one of {sources.names()}",
                       param="draft")
    k = body.get("draft_len", "auto")
    if not (k == "auto" or isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 16):
        raise APIError(400, f"draft_len must be auto or an integer from 1 to 16, got {k!r}", param="draft_len")
    return draft, str(k)


def parse_request(body, kind: str) -> Request:
    """Check an OpenAI request body (chat: ``messages``; text: ``prompt``)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model must be a string", param="model")
    if _number(body, "n", 1, lo=1, hi=1, integer=True) != 1:  # pragma: no cover - _number refuses
        raise APIError(400, "n must be 1")
    if kind == "chat":
        system, history, prompt = _messages(body.get("messages"))
    else:
        prompt, system, history = body.get("prompt"), None, []
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be a string", param="prompt")
        if not prompt.strip():
            raise APIError(400, "the prompt is empty", param="prompt")
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": mt}, "max_tokens", 256 if kind == "chat" else 16, lo=1, hi=1 << 20,
                         integer=True)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, f"stop must be a non-empty string or a list of up to {MAX_STOPS} of them", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be true or false", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise APIError(400, "stream_options must be an object", param="stream_options")
    draft, k = _draft_field(body)
    seed = _number(body, "seed", None, lo=-(2 ** 63), hi=2 ** 64 - 1, integer=True)
    return Request(kind, model, prompt, history, system, max_tokens,
                   temperature=float(_number(body, "temperature", 1.0, lo=0.0, hi=2.0)),
                   top_p=float(_number(body, "top_p", 1.0, lo=0.0, hi=1.0)),
                   seed=None if seed is None else seed % (2 ** 32), stop=stop, stream=stream,
                   include_usage=bool(opts.get("include_usage")), draft=draft, draft_len=k)


# --- what an executor yields ----------------------------------------------------------------
@dataclass
class Start:
    """The route taken, known before the first token."""

    info: dict


@dataclass
class Delta:
    text: str


@dataclass
class Final:
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    info: dict  # the response's ``specquant`` object
    timings: dict  # llama-server's names


class StopText:
    """Cuts streamed text at the first stop string, holding back only what could begin one."""

    def __init__(self, stops: list[str]):
        self.stops, self.pending, self.hit = stops, "", False

    def feed(self, piece: str) -> str:
        """Text safe to send after ``piece``; sets ``hit`` when a stop string appeared."""
        if self.hit:
            return ""
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit, out, self.pending = True, self.pending[:cut], ""
            return out
        keep = max((n for s in self.stops for n in range(min(len(s) - 1, len(self.pending)), 0, -1)
                    if self.pending.endswith(s[:n])), default=0)
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


def exactness(exact: bool, greedy: bool, answer: str, model: str, why_not: str) -> dict:
    """What a response says of its exactness: identical to ``answer`` by construction (greedy on exact
    verify passes), sampled from ``model``'s own distribution, or ``why_not``."""
    same = exact and greedy
    note = (f"greedy: token for token {answer}" if same else f"sampled from {model} own distribution" if exact
            else f"{why_not}: rare near-ties may differ")
    return {"identical_by_construction": same, "exact": exact, "note": note}


# --- the in-process executor ----------------------------------------------------------------
def model_id(spec: str | None) -> str:
    """The name clients use for the served model: the family or repo as given, a file's stem."""
    if not spec:
        return "default"
    p = Path(spec)
    return p.stem if spec.endswith(".gguf") or p.exists() else spec


class InProcess:
    """The engine in this process (``service.Service`` loads it once, in the background)."""

    name = "in-process"

    def __init__(self, service, model: str | None = None):
        self.service, self.id = service, model_id(model)
        service.start_loading()

    def models(self) -> list[dict]:
        st = self.service.status()
        d = {"id": self.id, "object": "model", "created": 0, "owned_by": "specquant", "status": st.status}
        if st.engine is not None:
            d["label"] = st.engine.label
        return [d]

    def health(self) -> dict:
        st = self.service.status()
        return {"status": {"ready": "ok"}.get(st.status, st.status), "model": self.id, "message": st.line,
                "executor": self.name}

    def knows(self, model: str | None) -> bool:
        st = self.service.status()
        names = {self.id, "default"} | ({st.engine.label} if st.engine is not None else set())
        return model is None or model in names

    def _engine(self):
        try:
            return self.service.engine(timeout=LOAD_WAIT_S)
        except TimeoutError as e:
            raise APIError(503, str(e), type="server_error", code="model_loading") from None
        except RuntimeError as e:
            raise APIError(503, str(e), type="server_error", code="model_unavailable") from None

    def start(self, req: Request, cancel: threading.Event, put) -> None:
        """Wait for the engine here, then queue the run on the model thread (requests queue there), which
        calls ``put`` with each event, then ``model_thread.END``."""
        eng = self._engine()
        MODELS.feed(lambda: self._answer(eng, req, cancel), put)

    def run(self, req: Request, cancel: threading.Event) -> Iterator[Start | Delta | Final]:
        """``start``'s events, as a generator (for callers in Python)."""
        eng = self._engine()
        yield from MODELS.iterate(lambda: self._answer(eng, req, cancel))

    def _answer(self, eng, req: Request, cancel: threading.Event) -> Iterator[Start | Delta | Final]:
        policy, forced = (req.draft, None) if req.draft in routing.POLICIES else ("auto", req.draft)
        with eng.lock:
            if cancel.is_set():
                return
            try:
                ans = eng.answer(req.prompt, policy=policy, draft=forced, k=req.draft_len, max_tokens=req.max_tokens,
                                 chat=req.kind == "chat", stop=cancel, history=req.history or None,
                                 system=req.system, temperature=req.temperature, top_p=req.top_p,
                                 seed=req.seed)
            except ContextTooLong as e:
                raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
            except InputError as e:
                raise APIError(400, str(e)) from None
            d, a = ans.decision, ans.analysis
            route = {"tier": a.tier, "policy": d.policy, "draft": d.draft, "draft_label": sources.label(d.draft),
                     "k": d.k, "k_start": d.k_start, "reason": d.reason, "expected_speedup": round(d.expected_speedup, 3),
                     "route_ms": round(ans.route_s * 1e3, 2), "executor": self.name}
            yield Start(route)
            cut, used = StopText(req.stop), 0
            for ev in ans.events:
                if isinstance(ev, Done):
                    tail = cut.flush()  # held back as a possible stop string's start; it was not one
                    if tail:
                        yield Delta(tail)
                    yield self._final(eng, req, ev, route, cut.hit, used)
                    return
                for piece in ev.pieces:
                    used += 1
                    text = cut.feed(piece)
                    if text:
                        yield Delta(text)
                    if cut.hit:
                        cancel.set()  # the run ends before its next pass
                        break

    @staticmethod
    def _final(eng, req, done, route, stopped: bool, used: int) -> Final:
        """The response's closing data; ``stopped``: a stop string ended the text after ``used`` tokens."""
        st = done.stats
        reason = "stop" if stopped or st.finish_reason == "stop" else "length"
        n = used if stopped else st.tokens
        info = dict(route, drafted=st.drafted, accepted=st.accepted,
                    acceptance_rate=round(st.acceptance_rate, 4), tokens_per_pass=round(st.tokens_per_pass, 3),
                    tokens_per_s=round(st.tokens_per_s, 2), ttft_ms=round(st.ttft_s * 1e3, 1),
                    **exactness(bool(eng.exact), req.temperature == 0, "the FP16 model's own answer",
                                "the FP16 model's", "this build's verify passes are not exact"))
        timings = {"prompt_n": st.prompt_tokens, "predicted_n": st.tokens, "predicted_ms": round(st.wall_s * 1e3, 2),
                   "predicted_per_second": round(st.tokens_per_s, 2), "draft_n": st.drafted,
                   "draft_n_accepted": st.accepted}
        return Final(reason, st.prompt_tokens, n, info, timings)


# --- reading another OpenAI-compatible server ---------------------------------------------------
class UpstreamError(Exception):
    """An error event in another server's stream."""


def sse_chunks(lines) -> Iterator[dict]:
    """The JSON chunks of an OpenAI-style server-sent event stream (``[DONE]`` ends it); an error
    event raises ``UpstreamError``."""
    for line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise UpstreamError((chunk["error"] or {}).get("message", "an error event"))
        yield chunk


def wait_ready(url: str, proc, timeout: float, what: str) -> None:
    """Until ``url``/health answers 200; RuntimeError if ``proc`` (a Popen) exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} at {url} was not ready in {timeout:.0f} s")
        time.sleep(0.3)


# --- metrics ----------------------------------------------------------------------------------
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Counters and histograms, written as Prometheus text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = {}
        self.hists: dict[str, list] = {}
        self.in_flight = 0

    def add(self, name: str, value: float = 1, **labels) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            h = self.hists.setdefault(name, [[0] * len(BUCKETS), 0, 0.0])
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[0][i] += 1
            h[1] += 1
            h[2] += seconds

    def text(self) -> str:
        out = []
        with self._lock:
            seen = set()
            for (name, labels), v in sorted(self.counters.items()):
                if name not in seen:
                    seen.add(name)
                    out.append(f"# TYPE {name} counter")
                lab = ",".join(f'{k}="{w}"' for k, w in labels)
                out.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
            out += ["# TYPE specquant_requests_in_flight gauge", f"specquant_requests_in_flight {self.in_flight}"]
            for name, (counts, n, total) in sorted(self.hists.items()):
                out.append(f"# TYPE {name} histogram")
                out += [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(BUCKETS, counts)]
                out += [f'{name}_bucket{{le="+Inf"}} {n}', f"{name}_sum {total:.6f}", f"{name}_count {n}"]
        return "\n".join(out) + "\n"


# --- the HTTP app -----------------------------------------------------------------------------
def _start(executor, req: Request, cancel: threading.Event, loop, q: asyncio.Queue) -> None:
    """Start the executor's run (in this thread, which may wait for the model to load); its events
    reach the event loop's queue, errors as ``APIError``, and ``END`` last."""
    def put(item):
        if isinstance(item, Failed):
            e = item.error
            item = e if isinstance(e, APIError) else APIError(500, f"the run failed: {e}", type="server_error")
        loop.call_soon_threadsafe(q.put_nowait, item)

    try:
        executor.start(req, cancel, put)
    except Exception as e:  # noqa: BLE001 - APIError as it is; anything else a server error the client can read
        put(Failed(e))
        put(END)


def create_app(executor, *, metrics: Metrics | None = None):
    """The FastAPI app serving ``executor``."""
    from fastapi import FastAPI, Request as HTTPRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    app = FastAPI(title="SpecQuant", description="OpenAI-compatible, routed, exact speculative decoding")
    metrics = metrics or Metrics()
    app.state.metrics, app.state.executor = metrics, executor

    def error(e: APIError, endpoint: str):
        metrics.add("specquant_requests_total", endpoint=endpoint, status=str(e.status))
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):  # pragma: no cover - our routes read raw bodies
        return JSONResponse(APIError(400, str(exc)).body(), status_code=400)

    @app.get("/health")
    async def health():
        h = executor.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": executor.models()}

    @app.get("/metrics")
    async def prom():
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    async def complete(http: HTTPRequest, kind: str):
        endpoint = "chat" if kind == "chat" else "completions"
        t0 = time.perf_counter()
        try:
            try:
                body = json.loads(await http.body())
            except (ValueError, UnicodeDecodeError) as e:
                raise APIError(400, f"the request body is not valid JSON: {e}") from None
            req = parse_request(body, kind)
            if not executor.knows(req.model):
                names = ", ".join(m["id"] for m in executor.models())
                raise APIError(404, f"the model {req.model!r} does not exist here: this server has {names}",
                               param="model", code="model_not_found")
        except APIError as e:
            return error(e, endpoint)
        loop, q, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        threading.Thread(target=_start, args=(executor, req, cancel, loop, q), daemon=True,
                         name="specquant request").start()
        metrics.in_flight += 1
        first = await q.get()
        if isinstance(first, APIError) or first is END:
            metrics.in_flight -= 1
            return error(first if first is not END else APIError(499, "the request was cancelled"), endpoint)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        shape = _Shape(kind, rid, req.model or executor.models()[0]["id"])

        def finished(final: Final | None, status: str):
            metrics.in_flight -= 1
            metrics.add("specquant_requests_total", endpoint=endpoint, status=status)
            metrics.observe("specquant_request_seconds", time.perf_counter() - t0)
            if final is not None:
                metrics.add("specquant_prompt_tokens_total", final.prompt_tokens)
                metrics.add("specquant_completion_tokens_total", final.completion_tokens)
                metrics.add("specquant_drafted_tokens_total", final.info["drafted"])
                metrics.add("specquant_accepted_tokens_total", final.info["accepted"])
                metrics.add("specquant_route_total", draft=final.info["draft"])

        if not req.stream:
            text, final, err = [], None, None
            while (ev := await q.get()) is not END:
                if isinstance(ev, Delta):
                    text.append(ev.text)
                elif isinstance(ev, Final):
                    final = ev
                elif isinstance(ev, APIError):
                    err = ev
            if err is not None or final is None:
                metrics.in_flight -= 1
                return error(err or APIError(500, "the run ended without an answer", type="server_error"), endpoint)
            finished(final, "200")
            return shape.whole("".join(text), final)

        async def events():
            final, status = None, "200"
            try:
                yield shape.sse(shape.chunk("", role=True))
                while (ev := await q.get()) is not END:
                    if isinstance(ev, Delta):
                        yield shape.sse(shape.chunk(ev.text))
                    elif isinstance(ev, Final):
                        final = ev
                        yield shape.sse(shape.chunk("", finish=ev))
                        if req.include_usage:
                            yield shape.sse(shape.usage_chunk(ev))
                    elif isinstance(ev, APIError):  # mid-stream: an error event, then the end
                        status = str(ev.status)
                        yield shape.sse(ev.body())
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()  # a client that went away stops the run within one step
                finished(final, status if final is not None or status != "200" else "499")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat(http: HTTPRequest):
        return await complete(http, "chat")

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        return await complete(http, "text")

    return app


class _Shape:
    """OpenAI's response objects for one request."""

    def __init__(self, kind: str, rid: str, model: str):
        self.kind, self.id, self.model, self.created = kind, rid, model, int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    @staticmethod
    def _usage(f: Final) -> dict:
        return {"prompt_tokens": f.prompt_tokens, "completion_tokens": f.completion_tokens,
                "total_tokens": f.prompt_tokens + f.completion_tokens}

    def whole(self, text: str, f: Final) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": f.finish_reason,
                      "logprobs": None}
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "finish_reason": f.finish_reason, "logprobs": None}
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": self._usage(f), "specquant": f.info, "timings": f.timings}

    def chunk(self, text: str, *, role: bool = False, finish: Final | None = None) -> dict:
        reason = finish.finish_reason if finish else None
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            d = {**self._head("chat.completion.chunk"),
                 "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
        else:
            d = {**self._head("text_completion"),
                 "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}
        if finish is not None:
            d.update(specquant=finish.info, timings=finish.timings)
        return d

    def usage_chunk(self, f: Final) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self._usage(f)}

    @staticmethod
    def sse(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def serve(executor, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(create_app(executor), host=host, port=port, log_level=log_level)


__all__ = ["APIError", "Request", "parse_request", "InProcess", "Metrics", "StopText", "create_app", "serve"]
