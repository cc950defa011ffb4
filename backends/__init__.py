"""Inference engines behind one interface (see ``backends.base.Model``), chosen by name."""
from __future__ import annotations

import importlib

from .base import BackendError, Detokenizer, Model

BACKENDS = {"llama.cpp": "backends.llama_cpp", "llama_cpp": "backends.llama_cpp", "mlx": "backends.mlx"}


def load_model(path, backend: str = "llama.cpp", **kw) -> Model:
    """Load ``path`` with the named backend (each module exposes ``load(path, **kw)``)."""
    try:
        module = BACKENDS[backend]
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; choose one of: llama.cpp, mlx") from None
    return importlib.import_module(module).load(path, **kw)


__all__ = ["BackendError", "Detokenizer", "Model", "load_model", "BACKENDS"]
