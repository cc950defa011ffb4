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

from backends.base import Model

from .acceptance import Tally
from .control import DraftControl
from .drafts import Draft, DraftSource
from .sampling import Sampler
from .verify import verify, verify_tree


class InputError(ValueError):
    """Bad input from the user (empty prompt, too long, bad settings)."""


class ContextTooLong(InputError):
    """The prompt does not fit the model's context (a served API says so by its own error code)."""


@dataclass
class Step:
    """What one target pass produced."""

    tokens: list[int]  # emitted tokens (EOS and anything past a stop never appear)
    from_draft: list[bool]  # per token: accepted from the draft (True) or the target's own
    pieces: list[str]  # per token text (a character split across tokens shows on its last one)
    drafted: int
    accepted: int
    k: int  # draft tokens verified this step (0: a plain step)
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
    draft_prefill_s: float = 0.0  # the draft's prefill of the prompt (part of wall_s, not of draft_s)
    draft_dropped: str = ""  # why drafting stopped during the run, if it did
    step_times: list[float] = field(default_factory=list)  # seconds of each one-token target pass
    # passes that verified a tree of candidates (token recycling's), and the draft tokens they kept: counted
    # in drafted / accepted, and kept out of ``tally``, the record of copies and model drafts
    tree_passes: int = 0
    tree_accepted: int = 0
    tree_rejections: int = 0

    def record(self, drafted: int, accepted: int, *, draft_s: float, verify_s: float, prefill_s: float = 0.0,
               positions: int | None = None, rows: int | None = None) -> None:
        """One target pass: ``drafted`` tokens verified, ``accepted`` of them kept; a tree's
        ``positions`` (its depth: where its tokens may stand in the answer), and the pass's ``rows``
        where they differ from drafted + 1."""
        if positions is not None:
            self.tree_passes += 1
            self.tree_accepted += accepted
            self.tree_rejections += int(accepted < positions)
        positions = drafted if positions is None else positions
        self.target_passes += 1
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.draft_prefill_s += prefill_s
        self.drafted += drafted
        self.accepted += accepted
        self.rejections += int(accepted < positions)
        if (rows or drafted + 1) == 1:
            self.step_times.append(verify_s)
        grow = positions - len(self.drafted_by_pos)
        if grow > 0:
            self.drafted_by_pos += [0] * grow
            self.accepted_by_pos += [0] * grow
        for i in range(positions):
            self.drafted_by_pos[i] += 1
            self.accepted_by_pos[i] += int(i < accepted)

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
    def tally(self) -> Tally:
        """Draft positions the target examined (each kept one, and the first rejected one of a pass),
        and those it kept: the run's acceptance as every other record counts it (trees of candidates
        apart: a candidate is no copy)."""
        kept = self.accepted - self.tree_accepted
        return Tally(kept + self.rejections - self.tree_rejections, kept)

    @property
    def position_acceptance(self) -> float:
        """Per-position acceptance: kept / draft positions the target examined."""
        t = self.tally
        return t.kept / t.examined if t.examined else 0.0

    @property
    def plain_step_s(self) -> float | None:
        """The median one-token pass of this run (None with fewer than three)."""
        t = sorted(self.step_times)
        return t[len(t) // 2] if len(t) >= 3 else None

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
            plain_step_s=self.plain_step_s,
        )
        del d["step_times"]
        return d


@dataclass
class Done:
    """The last event of a run."""

    tokens: list[int]
    text: str
    stats: Stats
    sources: list[bool]  # per token, from the draft or not
    turns: list["Done"] = field(default_factory=list)  # a conversation's turns (``compare.chain``)
    drift: object = None  # ``control.Drift`` as an adaptive run left it, or None


