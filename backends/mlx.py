"""MLX through mlx-lm (Apple Silicon; MLX's CPU build runs it on Linux, slowly, for tests).

A model is a Hugging Face-format folder (config.json, safetensors, tokenizer). Evaluation
returns the logits of every position with the model's KV cache; rollback trims the cache
(``trim_prompt_cache``). A model whose cache can't be trimmed is refused up front.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import BackendError, Model

_loaded: dict[tuple, tuple] = {}


def _mlx():
    try:
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.models import cache as mlx_cache
    except ImportError as e:
        raise BackendError(
            'the MLX backend needs MLX and mlx-lm: pip install "specquant[mlx]" '
            f"(on Linux that brings mlx[cpu]) ({e})"
        ) from e
    return mx, mlx_lm, mlx_cache


def available() -> bool:
    try:
        _mlx()
        return True
    except BackendError:
        return False


def check_folder(path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise BackendError(f"model folder not found: {p}")
    if not p.is_dir() or not (p / "config.json").exists():
        raise BackendError(f"not an MLX / Hugging Face model folder (no config.json): {p}")
    if not list(p.glob("*.safetensors")):
        raise BackendError(f"no .safetensors weights in {p}")
    return Path(os.path.abspath(p))


@lru_cache(maxsize=None)
def _bytes_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class MLXModel(Model):
    backend = "mlx"

    def __init__(self, path, *, n_ctx: int = 4096, dtype: str | None = None, **_ignored):
        super().__init__()
        mx, mlx_lm, mlx_cache = _mlx()
        self.path = check_folder(path)
        # The CPU build runs quantized matmuls far faster with float32 activations.
        dtype = dtype or os.environ.get("SPECQUANT_MLX_DTYPE") or ("float32" if mx.default_device() == mx.cpu else None)
        key = (str(self.path), dtype)
        if key not in _loaded:  # a folder loaded twice is loaded once
            model, tok = mlx_lm.load(str(self.path))
            if dtype:
                model.set_dtype(getattr(mx, dtype))
            _loaded[key] = (model, tok)
        self.model, self.tokenizer = _loaded[key]
        self._mx, self._cache_mod = mx, mlx_cache
        self._cache = mlx_cache.make_prompt_cache(self.model)
        if not mlx_cache.can_trim_prompt_cache(self._cache):
            raise BackendError(f"{self.path.name}: this model's cache cannot be trimmed, so drafts can't be "
                               "rolled back; speculative decoding needs a trimmable (attention) cache")
        cfg = json.loads((self.path / "config.json").read_text())
        self.n_vocab = int(cfg.get("vocab_size") or self.tokenizer.vocab_size)
        self.n_ctx = min(n_ctx, int(cfg.get("max_position_embeddings") or n_ctx))
        self.eos_ids = frozenset(int(t) for t in (self.tokenizer.eos_token_ids or []))
        hf = self.tokenizer._tokenizer
        self._special = set(getattr(hf, "all_special_ids", []) or [])
        self._vocab = hf.convert_ids_to_tokens(list(range(len(hf))))
        self._byte_level = any(t and t.startswith("Ġ") for t in self._vocab[:5000] if isinstance(t, str))
        self._dtype = dtype

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> dict:
        d = super().describe()
        size = sum(f.stat().st_size for f in self.path.glob("*.safetensors"))
        d.update(name=self.name, file_bytes=size, n_params=0, gpu_layers=0, threads=os.cpu_count(),
                 dtype=self._dtype or "model", device=str(self._mx.default_device()))
        return d

    # --- text ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(self.tokenizer._tokenizer.encode(text, add_special_tokens=add_special))

    def _piece(self, token: int) -> bytes:
        t = self._vocab[token] if token < len(self._vocab) else None
        if t is None:
            return b""
        if self._byte_level:
            dec = _bytes_decoder()
            try:
                return bytes(dec[c] for c in t)
            except KeyError:
                return t.encode("utf-8")
        if t.startswith("<0x") and t.endswith(">") and len(t) == 6:  # sentencepiece byte fallback
            return bytes([int(t[3:5], 16)])
        return t.replace("▁", " ").encode("utf-8")

    def piece(self, token: int) -> bytes:
        return b"" if token in self._special else self._piece(token)

    def piece_special(self, token: int) -> bytes:
        return self._piece(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None) or getattr(tok._tokenizer, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.plain_chat(messages, add_generation_prompt)

    # --- evaluation ------------------------------------------------------------------------
    def _forward(self, tokens: list[int]):
        mx = self._mx
        self.check_room(len(tokens))
        logits = self.model(mx.array([tokens], dtype=mx.int32), cache=self._cache)
        self.tokens.extend(tokens)
        return logits[0]

    def eval(self, tokens: list[int]) -> np.ndarray:
        if not tokens:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        out = self._forward(tokens).astype(self._mx.float32)
        return np.array(out)[:, : self.n_vocab]

    def prefill(self, tokens: list[int]) -> np.ndarray | None:
        if not tokens:
            return None
        last = None
        for i in range(0, len(tokens), 512):
            last = self._forward(tokens[i : i + 512])[-1]
        return np.array(last.astype(self._mx.float32))[: self.n_vocab]

    def rollback(self, n_keep: int) -> None:
        n = self.check_rollback(n_keep)
        if n == 0:
            return
        if n_keep == 0:
            self._cache = self._cache_mod.make_prompt_cache(self.model)
        else:
            trimmed = self._cache_mod.trim_prompt_cache(self._cache, n)
            if trimmed != n:
                raise BackendError(f"{self.name}: could trim only {trimmed} of {n} cache entries")
        del self.tokens[n_keep:]


def load(path, **kw) -> MLXModel:
    return MLXModel(path, **kw)
