"""Build and install llama-cpp-python with batch-invariant CPU matrix kernels.

Why: speculative decoding verifies k drafted tokens in one batched pass, plain decoding runs one
token per pass, and greedy outputs are equal only if both compute bit-identical logits. Stock
llama.cpp multiplies a batch with llamafile's tinyBLAS kernels but a single token with ggml's
dot products, which sum in another order (logits differ by ~0.04 on SmolLM2), so near-ties
can flip. This build gives float weights kernels that sum every output element in the same
order for every batch size, chosen by the CPU:
- x86 with AVX2 or AVX-512, float16 weights: single tokens keep stock's ggml_vec_dot_f16, and a
  batch of up to 48 tokens (every verify pass) takes ``specquant_vecdot_gemm``, which sums each
  element exactly as ggml_vec_dot_f16 does (its own macros: the same loads, FMAs, reduction and
  leftovers) while loading a weight row once for three columns and widening the batch's
  columns to float once per pass: plain decoding is stock's, and a verify pass is cheaper than
  stock's tinyBLAS on a 2-core AVX2 EPYC (2 / 3 / 5 tokens: 1.07 / 1.10 / 1.5 steps, measured
  before level 7, when each column was widened again for every weight row). On a 2-core Sapphire
  Rapids VM that widening made passes of 3 / 5 tokens cost 1.65 / 2.73 steps in-process (level 6),
  1.46-1.52 / 2.37 with it done once (level 7; tinyBLAS, level 5: 1.49 / 2.26). Longer batches
  (prompts, prefilled alike by plain and speculative runs) keep tinyBLAS. BF16/F32 weights take
  ggml's dot products at every batch size there. (Patch
  levels 1-5 gave AVX-512 CPUs tinyBLAS for single tokens too, a 16-row GEMV tile: 1.02-1.06x stock
  on a 2-core AVX-512 EPYC, but 0.955-0.975x on a 2-core Sapphire Rapids Xeon and 0.83-0.96x on
  AVX2-only CPUs. Stock's own one-token kernel is stock's speed on every CPU by construction.)
- other CPUs (ARM, ...): float weights take ggml's dot products for every pass of up to 48 tokens,
  one token included. Stock ARM builds switch to tinyBLAS at 8 tokens for float16 (4 for float32),
  so a verify pass of 8+ tokens summed in another order; checked under emulation by
  scripts/check_arm.sh (passes of 8-33 tokens differed before, all of 2-33 agree now).
README "Measured here" has the numbers.

Flash attention on the CPU computes a single token's attention in per-thread chunks of the
cache once it holds 512 tokens (a batch's in one pass per row), which sums in another order:
that split is switched off too. (Batches of 64+ tokens take a tiled kernel; verify passes stay
far below that, and a prompt is always prefilled the same way for plain and speculative runs.)

One fix that is not about exactness: on CPUs with AMX (Intel Sapphire Rapids and newer), llama.cpp
0.3.36 built by GCC 12 (Debian 12's) crashed with SIGILL on any batch of 2+ tokens of a quantized
model, i.e. on every draft's prefill: GCC dropped the stores that filled the AMX tile configuration
on the stack, so the tiles had no rows. The configuration is a constant in .rodata now (as
llama.cpp's PR #26954 proposes); tests/test_llama_cpp.py runs the drafts' batches in a child process.

The patch is a few edits to ggml-cpu (sgemm.cpp, ops.cpp, amx/mmq.cpp) of the pinned version; each edit
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
PATCH_LEVEL = 7
LOCAL = f"{VERSION}+specquant.{PATCH_LEVEL}"

SGEMM = "vendor/llama.cpp/ggml/src/ggml-cpu/llamafile/sgemm.cpp"
AMX_MMQ = "vendor/llama.cpp/ggml/src/ggml-cpu/amx/mmq.cpp"


VECDOT_GEMM = r"""
#if (defined(__AVX__) || defined(__AVX2__) || defined(__AVX512F__)) && defined(__F16C__)
#define SPECQUANT_VECDOT_GEMM 1  // x86: AVX2 or AVX-512 (whose GGML_F16_DOT macros ggml_vec_dot_f16 uses too)
typedef double ggml_float;  // as in ggml-cpu/vec.h, which GGML_F16_DOT_VEC_REDUCE expects
#include <vector>
static_assert(GGML_F16_DOT_EPR == GGML_F32_EPR, "GGML_F16_DOT_VEC must be a vector of GGML_F32_EPR floats");
// specquant: a batch times float16 weights, each output element summed exactly as
// ggml_vec_dot_f16 sums one weight row by one column (the same FMAs into the same
// GGML_F16_DOT_ARR accumulators, the same reduction and leftovers), so a batch gives the same
// bits as one-token steps, which take ggml_vec_dot_f16 itself. Cheaper than a dot product per
// element: the weight row is loaded and widened once for NC columns, and the columns (the batch's
// activations) are widened to float once per pass, not once per weight row. Widening float16 to
// float is exact, so a widened value loaded later is the value ggml_vec_dot_f16 widens on the fly.
template <int NC>
static inline void specquant_dot_cols(int64_t k, const ggml_fp16_t * x, const float * B, int64_t ldb,
                                      float * C, int64_t ldc) {
    const int64_t np = k & ~(int64_t)(GGML_F16_DOT_STEP - 1);
    GGML_F16_DOT_VEC sum[NC][GGML_F16_DOT_ARR];
    for (int c = 0; c < NC; ++c)
        for (int j = 0; j < GGML_F16_DOT_ARR; ++j)
            sum[c][j] = GGML_F16_DOT_VEC_ZERO;
    for (int64_t l = 0; l < np; l += GGML_F16_DOT_STEP) {
        for (int j = 0; j < GGML_F16_DOT_ARR; ++j) {
            GGML_F16_DOT_VEC ax = GGML_F16_DOT_VEC_LOAD(x + l + j*GGML_F16_DOT_EPR, j);
            for (int c = 0; c < NC; ++c) {
                GGML_F16_DOT_VEC ay = GGML_F32_VEC_LOAD(B + ldb*c + l + j*GGML_F16_DOT_EPR);
                sum[c][j] = GGML_F16_DOT_VEC_FMA(sum[c][j], ax, ay);
            }
        }
    }
    for (int c = 0; c < NC; ++c) {
        ggml_float sumf = 0.0;
        GGML_F16_DOT_VEC_REDUCE(sumf, sum[c]);
        for (int64_t l = np; l < k; ++l)
            sumf += (ggml_float)(GGML_CPU_FP16_TO_FP32(x[l])*B[ldb*c + l]);
        C[ldc*c] = (float) sumf;
    }
}

