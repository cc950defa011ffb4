#!/usr/bin/env bash
# Install SpecQuant and what it needs.  Usage: bash scripts/setup.sh demo|test
#   demo: the library, CLI and web demo       test: also the test tools, MLX (CPU build), a browser,
#   and an ARM cross-compiler with qemu (the patch's ARM exactness check, scripts/check_arm.sh)
# llama-cpp-python compiles from source (~15 min on 2 cores, once; the wheel is cached), with a
# small patch that makes one-token and batched passes compute identical logits, which exact
# (token-identical) verification needs: see scripts/build_llama_cpp.py. Set
# CMAKE_ARGS="-DGGML_CUDA=on" for NVIDIA GPUs. On Apple Silicon the MLX backend needs none of it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
case "${1:-demo}" in
  demo)
    python scripts/build_llama_cpp.py
    python -m pip install ".[ui]"
    ;;
  test)
    python scripts/build_llama_cpp.py
    python -m pip install -e ".[test,ui,mlx]"
    # Debian's Chromium for the browser tests; an ARM cross-compiler and qemu for the patch's ARM check
    missing=""
    command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
    command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || missing="$missing g++-aarch64-linux-gnu"
    command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-user"
    command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
    if [ -n "$missing" ]; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
      else
        echo "note: install$missing (apt-get) to run the browser tests and the ARM build check" >&2
      fi
    fi
    # llama-server linked against the patched libraries, for the fleet tests (~25 min once; cached)
    python scripts/build_llama_server.py >/dev/null || echo "note: no llama-server: the fleet tests will be skipped" >&2
    ;;
  *)
    echo "usage: bash scripts/setup.sh demo|test" >&2
    exit 2
    ;;
esac
