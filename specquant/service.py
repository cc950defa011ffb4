"""What a front end (the Gradio page, or any other) needs, with no UI code: models loaded once
per process with progress, a side-by-side comparison as a stream of plain-data events, and
the benchmark. The page renders these events; it never touches an engine.
"""
from __future__ import annotations

import os

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Iterator

from .engine import Engine, InputError, resolve_models
from .model_thread import MODELS
from .compare import agreement, load_changed
from .speculative import Done, Step

DRAFT_ALIASES = {"seed": "tier rule"}  # the tier rule's first name, still taken from API callers
DRAFT_CHOICES = {  # what the page offers -> (policy, forced draft)
    "auto": ("auto", None),
    "tier rule": ("tier-rule", None),
    "Q4": ("auto", "q4"),
    "Q8": ("auto", "q8"),
    "Q4_0": ("auto", "q4_0"),
    "lookup": ("auto", "lookup"),
    "none": ("auto", "none"),
}


@dataclass
class Settings:
    draft: str = "auto"  # a key of DRAFT_CHOICES
    k: str = "auto"
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 128
    tier: str | None = None  # None: from the analysis
    model: str | None = None  # None: the process default
    alone: str | None = None  # also run this quantized copy alone (q4_0, q8): its own, faster, answer


def checked(prompt, settings: Settings) -> tuple[str, str | None]:
    """A comparison's input checked: (policy, forced draft) for ``settings.draft`` (the page's choice,
    or "seed", the tier rule's first name); InputError for an empty prompt or a bad setting."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type a question or pick an example")
    choice = DRAFT_ALIASES.get(settings.draft, settings.draft)
    if choice not in DRAFT_CHOICES:
        raise InputError(f"unknown draft choice {settings.draft!r}")
    if not isinstance(settings.max_tokens, int) or settings.max_tokens < 1:
        raise InputError("max new tokens must be at least 1")
    return DRAFT_CHOICES[choice]


@dataclass
class Loading:
    """Model loading state, readable from any thread."""

    status: str = "idle"  # idle, loading, ready, failed
    message: str = ""
    done: int = 0
    total: int = 0
    engine: Engine | None = None
    error: str | None = None
    phases: dict = field(default_factory=dict)  # seconds: files (download or cache), load, calibration
    since: float = 0.0  # when the current download began (perf_counter), for the time left
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else (100 if self.status == "ready" else 0)

    @property
    def line(self) -> str:
        """What is happening, with the download's share while one runs."""
        if not (self.total and self.status == "loading"):
            return self.message
        gb = f"{self.done / 1e9:.1f} of {self.total / 1e9:.1f} GB"
        took = time.perf_counter() - self.since
        if self.done and took > 2 and self.done < self.total:
            left = (self.total - self.done) / (self.done / took)
            gb += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        return f"{self.message} ({self.percent}%: {gb})"


