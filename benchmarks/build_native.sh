#!/usr/bin/env bash
# Build llama.cpp's own reference tools (llama-bench, llama-speculative-simple) from the
# llama.cpp vendored in the installed llama-cpp-python's sdist, with the same native CPU
# flags, so benchmarks compare like with like. ~15 min on 2 cores; cached afterwards.
# CMAKE_ARGS is passed through last (it wins), as scripts/build_llama_cpp.py does for SpecQuant's
# build, so both sides can be built for another CPU profile, e.g. AVX2 only on an AVX-512 machine:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
# NATIVE_TARGETS picks other tools (scripts/build_llama_server.py builds llama-server this way).
# Usage: bash benchmarks/build_native.sh   -> prints the bin directory
set -euo pipefail
# stock llama.cpp, without our patch: the installed llama-cpp-python's version, or LLAMA_CPP_VERSION
# (to build while SpecQuant's own build is still under way, as benchmarks/lent_cpu.sh does)
ver="${LLAMA_CPP_VERSION:-$(python3 -c "import llama_cpp; print(llama_cpp.__version__.split('+')[0])")}"
cache="${SPECQUANT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/specquant}/native/llama-cpp-python-$ver"
extra="${CMAKE_ARGS:-}"
build="$cache/build"
if [ -n "$extra" ]; then build="$cache/build-$(printf '%s' "$extra" | sha1sum | cut -c1-10)"; fi
bin="$build/bin"
targets="${NATIVE_TARGETS:-llama-bench llama-speculative-simple}"
missing=""
for t in $targets; do [ -x "$bin/$t" ] || missing="$missing $t"; done
if [ -z "$missing" ]; then echo "$bin"; exit 0; fi
server=OFF
case " $targets " in *" llama-server "*) server=ON ;; esac
mkdir -p "$cache"
if [ ! -d "$cache/src" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$tmp" >&2
  tar xzf "$tmp"/llama_cpp_python-"$ver".tar.gz -C "$tmp"
  mv "$tmp/llama_cpp_python-$ver/vendor/llama.cpp" "$cache/src"
  rm -rf "$tmp"
fi
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
cmake -S "$cache/src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=$server -DBUILD_SHARED_LIBS=OFF $extra >&2
# shellcheck disable=SC2086  # a list of targets
cmake --build "$build" -j "$(nproc)" --target $missing >&2
echo "$bin"
