"""The llama.cpp backend and the loop on real GGUF files: tiny random models and SmolLM2."""
from __future__ import annotations

import numpy as np
import pytest

from backends import BackendError, load_model
from specquant.control import DraftControl
from specquant.drafts import Draft, DraftSource, ModelDraft, PromptLookup
from specquant.sampling import Sampler
from specquant.speculative import Done, InputError, decode, run

KS = [1, 2, 4, 8]

TINY_PROMPTS = [
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


def _prompts(model, texts):
    return [model.tokenize(t) for t in texts]


def _sources(target, drafts):
    return {
        "self": lambda: ModelDraft(load_model(target.path, n_ctx=target.n_ctx), target, name="self"),
        **{name: (lambda m=m: ModelDraft(m, target, name=name)) for name, m in drafts.items()},
        "lookup": PromptLookup,
    }


def test_build_is_batch_invariant(tiny, smol):
    # Exactness rests on this: a verify pass over k+1 tokens must compute exactly what
    # k+1 one-token passes compute. (llama-cpp-python built with GGML_LLAMAFILE=OFF.)
    assert tiny.batch_invariant()
    assert smol.batch_invariant()


@pytest.mark.parametrize("source", ["self", "Q8_0", "Q4_0", "sibling", "lookup"])
def test_tiny_greedy_identical_for_every_draft_and_k(tiny, tiny_drafts, source):
    make = _sources(tiny, tiny_drafts)[source]
    src = make()
    for prompt in _prompts(tiny, TINY_PROMPTS):
        plain = run(tiny, prompt, max_tokens=40)
        for k in KS:
            spec = run(tiny, prompt, draft=src, control=DraftControl(k), max_tokens=40)
            assert spec.tokens == plain.tokens, f"{source} k={k} differs on {prompt[:8]}"
            assert spec.stats.tokens == len(plain.tokens)
            if source == "self":
                assert spec.stats.accepted == spec.stats.drafted


def test_tiny_auto_draft_length_is_identical_too(tiny, tiny_drafts):
    from specquant.control import measure_costs

    costs = measure_costs(tiny, tiny_drafts["Q8_0"], context=tiny.tokenize(TINY_PROMPTS[3]))
    src = ModelDraft(tiny_drafts["Q8_0"], tiny, p_min=0.5)
    for prompt in _prompts(tiny, TINY_PROMPTS[:6]):
        plain = run(tiny, prompt, max_tokens=40)
        spec = run(tiny, prompt, draft=src, control=DraftControl("auto", costs=costs), max_tokens=40)
        assert spec.tokens == plain.tokens


def test_target_as_its_own_draft_accepts_everything_with_exact_pattern(tiny):
    own = ModelDraft(load_model(tiny.path, n_ctx=tiny.n_ctx), tiny)
    prompt = tiny.tokenize("The capital of France is")
    plain = run(tiny, prompt, max_tokens=10)
    assert plain.stats.finish_reason == "length", "pick a prompt whose answer runs past 10 tokens"
    steps = [ev for ev in decode(tiny, prompt, draft=own, control=DraftControl(3), max_tokens=10)]
    done = steps.pop()
    # k=3 -> 4 tokens per pass; at 8 tokens only 2 remain, so the last draft is 1 token.
    assert [s.drafted for s in steps] == [3, 3, 1]
    assert [s.accepted for s in steps] == [3, 3, 1]
    assert [s.from_draft for s in steps] == [[True] * 3 + [False]] * 2 + [[True, False]]
    assert done.tokens == plain.tokens
    assert done.stats.target_passes == 3 and done.stats.acceptance_rate == 1.0
    assert done.stats.acceptance_by_pos == [1.0, 1.0, 1.0]


class Scripted(DraftSource):
    """Proposes a fixed continuation (the plain answer, plus whatever the test appends)."""

    name = "scripted"

    def __init__(self, prompt_len, script):
        self.prompt_len, self.script = prompt_len, script

    def propose(self, context, k):
        i = len(context) - self.prompt_len
        return Draft(list(self.script[i : i + 64]))  # deliberately ignores k


def test_max_tokens_inside_a_draft_never_emits_past_it(tiny):
    prompt = tiny.tokenize("Once upon a time")
    plain = run(tiny, prompt, max_tokens=30)
    src = Scripted(len(prompt), plain.tokens)
    for max_tokens in (1, 2, 5, 7):
        spec = run(tiny, prompt, draft=src, control=DraftControl(8), max_tokens=max_tokens)
        assert spec.tokens == plain.tokens[:max_tokens]
        assert spec.stats.finish_reason == "length"
        assert spec.stats.drafted <= max_tokens


def test_eos_inside_a_draft_stops_there(smol):
    # SmolLM2 answers "What is 2+2?" in a few tokens and then EOS: a draft of 8 proposes
    # the answer, the EOS and junk after it; nothing past EOS may appear.
    prompt = smol.tokenize(smol.apply_chat_template([{"role": "user", "content": "What is 2+2?"}]))
    plain = run(smol, prompt, max_tokens=64)
    assert plain.stats.finish_reason == "stop" and len(plain.tokens) < 20
    eos = min(smol.eos_ids)
    src = Scripted(len(prompt), plain.tokens + [eos] + smol.tokenize(" and more text", add_special=False))
    spec = run(smol, prompt, draft=src, control=DraftControl(8), max_tokens=64)
    assert spec.tokens == plain.tokens
    assert spec.stats.finish_reason == "stop"
    assert not set(spec.tokens) & smol.eos_ids
    own = ModelDraft(load_model(smol.path, n_ctx=smol.n_ctx), smol)
    spec2 = run(smol, prompt, draft=own, control=DraftControl(8), max_tokens=64)
    assert spec2.tokens == plain.tokens and spec2.stats.finish_reason == "stop"


def test_prompt_that_fills_the_context(tiny_paths):
    small = load_model(tiny_paths["F16"], n_ctx=256)
    own = ModelDraft(load_model(tiny_paths["Q8_0"], n_ctx=256), small)
    filler = small.tokenize("a b c d e f g h " * 200)
    prompt = filler[: small.n_ctx - 5]
    plain = run(small, prompt, max_tokens=100)
    # the cache holds n_ctx positions; the last token's logits come from the last position
    assert plain.stats.finish_reason == "context" and len(plain.tokens) == 6
    for k in (1, 4, 8):
        spec = run(small, prompt, draft=own, control=DraftControl(k), max_tokens=100)
        assert spec.tokens == plain.tokens and spec.stats.finish_reason == "context"
    exact = run(small, filler[: small.n_ctx], max_tokens=10)  # exactly full: one token fits
    assert len(exact.tokens) == 1
    with pytest.raises(InputError, match="longer than the context"):
        run(small, filler[: small.n_ctx + 1], max_tokens=10)


def test_after_rejection_logits_equal_fresh_evaluation(tiny):
    toks = tiny.tokenize("The quick brown fox jumps over the lazy dog")
    tiny.reset()
    tiny.prefill(toks[:4])
    tiny.eval(toks[4:8])  # a verify pass: 4 drafted positions
    tiny.rollback(6)  # two of them rejected
    after = tiny.eval([toks[8]])
    tiny.reset()
    tiny.prefill(toks[:4])
    tiny.eval(toks[4:6])  # the same tokens, as they would have been evaluated fresh
    fresh = tiny.eval([toks[8]])
    assert np.array_equal(after, fresh)
    tiny.reset()
    for t in toks[:6]:  # and one token at a time, as plain decoding does
        tiny.eval([t])
    assert np.array_equal(tiny.eval([toks[8]]), fresh)


def test_smollm2_greedy_identical_on_chat_prompts(smol, smol_drafts):
    from specquant.bench import load_prompts

    prompts = [p for p in load_prompts()][:10]
    sources = {name: ModelDraft(m, smol, name=name) for name, m in smol_drafts.items()}
    sources["lookup"] = PromptLookup()
    total_drafted = 0
    for p in prompts:
        tokens = smol.tokenize(smol.apply_chat_template([{"role": "user", "content": p["prompt"]}]))
        plain = run(smol, tokens, max_tokens=32)
        for name, src in sources.items():
            for k in KS:
                spec = run(smol, tokens, draft=src, control=DraftControl(k), max_tokens=32)
                assert spec.tokens == plain.tokens, f"{name} k={k} differs on {p['id']}"
                total_drafted += spec.stats.drafted
    assert total_drafted > 0


def test_sampling_with_draft_equal_to_target_accepts_all(tiny):
    own = ModelDraft(load_model(tiny.path, n_ctx=tiny.n_ctx), tiny)
    prompt = tiny.tokenize("Hello there")
    done = run(tiny, prompt, draft=own, control=DraftControl(4), sampler=Sampler(0.8, seed=3), max_tokens=30)
    assert done.stats.drafted > 0 and done.stats.acceptance_rate == 1.0


def test_sampling_is_seeded_and_follows_target_distribution(tiny, tiny_drafts):
    """The first two tokens' joint distribution, plain vs speculative, over many seeds."""
    from scipy.stats import chi2_contingency

    prompt = tiny.tokenize("Hello")
    src = ModelDraft(tiny_drafts["Q4_0"], tiny)
    n = 600
    a = [tuple(run(tiny, prompt, sampler=Sampler(1.5, top_k=4, seed=s), max_tokens=2).tokens) for s in range(n)]
    b = [tuple(run(tiny, prompt, draft=src, control=DraftControl(2), sampler=Sampler(1.5, top_k=4, seed=10_000 + s),
                   max_tokens=2).tokens) for s in range(n)]
    assert run(tiny, prompt, sampler=Sampler(1.5, seed=9), max_tokens=8).tokens == \
        run(tiny, prompt, sampler=Sampler(1.5, seed=9), max_tokens=8).tokens
    keys = sorted(set(a) | set(b))
    table = np.array([[a.count(x) for x in keys], [b.count(x) for x in keys]])
    table = table[:, table.sum(0) >= 10]  # chi-square needs populated cells
    _, pvalue, _, _ = chi2_contingency(table)
    assert pvalue > 1e-3


def test_stream_safe_detokenize(smol):
    text = "héllo wörld — 東京 🌍🚀 ok"
    toks = smol.tokenize(text, add_special=False)
    d = smol.detokenizer()
    pieces = [d.add(t) for t in toks] + [d.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text
    assert any(p == "" for p in pieces), "expected a character split across tokens"


def test_chat_template_from_gguf(smol):
    text = smol.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_file_loaded_twice_is_loaded_once(tiny_paths):
    from backends import llama_cpp

    a = load_model(tiny_paths["F16"], n_ctx=256)
    b = load_model(tiny_paths["F16"], n_ctx=256)
    assert a._w is b._w and a._ctx != b._ctx
    assert len([k for k in llama_cpp._weights if k[0] == str(tiny_paths["F16"].resolve())]) == 1


# --- bad input --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        load_model(tmp_path / "nope.gguf")


def test_not_a_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(BackendError, match="not a GGUF"):
        load_model(f)


def test_vocabularies_differ(tiny, tiny_paths):
    other = load_model(tiny_paths["other"], n_ctx=256)
    with pytest.raises(BackendError, match="vocabularies differ"):
        ModelDraft(other, tiny)


def test_empty_prompt_and_bad_numbers(tiny):
    with pytest.raises(InputError, match="empty"):
        run(tiny, [], max_tokens=5)
    for bad in (0, -3):
        with pytest.raises(InputError, match="max_tokens"):
            run(tiny, [1, 2], max_tokens=bad)
    with pytest.raises(ValueError, match="draft length"):
        DraftControl(0)


def test_rollback_bounds(tiny):
    tiny.reset()
    tiny.prefill([1, 2, 3])
    with pytest.raises(ValueError):
        tiny.rollback(5)
    tiny.rollback(1)
    assert tiny.tokens == [1]