class Service:
    """One per process: engines by model spec, loaded once, shared by every request."""

    def __init__(self, default_model: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 backend: str | None = None):
        self.default_model = default_model
        self.n_ctx, self.n_threads, self.backend = n_ctx, n_threads, backend
        self._loads: dict[str, Loading] = {}
        self._lock = threading.Lock()

    def _key(self, model: str | None) -> str:
        return model or self.default_model or "(default)"

    def start_loading(self, model: str | None = None) -> Loading:
        """Begin loading ``model`` in the background (once); return its state."""
        key = self._key(model)
        with self._lock:
            st = self._loads.get(key)
            if st is not None and st.status != "failed":
                return st
            st = self._loads[key] = Loading(status="loading", message="starting")

        def progress(done, total, name):
            if total != st.total or done < st.done:  # a new download (the target's files, the sibling's)
                st.since = time.perf_counter()
            st.done, st.total, st.message = done, total, f"downloading {name}"

        def log(msg):
            st.message = msg

        def work():
            t0 = time.perf_counter()

            def phase(name):
                nonlocal t0
                now = time.perf_counter()
                st.phases[name] = round(now - t0, 2)
                t0 = now

            try:
                spec = model or self.default_model
                st.message = "finding the model files"
                # with_sibling: at real sizes the family's small sibling is the draft that pays
                ms, hw, backend = resolve_models(spec, progress=progress, log=log, with_sibling=True,
                                                 backend=self.backend)
                phase("files")
                st.done = st.total = 0
                eng = MODELS.call(lambda: self._load(ms, hw, backend, st, phase))
                st.engine, st.status, st.message = eng, "ready", "ready"
                print(f"specquant: {ms.label} ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in st.phases.items()),
                      flush=True)
            except Exception as e:  # noqa: BLE001 - shown on the page in plain words
                st.status, st.error = "failed", f"{e}"
                st.message = f"could not load the model: {e}"
                traceback.print_exc()
            finally:
                st.event.set()

        threading.Thread(target=work, daemon=True, name=f"load {key}").start()
        return st

    def _load(self, ms, hw, backend, st: Loading, phase) -> Engine:
        """Load and calibrate (on the model thread: see ``model_thread``)."""
        st.message = f"loading {ms.label}"
        # visitors of a served page never draft from each other's answers unless the owner says so
        shared = os.environ.get("SPECQUANT_ANSWER_CACHE", "").strip().lower() == "shared"
        eng = Engine.from_model_set(ms, n_ctx=self.n_ctx, n_threads=self.n_threads, backend=backend,
                                    answer_cache=shared)
        eng.hardware = hw
        phase("load")
        todo = eng.auto_sources()
        for i, src in enumerate(todo, 1):
            st.message = f"measuring costs on this machine, once: {src} ({i} of {len(todo)})"
            eng.costs(src)
        phase("calibration")
        st.message = "measuring this machine's floor (memory and arithmetic rates)"
        eng.pass_costs()
        phase("floor")
        return eng

    def engine(self, model: str | None = None, timeout: float | None = None) -> Engine:
        st = self.start_loading(model)
        if not st.event.wait(timeout):
            raise TimeoutError(f"the model is still loading: {st.line}")
        if st.engine is None:
            raise RuntimeError(st.message)
        return st.engine

    def status(self, model: str | None = None) -> Loading:
        return self.start_loading(model)

    # --- the comparison ---------------------------------------------------------------------
    def compare(self, prompt: str, settings: Settings, stop: threading.Event | None = None) -> Iterator[dict]:
        """Events: analysis, then plain steps and plain_done, then spec steps and spec_done,
        (with ``settings.alone``: alone steps and alone_done, the quantized copy decoding by
        itself) then summary. Each is a dict of plain data. ``stop`` ends the run within one step."""
        policy, forced = checked(prompt, settings)
        eng = self.engine(settings.model)  # waits for loading here, not on the model thread
        yield from MODELS.iterate(lambda: self._compare(eng, prompt, settings, policy, forced, stop))

    def _compare(self, eng: Engine, prompt: str, settings: Settings, policy, forced, stop) -> Iterator[dict]:
        k = None if settings.k in (None, "", "auto") else settings.k
        with eng.lock:
            if settings.alone:
                eng.alone_model(settings.alone)  # loaded (or refused) before anything is timed
            kw = dict(max_tokens=settings.max_tokens, temperature=settings.temperature, seed=settings.seed)
            ans = eng.answer(prompt, policy=policy, tier=settings.tier, draft=forced, k=k, stop=stop, **kw)
            decision = ans.decision
            yield {"type": "analysis", "analysis": ans.analysis.to_dict(), "decision": decision.to_dict(),
                   "label": decision.label, "model": eng.label}
            done = {}
            plain = eng.stream(ans.tokens, draft="none", **kw, stop=stop)
            sides = [("plain", plain), ("spec", ans.events)]
            if settings.alone:
                sides.append(("alone", eng.stream(ans.tokens, alone=settings.alone, **kw, stop=stop)))
            for side, events in sides:
                for ev in events:
                    if isinstance(ev, Done):
                        done[side] = ev
                        yield {"type": f"{side}_done", "text": ev.text, "tokens": len(ev.tokens),
                               "stats": ev.stats.to_dict()}
                    else:
                        yield {"type": side, **_step(ev)}
                if stop is not None and stop.is_set():
                    yield {"type": "stopped", "side": side}
                    return
        p, s = done["plain"].stats, done["spec"].stats
        alone = None
        if "alone" in done:
            from . import sources

            a = done["alone"].stats
            alone = {"label": sources.label(settings.alone), "stats": a.to_dict(),
                     "speedup": a.tokens_per_s / p.tokens_per_s if p.tokens_per_s else None,
                     **agreement(done["plain"].tokens, done["alone"].tokens)}
        yield {
            "type": "summary",
            "unreliable": load_changed(p, s),
            "speedup": s.tokens_per_s / p.tokens_per_s if p.tokens_per_s else None,
            "identical": done["plain"].tokens == done["spec"].tokens,
            "greedy": settings.temperature == 0,
            "plain": p.to_dict(),
            "spec": s.to_dict(),
            "decision": decision.to_dict(),
            "alone": alone,
        }

    def describe(self, model: str | None = None) -> dict:
        st = self.status(model)
        d = {"status": st.status, "message": st.line, "percent": st.percent, "phases": dict(st.phases)}
        if st.engine is not None:
            d.update(st.engine.describe())
            hw = st.engine.hardware
            d["hardware"] = hw.to_dict() if hw else None
            d["hardware_summary"] = hw.summary() if hw else ""
        return d

    def bench(self, prompts, drafts, ks, policies, max_tokens, progress=None, model=None, alone=()) -> dict:
        from .bench import parse_configs, run_bench

        eng = self.engine(model)

        def run():
            with eng.lock:
                return run_bench(eng, prompts, parse_configs(drafts, ks), policies=policies, max_tokens=max_tokens,
                                 progress=progress, alone=list(alone))

        return MODELS.call(run)


def _step(ev: Step) -> dict:
    return {"tokens": ev.tokens, "pieces": ev.pieces, "from_draft": ev.from_draft, "t": ev.t,
            "drafted": ev.drafted, "accepted": ev.accepted}


__all__ = ["Service", "Settings", "DRAFT_CHOICES", "InputError"]
