"""Draft sources: anything that proposes the next few tokens for the target to verify.

One required method, ``propose(context, k)``; ``begin`` resets per run and ``accepted`` is
told how a proposal fared. A quantized copy of the target, a small sibling model and prompt
lookup (no model at all) are interchangeable.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from backends.base import BackendError, Model

from .sampling import Sampler

#: llama.cpp's own bound for pairing models whose vocabularies differ only in padding
MAX_VOCAB_PADDING = 128


@dataclass
class Draft:
    tokens: list[int]
    probs: np.ndarray | None = None  # [len(tokens), V]: the distributions they were drawn from
    sync_s: float = 0.0  # time spent catching the draft's cache up (not drafting proper)
    match: int = 0  # prompt lookup: length of the n-gram match the tokens were copied after
    in_prompt: bool = False  # prompt lookup: copied from the prompt (not from the answer so far)


class DraftSource(ABC):
    name = "draft"
    kind = "model"  # "model" (costs a forward pass per token) or "lookup" (free)

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        """A new run starts from ``prompt``."""

    @abstractmethod
    def propose(self, context: list[int], k: int) -> Draft:
        """Up to ``k`` tokens likely to follow ``context`` (prompt + output so far)."""

    def accepted(self, n_drafted: int, n_accepted: int) -> None:
        """Feedback after verification."""

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind}


def check_vocab(target: Model, draft: Model) -> None:
    """Two models pair only if they tokenize identically; say plainly when they don't."""
    if abs(target.n_vocab - draft.n_vocab) > MAX_VOCAB_PADDING:
        raise BackendError(
            f"target and draft vocabularies differ: {target.n_vocab} tokens in {target.path.name}, "
            f"{draft.n_vocab} in {draft.path.name}; a draft must share the target's tokenizer"
        )
    n = min(target.n_vocab, draft.n_vocab)
    if target.n_vocab == draft.n_vocab and target.vocab_fingerprint() == draft.vocab_fingerprint():
        return
    for t in range(n):
        if target.piece_special(t) != draft.piece_special(t):
            raise BackendError(
                f"target and draft vocabularies differ: token {t} is {target.piece_special(t)!r} in "
                f"{target.path.name} but {draft.piece_special(t)!r} in {draft.path.name}; "
                "a draft must share the target's tokenizer"
            )


class ModelDraft(DraftSource):
    """A smaller or quantized model with the same vocabulary drafts autoregressively.

    p_min: stop drafting when the draft's top probability falls below it (0 = never).
    """

    kind = "model"

    def __init__(self, model: Model, target: Model, *, p_min: float = 0.0, name: str | None = None):
        check_vocab(target, model)
        self.model = model
        self.n_vocab = target.n_vocab
        self.p_min = p_min
        self.name = name or model.path.name
        self._eos = target.eos_ids
        self._sampler = Sampler()

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        self._sampler = sampler.spawn()
        self.model.reset()

    def _fit(self, p: np.ndarray) -> np.ndarray:
        if p.size == self.n_vocab:
            return p
        out = np.zeros(self.n_vocab)
        m = min(p.size, self.n_vocab)
        out[:m] = p[:m]
        return out / out.sum()

    def propose(self, context: list[int], k: int) -> Draft:
        t0 = time.perf_counter()
        logits = self.model.sync(context)
        # Catching up on more than the usual one or two new tokens (after a pause in
        # drafting) is not the price of drafting; report it apart.
        sync_s = time.perf_counter() - t0 if self.model.last_sync_n > 2 else 0.0
        s = self._sampler
        tokens: list[int] = []
        probs: list[np.ndarray] = []
        for i in range(k):
            if s.greedy:
                t = int(np.argmax(logits))
                if self.p_min > 0 and top_probability(logits, t) < self.p_min:
                    break
            else:
                q = self._fit(s.probs(logits))
                if self.p_min > 0 and q.max() < self.p_min:
                    break
                t = s.draw(q)
                probs.append(q)
            tokens.append(t)
            if t in self._eos or i == k - 1:
                break
            logits = self.model.eval([t])[0]
        return Draft(tokens, np.array(probs) if probs else None, sync_s)

    def describe(self) -> dict:
        d = super().describe()
        d.update(path=str(self.model.path), p_min=self.p_min)
        return d


def top_probability(logits: np.ndarray, top: int | None = None) -> float:
    """Softmax probability of the top token (``top``, when known, is its index)."""
    t = int(np.argmax(logits)) if top is None else top
    return float(1.0 / np.exp((logits - logits[t]).astype(np.float64)).sum())


class PromptLookup(DraftSource):
    """Drafts by copying what followed the latest earlier occurrence of the context's last
    n-gram (n from ``ngram_max`` down to ``ngram_min``), in the prompt or the output so far.
    Costs no model pass; wins on prompts that quote their material (summarise, edit, rewrite).
    """

    name = "prompt lookup"
    kind = "lookup"

    def __init__(self, ngram_max: int = 5, ngram_min: int = 2):
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {ngram_min}, {ngram_max}")
        self.ngram_max, self.ngram_min = ngram_max, ngram_min
        self.begin([], Sampler())

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        self._prompt_len = len(prompt)
        self._clear()

    def _clear(self) -> None:
        # index[n][ngram] = end position of that n-gram's latest occurrence that has a successor
        self._index: list[dict[tuple, int]] = [{} for _ in range(self.ngram_max + 1)]
        self._indexed = 0

    def _extend(self, ctx: list[int]) -> None:
        if len(ctx) < self._indexed:
            self._clear()
        for e in range(max(self._indexed, 1), len(ctx)):
            for n in range(1, min(self.ngram_max, e) + 1):
                self._index[n][tuple(ctx[e - n : e])] = e
        self._indexed = max(self._indexed, len(ctx))

    def propose(self, context: list[int], k: int) -> Draft:
        self._extend(context)
        L = len(context)
        for n in range(min(self.ngram_max, L), self.ngram_min - 1, -1):
            e = self._index[n].get(tuple(context[L - n :]))
            if e is not None:
                return Draft(context[e : e + k], match=n, in_prompt=e < self._prompt_len)
        return Draft([])

    def describe(self) -> dict:
        d = super().describe()
        d.update(ngram_max=self.ngram_max, ngram_min=self.ngram_min)
        return d
