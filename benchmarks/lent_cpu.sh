#!/usr/bin/env bash
# "Never slower" (benchmarks/never_slower.py) on the CPU of a lent machine (the device tool's GPU
# hosts: 16 cores, no network), for a CPU profile this VM lacks, e.g. AVX-512. Two calls that follow
# each other while the machine stays warm (the demo model is too big to carry in one):
#
#   bash benchmarks/lent_cpu.sh prepare   (here) .gpu/: the stock llama-cpp-python source slimmed by
#       ../shared/gpu/make-carry.sh, the gguf and diskcache wheels, the demo file's first part;
#       .gpu2/: its second part and checksum (benchmarks/gpu_check.py carry-models)
#   bash benchmarks/lent_cpu.sh build     (call 1, carry .gpu) SpecQuant's patched llama-cpp-python,
#       CPU only, native flags, into /tmp/site, and stock llama.cpp's llama-bench beside it, at once
#   bash benchmarks/lent_cpu.sh bench     (call 2, carry .gpu2) the demo files, then never_slower.py
#       --pin auto: 2-core jobs side by side, each pinned to its own pair of physical cores
#
# The stand-in is not a 2-core VM: the jobs share the socket's caches and memory bandwidth (at most
# never_slower.PIN_SETS_MAX of them), so its figures are for the CPU profile, said as such.
# BENCH_SECONDS (default 420): how long the bench call may measure; no bench part starts later.
# PIN (default auto): the CPU sets, as never_slower.py --pin takes them ("0,1 2,3 4,5": native on the
# first). The 2026-11-28 run had six jobs on one socket whose L3 (300 MiB as reported) could nearly hold
# the F16 target (270 MB) for one job alone; fewer jobs may trade rounds for a quieter figure.
# Run on 2026-11-28 (an H100 host's Xeon with AVX-512 and AMX): build 115 s, bench 327 s with
# BENCH_SECONDS=510; results in benchmarks/results/xeon-avx512-2026-11-28/.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: lent_cpu.sh prepare|build|bench}"
OUT="${OUT:-bench-results/lent-cpu}"
export PYTHONUNBUFFERED=1 SPECQUANT_HOME=/tmp/sqhome HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONPATH="/tmp/site:$PWD"
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }

if [ "$stage" = prepare ]; then
    bash ../shared/gpu/make-carry.sh > /dev/null || exit 1
    grep -qx '/.gpu2/' .git/info/exclude || echo '/.gpu2/' >> .git/info/exclude
    python3 benchmarks/gpu_check.py carry-models || exit 1
    rm -f .gpu/vocab.gguf  # gpu_check's tiny models only
    du -sh .gpu .gpu2
    exit 0
fi
mkdir -p "$OUT"
if [ "$stage" = build ]; then
    { lscpu; nproc; free -g; } > "$OUT/cpu.txt" 2>&1
    grep -m1 '^Model name' "$OUT/cpu.txt"
    flags=$(grep -m1 '^flags' /proc/cpuinfo)
    echo "AVX-512: $(grep -o 'avx512[a-z_0-9]*' <<< "$flags" | sort -u | tr '\n' ' ')"
    if ! grep -qw avx512f <<< "$flags" && [ -z "${ANY_CPU:-}" ]; then
        echo "no AVX-512 here: this CPU's profile is the one measured at home (ANY_CPU=1 to go on)"
        exit 3
    fi
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/gguf-*.whl .gpu/diskcache-*.whl || exit 1
    command -v cmake > /dev/null || PATH="$(python3 -c 'import cmake; print(cmake.CMAKE_BIN_DIR)'):$PATH"
    rm -rf /tmp/lcp && mkdir -p /tmp/lcp && tar xzf .gpu/llama-cpp-python-src.tgz -C /tmp/lcp || exit 1
    tree=$(echo /tmp/lcp/llama_cpp_python-*)
    ver=${tree##*-}
    if grep -q specquant "$tree/llama_cpp/__init__.py"; then
        echo "the carried source is already patched (gpu_check.sh prepare): run lent_cpu.sh prepare" >&2
        exit 1
    fi
    native="$SPECQUANT_HOME/native/llama-cpp-python-$ver"
    mkdir -p "$native" && cp -r "$tree/vendor/llama.cpp" "$native/src"   # stock, for build_native.sh
    python3 -c "import sys; sys.path.insert(0, 'scripts'); from pathlib import Path; import build_llama_cpp as b
b.patch(Path(sys.argv[1]))" "$tree" || exit 1
    export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
    LLAMA_CPP_VERSION="$ver" bash benchmarks/build_native.sh > "$OUT/native-build.log" 2>&1 &
    stock=$!
    CMAKE_ARGS="-DLLAMA_CURL=OFF" python3 -m pip install -q --no-index --no-deps --no-build-isolation \
        --target /tmp/site "$tree" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
    echo "SpecQuant's build done at $(elapsed) s"
    wait $stock || { tail -40 "$OUT/native-build.log"; exit 1; }
    echo "stock llama-bench done at $(elapsed) s"
    # llama.cpp before numpy in every process: on the CUDA image a load crashed otherwise (gpu_check.sh)
    echo 'import llama_cpp' > /tmp/site/sitecustomize.py
    # Python there (/opt/torch/.venv) maps an older libstdc++ than the one llama.cpp was built with:
    # loading a model then crashed in the tokenizer's set-up (2026-11-28); the build's own comes first
    g++ -print-file-name=libstdc++.so.6 > /tmp/sq-preload
    export LD_PRELOAD="$(cat /tmp/sq-preload)"
    cp .gpu/smol.part1 /tmp/smol.part1   # for the bench call: a later call replaces .gpu
    python3 -c "import llama_cpp as l; print(l.__version__); print(l.llama_print_system_info().decode())" \
        | tee "$OUT/llama-cpp.txt"
elif [ "$stage" = bench ]; then
    [ -s /tmp/sq-preload ] && export LD_PRELOAD="$(cat /tmp/sq-preload)"
    d="$SPECQUANT_HOME/models/smollm2-135m-instruct"
    mkdir -p "$d"
    cat /tmp/smol.part1 .gpu2/smol.part2 > "$d/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
    (root="$PWD" && cd "$d" && sha256sum -c "$root/.gpu2/smol.sha256") || exit 1
    python3 -c "import backends; from specquant.models import prepare_all; prepare_all(quiet=True)" || exit 1
    echo "demo files made at $(elapsed) s"
    rm -rf /tmp/lc
    python3 benchmarks/never_slower.py --pin "${PIN:-auto}" \
        --min-seconds "${MIN_SECONDS:-2}" --max-repeats "${MAX_REPEATS:-6}" \
        --native-rounds 15 --deadline $(( ${BENCH_SECONDS:-420} - $(elapsed) - 90 )) --out-dir /tmp/lc/never-slower
    echo "never_slower done at $(elapsed) s"
    # one file back: the device tool returns a handful of files per call, and the parts make dozens
    tar czf "$OUT/lent-cpu.tgz" -C /tmp/lc never-slower && cp /tmp/lc/never-slower/verdicts.md "$OUT/"
else
    echo "unknown stage $stage: prepare, build or bench" >&2
    exit 2
fi
