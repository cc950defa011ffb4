"""scripts/build_llama_cpp.py's edits against the pinned llama-cpp-python source: each replaces text that
occurs exactly once, the CUDA ones too (they are compiled only on a GPU machine, so a stale one would
otherwise surface there first)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import build_llama_cpp as build  # noqa: E402


def test_every_edit_applies_once_to_the_pinned_source(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={build.VERSION}", "-d", str(tmp_path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"the package index is not reachable: {r.stderr.strip()[-200:]}")
    sdist = next(tmp_path.glob("llama_cpp_python-*.tar.gz"))
    edits = build.EDITS + build.CUDA_EDITS
    wanted = {rel for rel, _, _ in edits}
    tree = tmp_path / "src"
    prefix = f"llama_cpp_python-{build.VERSION}/"
    with tarfile.open(sdist) as tf:
        for m in tf.getmembers():
            rel = m.name.removeprefix("./").removeprefix(prefix)
            if rel in wanted and m.isfile():
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / rel).write_bytes(tf.extractfile(m).read())
    assert {rel for rel in wanted if (tree / rel).is_file()} == wanted
    build.patch(tree)
    for rel, _, new in edits:
        assert new in (tree / rel).read_text(), rel
    # the CUDA edits route float16 weights and keep the stock switch
    mmvf = (tree / build.MMVF).read_text()
    assert "specquant_cuda_route() == 1" in mmvf and "SPECQUANT_CUDA_STOCK" in mmvf
