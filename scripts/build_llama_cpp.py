"""Build and install llama-cpp-python with batch-invariant CPU matrix kernels.

Why: speculative decoding verifies k drafted tokens in one batched pass, plain decoding runs one
token per pass, and greedy outputs are equal only if both compute bit-identical logits. Stock
llama.cpp multiplies a batch with llamafile's tinyBLAS kernels but a single token with ggml's
dot products, which sum in another order (logits differ by ~0.04 on SmolLM2), so near-ties
can flip. This build gives float weights kernels that sum every output element in the same
order for every batch size, chosen by the CPU:
- x86 with AVX2 or AVX-512, float16 weights: every batch size sums as stock's tinyBLAS sums a batch
  of 2+ tokens (one vector accumulator per output element, then a horizontal sum). That order
  depends on neither tinyBLAS's tiles nor the batch size; only the single token differed (stock
  gives it ``ggml_vec_dot_f16``: four interleaved chains, reduced in double). Here one token and
  every verify pass (up to 33 tokens) take ``specquant_f16_gemm``, written with tinyBLAS's own
  helpers; prompts keep tinyBLAS itself. It is faster than both where decoding lives: the batch's
  columns are widened to float once per call, a tile of 4-8 weight rows is read from memory once
  and meets every column, three at a time, while it stays in cache, and the next tile is
  prefetched into L2 in address order. Measured beside stock in one process on a 2-core Zen 4
  (docs/measurements.md, patch level 8): the one-token step 1.02-1.07x stock's speed, passes of
  2-33 tokens 1.1-1.8x, AVX-512 and AVX2-only builds, the demo size and the 1.7B shape. BF16/F32
  weights take ggml's dot products at every batch size there. (Levels 6-7 kept stock's one-token
  dot product and matched its order in batches: exact, but a pass of 3 / 5 tokens cost 2.8 / 4.3
  steps at the 1.7B shape on that Zen 4, stock 1.7 / 1.9.)
- other CPUs (ARM, ...): float weights take ggml's dot products for every pass of up to 48 tokens,
  one token included. Stock ARM builds switch to tinyBLAS at 8 tokens for float16 (4 for float32),
  so a verify pass of 8+ tokens summed in another order; checked under emulation by
  scripts/check_arm.sh (passes of 8-33 tokens differed before, all of 2-33 agree now).

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
PATCH_LEVEL = 8
LOCAL = f"{VERSION}+specquant.{PATCH_LEVEL}"

SGEMM = "vendor/llama.cpp/ggml/src/ggml-cpu/llamafile/sgemm.cpp"
AMX_MMQ = "vendor/llama.cpp/ggml/src/ggml-cpu/amx/mmq.cpp"


EXACT_F16 = r"""
#if defined(__AVX512F__) || ((defined(__AVX__) || defined(__AVX2__)) && defined(__F16C__))
#define SPECQUANT_EXACT_F16 1  // x86 with AVX2 or AVX-512: where tinyBLAS has the float16 kernel this matches
#include <vector>
// specquant: float16 weights times a batch of 1 to SPECQUANT_MAX_N tokens (one token, every verify pass),
// each output element summed exactly as tinyBLAS sums it for every batch of 2+ tokens: one vector
// accumulator per element, madd over k in steps of KN from zero, then hsum, through tinyBLAS's own helpers
// (load, madd, hsum), so with the same instructions. tinyBLAS's order depends on neither its tiles nor the
// batch size, so with single tokens taking this kernel too (stock gives them ggml_vec_dot_f16, which sums
// four interleaved chains in double) every batch size computes the same bits; prompts keep tinyBLAS.
// Why it is cheaper than both where decoding lives: the batch's columns are widened to float once per
// call (tinyBLAS widens them at every use; widening float16 is exact, so the FMAs see the same values); a
// tile of rows is read from memory once, and its columns go by in groups of three while the tile stays in
// cache, so each weight meets every column for one read; the tile's rows are independent accumulator
// chains that hide the FMA latency; and the next tile is prefetched into L2, in address order, while this
// one is summed (without it, four row streams at once ran 10-25% below stock's one-row dot product on a
// 2-core Zen 4 at the 1.7B shape; prefetching each of the next rows at the current column, 3-10%).
#if defined(__AVX512F__)
typedef __m512 specquant_v;
#define SPECQUANT_KN 16
#define SPECQUANT_RM 8  // rows a tile for 2+ columns: 8 x 3 accumulators + 3 columns + a row, of 32 registers
static inline void specquant_store(float * p, __m512 x) { _mm512_storeu_ps(p, x); }
#else
typedef __m256 specquant_v;
#define SPECQUANT_KN 8
#define SPECQUANT_RM 4  // 4 x 3 accumulators + 3 columns + a row: 16 registers
static inline void specquant_store(float * p, __m256 x) { _mm256_storeu_ps(p, x); }
#endif
#define SPECQUANT_MAX_N 33  // the longest verify pass (32 drafted tokens); prompts keep tinyBLAS

