"""An engine holds one target model and the draft sources made for it, loaded once.

It turns a draft spec (``none``, ``lookup``, ``q8``, ``q4``, ``q4_0``, ``sibling``, any
quantization name, or a path) into a draft source, measures costs once per draft (cached on
disk per model files and machine), routes a prompt (analysis -> tier -> decision), and runs
plain or speculative decoding. Load and calibration times are kept apart from run timings.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from backends import BackendError, Model, load_model
from backends.base import VERIFY_CHECKED

from . import routing, sources
from .acceptance import RUN_PRIOR_WEIGHT
from .control import MAX_DRAFT, DraftControl, Drift
from .costs import Costs, busy_meter, measure_costs, plausible
from .drafts import DraftSource, ModelDraft
from .suffix import AnswerCache, SuffixDraft
from .paths import cache_dir
from .quantize import normalize_qtype, quantize, source_id
from .sampling import Sampler
from .speculative import Done, InputError, Step, check_prompt, decode, finish

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
        raise InputError(f"draft length must be an integer from 1 to {MAX_DRAFT} or 'auto', got {value!r}") from None
    if not 1 <= k <= MAX_DRAFT:
        raise InputError(f"draft length must be from 1 to {MAX_DRAFT}, got {k}")
    return k


PASS_NS = (2, 3, 5, 9, 17)  # the pass lengths shown beside the floor
# A calibration runs beat by more than this margin, FASTER_RUNS times in a row, is measured again: a
# quarter is well past the few per cent that steps of one machine vary by in a quiet minute, and
# below what a busy calibration was seen to add (one-token steps of 17-22 ms where runs paid 9-10).
STALE_MARGIN = 0.25
ANSWERS_KEPT = 20
FASTER_RUNS = 2
# A calibration during which other programs used more than this share of the CPUs is used for the
# models loaded now but not kept on disk (the next load measures again).
BUSY_SHARE = 0.25
CALIBRATION_MAX_AGE_S = 24 * 3600  # machines change load; measure again daily
CALIBRATION_VERSION = 2  # what a cached calibration must hold (2: the draft's prefill per token)


class Engine:
    def __init__(self, target: str | os.PathLike, *, backend: str = "llama.cpp", n_ctx: int = 4096,
                 n_threads: int | None = None, draft_files: dict | None = None, sibling=None,
                 label: str | None = None, model_set=None, answer_cache: bool = True):
        self.backend = backend
        self.draft_files = {k: Path(v) for k, v in (draft_files or {}).items()}
        self.sibling = Path(sibling) if sibling else None
        self.model_set = model_set
        self.book = routing.AcceptanceBook()
        self.lock = threading.Lock()  # one run at a time per engine (the models hold one cache each)
        self._meta = threading.Lock()  # guards the tables of loaded drafts and load times
        self.hardware = None
        self._load_kw = {"n_ctx": n_ctx}
        if n_threads:
            self._load_kw["n_threads"] = n_threads
        self.load_s: dict[str, float] = {}
        self.target = self._load(target)
        # Exactness check, part of loading: does a batched verify pass compute exactly what
        # one-token plain decoding computes on this build? (Passes of up to VERIFY_CHECKED tokens;
        # a longer fixed draft is checked when a run asks for it: check_exact.)
        self.exact = self.target.batch_invariant()
        self._drafts: dict[str, DraftSource | None] = {}
        self._costs: dict[str, Costs] = {}
        self.drift = Drift()  # what runs observe of the target's costs, carried from run to run
        self._floor = None  # the machine's floor (specquant.floor), measured with the first pass_costs
        self._faster_runs = 0  # runs in a row whose steps beat the calibration (_check_calibration)
        self._answers: list[int] = []  # the lengths of recent answers, in tokens (expected_answer)
        # earlier answers, for suffix drafting (None: kept by nobody; see suffix.AnswerCache)
        self.answers = AnswerCache() if answer_cache else None
        self.stale = ""  # why the calibration was last taken again, if it was
        self.calibration_note = ""  # why the last calibration was not kept on disk, if it was not
        self.label = label or self.target.path.name

    @classmethod
    def from_model_set(cls, ms, **kw) -> "Engine":
        return cls(ms.target, draft_files=ms.drafts, sibling=ms.sibling, label=ms.label, model_set=ms, **kw)

    def _note(self, what: str, seconds: float) -> None:
        with self._meta:
            self.load_s[what] = seconds

    def _load(self, path) -> Model:
        t0 = time.perf_counter()
        m = load_model(path, self.backend, **self._load_kw)
        self._note(m.path.name, time.perf_counter() - t0)
        return m

    # --- drafts ---------------------------------------------------------------------------
    def draft_path(self, qtype: str) -> Path:
        """The model set's file, a prepared sibling file (NAME.F16.gguf -> NAME.Q8_0.gguf), or
        one quantized now from the target."""
        q = normalize_qtype(qtype)
        for spec, path in self.draft_files.items():
            if normalize_qtype(spec) == q:
                return path
        for spec in list(getattr(self.model_set, "later", {})):
            if normalize_qtype(spec) == q:  # on the Hub, not fetched yet
                t0 = time.perf_counter()
                self.draft_files[spec] = self.model_set.fetch(spec)
                self._note(f"download {q}", time.perf_counter() - t0)
                return self.draft_files[spec]
        if self.backend == "mlx":  # MLX drafts: 8-bit or 4-bit folders made with mlx_lm.convert
            from .mlx_models import quantize_mlx

            bits = {"Q8_0": 8, "Q4_K_M": 4, "Q4_0": 4}.get(q)
            if bits is None:
                raise InputError(f"the MLX backend makes 8-bit and 4-bit drafts (q8, q4), not {qtype}")
            t0 = time.perf_counter()
            out = quantize_mlx(self.target.path, bits)
            self._note(f"quantize {bits}bit", time.perf_counter() - t0)
            return out
        name = self.target.path.name
        for tag, new in ((".F16.", f".{q}."), ("-F16.", f"-{q}."), (".f16.", f".{q.lower()}."),
                         ("-f16.", f"-{q.lower()}."), ("-fp16.", f"-{q.lower()}.")):
            if tag in name:
                sib = self.target.path.with_name(name.replace(tag, new))
                if sib.exists():
                    return sib
        t0 = time.perf_counter()
        out = quantize(self.target.path, q)
        self._note(f"quantize {q}", time.perf_counter() - t0)
        return out

    @staticmethod
    def key(spec: str | None) -> str:
        """The canonical name of a draft spec ("Q8_0" and "q8" are one source), or the path."""
        src = sources.find(spec)
        return src.name if src else str(spec).strip()

    def draft(self, spec: str | None) -> DraftSource | None:
        key = self.key(spec)
        if key in self._drafts:
            return self._drafts[key]
        kind = sources.find(key)
        if kind is not None and kind.name == "none":
            src = None
        elif kind is not None and kind.free:  # copies from the conversation, and from earlier answers
            src = SuffixDraft(self.answers)
        elif kind is not None and kind.name == "sibling":
            if not self.sibling:
                raise InputError("this model family has no sibling draft model")
            src = ModelDraft(self._load(self.sibling), self.target, name=f"sibling {self.sibling.name}")
        elif kind is not None:
            src = ModelDraft(self._load(self.draft_path(kind.qtype)), self.target, name=kind.qtype)
        elif Path(key).expanduser().exists() or os.sep in key or key.endswith(".gguf"):
            if not Path(key).expanduser().exists():
                raise InputError(f"draft model not found: {key}")
            src = ModelDraft(self._load(key), self.target)
        else:
            raise InputError(f"unknown draft {spec!r}: use {sources.names()} or a model path")
        with self._meta:
            self._drafts[key] = src
        return src

    def _calibration_key(self, model) -> str:
        info = self.target.describe()
        parts = [source_id(self.target.path), source_id(model.path) if model else "-",
                 str(getattr(self.target, "n_threads", "")), str(info.get("gpu_layers")), str(info.get("build", "")),
                 platform.node(), platform.processor() or platform.machine()]
        return "|".join(parts)

    def costs(self, spec: str) -> Costs:
        """Costs of the target and this draft on this machine: measured once (a second or
        two, part of loading) and cached on disk per model files and machine."""
        key = self.key(spec)
        if key not in self._costs:
            src = self.draft(spec)
            t0 = time.perf_counter()
            model = src.model if isinstance(src, ModelDraft) else None
            known = self._costs.get("_target")
            if model is None and known is not None:  # lookup drafts for free: target costs suffice
                c = known.target_only()
            else:
                c = self._cached_costs(model, known)
            self._costs[key] = c
            self._costs.setdefault("_target", c.target_only())
            self._note(f"calibrate {key}", time.perf_counter() - t0)
        return self._costs[key]

    def pass_costs(self, ns=PASS_NS) -> dict | None:
        """The target's calibrated pass costs in one-token steps beside the machine's floor for this
        model (``specquant.floor``), once the target has been calibrated; the floor is measured the
        first time (about a second, load time). None before calibration; no floor on a GPU."""
        c = self._costs.get("_target")
        if c is None:
            return None
        out = {"steps": {n: c.T(n) / c.T(1) for n in ns}, "step_ms": c.T(1) * 1e3}
        if not self.target.on_gpu:  # a GPU's floor is not what numpy measures on the CPU
            from . import floor

            if self._floor is None:
                t0 = time.perf_counter()
                self._floor = floor.measure(getattr(self.target, "n_threads", None))
                self._note("measure the floor", time.perf_counter() - t0)
            info = self.target.describe()
            f, size, params = self._floor, info.get("file_bytes") or 0, info.get("n_params") or 0
            if not (size and params):
                return out
            out["floor"] = {**f.to_dict(), "steps": {n: f.pass_steps(n, size, params) for n in ns},
                            "step_ms": f.step_s(size, params) * 1e3}
        return out

    def _cached_costs(self, model, curve: Costs | None = None) -> Costs:
        k = self._calibration_key(model)
        data = _read_calibrations()
        hit = data.get(k)
        if hit and time.time() - hit.get("at", 0) < CALIBRATION_MAX_AGE_S and hit.get("v") == CALIBRATION_VERSION:
            c = Costs.from_dict(hit)
            if plausible(c):
                return c
        meter = busy_meter()
        c = measure_costs(self.target, model, context=self.target.tokenize(CALIBRATION_TEXT), curve=curve)
        busy = meter()
        if busy is not None and busy > BUSY_SHARE:
            self.calibration_note = (f"measured while other programs used {busy:.0%} of the CPUs: used now, "
                                     "not kept (the next load measures again)")
            return c
        data[k] = {**c.to_dict(), "at": time.time(), "v": CALIBRATION_VERSION,
                   "conditions": {"others_cpu_share": busy, "threads": getattr(self.target, "n_threads", None)}}
        _write_calibrations(data)
        return c

    def _forget_calibration(self) -> None:
        """Drop this target's entries from the calibration cache (every draft's: they share its curve)."""
        data = _read_calibrations()
        mine = source_id(self.target.path) + "|"
        kept = {k: v for k, v in data.items() if not k.startswith(mine)}
        if len(kept) != len(data):
            _write_calibrations(kept)

    def auto_sources(self) -> list[str]:
        return sources.auto_sources(self.backend, sibling=bool(self.sibling))

    def route(self, prompt: str, *, policy: str = "auto", tier: str | None = None, draft: str | None = None,
              k=None, analyzer: str = "auto", max_tokens: int = 128, n_prompt: int | None = None):
        """Analyse the prompt and decide the draft source and length. Returns (analysis, decision)."""
        from .complexity import analyze

        try:
            analysis = analyze(prompt, analyzer)
        except ValueError as e:
            raise InputError(str(e)) from None
        if tier is not None and tier not in routing.TIERS:
            raise InputError(f"unknown tier {tier!r}: use low, medium or high")
        try:
            policy = routing.policy_name(policy)
        except ValueError as e:
            raise InputError(str(e)) from None
        t = tier or analysis.tier
        k_over = None if k in (None, "auto") else parse_k(k)
        if draft:
            self.draft(draft)  # validate (and load) before deciding
            draft = self.key(draft)
            names = [draft] if draft != "none" else []
        elif policy == "tier-rule":
            names = [routing.TIER_RULE[t]] if routing.TIER_RULE[t] != "none" else []
        else:
            names = self.auto_sources()
        costs = {s: self.drift.apply(self.costs(s), s) for s in names}  # at the level runs see lately
        grounded = routing.is_grounded(prompt)
        decision = routing.decide(t, costs, policy=policy, grounded=grounded, book=self.book,
                                  draft_override=draft, k_override=k_over, tier_set=tier is not None,
                                  answer=(n_prompt or len(self.prompt_tokens(prompt)), max_tokens))
        return analysis, decision

    def answer(self, prompt: str, *, policy: str = "auto", tier: str | None = None, draft: str | None = None,
               k=None, max_tokens: int = 128, chat: bool = True, stop=None, history: list[dict] | None = None,
               system: str | None = None, **sampling) -> "Answer":
        """The one way a prompt is answered: analyse and route it, plan the run, load and
        calibrate what the plan needs (load time, outside every timing), and return the plan
        with the run's events (lazy). When the run ends, what the draft achieved is recorded
        for later decisions. ``sampling``: temperature, top_k, top_p, seed. ``history``: earlier
        turns of the conversation (the analysis reads the new prompt); ``system``: a system message."""
        t0 = time.perf_counter()
        tokens = self.prompt_tokens(prompt, chat=chat, history=history, system=system)
        check_prompt(self.target, tokens, max_tokens)  # before routing: a prompt too long is said at once
        analysis, decision = self.route(prompt, policy=policy, tier=tier, draft=draft, k=k, max_tokens=max_tokens,
                                        n_prompt=len(tokens))
        plan = decision.run_settings()
        route_s = time.perf_counter() - t0
        if plan["draft"] != "none":
            self.control(plan["draft"], plan["k"])
        events = self.stream(tokens, **plan, max_tokens=max_tokens, chat=chat, stop=stop, **sampling)
        return Answer(analysis, decision, plan, tokens, route_s,
                      _on_done(events, lambda done: self.record(decision, done)))

    def record(self, decision, done) -> None:
        """Learn what the chosen source achieved, for later decisions."""
        if decision.draft not in ("none", "") and done.stats.drafted:
            self.book.record(decision.draft, routing.evidence(decision.draft, decision.tier, decision.grounded),
                             done.stats.tally)

    def control(self, spec: str, k, prior: float | None = None) -> DraftControl:
        k = parse_k(k)
        src = self.draft(spec)
        if k != "auto":
            return DraftControl(k)
        # The router's guess: evidence should overrule it fast. (Prompt lookup judges each
        # copy by its own record of that kind of match instead.)
        belief = {"prior": prior, "prior_weight": RUN_PRIOR_WEIGHT} if prior is not None else {}
        return DraftControl("auto", costs=self.costs(spec), free_draft=src.free, drift=self.drift.copy(),
                            source=self.key(spec), expected=self.expected_answer(), **belief)

    def expected_answer(self) -> int | None:
        """How long answers run here: the median length of the last ANSWERS_KEPT answers (three at
        least), which the controller's loss allowance is a share of (capped by a run's max_tokens)."""
        if len(self._answers) < 3:
            return None
        return int(statistics.median(self._answers))

    # --- runs -------------------------------------------------------------------------------
    def prompt_tokens(self, prompt: str, *, chat: bool = True, system: str | None = None,
                      history: list[dict] | None = None) -> list[int]:
        """The prompt in the model's chat template; ``history``: the conversation's earlier
        messages (``{"role": "user" | "assistant", "content": ...}``)."""
        if not isinstance(prompt, str):
            raise InputError("the prompt must be text")
        if not prompt.strip():
            raise InputError("the prompt is empty")
        if history and not chat:
            raise InputError("a conversation's history needs the chat template")
        for m in history or []:
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
                raise InputError(f"each earlier message needs a role (user or assistant) and a text: {m!r}")
        if chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + list(history or []) \
                + [{"role": "user", "content": prompt}]
            text = self.target.apply_chat_template(msgs)
            return self.target.tokenize(text, add_special=True)
        return self.target.tokenize(prompt)

    def stream(self, prompt: str | list[int], *, draft: str = "none", k=4, max_tokens: int = 128,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = 0,
               chat: bool = True, p_min: float | None = None, prior: float | None = None,
               stop_at_eos: bool = True, stop=None, alone: str | None = None,
               private: bool = False) -> Iterator[Step | Done]:
        """A run's events. ``alone``: a quantized copy (q8, q4, q4_0, ...) decodes plainly as the
        only model, instead of the target: faster where it is, and its answer may differ.
        ``private``: the run neither drafts from earlier answers nor leaves its own for later ones."""
        tokens = prompt if isinstance(prompt, list) else self.prompt_tokens(prompt, chat=chat)
        try:
            sampler = Sampler(temperature, top_k, top_p, seed)
        except ValueError as e:
            raise InputError(str(e)) from None
        if alone:
            if draft not in (None, "none"):
                raise InputError("a quantized model alone runs without a draft")
            return decode(self.alone_model(alone), tokens, sampler=sampler, max_tokens=max_tokens,
                          stop_at_eos=stop_at_eos, stop=stop)
        src = self.draft(draft)
        control = self.control(draft, k, prior) if src is not None else None
        if control is not None and control.k_fixed:
            self.check_exact(control.k_fixed + 1)
        if isinstance(src, ModelDraft):  # this run's settings on its own copy (the model is shared)
            src = copy.copy(src)
            src.p_min = (DEFAULT_P_MIN if control.auto else 0.0) if p_min is None else p_min
        if isinstance(src, SuffixDraft):  # recycled candidates where, at the hit rates measured, some width pays
            src = src.for_run(private=private, judged=control.auto,
                              recycle=control.width_can_pay(SuffixDraft.prior_hits(self.target.trees)))
        events = decode(self.target, tokens, draft=src, control=control, sampler=sampler, max_tokens=max_tokens,
                        stop_at_eos=stop_at_eos, stop=stop)

        def carry(done):  # what the run saw of the costs becomes the engine's
            if done.drift is not None:
                self.drift = done.drift
            self._check_calibration(done)
            self._note_answer(done)
            if not private and self.answers is not None and done.stats.finish_reason in ("stop", "length"):
                self.answers.add(tokens, done.tokens)

        return _on_done(events, carry)

    def forget_answers(self) -> None:
        """Empty the answer cache (a benchmark's runs must not draft from each other's answers)."""
        if self.answers is not None:
            self.answers.clear()

    def _note_answer(self, done) -> None:
        if done.stats.finish_reason in ("stop", "length"):
            self._answers = (self._answers + [done.stats.tokens])[-ANSWERS_KEPT:]

    def _check_calibration(self, done) -> None:
        """A calibration that priced one-token steps higher than runs pay for them (taken while the
        machine was busy) is measured again before the next run, once FASTER_RUNS runs in a row
        stepped faster than it by more than STALE_MARGIN. Slower runs are the level drifting (a busy
        spell, a long context), which ``Drift`` follows: measuring again would not help."""
        c, step = self._costs.get("_target"), done.stats.plain_step_s
        if c is None or step is None:
            return
        self._faster_runs = self._faster_runs + 1 if step * (1 + STALE_MARGIN) < c.T(1) else 0
        if self._faster_runs >= FASTER_RUNS:
            self._faster_runs = 0
            self.stale = (f"runs stepped in {step * 1e3:.1f} ms where the calibration said {c.T(1) * 1e3:.1f} ms: "
                          "measured again")
            self._costs.clear()
            self.drift = Drift()
            self._forget_calibration()

    def check_exact(self, n: int) -> None:
        """Before a run whose verify passes hold up to ``n`` tokens: passes longer than loading checked
        are checked once (outside the run's timing; the model keeps each result); if they differ from
        one-token passes, ``exact`` turns False and a warning says so."""
        if self.exact and not self.target.batch_invariant(upto=n):
            self.exact = False
            print(f"warning: on this build a verify pass of {n} tokens computes differently from one-token "
                  f"passes (up to {VERIFY_CHECKED} tokens it is exact): with draft lengths over "
                  f"{VERIFY_CHECKED - 1} the answer can differ from plain decoding in rare near-ties",
                  file=sys.stderr)

    def alone_model(self, spec: str) -> Model:
        """The quantized copy ``spec`` names (the same loaded model its draft uses; a draft run
        resets it before it starts)."""
        kind = sources.find(spec)
        if kind is None or not kind.qtype:
            raise InputError(f"{spec!r} is not a quantized copy of the target: use q8, q4 or q4_0")
        return self.draft(kind.name).model

    def run(self, prompt, **kw) -> Done:
        return finish(self.stream(prompt, **kw))

    def describe(self) -> dict:
        with self._meta:  # polled by the page while a run may load a draft
            drafts, load_s = list(self._drafts.values()), dict(self.load_s)
        models = [self.target.describe()] + [s.model.describe() for s in drafts if isinstance(s, ModelDraft)]
        return {"backend": self.backend, "label": self.label, "models": models, "load_s": load_s,
                "batch_invariant": self.exact, "on_gpu": self.target.on_gpu,
                "model_set": self.model_set.describe() if self.model_set else None,
                "pass_costs": self.pass_costs() if self._floor is not None or self.target.on_gpu else None,
                "calibration_note": self.calibration_note, "recalibrated": self.stale,
                "exactness": "yes (exact)" if self.exact else GPU_INEXACT_SHORT if self.target.on_gpu
                else BUILD_INEXACT_SHORT}


def _read_calibrations() -> dict:
    """The calibration cache (cache_dir()/calibration.json): key -> costs; empty when there is none."""
    try:
        return json.loads((cache_dir() / "calibration.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_calibrations(data: dict) -> None:
    """Replace the calibration cache whole (a reader never sees half a file)."""
    f = cache_dir() / "calibration.json"
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time


def _on_done(events: Iterator[Step | Done], then) -> Iterator[Step | Done]:
    """Pass a run's events on, calling ``then(done)`` when it ends."""
    for ev in events:
        if isinstance(ev, Done):
            then(ev)
        yield ev


@dataclass
class Answer:
    """A routed answer: what the analysis found, what was decided and why, the run's settings,
    the prompt's tokens, the seconds routing took (part of answering), and the run's events."""

    analysis: object
    decision: routing.Decision
    plan: dict
    tokens: list[int]
    route_s: float
    events: Iterator[Step | Done]


__all__ = ["Engine", "Answer", "InputError", "BackendError", "parse_k"]


INEXACT_WARNING = (
    "warning: on this llama-cpp-python build a batched verify pass computes slightly differently from "
    "one token at a time, so in rare near-ties the speculative answer can differ from plain decoding. "
    "scripts/build_llama_cpp.py builds one that is exact on x86 and ARM CPUs (once, ~15 min):\n"
    "  python scripts/build_llama_cpp.py"
)
# Measured on an NVIDIA H100 (November 28) and H200 (December 4; benchmarks/gpu_check.sh, docs/measurements.md,
# "On a GPU"): stock llama.cpp's CUDA kernels differ between one-token and batched passes at every batch size;
# our build (scripts/build_llama_cpp.py with CMAKE_ARGS="-DGGML_CUDA=on") is exact for passes of up to 16 tokens.
GPU_MEASURED = "on an H100 with stock kernels, 1 of 182 answers to the bundled prompts did"
GPU_INEXACT_WARNING = (
    "warning: on the GPU, this llama-cpp-python build computes a batched verify pass slightly differently from "
    "one token at a time (stock kernels: logits differ by up to ~0.06 on SmolLM2-135M, ~2 on a 7B model), so in "
    f"near-ties the speculative answer can differ from plain decoding: {GPU_MEASURED} (from its 39th token on). "
    "For answers identical to plain decoding, build it with our CUDA edits, exact for verify passes of up to "
    "16 tokens on NVIDIA GPUs (once, ~4 min on 16 cores):\n"
    "  CMAKE_ARGS=\"-DGGML_CUDA=on\" python scripts/build_llama_cpp.py\n"
    "or keep the model on the CPU, where the patched build is exact: SPECQUANT_GPU_LAYERS=0"
)
GPU_INEXACT_SHORT = (f"NO on the GPU — in near-ties an answer can differ from plain decoding ({GPU_MEASURED}); "
                     "build llama-cpp-python with scripts/build_llama_cpp.py and CMAKE_ARGS=\"-DGGML_CUDA=on\", "
                     "or `SPECQUANT_GPU_LAYERS=0` keeps the model on the CPU")
BUILD_INEXACT_SHORT = "NO — build llama-cpp-python with scripts/build_llama_cpp.py"


def inexact_warning(engine) -> str | None:
    """What to tell the user when speculative answers may differ from plain decoding, or None."""
    if engine.exact:
        return None
    return GPU_INEXACT_WARNING if engine.target.on_gpu else INEXACT_WARNING


def warn_if_inexact(engine) -> None:
    text = inexact_warning(engine)
    if text:
        print(text, file=sys.stderr)


def resolve_models(model: str | None = None, *, progress=None, with_sibling: bool = False, log=None,
                   backend: str | None = None):
    """The files for ``model`` (family, ``demo``, Hub repo or local GGUF), downloaded or found in
    the cache: (model set, hardware, backend). Without a model: the default family for this
    hardware, or the demo model when the Hub can't be reached."""
    from . import catalog, hardware, hub

    log = log or (lambda msg: None)
    hw = hardware.detect()
    backend = backend or os.environ.get("SPECQUANT_BACKEND") or hw.backend
    if model is None:
        fam = hardware.default_family(hw)
        try:
            ms = catalog.resolve(fam, progress=progress, with_sibling=with_sibling, backend=backend)
        except hub.HubError as e:
            log(f"{e}\nUsing the demo model instead.")
            ms = catalog.resolve("demo", progress=progress, backend=backend)
    else:
        try:
            fam = catalog.get_family(model)
        except ValueError:
            fam = None
        if fam is not None:
            hardware.check_fits(hw, fam.params_b, fam.name)
        ms = catalog.resolve(model, progress=progress, with_sibling=with_sibling, backend=backend)
    return ms, hw, backend


def load_engine(model: str | None = None, *, n_ctx: int = 4096, n_threads: int | None = None, progress=None,
                with_sibling: bool = False, log=None, backend: str | None = None) -> Engine:
    """The engine for ``model``: its files (``resolve_models``) loaded."""
    ms, hw, backend = resolve_models(model, progress=progress, with_sibling=with_sibling, log=log, backend=backend)
    eng = Engine.from_model_set(ms, n_ctx=n_ctx, n_threads=n_threads, backend=backend)
    eng.hardware = hw
    return eng
