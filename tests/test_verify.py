"""Verification as pure functions: no model involved."""
import numpy as np
import pytest
from scipy.stats import chisquare

from specquant.verify import accept_greedy, accept_sampled

N_DRAWS = 60_000


def test_greedy_accepts_longest_agreeing_prefix_plus_target_token():
    assert accept_greedy([5, 6, 7, 8], [5, 6, 7]) == (3, 8)  # all kept + bonus
    assert accept_greedy([5, 6, 7, 8], [5, 9, 7]) == (1, 6)  # second differs: target's 6
    assert accept_greedy([5, 6, 7, 8], [4, 6, 7]) == (0, 5)  # first differs
    assert accept_greedy([5], []) == (0, 5)  # no draft: plain decoding


def test_greedy_stops_at_first_mismatch_even_if_later_tokens_agree():
    n, t = accept_greedy([1, 2, 3, 4, 5], [1, 9, 3, 4])
    assert (n, t) == (1, 2)


def _check_distribution(samples, p, label):
    counts = np.bincount(samples, minlength=p.size)
    support = p > 0
    assert counts[~support].sum() == 0, f"{label}: sampled a token the target gives probability 0"
    expected = p[support] * len(samples)
    stat, pvalue = chisquare(counts[support], expected)
    assert pvalue > 1e-3, f"{label}: chi-square p={pvalue:.2e}, counts {counts}, expected {expected.round()}"


P = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05, 0.0])
Q = np.array([0.10, 0.40, 0.05, 0.05, 0.20, 0.10, 0.10])  # mass where p has none, too


def test_rejection_sampling_reproduces_target_distribution_model_draft():
    rng = np.random.default_rng(1)
    p = np.stack([P, P[::-1] / P.sum()])  # [k+1, V], k = 1
    q = Q[None, :]
    out = np.empty(N_DRAWS, dtype=int)
    for i in range(N_DRAWS):
        d = int(rng.choice(Q.size, p=Q))
        n_acc, nxt = accept_sampled(p, q, [d], rng)
        out[i] = d if n_acc == 1 else nxt
    _check_distribution(out, P, "model draft")


def test_rejection_sampling_reproduces_target_distribution_deterministic_draft():
    # Prompt lookup proposes one fixed token (q = one-hot); the output must still follow p.
    rng = np.random.default_rng(2)
    p = np.stack([P, P])
    out = np.array([(lambda r: 3 if r[0] == 1 else r[1])(accept_sampled(p, None, [3], rng)) for _ in range(N_DRAWS)])
    _check_distribution(out, P, "deterministic draft")


def test_rejection_sampling_every_position_follows_target():
    # k = 3 with fixed rows: the first and second emitted tokens follow p[0] and p[1].
    rng = np.random.default_rng(3)
    p1 = np.array([0.05, 0.05, 0.6, 0.1, 0.1, 0.1, 0.0])
    p = np.stack([P, p1, P, p1])
    qs = np.stack([Q, Q[::-1], Q])
    first, second = [], []
    for _ in range(N_DRAWS):
        d = [int(rng.choice(Q.size, p=row)) for row in qs]
        n_acc, nxt = accept_sampled(p, qs, d, rng)
        emitted = d[:n_acc] + [nxt]
        first.append(emitted[0])
        if len(emitted) > 1:
            second.append(emitted[1])
    _check_distribution(np.array(first), P, "position 1")
    _check_distribution(np.array(second), p1, "position 2")


def test_draft_equal_to_target_is_always_accepted():
    rng = np.random.default_rng(4)
    p = np.stack([P, P, P])
    for _ in range(2000):
        d = [int(rng.choice(P.size, p=P)) for _ in range(2)]
        n_acc, _ = accept_sampled(p, p[:2], d, rng)
        assert n_acc == 2


def test_one_hot_target_makes_rejection_sampling_greedy():
    rng = np.random.default_rng(5)
    p = np.eye(5)[[2, 4, 1]]
    assert accept_sampled(p, None, [2, 4], rng) == (2, 1)
    assert accept_sampled(p, None, [2, 3], rng) == (1, 4)


@pytest.mark.parametrize("k", [1, 3])
def test_rejection_never_returns_token_outside_support(k):
    rng = np.random.default_rng(6)
    p = np.tile(np.array([0.5, 0.5, 0.0, 0.0]), (k + 1, 1))
    q = np.tile(np.array([0.0, 0.0, 0.5, 0.5]), (k, 1))
    for _ in range(500):
        d = [int(rng.integers(2, 4)) for _ in range(k)]
        n_acc, nxt = accept_sampled(p, q, d, rng)
        assert n_acc == 0 and nxt in (0, 1)
