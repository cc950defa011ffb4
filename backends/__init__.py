"""Inference engines behind one interface (see ``backends.base.Model``), chosen by name."""
from __future__ import annotations

import importlib
import sys


def _load_llama_cpp_before_numpy() -> None:
    """Load llama.cpp's library before numpy's, where both are installed and numpy isn't loaded yet.

    In the other order, loading a GGUF crashed on one machine's image (docs/measurements.md, "Notes
    moved from the code"). Entry points (the CLI, app.py, the tests) import this package before
    anything imports numpy."""
    if "numpy" in sys.modules:
        return
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed (MLX machines) or broken: _llama() says so when used
        pass


_load_llama_cpp_before_numpy()

from .base import BackendError, Detokenizer, Model  # noqa: E402

BACKENDS = {"llama.cpp": "backends.llama_cpp", "llama_cpp": "backends.llama_cpp", "mlx": "backends.mlx"}


def load_model(path, backend: str = "llama.cpp", **kw) -> Model:
    """Load ``path`` with the named backend (each module exposes ``load(path, **kw)``)."""
    try:
        module = BACKENDS[backend]
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; choose one of: llama.cpp, mlx") from None
    return importlib.import_module(module).load(path, **kw)


__all__ = ["BackendError", "Detokenizer", "Model", "load_model", "BACKENDS"]
