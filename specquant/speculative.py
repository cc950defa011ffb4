"""The draft/verify loop. One loop serves plain decoding (no draft) and speculative decoding.

Each step: draft up to k tokens d1..dk after ``last``, evaluate ``[last, d1..dk]`` in one
target pass (k+1 rows of logits), keep the longest prefix the target agrees with plus the
target's own next token, and roll the target's cache back past what was rejected. The
draft source keeps its own cache in step (``Model.sync``). Plain decoding is k = 0: one
token per target pass, through the same backend calls and the same sampler.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np

from backends.base import Model

from .control import DraftControl
from .drafts import Draft, DraftSource
from .sampling import Sampler
from .verify import accept_greedy, accept_sampled


class InputError(ValueError):
    """Bad input from the user (empty prompt, too long, bad settings)."""


@dataclass
class Step:
    """What one target pass produced."""

    tokens: list[int]  # emitted tokens (EOS and anything past a stop never appear)
    from_draft: list[bool]  # per token: accepted from the draft (True) or the target's own
    pieces: list[str]  # per token text (a character split across tokens shows on its last one)
    drafted: int
    accepted: int
    k: int  # draft length asked for this step
    t: float  # seconds since the run started

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass
class Stats:
    tokens: int = 0
    wall_s: float = 0.0
    ttft_s: float = 0.0
    prefill_s: float = 0.0
    draft_s: float = 0.0
    verify_s: float = 0.0
    target_passes: int = 0
    drafted: int = 0
    accepted: int = 0
    rejections: int = 0  # target passes that rejected a draft token
    drafted_by_pos: list[int] = field(default_factory=list)
    accepted_by_pos: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second once the prompt is in the cache (llama-bench's "tg" measure)."""
        dt = self.wall_s - self.prefill_s
        return self.tokens / dt if dt > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / self.target_passes if self.target_passes else 0.0

    @property
    def position_acceptance(self) -> float:
        """Per-position acceptance: kept / draft positions the target examined."""
        seen = self.accepted + self.rejections
        return self.accepted / seen if seen else 0.0

    @property
    def acceptance_by_pos(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_by_pos, self.drafted_by_pos)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            tokens_per_s=self.tokens_per_s,
            decode_tokens_per_s=self.decode_tokens_per_s,
            acceptance_rate=self.acceptance_rate,
            tokens_per_pass=self.tokens_per_pass,
            acceptance_by_pos=self.acceptance_by_pos,
            position_acceptance=self.position_acceptance,
        )
        return d


@dataclass
class Done:
    """The last event of a run."""

    tokens: list[int]
    text: str
    stats: Stats
    sources: list[bool]  # per token, from the draft or not


def _check(target: Model, prompt: list[int], max_tokens: int) -> None:
    if not prompt:
        raise InputError("the prompt is empty")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if len(prompt) > target.n_ctx:
        raise InputError(
            f"the prompt is {len(prompt)} tokens, longer than the context of {target.n_ctx} tokens"
        )


def decode(
    target: Model,
    prompt: list[int],
    *,
    draft: DraftSource | None = None,
    control: DraftControl | None = None,
    sampler: Sampler | None = None,
    max_tokens: int = 128,
    stop_at_eos: bool = True,
    stop=None,
) -> Iterator[Step | Done]:
    """Generate up to ``max_tokens`` after ``prompt``; yields a ``Step`` per target pass,
    then ``Done``. Without ``draft`` this is plain decoding. ``stop_at_eos=False`` runs to
    ``max_tokens`` regardless (benchmarks, like llama-bench's tg). ``stop`` (anything with
    ``is_set()``, e.g. a threading.Event) ends the run before the next target pass."""
    _check(target, prompt, max_tokens)
    sampler = sampler or Sampler()
    control = control or DraftControl(4)
    if draft is None:
        control = None
    else:
        control.reset()
    st = Stats(prompt_tokens=len(prompt))
    detok = target.detokenizer()
    out: list[int] = []
    sources: list[bool] = []
    eos = target.eos_ids if stop_at_eos else frozenset()

    t0 = time.perf_counter()
    target.reset()
    target.prefill(prompt[:-1])
    last = prompt[-1]
    context = list(prompt)  # prompt + output; ends with `last`, not yet in the target's cache
    if draft is not None:
        draft.begin(prompt, sampler)
    st.prefill_s = time.perf_counter() - t0

    while True:
        if stop is not None and stop.is_set():
            st.finish_reason = "stopped"
            break
        room = target.n_ctx - target.n_past - 1  # cache slots left after `last`
        if room < 0:
            st.finish_reason = "context"
            break
        k = control.next_k() if control else 0
        k = max(0, min(k, max_tokens - len(out) - 1, room))  # never draft past a stop

        t1 = time.perf_counter()
        d = draft.propose(context, k) if k > 0 else Draft([])
        d.tokens = d.tokens[:k]
        if control is not None and d.tokens:
            d.tokens = d.tokens[: control.keep(d)]
        t2 = time.perf_counter()
        n_past = target.n_past
        logits = target.eval([last] + d.tokens)
        t3 = time.perf_counter()
        if sampler.greedy:
            n_acc, nxt = accept_greedy(np.argmax(logits, axis=1), d.tokens)
        else:
            p = np.stack([sampler.probs(row) for row in logits])
            q = d.probs[: len(d.tokens)] if d.probs is not None else None
            n_acc, nxt = accept_sampled(p, q, d.tokens, sampler.rng)
        target.rollback(n_past + 1 + n_acc)  # keep `last` and the accepted drafts

        st.target_passes += 1
        st.draft_s += t2 - t1
        st.verify_s += t3 - t2
        n_d = len(d.tokens)
        st.drafted += n_d
        st.accepted += n_acc
        st.rejections += int(n_acc < n_d)
        for i in range(n_d):
            if i >= len(st.drafted_by_pos):
                st.drafted_by_pos.append(0)
                st.accepted_by_pos.append(0)
            st.drafted_by_pos[i] += 1
            st.accepted_by_pos[i] += int(i < n_acc)
        if draft is not None:
            draft.accepted(n_d, n_acc)
            control.observe(n_d, n_acc, draft_s=t2 - t1 - d.sync_s, verify_s=t3 - t2,
                            match=d.match, in_prompt=d.in_prompt)

        new = d.tokens[:n_acc] + [nxt]
        step = Step([], [], [], n_d, n_acc, k, 0.0)
        for i, tok in enumerate(new):
            if tok in eos:
                st.finish_reason = "stop"
                break
            step.tokens.append(tok)
            step.from_draft.append(i < n_acc)
            step.pieces.append(detok.add(tok))
            if len(out) + len(step.tokens) >= max_tokens:
                st.finish_reason = "length"
                break
        out += step.tokens
        sources += step.from_draft
        context += new
        last = nxt
        now = time.perf_counter() - t0
        if step.tokens and not st.ttft_s:
            st.ttft_s = now
        step.t = now
        if step.tokens:
            yield step
        if st.finish_reason:
            break

    st.tokens = len(out)
    st.wall_s = time.perf_counter() - t0
    if not st.ttft_s:
        st.ttft_s = st.wall_s
    yield Done(out, target.detokenize(out), st, sources)


def finish(events: Iterator[Step | Done]) -> Done:
    """Consume a run's events and return its ``Done``."""
    for ev in events:
        if isinstance(ev, Done):
            return ev
    raise AssertionError("decode ended without Done")  # pragma: no cover


def run(target: Model, prompt: list[int], **kw) -> Done:
    """Run ``decode`` to the end and return its ``Done``."""
    return finish(decode(target, prompt, **kw))
