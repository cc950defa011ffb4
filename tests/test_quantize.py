"""Drafts made from an F16 parent: cached by source identity, written atomically."""
import os

import pytest

from backends import BackendError, load_model
from specquant import quantize as qz


def test_quantize_makes_a_loadable_draft_and_caches_it(tiny_paths, tmp_path):
    src = tmp_path / "parent.F16.gguf"
    src.write_bytes(tiny_paths["F16"].read_bytes())
    out = qz.quantize(src, "q8", tmp_path / "cache")
    assert out.exists() and ".Q8_0." in out.name and out.stat().st_size < src.stat().st_size
    m = load_model(out, n_ctx=256)
    assert m.describe()["file_type"] == "7"  # LLAMA_FTYPE_MOSTLY_Q8_0
    mtime = out.stat().st_mtime_ns
    assert qz.quantize(src, "Q8_0", tmp_path / "cache") == out and out.stat().st_mtime_ns == mtime
    # A changed source is a different identity: a new file, the old one untouched.
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    again = qz.quantize(src, "Q8_0", tmp_path / "cache")
    assert again != out and again.exists() and out.exists()


def test_interrupted_quantize_leaves_nothing_taken_as_complete(tiny_paths, tmp_path, monkeypatch):
    import llama_cpp

    def fail(src, dst, params):
        with open(dst, "wb") as f:  # llama.cpp had started writing...
            f.write(b"GGUF partial")
        raise KeyboardInterrupt  # ...and the user pressed Ctrl-C

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", fail)
    with pytest.raises(KeyboardInterrupt):
        qz.quantize(tiny_paths["F16"], "Q4_0", tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda s, d, p: 1)
    with pytest.raises(BackendError, match="failed"):
        qz.quantize(tiny_paths["F16"], "Q4_0", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_quantization_and_bad_source(tmp_path, tiny_paths):
    with pytest.raises(ValueError, match="unknown quantization"):
        qz.quantize(tiny_paths["F16"], "q3_banana", tmp_path)
    with pytest.raises(BackendError, match="not found"):
        qz.quantize(tmp_path / "missing.gguf", "q8", tmp_path)
