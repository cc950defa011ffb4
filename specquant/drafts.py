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

from .acceptance import MATCH_PRIOR_WEIGHT, Tally
from .sampling import Sampler

#: llama.cpp's own bound for pairing models whose vocabularies differ only in padding
MAX_VOCAB_PADDING = 128


@dataclass
class Draft:
    tokens: list[int]
    probs: np.ndarray | None = None  # [len(tokens), V]: the distributions they were drawn from
    prefill_s: float = 0.0  # of the time taken: the draft's first prefill of the prompt in this run
    # A tree instead of a chain: tokens[i] follows tokens[parents[i]] (-1: the token before the draft),
    # parents before children; hits[w - 1]: the source's estimate that the pass keeps one of the first w
    # (so the first w alone are a tree too). None: a chain.
    parents: list[int] | None = None
    hits: list[float] | None = None


class DraftSource(ABC):
    name = "draft"
    kind = "model"  # "model" (costs a forward pass per token) or "lookup" (free)

    @property
    def free(self) -> bool:
        """Proposing costs no model pass: propose long, let the controller verify what pays."""
        return self.kind == "lookup"

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        """A new run starts from ``prompt``."""

    @abstractmethod
    def propose(self, context: list[int], k: int) -> Draft:
        """Up to ``k`` tokens likely to follow ``context`` (prompt + output so far)."""

    def estimate(self, draft: Draft) -> tuple[float, float, int] | None:
        """This source's own belief about its last proposal, if it has one: acceptance of the
        first token, of each later one given its predecessors were kept, and how many
        proposals that belief rests on. None: the run's acceptance will do."""
        return None

    def accepted(self, n_drafted: int, n_accepted: int) -> None:
        """Feedback after verification of the last proposal."""

    def accepted_tree(self, draft: Draft, path: list[int]) -> None:
        """Feedback after verification of a tree: the nodes kept, root first."""

    learns = False  # wants ``verified``: the target's rows after each kept token

    def verified(self, tokens: list[int], rows: np.ndarray) -> None:
        """The target's logits after each of ``tokens``, verified this pass (sources that learn from the
        target's own predictions, like token recycling)."""

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
        self._vocab_cut = self.n_vocab if model.n_vocab > self.n_vocab else None

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        self._sampler = sampler.spawn()
        self.model.reset()
        self._vocab_cut = self.n_vocab if self.model.n_vocab > self.n_vocab else None

    def _fit(self, p: np.ndarray) -> np.ndarray:
        if p.size == self.n_vocab:
            return p
        out = np.zeros(self.n_vocab)
        m = min(p.size, self.n_vocab)
        out[:m] = p[:m]
        return out / out.sum()

    def propose(self, context: list[int], k: int) -> Draft:
        first = self.model.n_past == 0  # the run's first proposal prefills the prompt
        k = min(k, self.model.n_ctx - len(context))  # a draft with a shorter context stops drafting
        if k <= 0:
            return Draft([])
        t0 = time.perf_counter()
        logits = self.model.sync(context)
        prefill_s = time.perf_counter() - t0 if first else 0.0
        s = self._sampler
        tokens: list[int] = []
        probs: list[np.ndarray] = []
        for i in range(k):
            logits = logits[: self._vocab_cut]  # never propose an id the target doesn't have
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
        return Draft(tokens, np.array(probs) if probs else None, prefill_s)

    def describe(self) -> dict:
        d = super().describe()
        d.update(path=str(self.model.path), p_min=self.p_min)
        return d


def top_probability(logits: np.ndarray, top: int | None = None) -> float:
    """Softmax probability of the top token (``top``, when known, is its index)."""
    t = int(np.argmax(logits)) if top is None else top
    return float(1.0 / np.exp((logits - logits[t]).astype(np.float64)).sum())


# Prompt lookup's proposals are judged by the n-gram match they were copied after: the longer the
# match, the likelier a passage is being copied; a two-token match is often a common phrase that
# goes on differently, more so in the answer so far than in the prompt's material. Measured with
# greedy SmolLM2-135M over the bundled prompts (64-token answers, drafts of up to 8): how often
# the first copied token was the target's own, and each later one given the ones before were,
# by match length (5 = 5 or more) and by where the match was (prompt / answer so far):
#   2: 59% then 72% / 39% then 66%      3: 62% then 79% / 64% then 67%
#   4: 65% then 86% / 67% then 68%      5: 90% then 91% / 78% then 82%
# They are each kind's prior, worth acceptance.MATCH_PRIOR_WEIGHT proposals; a run learns from its own.
MATCH_PRIOR = {(1, True): (0.20, 0.5), (1, False): (0.24, 0.5), (2, True): (0.59, 0.72), (2, False): (0.39, 0.66),
               (3, True): (0.62, 0.79), (3, False): (0.64, 0.67), (4, True): (0.65, 0.86), (4, False): (0.67, 0.68),
               (5, True): (0.90, 0.91), (5, False): (0.78, 0.82)}
MATCH_LONG = 5  # longer matches count as this long


class PromptLookup(DraftSource):
    """Drafts by copying what followed the latest earlier occurrence of the context's last
    n-gram (n from ``ngram_max`` down to ``ngram_min``), in the prompt or the output so far.
    Costs no model pass; wins on prompts that quote their material (summarise, edit, rewrite).
    Keeps a record per kind of match (its length, and whether it was in the prompt) of how
    its copies fared in this run: ``estimate`` says how far to trust the last one.
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
        # kind of match -> (its copies' first tokens, and their later tokens given the ones before were kept)
        self._record: dict[tuple, tuple[Tally, Tally]] = {}
        self._last: tuple[int, bool] | None = None

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

    def match(self, context: list[int]) -> tuple[int, int]:
        """(n, end): the longest n-gram ending the context that occurred before, and where
        that occurrence ended; (0, -1) when none did."""
        self._extend(context)
        L = len(context)
        for n in range(min(self.ngram_max, L), self.ngram_min - 1, -1):
            e = self._index[n].get(tuple(context[L - n :]))
            if e is not None:
                return n, e
        return 0, -1

    def propose(self, context: list[int], k: int) -> Draft:
        n, e = self.match(context)
        self._last = (min(n, MATCH_LONG), e < self._prompt_len) if n else None
        return Draft(context[e : e + k] if n else [])

    def prior(self, kind: tuple) -> tuple[float, float]:
        """A kind of match's acceptance before any copy of it was verified: first token, later ones."""
        return MATCH_PRIOR[kind]

    def acceptance(self, kind: tuple) -> tuple[float, float, int]:
        """(first token's acceptance, each later one's, proposals seen) for a kind of match."""
        first, later = self._record.get(kind) or (Tally(), Tally())
        p1, pc = self.prior(kind)
        return (first.estimate(p1, MATCH_PRIOR_WEIGHT), later.estimate(pc, MATCH_PRIOR_WEIGHT), first.examined)

    def estimate(self, draft: Draft) -> tuple[float, float, int] | None:
        return self.acceptance(self._last) if self._last and draft.tokens else None

    def accepted(self, n_drafted: int, n_accepted: int) -> None:
        if not (n_drafted and self._last):
            return
        first, later = self._record.setdefault(self._last, (Tally(), Tally()))
        first.add(1, min(n_accepted, 1))
        if n_accepted:
            later.add(n_drafted - 1, n_accepted - 1)

    def describe(self) -> dict:
        d = super().describe()
        d.update(ngram_max=self.ngram_max, ngram_min=self.ngram_min)
        return d
