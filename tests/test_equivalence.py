"""The equivalence suite, parametrised over backends (llama.cpp and MLX): the same loop, sampler
and statistics must give the target's own output for every draft source and draft length."""
from __future__ import annotations

import numpy as np
import pytest

from backends import BackendError, load_model
from specquant.control import DraftControl
from specquant.drafts import Draft, DraftSource, ModelDraft, PromptLookup
from specquant.suffix import AnswerCache, SuffixDraft
from specquant.sampling import Sampler
from specquant.speculative import Done, InputError, decode, run

KS = [1, 2, 4, 8]
PROMPTS = [
    "Hello there",
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a land far away, there lived",
    "1, 2, 3, 4, 5,",
    "Summarise: the cat sat on the mat. The cat sat on the mat again.",
    "Ünïcödé tëxt and emoji 🌍🚀 in the prompt",
    "SELECT name FROM users WHERE",
    "a b a b a b a b",
    "Translate to French: good morning",
    "List three colours:",
    "Why is the sky blue?",
]
BACKENDS = ["llama.cpp", "mlx"]


class Models:
    """A backend's tiny test models: target, drafts by name, and how to load more."""

    def __init__(self, backend, paths, n_ctx=512):
        self.backend, self.paths, self.n_ctx = backend, paths, n_ctx
        self.target = self.load(paths["target"])
        self.drafts = {name: self.load(paths[name]) for name in paths["drafts"]}

    def load(self, path, n_ctx=None):
        return load_model(path, self.backend, n_ctx=n_ctx or self.n_ctx)

    def suffix(self):
        return SuffixDraft(_remembered(self.target, _prompts(self.target)))

    def recycled(self):
        """Suffix drafting with token recycling where nothing matches: candidates side by side (a tree)
        where the backend verifies trees, the first alone where it does not; the table is learnt along
        the runs that use it (each prompt after the first finds it filled)."""
        src = SuffixDraft(AnswerCache())
        src.recycle = True
        return src

    def sources(self):
        out = {"self": lambda: ModelDraft(self.load(self.paths["target"]), self.target, name="self"),
               "lookup": lambda: PromptLookup(ngram_min=1), "suffix": self.suffix, "recycled": self.recycled}
        for name, m in self.drafts.items():
            out[name] = lambda m=m, name=name: ModelDraft(m, self.target, name=name)
        return out


@pytest.fixture(scope="session")
def llama_models(tiny_paths):
    return Models("llama.cpp", {"target": tiny_paths["F16"], "drafts": ["Q8_0", "Q4_0", "sibling"],
                                "Q8_0": tiny_paths["Q8_0"], "Q4_0": tiny_paths["Q4_0"], "sibling": tiny_paths["sibling"],
                                "other": tiny_paths["other"]})


@pytest.fixture(scope="session")
def mlx_models(mlx_paths):
    t = mlx_paths["tiny"]
    return Models("mlx", {"target": t["parent"], "drafts": ["8bit", "4bit"], "8bit": t["8bit"], "4bit": t["4bit"],
                          "other": mlx_paths["other"]})


@pytest.fixture(params=BACKENDS)
def models(request):
    return request.getfixturevalue("llama_models" if request.param == "llama.cpp" else "mlx_models")


def _remembered(m, prompts):
    """An answer cache holding each prompt's plain answer with every fifth token changed: suffix drafting
    copies long runs from it, and some of each copy is wrong."""
    cache = AnswerCache()
    for p in prompts:
        answer = run(m, p, max_tokens=32).tokens
        cache.add(p, [t if i % 5 != 4 else (t + 1) % m.n_vocab for i, t in enumerate(answer)])
    return cache


def _prompts(m, texts=PROMPTS):
    return [m.tokenize(t) for t in texts]


def test_greedy_identical_for_every_draft_and_k(models):
    m = models.target
    for name, make in models.sources().items():
        src = make()
        for prompt in _prompts(m):
            plain = run(m, prompt, max_tokens=32)
            for k in KS:
                spec = run(m, prompt, draft=src, control=DraftControl(k), max_tokens=32)
                assert spec.tokens == plain.tokens, f"{models.backend}: {name} k={k} differs on {prompt[:8]}"
                if name == "self":
                    assert spec.stats.accepted == spec.stats.drafted


def test_auto_draft_length_is_identical_too(models):
    from specquant.costs import measure_costs

    m = models.target
    draft = next(iter(models.drafts.values()))
    costs = measure_costs(m, draft, context=m.tokenize(PROMPTS[3]))
    src = ModelDraft(draft, m, p_min=0.5)
    for prompt in _prompts(m, PROMPTS[:6]):
        plain = run(m, prompt, max_tokens=32)
        assert run(m, prompt, draft=src, control=DraftControl("auto", costs=costs), max_tokens=32).tokens == plain.tokens


