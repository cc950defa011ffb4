"""MLX specifics: SmolLM2 converted from the GGUF, drafts made with mlx_lm.convert, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mlx_lm", reason="MLX is not installed (pip install 'specquant[mlx]')")

from backends import BackendError, load_model  # noqa: E402
from specquant.control import DraftControl  # noqa: E402
from specquant.drafts import ModelDraft, PromptLookup  # noqa: E402
from specquant.speculative import run  # noqa: E402


@pytest.fixture(scope="module")
def smol_mlx(mlx_paths):
    p = mlx_paths["smollm2"]
    return {"target": load_model(p["parent"], "mlx"), "8bit": load_model(p["8bit"], "mlx"),
            "4bit": load_model(p["4bit"], "mlx")}


def test_converted_tokenizer_matches_llama_cpp(smol_mlx, smol):
    m = smol_mlx["target"]
    for text in ["What is the capital of France?", "héllo wörld — 東京 🌍 2024 and 12345 items",
                 m.apply_chat_template([{"role": "user", "content": "Hi"}])]:
        assert m.tokenize(text, add_special=False) == smol.tokenize(text, add_special=False)
    assert m.eos_ids & smol.eos_ids


def test_converted_model_agrees_with_the_gguf(smol_mlx, smol):
    """Undoing llama.cpp's Q/K permutation is what makes the converted model talk sense:
    its next-token choices must agree with llama.cpp's F16 on nearly every position."""
    m = smol_mlx["target"]
    toks = smol.tokenize(smol.apply_chat_template([{"role": "user", "content": "Why is the sky blue? Explain."}]))
    smol.reset()
    a = smol.eval(toks).argmax(1)
    smol.reset()
    m.reset()
    b = m.eval(toks).argmax(1)
    m.reset()
    assert np.mean(a == b) >= 0.9
    plain = run(m, m.tokenize(m.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])),
                max_tokens=12)
    assert "Paris" in plain.text


def test_smollm2_mlx_greedy_identical(smol_mlx):
    m = smol_mlx["target"]
    sources = {"8bit": ModelDraft(smol_mlx["8bit"], m), "4bit": ModelDraft(smol_mlx["4bit"], m),
               "lookup": PromptLookup(ngram_min=1)}
    # Chat prompts with a one-line system turn instead of SmolLM2's default paragraph: the MLX CPU
    # build prefills ~7 tokens a second, and the prompt's length adds nothing to what is checked.
    # Every source at k = 1 on one prompt and k = 4 on the other: each pair checked, in half the runs.
    for text, k in (("What is the capital of France?", 1), ("Rewrite in simple words: the cat sat on the mat.", 4)):
        chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
        toks = m.tokenize(m.apply_chat_template(chat))
        plain = run(m, toks, max_tokens=12)
        for name, src in sources.items():
            assert run(m, toks, draft=src, control=DraftControl(k), max_tokens=12).tokens == plain.tokens, (name, k)


def test_untrimmable_cache_is_refused(mlx_paths, monkeypatch):
    from mlx_lm.models import cache

    monkeypatch.setattr(cache, "can_trim_prompt_cache", lambda c: False)
    with pytest.raises(BackendError, match="cannot be trimmed"):
        load_model(mlx_paths["tiny"]["parent"], "mlx")


def test_quantized_drafts_are_cached_and_atomic(mlx_paths, tmp_path, monkeypatch):
    import mlx_lm

    from specquant.mlx_models import quantize_mlx

    out = quantize_mlx(mlx_paths["tiny"]["parent"], 8, tmp_path / "q8")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 8
    assert quantize_mlx(mlx_paths["tiny"]["parent"], 8, tmp_path / "q8") == out  # cached

    def broken(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlx_lm, "convert", broken)
    with pytest.raises(KeyboardInterrupt):
        quantize_mlx(mlx_paths["tiny"]["parent"], 4, tmp_path / "q4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8"]  # nothing half-made is left
    with pytest.raises(ValueError, match="8-bit or 4-bit"):
        quantize_mlx(mlx_paths["tiny"]["parent"], 3)


def test_cli_with_the_mlx_backend(mlx_paths):
    r = subprocess.run([sys.executable, "-m", "specquant", "--backend", "mlx", "--target", str(mlx_paths["tiny"]["parent"]),
                        "--draft", "q8", "--draft-len", "3", "--prompt", "Hello there", "--compare", "--json",
                        "--max-tokens", "16"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["identical"] is True and out["models"]["backend"] == "mlx"
    assert out["runs"]["speculative"]["stats"]["drafted"] > 0
    r = subprocess.run([sys.executable, "-m", "specquant", "--backend", "mlx", "--target", str(mlx_paths["tiny"]["parent"]),
                        "--draft", "q6_k", "--prompt", "Hi"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "8-bit and 4-bit drafts" in r.stderr