static void specquant_vecdot_gemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                                  const ggml_fp16_t * A, int64_t lda, const ggml_fp16_t * B, int64_t ldb,
                                  float * C, int64_t ldc) {
    const int64_t r0 = m * params->ith / params->nth;
    const int64_t r1 = m * (params->ith + 1) / params->nth;
    static thread_local std::vector<float> wide;  // the columns as floats: each thread its own copy, no barrier
    wide.resize((size_t)(n * k));
    for (int64_t j = 0; j < n; ++j) {
        int64_t l = 0;
        for (; l + GGML_F32_EPR <= k; l += GGML_F32_EPR)
            GGML_F32_VEC_STORE(&wide[j*k + l], GGML_F16_DOT_VEC_LOAD(B + ldb*j + l, 0));
        for (; l < k; ++l)
            wide[j*k + l] = GGML_CPU_FP16_TO_FP32(B[ldb*j + l]);
    }
    const float * Bw = wide.data();
    for (int64_t i = r0; i < r1; ++i) {  // a weight row stays in L1 while every column meets it
        const ggml_fp16_t * x = A + lda*i;
        int64_t j = 0;
        for (; j + 3 <= n; j += 3) specquant_dot_cols<3>(k, x, Bw + k*j, k, C + ldc*j + i, ldc);
        if (n - j == 2) specquant_dot_cols<2>(k, x, Bw + k*j, k, C + ldc*j + i, ldc);
        if (n - j == 1) specquant_dot_cols<1>(k, x, Bw + k*j, k, C + ldc*j + i, ldc);
    }
}
#endif