def test_target_as_its_own_draft_accepts_everything_with_exact_pattern(models):
    m = models.target
    own = models.sources()["self"]()
    prompt = m.tokenize("The capital of France is")
    plain = run(m, prompt, max_tokens=10, stop_at_eos=False)
    steps = list(decode(m, prompt, draft=own, control=DraftControl(3), max_tokens=10, stop_at_eos=False))
    done = steps.pop()
    # k=3 -> 4 tokens per pass; at 8 tokens only 2 remain, so the last draft is 1 token.
    assert [s.drafted for s in steps] == [3, 3, 1]
    assert [s.accepted for s in steps] == [3, 3, 1]
    assert [s.from_draft for s in steps] == [[True] * 3 + [False]] * 2 + [[True, False]]
    assert done.tokens == plain.tokens and done.stats.target_passes == 3
    assert done.stats.acceptance_rate == 1.0 and done.stats.acceptance_by_pos == [1.0, 1.0, 1.0]


class Scripted(DraftSource):
    """Proposes a fixed continuation, ignoring k (the loop must cut it)."""

    name = "scripted"

    def __init__(self, prompt_len, script):
        self.prompt_len, self.script = prompt_len, script

    def propose(self, context, k):
        i = len(context) - self.prompt_len
        return Draft(list(self.script[i: i + 64]))


def test_max_tokens_and_eos_inside_a_draft(models):
    m = models.target
    prompt = m.tokenize("Once upon a time")
    plain = run(m, prompt, max_tokens=30, stop_at_eos=False)
    src = Scripted(len(prompt), plain.tokens)
    for max_tokens in (1, 2, 5, 7):
        spec = run(m, prompt, draft=src, control=DraftControl(8), max_tokens=max_tokens, stop_at_eos=False)
        assert spec.tokens == plain.tokens[:max_tokens] and spec.stats.finish_reason == "length"
    # An EOS slipped into a draft: the answer is still exactly the target's own (EOS handling included).
    eos = min(m.eos_ids)
    script = plain.tokens[:3] + [eos] + plain.tokens[3:]
    stopped = run(m, prompt, draft=Scripted(len(prompt), script), control=DraftControl(8), max_tokens=30)
    assert stopped.tokens == run(m, prompt, max_tokens=30).tokens and eos not in stopped.tokens


def test_prompt_that_fills_the_context(models):
    small = models.load(models.paths["target"], n_ctx=256)
    draft = models.load(models.paths[models.paths["drafts"][0]], n_ctx=256)
    own = ModelDraft(draft, small)
    filler = small.tokenize("a b c d e f g h " * 200)
    prompt = filler[: small.n_ctx - 5]
    plain = run(small, prompt, max_tokens=100)
    assert plain.stats.finish_reason == "context" and len(plain.tokens) == 6
    for k in (1, 4, 8):
        spec = run(small, prompt, draft=own, control=DraftControl(k), max_tokens=100)
        assert spec.tokens == plain.tokens and spec.stats.finish_reason == "context"
    assert len(run(small, filler[: small.n_ctx], max_tokens=10).tokens) == 1
    with pytest.raises(InputError, match="longer than the model's context"):
        run(small, filler[: small.n_ctx + 1], max_tokens=10)


def test_after_rejection_logits_equal_fresh_evaluation(models):
    m = models.target
    toks = m.tokenize("The quick brown fox jumps over the lazy dog, and then it ran away")
    assert len(toks) >= 9
    m.reset()
    m.prefill(toks[:4])
    m.eval(toks[4:8])  # a verify pass: 4 drafted positions
    m.rollback(6)  # two of them rejected
    after = m.eval([toks[8]])
    m.reset()
    m.prefill(toks[:4])
    m.eval(toks[4:6])  # the same tokens, as they would have been evaluated fresh
    fresh = m.eval([toks[8]])
    assert np.array_equal(after, fresh)
    m.reset()
    for t in toks[:6]:  # and one token at a time, as plain decoding does
        m.eval([t])
    assert np.array_equal(m.eval([toks[8]]), fresh)
    m.reset()


def test_sampling_with_draft_equal_to_target_accepts_all(models):
    m = models.target
    own = models.sources()["self"]()
    done = run(m, m.tokenize("Hello there"), draft=own, control=DraftControl(4), sampler=Sampler(0.8, seed=3),
               max_tokens=30, stop_at_eos=False)
    assert done.stats.drafted > 0 and done.stats.acceptance_rate == 1.0


def test_sampling_follows_target_distribution(models):
    """The first two tokens' joint distribution, plain vs speculative, over many seeds."""
    from scipy.stats import chi2_contingency

    m = models.target
    prompt = m.tokenize("Hello")
    src = ModelDraft(list(models.drafts.values())[-1], m)
    n = 400

    def sample(seed, **kw):
        return tuple(run(m, prompt, sampler=Sampler(1.5, top_k=4, seed=seed), max_tokens=2, stop_at_eos=False,
                         **kw).tokens)

    a = [sample(s) for s in range(n)]
    b = [sample(10_000 + s, draft=src, control=DraftControl(2)) for s in range(n)]
    assert sample(9) == sample(9)  # seeded
    keys = sorted(set(a) | set(b))
    table = np.array([[a.count(x) for x in keys], [b.count(x) for x in keys]])
    table = table[:, table.sum(0) >= 10]
    _, pvalue, _, _ = chi2_contingency(table)
    assert pvalue > 1e-3


