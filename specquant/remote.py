"""The page over a SpecQuant server: with ``SPECQUANT_SERVER=http://host:port`` the side-by-side
comparison asks that server (``specquant serve``, in-process or over a fleet) twice, one run after
the other, with the same prompt and sampler settings: ``draft: none`` (the plain endpoint, in a
fleet) and the routed request. The statistics come from the server's ``specquant`` object and
``timings``, the times from this side. It offers what ``service.Service`` offers the page.
"""
from __future__ import annotations

import threading
import time
from typing import Iterator

from .server import Delta, Final, UpstreamError, sse_chunks
from .service import Loading, Settings, checked
from .speculative import InputError, Stats


class RemoteService:
    def __init__(self, url: str, timeout: float = 300.0):
        self.url, self.timeout, self.default_model = url.rstrip("/"), timeout, None
        self._st: Loading | None = None
        self._lock = threading.Lock()

    def _get(self, path: str) -> tuple[int, dict]:
        import httpx

        try:
            r = httpx.get(self.url + path, timeout=5)
            return r.status_code, r.json()
        except (httpx.HTTPError, ValueError) as e:
            return 0, {"message": f"cannot reach the SpecQuant server at {self.url}: {e}"}

    def start_loading(self, model: str | None = None) -> Loading:
        """The server's state, followed in the background while its model loads (the page polls it)."""
        with self._lock:
            if self._st is not None and self._st.status != "failed":
                return self._st
            st = self._st = Loading(status="loading", message=f"asking {self.url}")

        def follow():
            while True:
                code, h = self._get("/health")
                st.message = h.get("message") or h.get("status", "")
                if code == 200 or not (code == 503 and h.get("status") == "loading"):
                    st.status = "ready" if code == 200 else "failed"
                    st.event.set()
                    return
                time.sleep(1.0)

        threading.Thread(target=follow, daemon=True, name="server health").start()
        st.event.wait(5)
        return st

    status = start_loading

    def describe(self, model: str | None = None) -> dict:
        st = self.status(model)
        d = {"status": st.status, "message": st.line, "percent": st.percent, "phases": {}}
        if st.status == "ready":
            _, models = self._get("/v1/models")
            _, h = self._get("/health")
            m = (models.get("data") or [{}])[0]
            d.update(backend=f"SpecQuant server ({h.get('executor', '?')})", label=m.get("label") or m.get("id", ""),
                     hardware_summary=f"served by {self.url}", exactness="per answer (the server reports it)")
        return d

    def bench(self, *args, **kwargs) -> dict:
        raise InputError("the benchmark needs the model in this process: run `specquant bench` where the server is")

    # --- requests ---------------------------------------------------------------------------
    def _stream(self, body: dict, stop) -> Iterator[tuple[str, dict | None]]:
        """(text, None) per chunk, then ("", the last chunk's specquant/timings/usage)."""
        import httpx

        last: dict = {}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json={**body, "stream": True,
                              "stream_options": {"include_usage": True}}, timeout=self.timeout) as r:
                if r.status_code != 200:
                    r.read()
                    try:
                        msg = r.json()["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        msg = r.text
                    raise InputError(msg) if r.status_code < 500 else RuntimeError(msg)
                for chunk in sse_chunks(r.iter_lines()):
                    if stop is not None and stop.is_set():
                        return
                    for k in ("specquant", "timings", "usage"):
                        if chunk.get(k):
                            last[k] = chunk[k]
                    for c in chunk.get("choices") or []:
                        if c.get("finish_reason"):
                            last["finish_reason"] = c["finish_reason"]
                        text = (c.get("delta") or {}).get("content")
                        if text:
                            yield text, None
        except httpx.HTTPError as e:
            raise RuntimeError(f"cannot reach the SpecQuant server at {self.url}: {e}") from None
        except UpstreamError as e:
            raise RuntimeError(f"the server failed mid-answer: {e}") from None
        yield "", last

    def compare(self, prompt: str, settings: Settings, stop: threading.Event | None = None) -> Iterator[dict]:
        """The page's events (as ``Service.compare``), from two requests to the server."""
        from .complexity import analyze

        policy, forced = checked(prompt, settings)
        if settings.alone:
            raise InputError("running a quantized copy alone needs the model in this process, not a server")
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": settings.max_tokens,
                "temperature": settings.temperature, "seed": settings.seed,
                "draft_len": "auto" if settings.k in (None, "", "auto") else int(settings.k)}
        if settings.tier:
            raise InputError("setting the tier needs the model in this process, not a server")
        routed = forced or policy  # the server's draft field: a forced source, or the policy
        yield {"type": "analysis", "analysis": analyze(prompt).to_dict(), "label": routed, "model": self.url,
               "decision": {"policy": "server", "draft": routed, "reason": f"{self.url} decides when the run starts"}}
        done = {}
        for side, draft in (("plain", "none"), ("spec", routed)):
            t0, text, first = time.perf_counter(), [], None
            for piece, last in self._stream({**body, "draft": draft}, stop):
                if last is None:
                    first = first or time.perf_counter() - t0
                    text.append(piece)
                    yield {"type": side, "tokens": [], "pieces": [piece], "from_draft": [False],
                           "t": time.perf_counter() - t0, "drafted": 0, "accepted": 0}
            if stop is not None and stop.is_set():
                yield {"type": "stopped", "side": side}
                return
            st = _stats(last, time.perf_counter() - t0, first)
            done[side] = ("".join(text), st, last.get("specquant") or {})
            yield {"type": f"{side}_done", "text": done[side][0], "tokens": st.tokens, "stats": st.to_dict()}
        (pt, p, _), (stx, s, info) = done["plain"], done["spec"]
        yield {"type": "summary", "unreliable": "", "speedup": s.tokens_per_s / p.tokens_per_s if p.tokens_per_s
               else None, "identical": pt == stx, "greedy": settings.temperature == 0, "plain": p.to_dict(),
               "spec": s.to_dict(), "alone": None,
               "decision": {"policy": info.get("policy", "server"), "draft": info.get("draft", routed),
                            "reason": info.get("reason", ""), "k": info.get("k")}}

    def executor(self) -> "RemoteExecutor":
        return RemoteExecutor(self)


