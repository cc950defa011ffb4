"""Suffix drafting: copy what followed the longest match of the text so far, in the conversation and in
SpecQuant's own earlier answers (SuffixDecoding, arXiv 2411.04975).

In the context (the prompt with the chat so far, and the answer so far) ``SuffixDraft`` copies as prompt
lookup does, after the latest occurrence of the longest match (up to ``MAX_MATCH`` tokens): replayed along
SmolLM2's greedy answers to the bundled prompts, walking the continuation that most occurrences agree on
kept fewer tokens per pass than the latest occurrence's (1.24 against 1.29 at k = 4;
benchmarks/draft_replay.py), so recency wins there. Where an ``AnswerCache`` of earlier answers holds a
longer match (a question asked again, a conversation that repeats an earlier answer's passage), it walks
the continuation those answers agree on: at each position the most frequent next token, while the running
product of its share of the occurrences still in play stays at or above ``MIN_PROB``. So it proposes what
prompt lookup would, and more where earlier answers repeat. Linear drafts (one chain), verified exactly
like any other draft.

The source keeps prompt lookup's record per kind of match (how long, and where: the prompt, the answer so
far, or the cache), so the controller judges each proposal by how that kind fared in this run; a copy from
the cache is trusted no more than its share of the occurrences.
"""
from __future__ import annotations

import copy
import threading
from collections import deque

import numpy as np

from .acceptance import MATCH_PRIOR_WEIGHT, Tally
from .drafts import MATCH_LONG, MATCH_PRIOR, Draft, PromptLookup
from .sampling import Sampler

MAX_MATCH = 8  # the longest match looked for; longer ones count as this long (SuffixDecoding's tree goes
#                deeper, but past a few tokens a match's continuation is already settled)
MIN_MATCH = 2  # a one-token match is a common word: its continuations are noise
# The shortest match in the context whose copy is proposed where each copy is judged by its kind's record
# (k = auto; a fixed k verifies every proposal, and gets MIN_MATCH). One-token matches (1; greedy, they are
# what token recycling's chain proposes: the token that followed this one last time) were measured and left
# out: replayed along SmolLM2's greedy answers to the bundled prompts (benchmarks/draft_replay.py) they
# raise tokens per pass at k = 4 from 1.29 to 1.39 if every copy is verified, but their first token is
# kept about 15-22% of the time, below the controller's bar at this machine's T(2) of 1.02-1.05, so live
# (benchmarks/one_token_matches.py, 2-core Zen 4, lookup k = auto, 3 rounds) they were hardly ever bet on:
# bundled 1.131x against 1.130x, held-out 1.095x against 1.126x, tokens per pass 1.29 / 1.32 against
# 1.29 / 1.31. Set to 1 to measure them again on a machine whose 2-token pass costs one step.
JUDGED_MIN_MATCH = MIN_MATCH
MIN_PROB = 0.1  # SuffixDecoding's default min_token_prob: stop where the walk's share falls below it
RECENT = 64  # occurrences of one n-gram kept per index entry (the latest), bounding a step's work
CACHE_TOKENS = 32768  # the answer cache's bound, in tokens (prompt tails included); oldest answers go first
PROMPT_TAIL = 24  # tokens of the prompt kept before each cached answer: what a repeated question matches
# A copy of an earlier answer behaves like a copy from the prompt (a passage written before); the run's
# record corrects this prior after a few proposals.
CACHE_PRIOR = {n: MATCH_PRIOR[(n, True)] for n in range(1, MATCH_LONG + 1)}
# Token recycling (arXiv 2408.08696) where nothing matches: the target's top WIDTH tokens after the last
# token, as the target gave them the last time a verified row followed it, verified side by side in one
# pass of up to WIDTH + 1 tokens (a tree of candidates for the next token; a backend that verifies chains
# alone gets the first). RECYCLED_PRIOR[w - 1]: the chance one of the first w is the target's next token,
# before a run has tried any: replayed along SmolLM2's greedy answers to the bundled prompts
# (benchmarks/draft_replay.py, ``suffix+recycled``, k = 3), 23 / 33 / 41% with the table learnt in the run
# alone, 21 / 29 / 34% learnt along the other answers too (more proposals, harder ones).
WIDTH = 3
RECYCLED_PRIOR = (0.22, 0.31, 0.37)
# Where recycled candidates are tried: None, in judged runs where the engine expects some width to pay at
# these hit rates (``DraftControl.width_can_pay``); True, in every judged run; False, never
# (benchmarks/recycled_candidates.py sets each).
RECYCLE: bool | None = None