// C[ldc*j + i] = sum over l of A[lda*i + l] * B[ldb*j + l], for RM rows i and RN columns j
template <int RM, int RN>
static inline void specquant_tile(int64_t k, const ggml_fp16_t * A, int64_t lda, const float * B, int64_t ldb,
                                  float * C, int64_t ldc, const char * next) {
    specquant_v Cv[RN][RM] = {};
    for (int64_t l = 0; l < k; l += SPECQUANT_KN) {
        if (next) {  // the next tile into L2, in address order, a tile's share a step: one stream for the memory
            constexpr int lines = (RM * SPECQUANT_KN * 2 + 63) / 64;
            for (int p = 0; p < lines; ++p)
                _mm_prefetch(next + ((l / SPECQUANT_KN) * lines + p) * 64, _MM_HINT_T1);
        }
        specquant_v Bv[RN];
        for (int j = 0; j < RN; ++j)
            Bv[j] = load<specquant_v>(B + ldb * j + l);
        for (int i = 0; i < RM; ++i) {
            specquant_v Av = load<specquant_v>(A + lda * i + l);
            for (int j = 0; j < RN; ++j)
                Cv[j][i] = madd(Av, Bv[j], Cv[j][i]);
        }
    }
    for (int j = 0; j < RN; ++j)
        for (int i = 0; i < RM; ++i)
            C[ldc * j + i] = hsum(Cv[j][i]);
}

// RM rows times n columns, three at a time: the first group reads the rows from memory (and prefetches the
// next tile), the others find them in cache
template <int RM>
static void specquant_rows(int64_t n, int64_t k, const ggml_fp16_t * A, int64_t lda, const float * B, float * C,
                           int64_t ldc) {
    const char * next = (const char *)(A + lda * RM);
    int64_t j = 0;
    for (; j + 3 <= n; j += 3, next = nullptr)
        specquant_tile<RM, 3>(k, A, lda, B + k * j, k, C + ldc * j, ldc, next);
    if (n - j == 2)
        specquant_tile<RM, 2>(k, A, lda, B + k * j, k, C + ldc * j, ldc, next);
    else if (n - j == 1)
        specquant_tile<RM, 1>(k, A, lda, B + k * j, k, C + ldc * j, ldc, next);
}

