#!/usr/bin/env bash
# The CUDA path on a lent GPU machine (H100/H200: CUDA, Python 3.12, no network), in two calls
# that follow each other while the machine stays warm (the demo model is too big to carry in one):
#
#   bash benchmarks/gpu_check.sh build      builds llama-cpp-python with our CUDA edits into /tmp/site
#       (~4 min on 16 cores), then exactness of tiny models on the GPU, and at the 1.7B and 7B shapes
#       (synthetic weights) exactness and the pass-cost curve T(1..17), ours beside stock's: the same
#       binary run again with SPECQUANT_CUDA_STOCK=1 (benchmarks/gpu_check.py curve / ab); then, if
#       time is left, the router's costs at 7B with Q8_0 / Q4_0 drafts (gpu_check.py synthetic)
#   bash benchmarks/gpu_check.sh demo       the SmolLM2 demo files (F16 target, Q8_0 / Q4_K_M / Q4_0
#       drafts made there): exactness and T(1..17) ours beside stock's, `specquant bench --model demo`
#       (182 answers: q8, q4_0, lookup at k = 4 and auto, policy auto) and the GPU-relevant tests
#
# Both calls together take about 10 minutes of an H100/H200 (start, build and transfers included).
# Before them, on this machine: `bash benchmarks/gpu_check.sh prepare`. Measured: docs/measurements.md,
# "On a GPU".
#
# What it reads, prepared here (the folders are ignored by git; carry them):
#   .gpu/   llama-cpp-python-src.tgz (the sdist slimmed by ../shared/gpu/make-carry.sh and patched by
#           scripts/build_llama_cpp.py's patch(), CUDA edits included), the gguf and diskcache wheels,
#           vocab.gguf (a GGUF with SmolLM2's tokenizer), smol.part1 (the first bytes of
#           SmolLM2-135M-Instruct.Q4_1.gguf)
#   .gpu2/  smol.part2 (the rest) and smol.sha256
# Results: JSON, markdown (and the bench's folder as a .tgz) in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: gpu_check.sh prepare|build|demo}"
OUT="${OUT:-bench-results/gpu}"
[ "$stage" = prepare ] || mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SPECQUANT_HOME=/tmp/sqhome HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONPATH="/tmp/site:$PWD"
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
[ "$stage" = prepare ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu-$stage.txt"

if [ "$stage" = build ]; then
    if ! python3 -c "import llama_cpp" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/gguf-*.whl .gpu/diskcache-*.whl || exit 1
        rm -rf /tmp/lcp && mkdir -p /tmp/lcp && tar xzf .gpu/llama-cpp-python-src.tgz -C /tmp/lcp || exit 1
        # FlashAttention kernels compile to stubs: SpecQuant turns flash attention off on a GPU
        export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DGGML_CUDA_FA=OFF"
        export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site \
            /tmp/lcp/llama_cpp_python-* > /tmp/build.log 2>&1 || { tail -60 /tmp/build.log | tee "$OUT/build-tail.log"; exit 1; }
        echo "built in $(elapsed) s"
    fi
    python3 -c "import llama_cpp as l; print(l.__version__, 'gpu offload:', l.llama_supports_gpu_offload())"
    cp .gpu/smol.part1 /tmp/smol.part1   # for the demo stage: a later call replaces .gpu
    python3 -c "import backends; from specquant.models import prepare_tiny; prepare_tiny('.gpu/vocab.gguf', quiet=True)" || exit 1
    tiny=/tmp/sqhome/models/tiny
    # llama.cpp must load before numpy there (backends/__init__.py): check that the package's own
    # ordering suffices; if a load still crashes, import llama_cpp at start-up for every process
    if ! python3 -c "import sys, backends; backends.load_model(sys.argv[1], n_ctx=64)" "$tiny/tiny-llama.F16.gguf" \
            > /dev/null 2>&1; then
        echo "WARNING: loading a model crashed even with llama.cpp imported first by backends; using sitecustomize"
        echo 'import llama_cpp' > /tmp/site/sitecustomize.py
    fi
    python3 benchmarks/gpu_check.py exactness --out "$OUT/exactness-tiny.json" \
        "$tiny/tiny-llama.F16.gguf" "$tiny/tiny-llama-sibling.F16.gguf" > /dev/null
    echo "tiny exactness done at $(elapsed) s"
    work=/tmp/synthetic  # in memory where it fits (7B: 13.5 GB, written and read at memory speed)
    [ "$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1)" -gt 40 ] 2>/dev/null && work=/dev/shm/synthetic
    # ours, then stock's: the same binary, SPECQUANT_CUDA_STOCK=1 restoring stock routing
    python3 benchmarks/gpu_check.py curve --vocab .gpu/vocab.gguf --sizes "${GPU_CHECK_SIZES:-1.7b,7b}" --work "$work" \
        --out "$OUT/curve-synthetic-patched.json" > /dev/null
    echo "curve (ours) done at $(elapsed) s"
    SPECQUANT_CUDA_STOCK=1 python3 benchmarks/gpu_check.py curve --vocab .gpu/vocab.gguf --sizes "${GPU_CHECK_SIZES:-1.7b,7b}" \
        --work "$work" --out "$OUT/curve-synthetic-stock.json" > /dev/null
    echo "curve (stock) done at $(elapsed) s"
    # the other exact route: MMVF (CUDA cores, float sums) for 1-17 tokens everywhere
    SPECQUANT_CUDA_KERNEL=mmvf python3 benchmarks/gpu_check.py curve --vocab .gpu/vocab.gguf \
        --sizes "${GPU_CHECK_SIZES:-1.7b,7b}" --work "$work" --out "$OUT/curve-synthetic-mmvf.json" > /dev/null
    echo "curve (MMVF everywhere) done at $(elapsed) s"
    { python3 benchmarks/gpu_check.py ab "$OUT/curve-synthetic-patched.json" "$OUT/curve-synthetic-stock.json"
      echo; echo "SPECQUANT_CUDA_KERNEL=mmvf beside stock:"; echo
      python3 benchmarks/gpu_check.py ab "$OUT/curve-synthetic-mmvf.json" "$OUT/curve-synthetic-stock.json"; } \
        | tee "$OUT/ab-synthetic.md"
    left=$(( ${GPU_CHECK_SECONDS:-420} - $(elapsed) ))
    if [ "$left" -gt 90 ]; then
        python3 benchmarks/gpu_check.py synthetic --vocab .gpu/vocab.gguf --sizes "${GPU_CHECK_ROUTER_SIZE:-7b}" --work "$work" \
            --deadline $(( left - 60 )) --out "$OUT/synthetic.json" > /dev/null
        python3 benchmarks/gpu_check.py report "$OUT/synthetic.json"
    else
        echo "no time left for the router's costs with drafts ($left s)"
    fi
    echo "build stage done at $(elapsed) s"
elif [ "$stage" = prepare ]; then  # here, not on the GPU machine
    bash ../shared/gpu/make-carry.sh > /dev/null || exit 1   # .gpu/: the slimmed sdist, gguf and diskcache wheels
    grep -qx '/.gpu2/' .git/info/exclude || echo '/.gpu2/' >> .git/info/exclude
    tmp=$(mktemp -d) && tar xzf .gpu/llama-cpp-python-src.tgz -C "$tmp" || exit 1
    python3 -c "import sys; sys.path.insert(0, 'scripts'); from pathlib import Path; import build_llama_cpp as b
b.patch(next(Path(sys.argv[1]).glob('llama_cpp_python-*')))" "$tmp" || exit 1
    tar czf .gpu/llama-cpp-python-src.tgz -C "$tmp" . && rm -rf "$tmp"
    python3 benchmarks/gpu_check.py carry-models || exit 1
    du -sh .gpu .gpu2
elif [ "$stage" = demo ]; then
    d=/tmp/sqhome/models/smollm2-135m-instruct
    mkdir -p "$d"
    cat /tmp/smol.part1 .gpu2/smol.part2 > "$d/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
    (root="$PWD" && cd "$d" && sha256sum -c "$root/.gpu2/smol.sha256") || exit 1
    python3 -c "import backends; from specquant.models import prepare_all; prepare_all(quiet=True)" || exit 1
    echo "demo files made at $(elapsed) s"
    f="$d/SmolLM2-135M-Instruct.F16.gguf"
    python3 benchmarks/gpu_check.py curve --out "$OUT/curve-demo-patched.json" "$f" > /dev/null
    SPECQUANT_CUDA_STOCK=1 python3 benchmarks/gpu_check.py curve --out "$OUT/curve-demo-stock.json" "$f" > /dev/null
    python3 benchmarks/gpu_check.py ab "$OUT/curve-demo-patched.json" "$OUT/curve-demo-stock.json" | tee "$OUT/ab-demo.md"
    echo "demo curves done at $(elapsed) s"
    # the bench (whether answers differ over the bundled prompts; ~60 s on an H100), then the tests
    rm -rf /tmp/bench
    timeout "${GPU_CHECK_BENCH_SECONDS:-150}" python3 -m specquant bench --model demo --drafts q8,q4_0,lookup --k 4,auto --policies auto \
        --alone '' --max-tokens 64 --min-seconds 0.2 --max-repeats 2 --out /tmp/bench 2>&1 | tail -45
    [ -d /tmp/bench ] && tar czf "$OUT/bench-demo.tgz" -C /tmp bench
    echo "bench done at $(elapsed) s"
    SPECQUANT_TEST_HOME=/tmp/sqtesthome timeout "${GPU_CHECK_TEST_SECONDS:-100}" python3 -m pytest -q -p no:cacheprovider --junitxml="$OUT/pytest.xml" \
        tests/test_llama_cpp.py tests/test_equivalence.py -k "(batch_invariant or deep_in_the_context or \
odd_dimensions or smollm2_greedy or greedy_identical or sampling_follows) and not mlx and not arm" 2>&1 | tail -25
    echo "tests done at $(elapsed) s"
else
    echo "unknown stage $stage: prepare, build or demo" >&2
    exit 2
fi
