"""Downloads from the Hugging Face Hub into the standard HF cache (shared with other tools).

- ``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read at call time.
- An unreachable Hub fails within seconds (a connect probe first, not half a minute of
  retries), with a message that says what to do.
- Sizes are asked first and the free disk checked before anything is fetched.
- huggingface_hub writes ``*.incomplete`` and renames only a complete file, so a broken
  download is never taken as complete. A dropped connection is retried (five times, each from
  the bytes received, to within its 10 MB read size); an outage that outlasts the retries
  fails the call, and huggingface_hub (1.x and later) deletes the partial file, so the next
  call starts that file over (files already complete are kept).
- Progress goes to ``progress(done_bytes, total_bytes, filename)``.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

Progress = Callable[[int, int, str], None]
DISK_HEADROOM = 512 * 2**20  # keep this much free after a download
PROBE_TIMEOUT_S = 3.0


class HubError(RuntimeError):
    """A download failed; the message says why and what to do."""


class HubUnreachable(HubError):
    pass


class NotOnHub(HubError):
    pass


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    """HF_HUB_OFFLINE as it is now. huggingface_hub reads it once, at import; keep its copy in step
    so that setting or clearing the variable later (a long-running app, tests) takes effect."""
    value = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = value
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        pass
    return value


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def check_reachable(timeout: float = PROBE_TIMEOUT_S) -> None:
    u = urlparse(endpoint())
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return
    except OSError as e:
        raise HubUnreachable(
            f"cannot reach the Hugging Face Hub at {endpoint()} ({e.__class__.__name__}: {e}). "
            "Check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use only cached models; "
            "the demo model (--model demo) works without a network."
        ) from None


def _repo_cache(repo: str) -> Path:
    return cache_dir() / ("models--" + repo.replace("/", "--"))


def cached_files(repo: str, revision: str = "main") -> list[str]:
    """Files of ``repo`` present (complete) in the local cache for ``revision``."""
    rc = _repo_cache(repo)
    ref = rc / "refs" / revision
    commit = ref.read_text().strip() if ref.exists() else revision
    snap = rc / "snapshots" / commit
    if not snap.is_dir():
        return []
    return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())


def _translate(e: Exception, repo: str, filename: str | None = None) -> HubError:
    from huggingface_hub import errors

    if isinstance(e, errors.RepositoryNotFoundError):
        return NotOnHub(f"no such model repository on the Hub: {repo} (check the name; private repos need HF_TOKEN)")
    if isinstance(e, errors.RevisionNotFoundError):
        return NotOnHub(f"{repo} has no such revision")
    if isinstance(e, (errors.EntryNotFoundError, errors.RemoteEntryNotFoundError)):
        return NotOnHub(f"{repo} has no file {filename}")
    if isinstance(e, errors.LocalEntryNotFoundError):
        return HubUnreachable(
            f"{repo}/{filename or ''} is not in the local cache and the Hub can't be used "
            f"({'HF_HUB_OFFLINE is set' if offline() else 'network error'}); "
            "connect to the network, or use --model demo"
        )
    what = f"{filename} from {repo}" if filename else repo
    return HubError(f"download of {what} failed: {e.__class__.__name__}: {e}. Try again: a dropped connection "
                    "is retried five times from the bytes received, a longer outage starts the file over")


def list_files(repo: str, revision: str = "main") -> list[str]:
    """Every file in the repo: from the Hub, or from the cache when offline."""
    if offline():
        files = cached_files(repo, revision)
        if not files:
            raise HubUnreachable(f"HF_HUB_OFFLINE is set and {repo} is not in the cache ({cache_dir()})")
        return files
    check_reachable()
    from huggingface_hub import HfApi

    try:
        return sorted(HfApi(endpoint=endpoint()).list_repo_files(repo, revision=revision))
    except Exception as e:  # noqa: BLE001 - translated into a clear HubError
        raise _translate(e, repo) from None


def _tqdm_for(progress: Progress | None, name: str, state: dict):
    if progress is None:
        return None
    from tqdm.auto import tqdm

    class Report(tqdm):
        def __init__(self, *a, **kw):
            kw["disable"] = True
            super().__init__(*a, **kw)

        def update(self, n=1):
            super().update(n)
            state["done"] += n or 0
            progress(min(state["done"], state["total"]), state["total"], name)

    return Report


def download(repo: str, filenames: list[str], *, revision: str = "main",
             progress: Progress | None = None) -> list[Path]:
    """Download (or find in the cache) ``filenames`` of ``repo``; return local paths in order."""
    is_offline = offline()
    from huggingface_hub import hf_hub_download

    kw = dict(repo_id=repo, revision=revision, cache_dir=str(cache_dir()))
    if is_offline:
        out = []
        for f in filenames:
            try:
                out.append(Path(hf_hub_download(filename=f, local_files_only=True, **kw)))
            except Exception as e:  # noqa: BLE001
                raise _translate(e, repo, f) from None
        return out
    check_reachable()
    ep = endpoint()
    sizes = {}
    todo = 0
    for f in filenames:
        try:
            info = hf_hub_download(filename=f, endpoint=ep, dry_run=True, etag_timeout=PROBE_TIMEOUT_S * 2, **kw)
        except Exception as e:  # noqa: BLE001
            raise _translate(e, repo, f) from None
        sizes[f] = int(info.file_size or 0)
        if info.will_download:
            todo += sizes[f]
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(d).free
    if todo and free - todo < DISK_HEADROOM:
        raise HubError(
            f"not enough disk space for {repo}: {todo / 2**30:.2f} GiB to download, "
            f"{free / 2**30:.2f} GiB free in {d} (keeping {DISK_HEADROOM / 2**30:.1f} GiB spare). "
            "Free some space or point HF_HUB_CACHE elsewhere."
        )
    state = {"done": 0, "total": sum(sizes.values())}
    out = []
    for f in filenames:
        before = state["done"]
        try:
            p = hf_hub_download(filename=f, endpoint=ep, etag_timeout=PROBE_TIMEOUT_S * 2,
                                tqdm_class=_tqdm_for(progress, f, state), **kw)
        except Exception as e:  # noqa: BLE001
            raise _translate(e, repo, f) from None
        state["done"] = before + sizes[f]  # cached files count as done
        if progress:
            progress(state["done"], state["total"], f)
        out.append(Path(p))
    return out