def check_prompt(target: Model, prompt: list[int], max_tokens: int) -> None:
    """A run's input, checked before it starts (``decode`` checks again as its generator starts)."""
    if not prompt:
        raise InputError("the prompt is empty")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if len(prompt) > target.n_ctx:
        raise ContextTooLong(f"the prompt is {len(prompt)} tokens, longer than the model's context of "
                             f"{target.n_ctx} tokens")


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
    check_prompt(target, prompt, max_tokens)
    sampler = sampler or Sampler()
    control = (control or DraftControl(4)) if draft is not None else None
    st, out = Stats(prompt_tokens=len(prompt)), Output(target, stop_at_eos)

    t0 = time.perf_counter()
    target.reset()
    target.prefill(prompt[:-1])
    last, context = prompt[-1], list(prompt)  # `last` ends the context, not yet in the target's cache
    if draft is not None:
        draft.begin(prompt, sampler)
        control.start(len(prompt), max_tokens)
    st.prefill_s = time.perf_counter() - t0

    pending: list[int] = []  # kept tokens a tree's pass left out of the cache: evaluated again before `last`
    while not st.finish_reason:
        room = target.n_ctx - target.n_past - len(pending) - 1  # cache slots left after `last`
        if stop is not None and stop.is_set() or room < 0:
            st.finish_reason = "stopped" if room >= 0 else "context"
            break
        # 1. draft (never past the answer's end or the context)
        t1 = time.perf_counter()
        d = _propose(draft, control, context, min(room, max_tokens - len(out.tokens) - 1), target.trees)
        # 2. verify [last, d1..dk] (a chain, or a tree) in one target pass, after any tokens pending
        t2 = time.perf_counter()
        n_past, head = target.n_past, pending + [last]
        if d.parents is None or not target.trees:  # a chain (as a tree, from `_propose`: each node's parent before it)
            logits = target.eval(head + d.tokens)[len(pending):]
            t3 = time.perf_counter()
            if d.parents is None:
                n_acc, nxt = verify(sampler, logits, d.tokens, d.probs)
                path = list(range(n_acc))
            else:
                path, nxt = verify_tree(sampler, logits, d.tokens, d.parents)
                n_acc = len(path)
            kept, positions = d.tokens[:n_acc], None if d.parents is None else len(d.tokens)
            # 3. keep `last` and the accepted drafts; the draft source keeps its own cache in step
            target.rollback(n_past + len(head) + n_acc)
            pending = []
        else:
            r = len(head)
            tokens = head + d.tokens
            logits = target.eval_tree(tokens, [-1] + list(range(r - 1)) + [r + p if p >= 0 else r - 1
                                                                          for p in d.parents])[r - 1:]
            t3 = time.perf_counter()
            path, nxt = verify_tree(sampler, logits, d.tokens, d.parents)
            kept, n_acc, positions = [d.tokens[i] for i in path], len(path), _depth(d.parents)
            whole = list(range(r)) + [r + i for i in path]
            pending = [tokens[i] for i in whole[target.keep_path(tokens, whole):]]
        rows = len(head) + len(d.tokens)
        st.record(len(d.tokens), n_acc, draft_s=t2 - t1 - d.prefill_s, verify_s=t3 - t2, prefill_s=d.prefill_s,
                  positions=positions, rows=rows)
        if draft is not None:
            if d.parents is None:
                draft.accepted(len(d.tokens), n_acc)
            else:
                draft.accepted_tree(d, path)
            if draft.learns:
                draft.verified([last] + kept, logits[[0] + [i + 1 for i in path]])
            control.observe(len(d.tokens) if positions is None else positions, n_acc, draft_s=t2 - t1 - d.prefill_s,
                            verify_s=t3 - t2, rows=rows, candidates=positions is not None)
        new = kept + [nxt]
        context += new
        last = nxt
        step = out.emit(new, len(d.tokens), n_acc, max_tokens, st)
        step.t = time.perf_counter() - t0
        if step.tokens:
            st.ttft_s = st.ttft_s or step.t
            yield step

    st.tokens = len(out.tokens)
    st.wall_s = time.perf_counter() - t0
    st.ttft_s = st.ttft_s or st.wall_s
    st.draft_dropped = control.dropped if control is not None else ""
    # what the run learnt of the target's costs goes back with its result (the caller merges it)
    drift = control.drift if control is not None and control.auto else None
    yield Done(out.tokens, target.detokenize(out.tokens), st, out.sources, drift=drift)


def _propose(draft: DraftSource | None, control: DraftControl | None, context: list[int], limit: int,
             trees: bool = False) -> Draft:
    """The tokens to verify this step: what the controller asks for, the source proposes and
    the controller then judges worth a verify pass. A tree goes to a target that verifies trees
    (``Model.trees``); another gets its first chain (each node's first child)."""
    k = min(control.next_k(), limit) if control is not None else 0
    if k <= 0:
        return Draft([])
    d = draft.propose(context, k)
    if d.parents is not None and not trees:
        chain = []
        for i, p in enumerate(d.parents):
            if p == (chain[-1] if chain else -1):
                chain.append(i)
        d = Draft([d.tokens[i] for i in chain], parents=[j - 1 for j in range(len(chain))], hits=d.hits[:1])
    if d.parents is not None:
        w = control.keep_width(d.hits[:k])  # (only a tree of candidates for the next token is judged)
        return Draft(d.tokens[:w], parents=d.parents[:w], hits=d.hits[:w]) if w else Draft([])
    d.tokens = d.tokens[:k]
    d.tokens = d.tokens[: control.keep(len(d.tokens), draft.estimate(d))]
    return d


def _depth(parents: list[int]) -> int:
    """A tree's depth: the longest path from the token before it."""
    depth: list[int] = []
    for p in parents:
        depth.append(depth[p] + 1 if p >= 0 else 1)
    return max(depth, default=0)


class Output:
    """The answer so far: tokens, where each came from, and text without half characters."""

    def __init__(self, target: Model, stop_at_eos: bool):
        self.tokens: list[int] = []
        self.sources: list[bool] = []
        self._detok = target.detokenizer()
        self._eos = target.eos_ids if stop_at_eos else frozenset()

    def emit(self, new: list[int], drafted: int, n_acc: int, max_tokens: int, st: Stats) -> Step:
        """A step's new tokens (the first ``n_acc`` from the draft), cut at EOS or the length limit."""
        step = Step([], [], [], drafted, n_acc, drafted, 0.0)
        for i, tok in enumerate(new):
            if tok in self._eos:
                st.finish_reason = "stop"
                break
            step.tokens.append(tok)
            step.from_draft.append(i < n_acc)
            step.pieces.append(self._detok.add(tok))
            if len(self.tokens) + len(step.tokens) >= max_tokens:
                st.finish_reason = "length"
                break
        self.tokens += step.tokens
        self.sources += step.from_draft
        return step


def finish(events: Iterator[Step | Done]) -> Done:
    """Consume a run's events and return its ``Done``."""
    for ev in events:
        if isinstance(ev, Done):
            return ev
    raise AssertionError("decode ended without Done")  # pragma: no cover


def run(target: Model, prompt: list[int], **kw) -> Done:
    """Run ``decode`` to the end and return its ``Done``."""
    return finish(decode(target, prompt, **kw))
