#!/usr/bin/env bash
# The patched llama.cpp's exactness on ARM, checked here under emulation: cross-compiles the
# vendored llama.cpp of the pinned llama-cpp-python with scripts/build_llama_cpp.py's patch (or
# without it: --stock) for ARMv8.2 with float16 arithmetic (Graviton 2/3, Ampere Altra, Apple
# M-series, Raspberry Pi 5), then runs scripts/batch_invariance.cpp under qemu-user on a float16
# GGUF: passes of 2..33 tokens against one-token passes, bit for bit (exit status 0 if all equal).
#   bash scripts/check_arm.sh MODEL.F16.gguf [--stock]        (about 3 min to build, then the run)
# Needs: apt-get install g++-aarch64-linux-gnu qemu-user cmake
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "$1"); stock=${2:-}
for tool in aarch64-linux-gnu-g++ qemu-aarch64 cmake; do
  command -v $tool >/dev/null || { echo "check_arm: $tool missing (apt-get install g++-aarch64-linux-gnu qemu-user cmake)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/specquant-arm-XXXXXX); trap 'rm -rf "$work"' EXIT
version=$(python -c "import sys; sys.path.insert(0, 'scripts'); import build_llama_cpp as b; print(b.VERSION)")
python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
tree="$work/llama_cpp_python-$version"
if [ "$stock" != --stock ]; then
  python -c "import sys; sys.path.insert(0, 'scripts'); import build_llama_cpp as b; from pathlib import Path; b.patch(Path('$tree'))"
fi
src="$tree/vendor/llama.cpp"
cmake -S "$src" -B "$work/build" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+fp16 -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF >"$work/cmake.log"
cmake --build "$work/build" --target llama -j "$(nproc)" >"$work/build.log"
b="$work/build"
aarch64-linux-gnu-g++ -O2 -march=armv8.2-a+fp16 -std=c++17 -I"$src/include" -I"$src/ggml/include" \
  scripts/batch_invariance.cpp "$b/src/libllama.a" "$b/ggml/src/libggml.a" "$b/ggml/src/libggml-cpu.a" \
  "$b/ggml/src/libggml-base.a" -lpthread -lm -static -o "$work/batch_invariance" 2>/dev/null
# flash attention as SpecQuant sets it on a patched CPU build (-1: auto)
qemu-aarch64 -cpu max "$work/batch_invariance" "$model" -1 2>/dev/null
