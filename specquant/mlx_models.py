"""Models for the MLX backend: Hugging Face-format folders.

* ``gguf_to_hf``: a llama-architecture GGUF (e.g. the SmolLM2 demo model) turned into a
  Hugging Face folder: tensors dequantized with the ``gguf`` package, renamed to llama's
  names, llama.cpp's Q/K row permutation undone (without that the model loads and talks
  nonsense), and the tokenizer rebuilt from the GGUF vocabulary and merges.
* ``write_tiny_hf``: a tiny random-weight llama with a BPE tokenizer trained on local text.
* ``quantize_mlx``: 8-bit / 4-bit drafts from a parent folder with ``mlx_lm.convert``,
  cached and written atomically (a temporary folder renamed when complete).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .paths import models_dir

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _atomic_dir(dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))


def _finish_dir(tmp: Path, dst: Path) -> Path:
    if dst.exists():  # made meanwhile by someone else
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst


def _save_weights(tensors: dict[str, np.ndarray], path: Path, dtype: str) -> None:
    import mlx.core as mx

    mx.save_safetensors(str(path), {k: mx.array(v).astype(getattr(mx, dtype)) for k, v in tensors.items()})


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert-time permutation of Q/K rows (rotary pairs interleaved)."""
    rows, cols = w.shape
    d = rows // n_head
    return w.reshape(n_head, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def _tokenizer_files(out: Path, tokens: list[str], types: list[int], merges: list[str], bos: int, eos: int,
                     chat_template: str | None, pre: str = "gpt2", n_ctx: int = 2048) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tk = Tokenizer(bpe)
    parts = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre in ("smollm", "llama-bpe", "qwen2"):  # these split digits one by one
        parts.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(parts)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    tk.save(str(out / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokens[bos], "eos_token": tokens[eos],
           "add_bos_token": False, "model_max_length": n_ctx, "clean_up_tokenization_spaces": False}
    if chat_template:
        cfg["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


def gguf_to_hf(gguf_path, out_dir, *, dtype: str = "bfloat16") -> Path:
    """A llama-architecture GGUF as a Hugging Face folder mlx-lm can load (cached)."""
    import gguf
    from gguf.quants import dequantize

    dst = Path(out_dir)
    if (dst / "config.json").exists():
        return dst
    r = gguf.GGUFReader(str(gguf_path))
    f = {k: r.fields[k].contents() for k in r.fields if not k.startswith("GGUF.")}
    arch = f["general.architecture"]
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUFs can be converted here, not {arch}")
    n_head, n_kv = f[f"{arch}.attention.head_count"], f[f"{arch}.attention.head_count_kv"]
    tmp = _atomic_dir(dst)
    try:
        tensors = {}
        for t in r.tensors:
            w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            name = t.name
            if name in _NAMES:
                hf = _NAMES[name]
            else:
                _, layer, kind, _ = name.split(".")
                hf = f"model.layers.{layer}.{_BLOCK[kind]}.weight"
                if kind == "attn_q":
                    w = _unpermute(w, n_head)
                elif kind == "attn_k":
                    w = _unpermute(w, n_kv)
            tensors[hf] = w
        tied = "lm_head.weight" not in tensors
        tokens = f["tokenizer.ggml.tokens"]
        cfg = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": f[f"{arch}.embedding_length"], "intermediate_size": f[f"{arch}.feed_forward_length"],
            "num_attention_heads": n_head, "num_key_value_heads": n_kv,
            "num_hidden_layers": f[f"{arch}.block_count"], "rms_norm_eps": f[f"{arch}.attention.layer_norm_rms_epsilon"],
            "rope_theta": f.get(f"{arch}.rope.freq_base", 10000.0), "vocab_size": len(tokens),
            "max_position_embeddings": f[f"{arch}.context_length"], "tie_word_embeddings": tied,
            "bos_token_id": f["tokenizer.ggml.bos_token_id"], "eos_token_id": f["tokenizer.ggml.eos_token_id"],
            "torch_dtype": dtype,
        }
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        _save_weights(tensors, tmp / "model.safetensors", dtype)
        _tokenizer_files(tmp, tokens, f["tokenizer.ggml.token_type"], f["tokenizer.ggml.merges"],
                         f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"],
                         f.get("tokenizer.chat_template"), f.get("tokenizer.ggml.pre", "gpt2"),
                         f[f"{arch}.context_length"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish_dir(tmp, dst)


def write_tiny_hf(out_dir, *, seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                  ff: int = 192, vocab_size: int = 512, corpus: str | None = None) -> Path:
    """A tiny random-weight llama with a byte-level BPE tokenizer trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    dst = Path(out_dir)
    if (dst / "config.json").exists():
        return dst
    tmp = _atomic_dir(dst)
    try:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        text = corpus or _local_corpus()
        tk.train_from_iterator([line for line in text.splitlines() if line.strip()], trainer)
        tk.save(str(tmp / "tokenizer.json"))
        n_vocab = tk.get_vocab_size()
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
            "add_bos_token": False, "chat_template": CHATML, "clean_up_tokenization_spaces": False}, indent=1))
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
               "intermediate_size": ff, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
               "num_hidden_layers": layers, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": n_vocab,
               "max_position_embeddings": 2048, "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 2}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        rng = np.random.default_rng(seed)

        def mat(rows, cols, std):
            return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

        hd = hidden // heads
        w = {"model.embed_tokens.weight": mat(n_vocab, hidden, 1.0), "model.norm.weight": np.ones(hidden, np.float32)}
        for i in range(layers):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
            w[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
            w[p + "self_attn.q_proj.weight"] = mat(hidden, hidden, hidden ** -0.5)
            w[p + "self_attn.k_proj.weight"] = mat(kv_heads * hd, hidden, hidden ** -0.5)
            w[p + "self_attn.v_proj.weight"] = mat(kv_heads * hd, hidden, hidden ** -0.5)
            w[p + "self_attn.o_proj.weight"] = mat(hidden, hidden, hidden ** -0.5)
            w[p + "mlp.gate_proj.weight"] = mat(ff, hidden, hidden ** -0.5)
            w[p + "mlp.up_proj.weight"] = mat(ff, hidden, hidden ** -0.5)
            w[p + "mlp.down_proj.weight"] = mat(hidden, ff, ff ** -0.5)
        _save_weights(w, tmp / "model.safetensors", "float32")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish_dir(tmp, dst)


def _local_corpus() -> str:
    from .prompts import load_prompts

    text = "\n".join(p["prompt"] for p in load_prompts())
    return text + "\nThe quick brown fox jumps over the lazy dog.\n" + "0 1 2 3 4 5 6 7 8 9\n"


def quantize_mlx(parent, bits: int, out_dir=None) -> Path:
    """``parent`` quantized to ``bits`` (8 or 4) with mlx_lm.convert; cached next to it."""
    if bits not in (8, 4):
        raise ValueError(f"MLX drafts are 8-bit or 4-bit, not {bits}")
    parent = Path(parent)
    dst = Path(out_dir) if out_dir else parent.with_name(f"{parent.name}-{bits}bit")
    if (dst / "config.json").exists():
        return dst
    from mlx_lm import convert

    tmp = _atomic_dir(dst)
    shutil.rmtree(tmp)  # convert() wants to create the folder itself
    try:
        convert(str(parent), mlx_path=str(tmp), quantize=True, q_bits=bits, q_group_size=64)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _finish_dir(tmp, dst)


def prepare_mlx(*, quiet: bool = False) -> dict[str, dict[str, Path]]:
    """The MLX test and demo models: tiny (f32 parent, 8bit, 4bit) and SmolLM2-135M from the
    demo GGUF (bf16 parent, 8bit, 4bit)."""
    from .models import prepare_smol

    root = models_dir() / "mlx"
    tiny = write_tiny_hf(root / "tiny-llama")
    smol_parent = gguf_to_hf(prepare_smol(quiet=quiet)["F16"], root / "SmolLM2-135M-Instruct-bf16")
    return {
        "tiny": {"parent": tiny, "8bit": quantize_mlx(tiny, 8), "4bit": quantize_mlx(tiny, 4)},
        "smollm2": {"parent": smol_parent, "8bit": quantize_mlx(smol_parent, 8), "4bit": quantize_mlx(smol_parent, 4)},
    }