def test_sampling_with_suffix_drafts_follows_target_distribution(models):
    """Suffix drafts are one fixed continuation (q one-hot), copied from earlier answers: the output
    still follows the target's distribution."""
    from scipy.stats import chi2_contingency

    m = models.target
    prompt = m.tokenize("Once upon a time there was")
    cache = AnswerCache()
    for s in range(8):  # earlier sampled answers to the same prompt: plausible, often not this run's
        cache.add(prompt, run(m, prompt, sampler=Sampler(1.5, top_k=4, seed=50_000 + s), max_tokens=4,
                              stop_at_eos=False).tokens)
    n = 400

    def sample(seed, **kw):
        return tuple(run(m, prompt, sampler=Sampler(1.5, top_k=4, seed=seed), max_tokens=2, stop_at_eos=False,
                         **kw).tokens)

    a = [sample(s) for s in range(n)]
    b = [sample(20_000 + s, draft=SuffixDraft(cache), control=DraftControl(2)) for s in range(n)]
    copied = run(m, prompt, sampler=Sampler(1.5, top_k=4, seed=7), max_tokens=2, stop_at_eos=False,
                 draft=SuffixDraft(cache), control=DraftControl(2))
    assert copied.stats.drafted > 0  # the cache is drafted from (else this would test plain sampling)
    keys = sorted(set(a) | set(b))
    table = np.array([[a.count(x) for x in keys], [b.count(x) for x in keys]])
    table = table[:, table.sum(0) >= 10]
    _, pvalue, _, _ = chi2_contingency(table)
    assert pvalue > 1e-3


def test_sampling_with_recycled_candidates_follows_target_distribution(models):
    """Recycled candidates for the next token, verified side by side: the output follows the target's
    distribution."""
    from scipy.stats import chi2_contingency

    m = models.target
    prompt = m.tokenize("Hello")
    src = models.recycled()
    for s in range(6):  # the table learns what the target gives after these tokens
        run(m, prompt, draft=src, control=DraftControl(3), sampler=Sampler(1.5, top_k=4, seed=60_000 + s),
            max_tokens=8, stop_at_eos=False)
    assert src.recycled.get(prompt[-1])
    n = 400

    def sample(seed, **kw):
        return tuple(run(m, prompt, sampler=Sampler(1.5, top_k=4, seed=seed), max_tokens=2, stop_at_eos=False,
                         **kw).tokens)

    a = [sample(s) for s in range(n)]
    b = [sample(30_000 + s, draft=src, control=DraftControl(3)) for s in range(n)]
    keys = sorted(set(a) | set(b))
    table = np.array([[a.count(x) for x in keys], [b.count(x) for x in keys]])
    table = table[:, table.sum(0) >= 10]
    _, pvalue, _, _ = chi2_contingency(table)
    assert pvalue > 1e-3


def test_a_consumer_that_stops_early_leaves_both_caches_usable(models):
    # Every step is yielded after the rollback, so a consumer may stop at any step: the models'
    # caches hold exactly the tokens they list, and the next run (which syncs from them) is exact.
    m = models.target
    prompt = m.tokenize(PROMPTS[3])
    src = ModelDraft(models.drafts[next(iter(models.drafts))], m, name="d")
    whole = run(m, prompt, draft=src, control=DraftControl(3), max_tokens=24)
    events = decode(m, prompt, draft=src, control=DraftControl(3), max_tokens=24)
    next(events), next(events)
    events.close()
    assert len(m.tokens) == m.n_past and len(src.model.tokens) == src.model.n_past
    assert run(m, prompt, draft=src, control=DraftControl(3), max_tokens=24).tokens == whole.tokens


def test_stream_safe_detokenize(models):
    m = models.target
    text = "héllo wörld — 東京 🌍🚀 ok"
    toks = m.tokenize(text, add_special=False)
    d = m.detokenizer()
    pieces = [d.add(t) for t in toks] + [d.flush()]
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) == text


# --- bad input --------------------------------------------------------------------------------


def test_missing_and_wrong_files(models, tmp_path):
    with pytest.raises(BackendError, match="not found"):
        models.load(tmp_path / "nope")
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(BackendError, match="not a GGUF|not an MLX"):
        models.load(bad)


def test_vocabularies_differ(models):
    other = models.load(models.paths["other"])
    with pytest.raises(BackendError, match="vocabularies differ"):
        ModelDraft(other, models.target)


def test_empty_prompt_bad_numbers_and_rollback_bounds(models):
    m = models.target
    with pytest.raises(InputError, match="empty"):
        run(m, [], max_tokens=5)
    for bad in (0, -3):
        with pytest.raises(InputError, match="max_tokens"):
            run(m, m.tokenize("hi"), max_tokens=bad)
    with pytest.raises(ValueError, match="draft length"):
        DraftControl(0)
    m.reset()
    m.prefill(m.tokenize("one two three")[:3])
    with pytest.raises(ValueError):
        m.rollback(5)
    m.rollback(1)
    assert len(m.tokens) == 1
    m.reset()
    done = run(m, m.tokenize("hi"), max_tokens=3)
    assert isinstance(done, Done)
