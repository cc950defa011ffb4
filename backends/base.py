"""The small interface every inference engine offers to the speculative loop.

A loaded model holds one KV cache (one sequence). The loop only ever needs:
``prefill`` / ``eval`` (append tokens, get logits), ``rollback`` (drop KV entries past
``n_keep``), tokenization, and a few facts (vocabulary size, EOS ids, context size).
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class BackendError(RuntimeError):
    """A model could not be loaded or used; the message says why in plain words."""


class Detokenizer:
    """Turns a stream of token byte-pieces into text without ever showing half a character.

    A UTF-8 character split across two tokens is held back until its last byte arrives.
    """

    def __init__(self, piece_bytes):
        self._piece_bytes = piece_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return self._decoder.decode(self._piece_bytes(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


# Batch sizes the exactness check covers when a model loads: every verify pass that policy auto
# and k = auto make (drafts of up to 8 tokens, control.DraftControl's k_max); a fixed draft length
# past that is checked when a run asks for it (Engine.check_exact).
VERIFY_CHECKED = 9


class Model(ABC):
    """One loaded model with its own KV cache (a single sequence)."""

    backend: str = "?"
    path: Path
    n_vocab: int
    n_ctx: int
    eos_ids: frozenset[int]
    on_gpu: bool = False  # the llama.cpp backend: True with layers offloaded to a GPU
    trees: bool = False  # verifies a tree of drafts in one exact pass (``eval_tree``, ``keep_path``)

    def __init__(self) -> None:
        self.tokens: list[int] = []  # what the KV cache holds, position by position

    # --- text -------------------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    @abstractmethod
    def piece(self, token: int) -> bytes:
        """The raw bytes one token stands for (special tokens render as empty)."""

    @abstractmethod
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str: ...

    def detokenizer(self) -> Detokenizer:
        return Detokenizer(self.piece)

    def detokenize(self, tokens) -> str:
        d = self.detokenizer()
        return "".join(d.add(t) for t in tokens) + d.flush()

    def vocab_fingerprint(self) -> tuple[int, str]:
        """(vocabulary size, hash of every token's bytes): two models pair only if these match."""
        h = hashlib.sha256()
        for t in range(self.n_vocab):
            h.update(self.piece_special(t))
            h.update(b"\0")
        return self.n_vocab, h.hexdigest()

    def piece_special(self, token: int) -> bytes:
        return self.piece(token)

    # --- evaluation --------------------------------------------------------------------
    @abstractmethod
    def eval(self, tokens: list[int]) -> np.ndarray:
        """Append ``tokens`` to the cache; return float32 logits [len(tokens), n_vocab]."""

    @abstractmethod
    def prefill(self, tokens: list[int]) -> np.ndarray | None:
        """Append ``tokens``; return only the last position's logits (None for no tokens)."""

    def eval_tree(self, tokens: list[int], parents: list[int]) -> np.ndarray:
        """A tree of tokens in one pass (backends with ``trees``; see the llama.cpp backend)."""
        raise NotImplementedError(f"{self.backend} verifies chains of drafts only")

    def keep_path(self, tokens: list[int], path: list[int]) -> int:
        """After ``eval_tree``: keep a root-first path's cached prefix; returns its length."""
        raise NotImplementedError(f"{self.backend} verifies chains of drafts only")

    @abstractmethod
    def rollback(self, n_keep: int) -> None:
        """Drop every cache entry past the first ``n_keep`` positions."""

    def reset(self) -> None:
        self.rollback(0)

    # --- checks every backend makes ------------------------------------------------------------
    def check_room(self, n: int) -> None:
        """Appending ``n`` tokens must fit the context."""
        if len(self.tokens) + n > self.n_ctx:
            raise BackendError(f"context full: {len(self.tokens)} + {n} tokens exceed the context of {self.n_ctx}")

    def check_rollback(self, n_keep: int) -> int:
        """How many cache entries a rollback to ``n_keep`` drops (it must be within the cache)."""
        if n_keep < 0 or n_keep > len(self.tokens):
            raise ValueError(f"rollback to {n_keep} outside 0..{len(self.tokens)}")
        return len(self.tokens) - n_keep

    @staticmethod
    def plain_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
        """A model without a chat template (a base model): the turns as plain text."""
        text = "\n\n".join(m["content"] for m in messages)
        return text + ("\n\n" if add_generation_prompt else "")

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def sync(self, context: list[int]) -> np.ndarray | None:
        """Make the cache hold ``context`` with the fewest evaluations: keep the common
        prefix, roll back the rest, prefill the missing tail. Returns the last logits, or
        None when nothing had to be evaluated."""
        n = 0
        limit = min(len(self.tokens), len(context))
        while n < limit and self.tokens[n] == context[n]:
            n += 1
        if n == len(context) and n > 0:
            # Everything is cached but we need logits for the last token: re-evaluate it.
            n -= 1
        if n < len(self.tokens):
            self.rollback(n)
        self.last_sync_n = len(context) - n
        return self.prefill(context[n:])

    def batch_invariant(self, probe: list[int] | None = None, *, upto: int = VERIFY_CHECKED) -> bool:
        """Whether batched passes of up to ``upto`` tokens give bit-identical logits to one-token
        passes.

        Exact greedy equivalence of speculative and plain decoding rests on it: the target
        verifies drafts in batches while plain decoding goes one token at a time. A build may
        switch kernels at some batch size (stock llama.cpp at 2 tokens, its ARM float16 path at
        8), so batches of several sizes up to ``upto`` are compared, row by row, with one-token
        passes over the same tokens (``probe``: ``upto`` + 2 tokens, the first two a prefix).
        Results are kept (``exactness``); the cache is left empty.
        """
        if probe is not None:
            return self._same_logits(probe)
        known = self.exactness()
        if any(ok and n >= upto for n, ok in known.items()):  # a check covers every size up to its own
            return True
        if any(not ok and n <= upto for n, ok in known.items()):
            return False
        known[upto] = self._same_logits(self.exactness_probe(upto))
        return known[upto]

    def exactness_probe(self, upto: int) -> list[int]:
        """The tokens the exactness check passes: a 2-token prefix, then ``upto`` more."""
        return [(t * 7919 + 17) % self.n_vocab for t in range(upto + 2)]

    def batches_against_steps(self, probe: list[int], sizes, prefix: int = 2):
        """For each batch size n: (n, the logits of one pass over ``probe[prefix:prefix+n]``, those of n
        one-token passes over the same tokens), all after ``probe[:prefix]`` (2 tokens, or a long context
        to check passes deep in the cache). A generator; the cache is left empty when it is exhausted or
        closed."""
        self.reset()
        try:
            self.prefill(probe[:prefix])
            single = np.concatenate([self.eval([t]) for t in probe[prefix:]])
            for n in sizes:
                self.rollback(prefix)
                yield n, self.eval(probe[prefix : prefix + n]), single[:n]
        finally:
            self.reset()

    def exactness(self) -> dict[int, bool]:
        """The exactness checks made so far: batch size checked -> passed (a backend whose models
        share weights shares them)."""
        return self.__dict__.setdefault("_exactness", {})

    def _same_logits(self, probe: list[int]) -> bool:
        upto = len(probe) - 2
        sizes = sorted({n for n in (2, 3, 5, 9, 17) if n < upto} | {upto})
        with contextlib.closing(self.batches_against_steps(probe, sizes)) as pairs:  # stops at the first miss
            return all(np.array_equal(batch, single) for _, batch, single in pairs)

    def describe(self) -> dict:
        return {"backend": self.backend, "path": str(self.path), "n_vocab": self.n_vocab, "n_ctx": self.n_ctx}

    def close(self) -> None:  # pragma: no cover - backends override
        pass
