"""Shared fixtures: the prepared models (made once, under $SPECQUANT_MODELS), the suite's own SPECQUANT_HOME."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import backends  # noqa: F401 - llama.cpp loads before numpy (see backends/__init__.py)

# Keep test runs off the network and quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _own_home() -> Path:
    """The suite's own SPECQUANT_HOME ($SPECQUANT_TEST_HOME, else specquant-tests in the user's cache
    dir): its calibrations and answers never reach the user's, which decide how the user's runs draft.
    The prepared models stay shared (SPECQUANT_MODELS, made once for both)."""
    from specquant.paths import models_dir

    os.environ.setdefault("SPECQUANT_MODELS", str(models_dir()))  # the user's, before the home changes
    user_calibration = _user_calibration()
    if os.environ.get("SPECQUANT_TEST_HOME"):
        home = Path(os.environ["SPECQUANT_TEST_HOME"]).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_cache_dir("specquant-tests", appauthor=False))
    os.environ["SPECQUANT_HOME"] = str(home)
    return user_calibration


def _user_calibration() -> Path:
    from specquant.paths import cache_dir

    return cache_dir() / "calibration.json"


USER_CALIBRATION = _own_home()

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


def _fingerprint(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@pytest.fixture(scope="session", autouse=True)
def user_calibration_untouched():
    """The whole session leaves the user's calibration file as it found it."""
    before = _fingerprint(USER_CALIBRATION)
    yield USER_CALIBRATION
    assert _fingerprint(USER_CALIBRATION) == before, f"the test suite changed the user's {USER_CALIBRATION}"


@pytest.fixture(scope="session")
def bench_script():
    """``load(name)``: benchmarks/<name>.py as a module (the folder goes on the path: its scripts import
    ``common`` and each other)."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parent.parent / "benchmarks"

    def load(name: str):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def prepared():
    from specquant.models import prepare_all

    return prepare_all(quiet=True)


@pytest.fixture(scope="session")
def tiny_paths(prepared):
    return prepared["tiny"]


@pytest.fixture(scope="session")
def smol_paths(prepared):
    return prepared["smollm2"]


@pytest.fixture(scope="session")
def tiny(tiny_paths):
    from backends import load_model

    return load_model(tiny_paths["F16"], n_ctx=512)


@pytest.fixture(scope="session")
def tiny_drafts(tiny_paths):
    from backends import load_model

    return {k: load_model(tiny_paths[k], n_ctx=512) for k in ("Q8_0", "Q4_0", "sibling")}


@pytest.fixture(scope="session")
def smol(smol_paths):
    from backends import load_model

    return load_model(smol_paths["F16"], n_ctx=2048)


@pytest.fixture(scope="session")
def smol_drafts(smol_paths):
    from backends import load_model

    return {k: load_model(smol_paths[k], n_ctx=2048) for k in ("Q8_0", "Q4_K_M", "Q4_0")}


@pytest.fixture(scope="session")
def mlx_paths(prepared):
    """MLX models: tiny (parent, 8bit, 4bit), SmolLM2 from the GGUF, and a tiny one with another vocabulary."""
    pytest.importorskip("mlx_lm", reason="MLX is not installed (pip install 'specquant[mlx]')")
    from specquant.mlx_models import prepare_mlx, write_tiny_hf
    from specquant.paths import models_dir

    p = prepare_mlx(quiet=True)
    p["other"] = write_tiny_hf(models_dir() / "mlx" / "tiny-llama-other-vocab", vocab_size=300)
    return p
