"""Where SpecQuant keeps what it makes: ``$SPECQUANT_HOME`` or the platform's cache dir."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    home = os.environ.get("SPECQUANT_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("specquant", appauthor=False))


def models_dir() -> Path:
    """Prepared models (the demo's, the rehearsal's, the tests'): ``$SPECQUANT_MODELS``, else
    ``models`` under ``cache_dir()``. The test suite keeps a home of its own (calibrations, answers) and
    shares the user's prepared models through this variable (tests/conftest.py)."""
    d = os.environ.get("SPECQUANT_MODELS")
    return Path(d).expanduser() if d else cache_dir() / "models"


def data_dir() -> Path:
    """Downloaded data (NLTK's models): ``$SPECQUANT_HOME/data`` or the platform's data dir."""
    home = os.environ.get("SPECQUANT_HOME")
    if home:
        return Path(home).expanduser() / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir("specquant", appauthor=False))
