#!/usr/bin/env bash
# Install SpecQuant and what it needs.  Usage: bash scripts/setup.sh demo|test
#   demo: the library, CLI and web demo       test: also the test tools, MLX (CPU build) and a browser
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
    if ! command -v chromium >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
      else
        echo "note: install Debian's chromium (apt-get install chromium) to run the browser tests" >&2
      fi
    fi
    ;;
  *)
    echo "usage: bash scripts/setup.sh demo|test" >&2
    exit 2
    ;;
esac