"""

# where the F16 case of llamafile_sgemm starts, before its per-ISA branches
F16_CASE = "    case GGML_TYPE_F16: {\n#if defined(__AVX512F__)\n"

# (file, text that must occur exactly once, replacement)
EDITS = [
    (SGEMM,
     """    // only enable sgemm for prompt processing
#if !defined(__MMA__)
    if (n < 2)
        return false;
#endif
""",
     """    // only enable sgemm for prompt processing -- specquant: float weights take kernels that sum
    // every output element in the same order for every batch size (see specquant_vecdot_gemm)
#if !defined(__MMA__)
#if defined(SPECQUANT_VECDOT_GEMM)
    if (n < 2 || Atype == GGML_TYPE_BF16 || Atype == GGML_TYPE_F32)
        return false;
#else
    // other CPUs (ARM, ...): float weights take ggml's dot products for every pass of up to 48
    // tokens, one token included (ARM's float16 tinyBLAS starts at 8 tokens, its float32 one at 4);
    // longer passes (prompts, prefilled alike by plain and speculative runs) keep sgemm
    if (n < 2 || (n <= 48 && (Atype == GGML_TYPE_F16 || Atype == GGML_TYPE_BF16 || Atype == GGML_TYPE_F32)))
        return false;
#endif
#endif
"""),
    (SGEMM,
     "bool llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,\n",
     VECDOT_GEMM + "bool llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,\n"),
    (SGEMM, F16_CASE, F16_CASE.replace("{\n", """{
#if defined(SPECQUANT_VECDOT_GEMM)
        // specquant: a batch up to the longest verify pass (33 tokens, with room to spare), summed
        // as ggml_vec_dot_f16 sums one token; longer batches (prompts, the same for plain and
        // speculative runs) keep tinyBLAS, which prefills ~1.7x faster
        if (Btype == GGML_TYPE_F16 && n <= 48) {
            specquant_vecdot_gemm(params, m, n, k, (const ggml_fp16_t *)A, lda, (const ggml_fp16_t *)B, ldb,
                                  (float *)C, ldc);
            return true;
        }
#endif
""", 1)),
    ("vendor/llama.cpp/ggml/src/ggml-cpu/ops.cpp",
     "    const bool use_split_kv_path = !use_ref && (neq1 == 1 && neq3 == 1)",
     "    // specquant: no split-KV path. It sums a single token's attention over the cache in\n"
     "    // per-thread chunks, a batch's in one pass: another order, other logits.\n"
     "    const bool use_split_kv_path = false && !use_ref && (neq1 == 1 && neq3 == 1)"),
    (AMX_MMQ,
     """    alignas(64) tile_config_t tc = {};
    tc.palette_id = 1;
    tc.start_row = 0;
    tc.rows[0] = 8;   tc.colsb[0] = 64;
    tc.rows[1] = 8;   tc.colsb[1] = 64;
    tc.rows[2] = 16;  tc.colsb[2] = 32;
    tc.rows[3] = 16;  tc.colsb[3] = 32;
    tc.rows[4] = 16;  tc.colsb[4] = 64;
    tc.rows[5] = 16;  tc.colsb[5] = 64;
    tc.rows[6] = 16;  tc.colsb[6] = 64;
    tc.rows[7] = 16;  tc.colsb[7] = 64;
""",
     """    // specquant: a constant in .rodata. Built on the stack, GCC 12 dropped the rows/colsb stores
    // (it does not see ldtilecfg read them): every tile had 0 rows and the first tile instruction
    // raised SIGILL, so quantized models crashed on any batch of 2+ tokens on AMX CPUs.
    alignas(64) static const tile_config_t tc = {
        /* palette_id */ 1, /* start_row */ 0, /* reserved_0 */ {0},
        /* colsb */ {64, 64, 32, 32, 64, 64, 64, 64},
        /* rows */ {8, 8, 16, 16, 16, 16, 16, 16},
    };
"""),
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
