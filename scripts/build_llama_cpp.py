"""Build and install llama-cpp-python with batch-invariant CPU matrix kernels.

Why: speculative decoding verifies k drafted tokens in one batched pass, plain decoding runs one
token per pass, and greedy outputs are equal only if both compute bit-identical logits. Stock
llama.cpp multiplies a batch with llamafile's tinyBLAS kernels but a single token with ggml's
dot products, which sum in another order (logits differ by ~0.04 on SmolLM2), so near-ties
can flip. The kernel for float weights (F16/BF16/F32) is chosen by the CPU, one for every batch
size, so results no longer depend on it:
- with AVX-512, llamafile's tinyBLAS for single tokens too (a 16-row GEMV tile): tinyBLAS sums
  every output element in the same order whatever the tile shape, and batches stay cheap;
- without it (AVX2), ggml's own dot products for batches too: single tokens run exactly as in
  stock llama.cpp, and a verify pass costs more (a tinyBLAS GEMV measured 0.96x stock here and
  0.83x on another AVX2-only EPYC). README "Measured here" has the numbers.

Flash attention on the CPU computes a single token's attention in per-thread chunks of the
cache once it holds 512 tokens (a batch's in one pass per row), which sums in another order:
that split is switched off too. (Batches of 64+ tokens take a tiled kernel; verify passes stay
far below that, and a prompt is always prefilled the same way for plain and speculative runs.)

The patch is a few small edits to ggml-cpu (sgemm.cpp, ops.cpp) of the pinned version; each edit
checks the text it replaces, so a different llama.cpp fails loudly instead of building
something untested. The wheel is cached (keyed by version, patch and CMAKE_ARGS) and
installed with pip; a rerun with the wheel cached takes seconds.

Usage: python scripts/build_llama_cpp.py [--force]      (CMAKE_ARGS is passed through, e.g.
       CMAKE_ARGS="-DGGML_CUDA=on" for NVIDIA GPUs)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"
PATCH_LEVEL = 2
LOCAL = f"{VERSION}+specquant.{PATCH_LEVEL}"

SGEMM = "vendor/llama.cpp/ggml/src/ggml-cpu/llamafile/sgemm.cpp"


def _gemv(rows: int) -> str:
    return f"""        if (n == 1 && m % {rows} == 0) {{
            // specquant: one token, a matrix-vector product. {rows} rows per tile give as many
            // independent accumulator chains; every element is still summed in the same order
            // as in any other tile shape. Static split, no barriers: the graph waits for every
            // thread after each op.
            const int64_t tiles = m / {rows};
            const int64_t t0 = tiles * params->ith / params->nth;
            const int64_t t1 = tiles * (params->ith + 1) / params->nth;
            for (int64_t t = t0; t < t1; ++t)
                gemm_bloc<{rows}, 1>(t * {rows}, 0);
            return true;
        }}
"""


# (file, text that must occur exactly once, replacement)
EDITS = [
    (SGEMM,
     """    // only enable sgemm for prompt processing
#if !defined(__MMA__)
    if (n < 2)
        return false;
#endif
""",
     """    // only enable sgemm for prompt processing -- specquant: float weights take one kernel
    // family for every batch size, so results don't depend on the batch size. With AVX-512,
    // tinyBLAS for one token too; without it, ggml's own dot products for batches too (a
    // tinyBLAS GEMV ran 4-17% slower than them on AVX2-only CPUs).
#if !defined(__MMA__)
#if defined(__AVX512F__)
    if (n < 2 && Atype != GGML_TYPE_F16 && Atype != GGML_TYPE_BF16 && Atype != GGML_TYPE_F32)
        return false;
#else
    if (n < 2 || Atype == GGML_TYPE_F16 || Atype == GGML_TYPE_BF16 || Atype == GGML_TYPE_F32)
        return false;
#endif
#endif
"""),
    (SGEMM,
     """        // compute RM for only need tile with size RM&RM-1
#if VECTOR_REGISTERS == 32
""",
     """        // compute RM for only need tile with size RM&RM-1
#if VECTOR_REGISTERS == 32
""" + _gemv(16)),
    ("vendor/llama.cpp/ggml/src/ggml-cpu/ops.cpp",
     "    const bool use_split_kv_path = !use_ref && (neq1 == 1 && neq3 == 1)",
     "    // specquant: no split-KV path. It sums a single token's attention over the cache in\n"
     "    // per-thread chunks, a batch's in one pass: another order, other logits.\n"
     "    const bool use_split_kv_path = false && !use_ref && (neq1 == 1 && neq3 == 1)"),
    ("llama_cpp/__init__.py", f'__version__ = "{VERSION}"', f'__version__ = "{LOCAL}"'),
]


def patch(tree: Path) -> None:
    for rel, old, new in EDITS:
        f = tree / rel
        text = f.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"build_llama_cpp: {rel} of llama-cpp-python {VERSION} does not have the text "
                             "this patch replaces; the patch must be redone for this version")
        f.write_text(text.replace(old, new))


def cache_dir() -> Path:
    home = os.environ.get("SPECQUANT_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specquant")
    return Path(home) / "wheels"


def installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if the wheel is cached")
    args = ap.parse_args(argv)
    cmake_args = os.environ.get("CMAKE_ARGS", "").strip()
    key = hashlib.sha1(f"{LOCAL}|{cmake_args}|{''.join(e[2] for e in EDITS)}".encode()).hexdigest()[:10]
    where = cache_dir() / key
    marker = cache_dir() / "installed"  # which build was installed last
    wheels = sorted(where.glob("llama_cpp_python-*.whl")) if where.is_dir() else []
    if (not args.force and wheels and installed_version() == LOCAL and marker.exists()
            and marker.read_text().strip() == key):
        print(f"llama-cpp-python {LOCAL} (batch-invariant build) is installed")
        return 0
    if args.force or not wheels:
        print(f"building llama-cpp-python {LOCAL} (~15 min on 2 cores, once; CMAKE_ARGS={cmake_args!r})", flush=True)
        with tempfile.TemporaryDirectory(prefix="specquant-llama-") as tmp:
            tmp = Path(tmp)
            pip("download", "-q", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={VERSION}", "-d", str(tmp))
            sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(sdist) as tf:
                tf.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(tmp)
            tree = tmp / f"llama_cpp_python-{VERSION}"
            patch(tree)
            out = tmp / "wheel"
            pip("wheel", "--no-deps", "-w", str(out), str(tree))
            where.mkdir(parents=True, exist_ok=True)
            for old in where.glob("*.whl"):
                old.unlink()
            for w in out.glob("*.whl"):  # copied under a temporary name: a cached wheel is always whole
                part = where / (w.name + ".part")
                shutil.copyfile(w, part)
                os.replace(part, where / w.name)
        wheels = sorted(where.glob("llama_cpp_python-*.whl"))
    marker.unlink(missing_ok=True)
    pip("install", "--force-reinstall", "--no-deps", str(wheels[-1]))
    pip("install", str(wheels[-1]))  # its dependencies (numpy, jinja2, ...)
    marker.write_text(key)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
