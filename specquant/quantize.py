"""Make Q8_0 / Q4_K_M / Q4_0 drafts (or an F16 parent) from a GGUF with llama.cpp's quantizer.

Outputs are cached by the source file's identity (path, size, mtime) and written
atomically: llama.cpp writes to a temporary name that is renamed only once complete, so an
interrupted run never leaves a file that is later taken as finished.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import tempfile
from pathlib import Path

from backends.base import BackendError
from backends.llama_cpp import check_gguf

from .paths import cache_dir

# llama_ftype values (llama.h)
FTYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15, "Q4_1": 3, "Q5_K_M": 17, "Q6_K": 18}
SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)  # NAME-00001-of-00004.gguf: one of a model's shards
ALIASES = {"q8": "Q8_0", "q4": "Q4_K_M", "q4_0": "Q4_0", "q4_k_m": "Q4_K_M", "q8_0": "Q8_0", "f16": "F16", "fp16": "F16"}


def normalize_qtype(qtype: str) -> str:
    q = ALIASES.get(qtype.lower(), qtype.upper())
    if q not in FTYPES:
        raise ValueError(f"unknown quantization {qtype!r}; choose one of: {', '.join(FTYPES)}")
    return q


def source_id(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]


def output_path(src: Path, qtype: str, out_dir: Path | None = None) -> Path:
    out_dir = Path(out_dir) if out_dir else cache_dir() / "quantized"
    name = SHARD.sub(".gguf", src.name)  # a sharded parent: one file comes out
    stem = name[:-5] if name.endswith(".gguf") else name
    for tag in ("F16", "f16", "BF16", "bf16", "F32", "f32"):
        stem = stem.replace(f".{tag}", "").replace(f"-{tag}", "")
    return out_dir / f"{stem}.{qtype}.{source_id(src)}.gguf"


def quantize(src, qtype: str, out_dir=None, *, out_path=None, n_threads: int = 0) -> Path:
    """Return the path of ``src`` quantized to ``qtype``, making it if not cached."""
    src = check_gguf(src)
    q = normalize_qtype(qtype)
    dst = Path(out_path) if out_path else output_path(src, q, out_dir)
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    import llama_cpp as lc

    from backends.llama_cpp import init

    init()
    params = lc.llama_model_quantize_default_params()
    params.ftype = FTYPES[q]
    params.allow_requantize = True
    params.nthread = n_threads
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    try:
        rc = lc.llama_model_quantize(str(src).encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            raise BackendError(f"quantizing {src.name} to {q} failed (llama_model_quantize returned {rc})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
