"""Command-line options that `specquant` and `specquant bench` share (apart from cli.py, which
dispatches to the bench: the bench importing the CLI would make the two a cycle)."""
from __future__ import annotations

import argparse


def count(text: str) -> int:
    """argparse's type for a count of tokens or threads: a whole number from 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a whole number from 1 is needed, got {text!r}")
    return n


def engine_args(p: argparse.ArgumentParser, model_default: str = "the largest family that suits this machine; "
                "the demo model when the Hub can't be reached") -> None:
    """The model and how it runs: --model / --target, --ctx, --threads, --backend."""
    p.add_argument("--model", help="model family (see `specquant models`), demo, a Hub repo owner/name, or a "
                                   f"local F16 .gguf (default: {model_default})")
    p.add_argument("--target", help="a local F16 GGUF (same as --model PATH)")
    p.add_argument("--ctx", type=count, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=count, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--backend", choices=["llama.cpp", "mlx"],
                   help="inference engine (default: mlx on Apple Silicon, llama.cpp elsewhere)")