class _Index:
    """Where each n-gram (n = MIN_MATCH..MAX_MATCH) of some token sequences ends: ``ends[n][gram]`` is a
    deque of (sequence, end) with the latest last."""

    def __init__(self):
        self.ends: list[dict[tuple, deque]] = [{} for _ in range(MAX_MATCH + 1)]

    def add(self, seq: list[int], start: int, stop: int, ref) -> None:
        """Index the n-grams of ``seq`` ending at positions start..stop-1 (each followed by a token)."""
        for e in range(max(start, 1), stop):
            for n in range(MIN_MATCH, min(MAX_MATCH, e) + 1):
                q = self.ends[n].setdefault(tuple(seq[e - n:e]), deque(maxlen=RECENT))
                q.append((ref, e))

    def find(self, tail: list[int]) -> tuple[int, list]:
        """The longest n-gram ending ``tail`` that was indexed, and its occurrences."""
        for n in range(min(MAX_MATCH, len(tail)), MIN_MATCH - 1, -1):
            occ = self.ends[n].get(tuple(tail[-n:]))
            if occ:
                return n, list(occ)
        return 0, []


def top_tokens(row: np.ndarray, n: int) -> tuple[int, ...]:
    """The ``n`` highest of a row of logits, highest first (argmax n times: ~50x cheaper than a partition
    of a 49k vocabulary; ``row`` is changed and restored)."""
    out, saved = [], []
    for _ in range(n):
        i = int(row.argmax())
        out.append(i)
        saved.append(row[i])
        row[i] = -np.inf
    row[out] = saved
    return tuple(out)


class Recycled:
    """Token recycling's table: for each token, the target's top WIDTH tokens after it, the last time a
    verified row followed it. At most one entry per token of the vocabulary."""

    def __init__(self):
        self._next: dict[int, tuple[int, ...]] = {}

    def learn(self, tokens: list[int], rows: np.ndarray) -> None:
        for t, row in zip(tokens, rows):
            self._next[int(t)] = top_tokens(row, WIDTH)

    def update(self, tops) -> None:
        """Entries learnt elsewhere: (token, its top tokens) pairs."""
        self._next.update(tops)

    def get(self, token: int) -> tuple[int, ...]:
        return self._next.get(token, ())

    def clear(self) -> None:
        self._next = {}

    def __len__(self) -> int:
        return len(self._next)


class AnswerCache:
    """SpecQuant's earlier answers in this process, for one model: each as the prompt's last PROMPT_TAIL
    tokens and the answer, at most ``max_tokens`` tokens in all, the oldest dropped first (FIFO). Shared by
    the runs that are given it; a run that asks for privacy gets none, and a served page shares one across
    its visitors only when configured to (``SPECQUANT_ANSWER_CACHE=shared``). Its ``recycled`` table, learnt
    from the target's rows in those runs, follows the same rules and is cleared with it."""

    def __init__(self, max_tokens: int = CACHE_TOKENS):
        self.max_tokens = max_tokens
        self._docs: deque[list[int]] = deque()
        self._live: set[int] = set()  # ids of the documents kept; the index may still name dropped ones
        self._tokens = 0
        self._dropped = 0  # tokens of dropped documents the index still names
        self._lock = threading.Lock()
        self._index = _Index()
        self.recycled = Recycled()

    def add(self, prompt: list[int], answer: list[int]) -> None:
        doc = list(prompt[-PROMPT_TAIL:]) + list(answer)
        if not answer or len(doc) > self.max_tokens:
            return
        with self._lock:
            self._docs.append(doc)
            self._live.add(id(doc))
            self._tokens += len(doc)
            self._index.add(doc, 1, len(doc), doc)
            while self._tokens > self.max_tokens:
                old = self._docs.popleft()
                self._live.discard(id(old))
                self._tokens -= len(old)
                self._dropped += len(old)
            if self._dropped > self.max_tokens:  # amortized: the index forgets dropped answers now and then
                self._index = _Index()
                for d in self._docs:
                    self._index.add(d, 1, len(d), d)
                self._dropped = 0

    def clear(self) -> None:
        with self._lock:
            self._docs.clear()
            self._live.clear()
            self._tokens = self._dropped = 0
            self._index = _Index()
            self.recycled.clear()

    @property
    def tokens(self) -> int:
        return self._tokens

    def __len__(self) -> int:
        return len(self._docs)

    def find(self, tail: list[int]) -> tuple[int, list]:
        with self._lock:
            for n in range(min(MAX_MATCH, len(tail)), MIN_MATCH - 1, -1):
                occ = [(d, e) for d, e in self._index.ends[n].get(tuple(tail[-n:]), ()) if id(d) in self._live]
                if occ:
                    return n, occ
        return 0, []


def walk(occurrences: list, k: int) -> tuple[list[int], list[float]]:
    """The continuation the occurrences agree on: at each position the most frequent next token (ties:
    the latest occurrence's), while the running product of its share stays >= MIN_PROB. Returns the
    tokens and each one's share among the occurrences still in play."""
    alive = list(occurrences)
    tokens: list[int] = []
    shares: list[float] = []
    prob = 1.0
    for d in range(k):
        counts: dict[int, int] = {}
        last: dict[int, int] = {}
        nxt = [(seq, e) for seq, e in alive if e + d < len(seq)]
        for i, (seq, e) in enumerate(nxt):
            t = seq[e + d]
            counts[t] = counts.get(t, 0) + 1
            last[t] = i
        if not counts:
            break
        t = max(counts, key=lambda x: (counts[x], last[x]))
        share = counts[t] / len(nxt)
        prob *= share
        if prob < MIN_PROB:
            break
        tokens.append(t)
        shares.append(share)
        alive = [(seq, e) for seq, e in nxt if seq[e + d] == t]
    return tokens, shares