// false where tinyBLAS refuses the shape too (k not a multiple of KN, rows not a multiple of 4): there every
// batch size takes ggml_vec_dot_f16; and for batches past SPECQUANT_MAX_N (prompts), which keep tinyBLAS
static bool specquant_f16_gemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                               const ggml_fp16_t * A, int64_t lda, const ggml_fp16_t * B, int64_t ldb,
                               float * C, int64_t ldc) {
    if (n < 1 || n > SPECQUANT_MAX_N || k % SPECQUANT_KN != 0 || m % 4 != 0)
        return false;
    static thread_local std::vector<float> wide;  // the columns as floats: each thread its own, no barrier
    wide.resize((size_t)(n * k));
    for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < k; l += SPECQUANT_KN)
            specquant_store(&wide[j * k + l], load<specquant_v>(B + ldb * j + l));
    const int64_t fours = m / 4;  // each thread its share of the rows, in fours
    const int64_t r0 = 4 * (fours * params->ith / params->nth);
    const int64_t r1 = 4 * (fours * (params->ith + 1) / params->nth);
    // one column: tiles of 4 rows (8 row streams made the one-token step 2-4% slower on the Zen 4)
    constexpr int RM = SPECQUANT_RM;
    const int64_t rm = n == 1 ? 4 : RM;
    int64_t i = r0;
    for (; i + rm <= r1; i += rm)
        rm == RM ? specquant_rows<RM>(n, k, A + lda * i, lda, wide.data(), C + i, ldc)
                 : specquant_rows<4>(n, k, A + lda * i, lda, wide.data(), C + i, ldc);
    for (; i < r1; i += 4)  // the rest, in fours
        specquant_rows<4>(n, k, A + lda * i, lda, wide.data(), C + i, ldc);
    return true;
}
#endif

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
     """    // only enable sgemm for prompt processing -- specquant: float16 weights with up to 33 tokens, one token
    // included, take specquant_f16_gemm, which sums every element as tinyBLAS does for longer batches
#if defined(SPECQUANT_EXACT_F16)
    if (Atype == GGML_TYPE_F16 && Btype == GGML_TYPE_F16 && Ctype == GGML_TYPE_F32 &&
        specquant_f16_gemm(params, m, n, k, (const ggml_fp16_t *)A, lda, (const ggml_fp16_t *)B, ldb, (float *)C, ldc))
        return true;
#endif
#if !defined(__MMA__)
#if defined(SPECQUANT_EXACT_F16)
    // BF16 and F32 weights take ggml's dot products at every batch size (tinyBLAS sums them another way)
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
     EXACT_F16 + "bool llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,\n"),
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


# The CUDA path (built with CMAKE_ARGS="-DGGML_CUDA=on"; a CPU build compiles none of it, so these edits
# enter the wheel cache's key only for CUDA builds). On an NVIDIA GPU (Ampere and newer) stock llama.cpp
# multiplies float16 weights by one token with MMVF (CUDA cores; partial sums in half precision, or in
# float where the product is fused with the FFN's gate, whose node's parameters it misreads as a
# precision) and by 2-16 tokens with MMF (tensor cores), 17+ with cuBLAS: other summation orders, logits
# differing by 0.06 (135M) to 2 (7B) on an H100/H200. MMF sums each column of its tile as it sums any
# other, whatever the tile's width (the warps split the row by its length alone, the tensor cores sum
# each element within an instruction), so float16 weights take MMF for every pass of 1-16 tokens, one
# token included, wherever MMF takes the matrix (rows a multiple of 64 elements, 32 rows a block), and
# MMVF with float partial sums for 1-16 tokens where it does not: a verify pass of up to 16 tokens
# computes what one-token passes compute. (Flash attention stays off on a GPU: attention is two float16
# matrix products through the same kernels.)
# In the environment: SPECQUANT_CUDA_STOCK=1 restores stock routing (the A/B of benchmarks/gpu_check.py,
# one binary); SPECQUANT_CUDA_KERNEL=mmvf takes MMVF (float sums) for 1-17 tokens everywhere instead of
# MMF: exact too, and its one-token step beat stock's on an H200, but a pass of 17 tokens costs 5-7
# one-token steps at 1.7B-7B (MMF: 1.3-1.4). Measured: docs/measurements.md, "On a GPU", December 4.
MMVF = "vendor/llama.cpp/ggml/src/ggml-cuda/mmvf.cu"
SPECQUANT_MMVF_WIDE = "".join(
    f"""                    case {n}:
                        launch_mul_mat_vec_f_cuda<T, type_acc, {n}>
                            (x, y, ids, fusion, dst, ncols, nrows, stride_row, stride_col_y, stride_col_dst,
                             nchannels_x, nchannels_y, nchannels_dst, stride_channel_x, stride_channel_y,
                             stride_channel_dst, nsamples_x, nsamples_dst, stride_sample_x, stride_sample_y, stride_sample_dst,
                             nsamples_dst, ids_stride, stream);
                        return;
""" for n in range(9, 18))
CUDA_EDITS = [
    ("vendor/llama.cpp/ggml/src/ggml-cuda/mmvf.cuh",
     "#define MMVF_MAX_BATCH_SIZE 8 // Max. batch size for which to use MMVF kernels.\n",
     """#define MMVF_MAX_BATCH_SIZE 8 // Max. batch size for which to use MMVF kernels.

// specquant: on NVIDIA GPUs float16 weights take one kernel family for every pass of up to this many
// tokens, one token included (MMF where it takes the matrix, else MMVF with float partial sums), so a
// verify pass computes what one-token passes compute (scripts/build_llama_cpp.py)
#define SPECQUANT_EXACT_MAX_BATCH_SIZE 16
#define SPECQUANT_MMVF_MAX_BATCH_SIZE 17 // SPECQUANT_CUDA_KERNEL=mmvf: MMVF for up to this many