def _stats(last: dict, wall: float, first: float | None) -> Stats:
    """A run's statistics as the page reads them, from what the server reported."""
    info, usage = last.get("specquant") or {}, last.get("usage") or {}
    st = Stats(tokens=usage.get("completion_tokens", 0), wall_s=wall, ttft_s=first or wall,
               prompt_tokens=usage.get("prompt_tokens", 0), finish_reason=last.get("finish_reason", ""),
               drafted=info.get("drafted", 0), accepted=info.get("accepted", 0))
    per_pass = info.get("tokens_per_pass")
    st.target_passes = round(st.tokens / per_pass) if per_pass else max(st.tokens - st.accepted, 0)
    st.draft_dropped = ""
    return st


class RemoteExecutor:
    """``server.InProcess``'s ``run`` over the server (the page's MCP ``answer`` tool uses it)."""

    name = "remote"

    def __init__(self, remote: RemoteService):
        self.remote = remote

    def run(self, req, cancel):
        from .server import APIError

        body = {"messages": req.messages(), "max_tokens": req.max_tokens,
                "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed, "draft": req.draft,
                "draft_len": req.draft_len if req.draft_len == "auto" else int(req.draft_len)}
        if req.stop:
            body["stop"] = req.stop
        try:
            for piece, last in self.remote._stream(body, cancel):
                if last is None:
                    yield Delta(piece)
        except InputError as e:
            raise APIError(400, str(e)) from None
        usage = last.get("usage") or {}
        yield Final(last.get("finish_reason", "stop"), usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0), last.get("specquant") or {}, last.get("timings") or {})