class SuffixDraft(PromptLookup):
    """Drafts by suffix matching over the context and an ``AnswerCache`` (None: the context only): the
    engine's prompt lookup ("lookup", alias "suffix"). When a run ends, the engine adds its answer to the
    cache."""

    name = "prompt lookup"
    kind = "lookup"

    def __init__(self, cache: AnswerCache | None = None):
        self.cache = cache
        self.recycle = False  # token recycling where nothing matches (judged runs: ``for_run``)
        super().__init__(ngram_max=MAX_MATCH, ngram_min=MIN_MATCH)

    def for_run(self, *, private: bool, judged: bool, recycle: bool | None = None) -> "SuffixDraft":
        """This source as one run uses it: ``private``, reading and feeding no cache; ``judged``, each
        proposal judged by its kind's record (k = auto), so matches as short as ``JUDGED_MIN_MATCH`` are
        proposed (a fixed k gets ``MIN_MATCH``), and recycled candidates where nothing matches (a fixed k
        copies alone; ``recycle`` False: none in a judged run either, where they cannot pay; see RECYCLE).
        A copy where that differs from the engine's shared instance."""
        n_min = JUDGED_MIN_MATCH if judged else MIN_MATCH
        recycle = judged and (recycle is not False if RECYCLE is None else RECYCLE)
        if not private and n_min == self.ngram_min and recycle == self.recycle:
            return self
        src = copy.copy(self)
        src.ngram_min = n_min
        src.recycle = recycle
        if private:
            src.cache = None
        return src

    def begin(self, prompt: list[int], sampler: Sampler) -> None:
        super().begin(prompt, sampler)
        self._shares: list[float] = []
        # a private run learns a table of its own; another, the cache's (what earlier answers taught)
        self.recycled = self.cache.recycled if self.cache is not None else Recycled()
        self._hits = [Tally() for _ in range(WIDTH)]  # recycled proposals: kept within the first w, by w

    @property
    def learns(self) -> bool:
        return self.recycle

    def propose(self, context: list[int], k: int) -> Draft:
        n, e = self.match(context)  # in the context: prompt lookup's copy of the latest occurrence
        m, cached = self.cache.find(context) if self.cache is not None else (0, [])
        self._shares = []
        if m > n:  # a longer match in earlier answers: the continuation they agree on
            tokens, self._shares = walk(cached, k)
            self._last = (min(m, MATCH_LONG), "cache") if tokens else None
            return Draft(tokens)
        self._last = (min(n, MATCH_LONG), e < self._prompt_len) if n else None
        if n or not self.recycle:
            return Draft(context[e : e + k] if n else [])
        cands = list(self.recycled.get(context[-1])[:k])
        return Draft(cands, parents=[-1] * len(cands), hits=self.hit_rates()[: len(cands)]) if cands else Draft([])

    @staticmethod
    def prior_hits(trees: bool) -> list[float]:
        """The hit chances a run starts from, for the widths a target verifies (one candidate where it
        verifies chains alone): what the engine asks the controller about before trying any."""
        return list(RECYCLED_PRIOR[: WIDTH if trees else 1])

    def hit_rates(self) -> list[float]:
        """For w = 1..WIDTH: the chance a recycled proposal's first w candidates hold the next token,
        from this run's record and the prior."""
        return [t.estimate(p, MATCH_PRIOR_WEIGHT) for t, p in zip(self._hits, RECYCLED_PRIOR)]

    def accepted_tree(self, draft: Draft, path: list[int]) -> None:
        # one candidate kept at most (they are siblings): what each narrower proposal would have kept too
        for w in range(1, len(draft.tokens) + 1):
            self._hits[w - 1].add(1, int(bool(path) and path[0] < w))

    def verified(self, tokens: list[int], rows) -> None:
        self.recycled.learn(tokens, rows)

    def prior(self, kind: tuple) -> tuple[float, float]:
        n, where = kind
        return CACHE_PRIOR[n] if where == "cache" else MATCH_PRIOR[kind]

    def estimate(self, draft: Draft) -> tuple[float, float, int] | None:
        """The kind of match's record, with the first token's acceptance no higher than its share of the
        occurrences (two occurrences that went on two ways: at most one half)."""
        if not (self._last and draft.tokens):
            return None
        first, later, seen = self.acceptance(self._last)
        return min(first, self._shares[0]) if self._shares else first, later, seen

    def remember(self, prompt: list[int], answer: list[int]) -> None:
        if self.cache is not None:
            self.cache.add(prompt, answer)

    def describe(self) -> dict:
        d = super().describe()
        d.update(max_match=MAX_MATCH, min_prob=MIN_PROB,
                 cache=None if self.cache is None else {"answers": len(self.cache), "tokens": self.cache.tokens,
                                                         "max_tokens": self.cache.max_tokens})
        return d