// specquant: 0 = stock (SPECQUANT_CUDA_STOCK=1), 1 = MMF where it applies (default), 2 = MMVF everywhere
int specquant_cuda_route(void);
bool specquant_cuda_exact(void);
"""),
    (MMVF,
     """    const int cc = ggml_cuda_info().devices[ggml_cuda_get_device()].cc;
    const enum ggml_prec prec = fast_fp16_available(cc) ? ggml_prec(dst->op_params[0]) : GGML_PREC_F32;
""",
     """    const int cc = ggml_cuda_info().devices[ggml_cuda_get_device()].cc;
    // specquant: float partial sums in every pass. Stock sums in half precision unless the node asks for
    // float, and reads the node's parameters even where dst is a fused GLU or ADD node (the FFN's up and
    // gate products at one token then sum in float, at 2+ tokens in half): other logits.
    const enum ggml_prec prec = fast_fp16_available(cc) && !specquant_cuda_exact() ? ggml_prec(dst->op_params[0]) : GGML_PREC_F32;
"""),
    (MMVF,
     "bool ggml_cuda_should_use_mmvf(enum ggml_type type, int cc, const int64_t * src0_ne, const size_t * src0_nb, int64_t ne11) {\n",
     """bool ggml_cuda_should_use_mmf(enum ggml_type type, int cc, int warp_size, const int64_t * src0_ne,
        const size_t * src0_nb, const int src1_ncols, bool mul_mat_id);  // mmf.cuh

int specquant_cuda_route(void) {
    static const int route = [] {
        const char * stock  = getenv("SPECQUANT_CUDA_STOCK");
        const char * kernel = getenv("SPECQUANT_CUDA_KERNEL");
        if (stock != nullptr && atoi(stock) != 0) {
            return 0;
        }
        return kernel != nullptr && strcmp(kernel, "mmvf") == 0 ? 2 : 1;
    }();
    return route;
}

bool specquant_cuda_exact(void) {
    return specquant_cuda_route() != 0;
}

bool ggml_cuda_should_use_mmvf(enum ggml_type type, int cc, const int64_t * src0_ne, const size_t * src0_nb, int64_t ne11) {
"""),
    (MMVF,
     "        case GGML_TYPE_F16:\n            if (GGML_CUDA_CC_IS_NVIDIA(cc)) {\n                const bool src0_small",
     """        case GGML_TYPE_F16:
            // specquant: one kernel family, one summation order, for every pass of 1-16 tokens: MMF
            // (ggml_cuda_mul_mat's next choice) wherever it takes the matrix, MMVF where it does not
            if (GGML_CUDA_CC_IS_NVIDIA(cc) && specquant_cuda_route() == 1) {
                if (ggml_cuda_should_use_mmf(type, cc, 32, src0_ne, src0_nb, 1, false)) {
                    return false;
                }
                return ne11 <= SPECQUANT_EXACT_MAX_BATCH_SIZE;
            }
            if (GGML_CUDA_CC_IS_NVIDIA(cc) && specquant_cuda_route() == 2) {
                return ne11 <= SPECQUANT_MMVF_MAX_BATCH_SIZE;
            }
            if (GGML_CUDA_CC_IS_NVIDIA(cc)) {
                const bool src0_small"""),
    (MMVF,
     """        default:
            GGML_ABORT("fatal error");
            break;
    }
}

template<typename T>
static void mul_mat_vec_f_cuda(""",
     """        default:
            // specquant: float16 weights take MMVF for batches of 9-17 tokens too
            if constexpr (std::is_same_v<T, half>) {
                switch (ncols_dst) {
""" + SPECQUANT_MMVF_WIDE + """                    default:
                        break;
                }
            }
            GGML_ABORT("fatal error");
            break;
    }
}

template<typename T>
static void mul_mat_vec_f_cuda("""),
]


def patch(tree: Path) -> None:
    for rel, old, new in EDITS + CUDA_EDITS:
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
    edits = EDITS + (CUDA_EDITS if "GGML_CUDA=ON" in cmake_args.upper() else [])  # a CPU build compiles no CUDA
    key = hashlib.sha1(f"{LOCAL}|{cmake_args}|{''.join(e[2] for e in edits)}".encode()).hexdigest()[:10]
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
