import numpy as np
import pytest

from specquant.sampling import Sampler


def test_greedy_is_one_hot_argmax():
    s = Sampler(0.0)
    logits = np.array([0.1, 3.0, 2.9, -1.0])
    p = s.probs(logits)
    assert p.tolist() == [0, 1, 0, 0]
    assert s.sample(logits) == 1


def test_temperature_top_k_top_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    np.testing.assert_allclose(Sampler(1.0).probs(logits), [0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(Sampler(1.0, top_k=2).probs(logits), [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    np.testing.assert_allclose(Sampler(1.0, top_p=0.7).probs(logits), [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    hot = Sampler(0.5).probs(logits)
    assert hot[0] > 0.5 and np.isclose(hot.sum(), 1)


def test_seeded_sampling_is_reproducible():
    logits = np.random.default_rng(0).standard_normal(100)
    a = [Sampler(1.0, seed=7).sample(logits) for _ in range(3)]
    s1, s2 = Sampler(1.0, seed=7), Sampler(1.0, seed=7)
    assert [s1.sample(logits) for _ in range(20)] == [s2.sample(logits) for _ in range(20)]
    assert len(set(a)) == 1


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"top_k": -2}, {"top_p": 0}, {"top_p": 1.5},
                                {"seed": -1}, {"seed": 1.5}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Sampler(**kw)
    assert Sampler(1.0, seed=np.int64(3)).seed == 3 and Sampler(1.0, seed=None).seed is None
