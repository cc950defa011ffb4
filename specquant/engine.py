"""An engine holds one target model and the draft sources made for it, loaded once.

It turns a draft spec (``none``, ``lookup``, ``q8``, ``q4``, ``q4_0``, any quantization name,
or a path) into a draft source, measures costs once per draft (for ``k = auto``), and runs
plain or speculative decoding of a text prompt. Load and calibration times are kept apart
from run timings.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from backends import BackendError, Model, load_model

from .control import Costs, DraftControl, measure_costs
from .drafts import DraftSource, ModelDraft, PromptLookup
from .quantize import ALIASES, normalize_qtype, quantize
from .sampling import Sampler
from .speculative import Done, InputError, Step, decode

DEFAULT_P_MIN = 0.5  # with k = auto, a draft token the draft itself doubts ends the draft
CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. Speculative decoding lets a small draft "
    "propose tokens that a large target verifies in one batched pass, so the answer stays "
    "exactly the target's while fewer sequential passes are needed."
)


def parse_k(value) -> int | str:
    if value in (None, "auto"):
        return "auto"
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(f"draft length must be an integer >= 1 or 'auto', got {value!r}") from None
    if k < 1:
        raise InputError(f"draft length must be >= 1, got {k}")
    return k


class Engine:
    def __init__(self, target: str | os.PathLike, *, backend: str = "llama.cpp", n_ctx: int = 4096,
                 n_threads: int | None = None):
        self.backend = backend
        self._load_kw = {"n_ctx": n_ctx}
        if n_threads:
            self._load_kw["n_threads"] = n_threads
        self.load_s: dict[str, float] = {}
        self.target = self._load(target)
        # Exactness check, part of loading: does a batched verify pass compute exactly what
        # one-token plain decoding computes on this build?
        self.exact = self.target.batch_invariant()
        self._drafts: dict[str, DraftSource | None] = {}
        self._costs: dict[str, Costs] = {}

    def _load(self, path) -> Model:
        t0 = time.perf_counter()
        m = load_model(path, self.backend, **self._load_kw)
        self.load_s[m.path.name] = time.perf_counter() - t0
        return m

    # --- drafts ---------------------------------------------------------------------------
    def draft_path(self, qtype: str) -> Path:
        """A prepared sibling file (NAME.F16.gguf -> NAME.Q8_0.gguf) or one quantized now."""
        q = normalize_qtype(qtype)
        name = self.target.path.name
        for tag, new in ((".F16.", f".{q}."), ("-F16.", f"-{q}."), (".f16.", f".{q.lower()}."),
                         ("-f16.", f"-{q.lower()}."), ("-fp16.", f"-{q.lower()}.")):
            if tag in name:
                sib = self.target.path.with_name(name.replace(tag, new))
                if sib.exists():
                    return sib
        t0 = time.perf_counter()
        out = quantize(self.target.path, q)
        self.load_s[f"quantize {q}"] = time.perf_counter() - t0
        return out

    def draft(self, spec: str | None) -> DraftSource | None:
        spec = (spec or "none").strip()
        key = spec.lower()
        if key in self._drafts:
            return self._drafts[key]
        if key in ("none", "plain", ""):
            src = None
        elif key == "lookup":
            src = PromptLookup()
        elif key in ALIASES or key.upper() in ("Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q4_1"):
            q = normalize_qtype(key)
            src = ModelDraft(self._load(self.draft_path(q)), self.target, name=q)
        elif Path(spec).expanduser().exists() or os.sep in spec or spec.endswith(".gguf"):
            src = ModelDraft(self._load(spec), self.target)
        else:
            raise InputError(f"unknown draft {spec!r}: use q8, q4, q4_0, lookup, none or a model path")
        self._drafts[key] = src
        return src

    def costs(self, spec: str) -> Costs:
        """Costs of the target and this draft on this machine, measured once (load time)."""
        key = spec.lower()
        if key not in self._costs:
            src = self.draft(spec)
            t0 = time.perf_counter()
            model = src.model if isinstance(src, ModelDraft) else None
            known = self._costs.get("_target")
            if model is None and known is not None:  # lookup drafts for free: target costs suffice
                c = Costs(dict(known.verify))
            else:
                c = measure_costs(self.target, model, context=self.target.tokenize(CALIBRATION_TEXT))
            self._costs[key] = c
            self._costs.setdefault("_target", Costs(dict(c.verify)))
            self.load_s[f"calibrate {key}"] = time.perf_counter() - t0
        return self._costs[key]

    def control(self, spec: str, k) -> DraftControl:
        k = parse_k(k)
        src = self.draft(spec)
        if k == "auto":
            if isinstance(src, PromptLookup):  # free to draft, but right less often than a model
                return DraftControl("auto", costs=self.costs(spec), free_draft=True, prior=0.5, prior_weight=2.0)
            return DraftControl("auto", costs=self.costs(spec))
        return DraftControl(k)

    # --- runs -------------------------------------------------------------------------------
    def prompt_tokens(self, prompt: str, *, chat: bool = True, system: str | None = None) -> list[int]:
        if not isinstance(prompt, str):
            raise InputError("the prompt must be text")
        if not prompt.strip():
            raise InputError("the prompt is empty")
        if chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            text = self.target.apply_chat_template(msgs)
            return self.target.tokenize(text, add_special=True)
        return self.target.tokenize(prompt)

    def stream(self, prompt: str | list[int], *, draft: str = "none", k=4, max_tokens: int = 128,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = 0,
               chat: bool = True, p_min: float | None = None) -> Iterator[Step | Done]:
        tokens = prompt if isinstance(prompt, list) else self.prompt_tokens(prompt, chat=chat)
        try:
            sampler = Sampler(temperature, top_k, top_p, seed)
        except ValueError as e:
            raise InputError(str(e)) from None
        src = self.draft(draft)
        control = self.control(draft, k) if src is not None else None
        if isinstance(src, ModelDraft):
            src.p_min = (DEFAULT_P_MIN if control.auto else 0.0) if p_min is None else p_min
        return decode(self.target, tokens, draft=src, control=control, sampler=sampler, max_tokens=max_tokens)

    def run(self, prompt, **kw) -> Done:
        for ev in self.stream(prompt, **kw):
            if isinstance(ev, Done):
                return ev
        raise AssertionError("no Done event")  # pragma: no cover

    def describe(self) -> dict:
        models = [self.target.describe()] + [
            s.model.describe() for s in self._drafts.values() if isinstance(s, ModelDraft)
        ]
        return {"backend": self.backend, "models": models, "load_s": dict(self.load_s),
                "batch_invariant": self.exact}


__all__ = ["Engine", "InputError", "BackendError", "parse_k"]
