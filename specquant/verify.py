"""Verification: which drafted tokens the target keeps. Pure functions, no model.

Both return ``(n_accepted, next_token)``: the first ``n_accepted`` draft tokens are kept and
``next_token`` is the target's own token at the first position not kept (or the bonus
token after the last draft when all were kept). So every target pass yields at least one
token, and the output is exactly what the target alone would produce (greedy) or is
distributed exactly as the target's samples (rejection sampling).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .sampling import draw


def accept_greedy(target_tokens: Sequence[int], draft: Sequence[int]) -> tuple[int, int]:
    """Longest prefix of ``draft`` equal to the target's argmax tokens.

    target_tokens: the target's argmax at each of the k+1 verified positions
    (after ``last``, after d1, ..., after dk); draft: d1..dk.
    """
    n = 0
    while n < len(draft) and draft[n] == target_tokens[n]:
        n += 1
    return n, int(target_tokens[n])


def accept_sampled(
    p: np.ndarray, q: np.ndarray | None, draft: Sequence[int], rng: np.random.Generator
) -> tuple[int, int]:
    """Speculative rejection sampling (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    p: target distributions [k+1, V] at each verified position; q: the draft's
    distributions [k, V] the draft tokens were drawn from, or None for a deterministic
    draft (prompt lookup), i.e. q = one-hot(d_i). For i = 1..k: accept d_i with probability
    min(1, p_i(d_i) / q_i(d_i)); on the first rejection draw from norm(max(0, p_i - q_i)).
    All accepted: draw the bonus token from p_{k+1}.
    """
    k = len(draft)
    for i, d in enumerate(draft):
        pi = p[i]
        qd = 1.0 if q is None else float(q[i][d])
        if qd > 0 and rng.random() * qd < pi[d]:  # u < p/q, without dividing
            continue
        if q is None:
            residual = pi.copy()
            residual[d] = 0.0
        else:
            residual = np.maximum(pi - q[i], 0.0)
        total = residual.sum()
        if total <= 0:  # p == q exactly: rejection has probability 0; keep it well-defined
            residual, total = pi, pi.sum()
        return i, draw(residual / total, rng)
    return k, draw(p[k], rng)


def verify(sampler, logits: np.ndarray, draft: Sequence[int], q: np.ndarray | None = None) -> tuple[int, int]:
    """One target pass's verdict: greedy equality at temperature 0, rejection sampling
    otherwise. logits: the target's [k+1, V] rows; q: the draft's distributions, if any."""
    if sampler.greedy:
        return accept_greedy(np.argmax(logits, axis=1), draft)
    p = np.stack([sampler.probs(row) for row in logits])
    return accept_sampled(p, None if q is None else q[: len(draft)], draft, sampler.rng)


def verify_tree(sampler, logits: np.ndarray, draft: Sequence[int], parents: Sequence[int]) -> tuple[list[int], int]:
    """One target pass over a tree of deterministic drafts: ``draft[i]`` follows ``draft[parents[i]]``
    (-1: the token before the draft); logits row 0 is the target's view after that token, row i + 1
    after the path to ``draft[i]``. From the root, the target picks its token (argmax, or a sample from
    its distribution); where a child holds it the walk moves there, else that token ends the pass. Each
    token is the target's own pick given the path before it, so greedy output is plain decoding's and a
    sampled one is distributed as the target's. Returns the kept nodes (root first) and the next token."""
    children: dict[int, dict[int, int]] = {}
    for i, (t, p) in enumerate(zip(draft, parents)):
        children.setdefault(p, {}).setdefault(int(t), i)
    path: list[int] = []
    node = -1
    while True:
        row = logits[node + 1]
        x = int(np.argmax(row)) if sampler.greedy else draw(sampler.probs(row), sampler.rng)
        nxt = children.get(node, {}).get(x)
        if nxt is None:
            return path, x
        path.append(nxt)
        node = nxt
