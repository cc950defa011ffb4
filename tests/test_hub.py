"""Downloads against a real local HTTP server speaking the Hub's protocol (tests/hub_server.py)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from specquant import catalog, hub

from .hub_server import spawn


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.proc, self.url = spawn(root)

    def requests(self, method: str, fragment: str) -> int:
        log = self.root / ".log"
        if not log.exists():
            return 0
        return sum(1 for line in log.read_text().splitlines() if line.startswith(method + " ") and fragment in line)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path, tiny_paths, monkeypatch):
    root = tmp_path / "hub"
    tiny = root / "testorg" / "tiny-GGUF"
    tiny.mkdir(parents=True)
    shutil.copy(tiny_paths["F16"], tiny / "tiny-llama-F16.gguf")
    shutil.copy(tiny_paths["Q8_0"], tiny / "tiny-llama-Q8_0.gguf")
    (tiny / "README.md").write_text("a tiny test model\n")
    sharded = root / "testorg" / "sharded-GGUF"
    sharded.mkdir(parents=True)
    for i in (1, 2):
        (sharded / f"big-fp16-0000{i}-of-00002.gguf").write_bytes(bytes([i]) * 300_000)
    (sharded / "big-q8_0.gguf").write_bytes(b"\x07" * 100_000)
    nogguf = root / "testorg" / "safetensors-only"
    nogguf.mkdir(parents=True)
    (nogguf / "model.safetensors").write_bytes(b"\0" * 1000)
    (nogguf / "config.json").write_text("{}")
    s = Server(root)
    monkeypatch.setenv("HF_ENDPOINT", s.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield s
    s.stop()


def test_download_resolve_and_progress(server, tiny_paths):
    seen = []
    ms = catalog.resolve("testorg/tiny-GGUF", progress=lambda d, t, f: seen.append((d, t, f)))
    assert ms.source == "hub" and ms.target.name == "tiny-llama-F16.gguf"
    assert ms.target.read_bytes() == tiny_paths["F16"].read_bytes()
    assert set(ms.drafts) == {"q8"} and ms.missing == ["q4", "q4_0"]
    assert seen and seen[-1][0] == seen[-1][1] > 0  # reached 100%
    assert all(d <= t for d, t, _ in seen)
    assert str(ms.target).startswith(str(hub.cache_dir()))


def test_second_call_is_a_cache_hit_without_get(server):
    catalog.resolve("testorg/tiny-GGUF")
    gets = server.requests("GET", "tiny-llama-F16.gguf")
    assert gets == 1
    ms = catalog.resolve("testorg/tiny-GGUF")
    assert server.requests("GET", "tiny-llama-F16.gguf") == 1  # HEAD only
    assert ms.target.exists()


def test_offline_mode_uses_cache_and_makes_no_request(server, monkeypatch):
    catalog.resolve("testorg/tiny-GGUF")
    log = (server.root / ".log").read_text()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ms = catalog.resolve("testorg/tiny-GGUF")
    assert ms.target.exists() and (server.root / ".log").read_text() == log
    with pytest.raises(hub.HubUnreachable, match="HF_HUB_OFFLINE"):
        catalog.resolve("testorg/sharded-GGUF")


def test_unknown_repo_and_file_are_clear_errors(server):
    with pytest.raises(hub.NotOnHub, match="no such model repository on the Hub: testorg/nope"):
        catalog.resolve("testorg/nope")
    with pytest.raises(hub.NotOnHub, match="has no file missing.gguf"):
        hub.download("testorg/tiny-GGUF", ["missing.gguf"])
    with pytest.raises(hub.NotOnHub, match="has no GGUF files"):
        catalog.resolve("testorg/safetensors-only")
    with pytest.raises(ValueError, match="unknown model family"):
        catalog.resolve("no-such-family")


def test_a_connection_lost_once_resumes_from_the_bytes_received(server):
    # Larger than huggingface_hub's 10 MB read size, so the bytes before the drop are kept.
    repo = server.root / "testorg" / "big-GGUF"
    repo.mkdir()
    data = bytes(range(256)) * (100 * 1024)  # 25 MiB
    (repo / "big-F16.gguf").write_bytes(data)
    (server.root / ".drop").write_text(f"testorg/big-GGUF/big-F16.gguf {15 * 2**20} once\n")
    [p] = hub.download("testorg/big-GGUF", ["big-F16.gguf"])
    assert p.read_bytes() == data
    gets = [x for x in (server.root / ".log").read_text().splitlines() if x.startswith("GET") and "big-F16" in x]
    assert len(gets) == 2 and gets[1].endswith(f"bytes={10 * 2**20}-")  # the rest, not the whole file again


def test_an_outage_never_leaves_a_complete_file(server, tiny_paths):
    size = tiny_paths["F16"].stat().st_size
    (server.root / ".drop").write_text(f"testorg/tiny-GGUF/tiny-llama-F16.gguf {size // 2}\n")
    with pytest.raises(hub.HubError, match="tiny-llama-F16.gguf"):
        hub.download("testorg/tiny-GGUF", ["tiny-llama-F16.gguf"])
    assert "tiny-llama-F16.gguf" not in hub.cached_files("testorg/tiny-GGUF")
    blobs = list((hub.cache_dir() / "models--testorg--tiny-GGUF" / "blobs").glob("*"))
    assert all(b.name.endswith(".incomplete") for b in blobs)  # huggingface_hub 1.x+ drops the partial file
    (server.root / ".drop").unlink()
    [p] = hub.download("testorg/tiny-GGUF", ["tiny-llama-F16.gguf"])
    assert p.read_bytes() == tiny_paths["F16"].read_bytes()


def test_sharded_files_download_together(server):
    files = hub.list_files("testorg/sharded-GGUF")
    assert catalog.match_files(files, "f16") == ["big-fp16-00001-of-00002.gguf", "big-fp16-00002-of-00002.gguf"]
    assert catalog.match_files(files, "q8_0") == ["big-q8_0.gguf"]
    ms = catalog._from_repo("testorg/sharded-GGUF", "sharded")
    assert ms.target.name == "big-fp16-00001-of-00002.gguf"
    assert (ms.target.parent / "big-fp16-00002-of-00002.gguf").read_bytes() == b"\x02" * 300_000


def test_every_precision_in_shards_resolves_to_its_shards(server):
    # Qwen2.5-7B's GGUF repo splits fp16, q8_0 and q4_k_m alike (real names, tiny bytes).
    repo = server.root / "Qwen" / "Qwen2.5-7B-Instruct-GGUF"
    repo.mkdir(parents=True)
    names = {"fp16": 4, "q8_0": 3, "q4_k_m": 2}
    for prec, n in names.items():
        for i in range(1, n + 1):
            (repo / f"qwen2.5-7b-instruct-{prec}-{i:05d}-of-{n:05d}.gguf").write_bytes(bytes([i]) * 1000)
    files = hub.list_files("Qwen/Qwen2.5-7B-Instruct-GGUF")
    for prec, n in (("f16", 4), ("q8_0", 3), ("q4_k_m", 2)):
        got = catalog.match_files(files, prec)
        assert len(got) == n and got[0].endswith(f"-00001-of-{n:05d}.gguf"), (prec, got)
    assert catalog.match_files(files, "q4_0") == []  # made locally from the F16 parent
    ms = catalog._from_repo("Qwen/Qwen2.5-7B-Instruct-GGUF", "Qwen2.5-7B-Instruct")
    assert ms.drafts["q8"].name.endswith("q8_0-00001-of-00003.gguf") and ms.missing == ["q4_0"]
    assert (ms.drafts["q8"].parent / "qwen2.5-7b-instruct-q8_0-00003-of-00003.gguf").exists()


def test_a_missing_mlx_target_repo_says_what_was_tried(server):
    fam = catalog.get_family("smollm2-1.7b")
    assert fam.repos["mlx"]["bf16"] == "mlx-community/SmolLM2-1.7B-Instruct"  # published without -bf16
    with pytest.raises(hub.NotOnHub, match="tried mlx-community/SmolLM2-1.7B-Instruct"):
        catalog.resolve("smollm2-1.7b", backend="mlx")


def test_missing_shard_is_refused():
    with pytest.raises(hub.NotOnHub, match="expected 3 shards"):
        catalog.match_files(["m-f16-00001-of-00003.gguf", "m-f16-00002-of-00003.gguf"], "f16")


def test_disk_space_guard(server, monkeypatch):
    class Usage:
        free = 10 * 2**20

    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(hub.HubError, match="not enough disk space"):
        catalog.resolve("testorg/tiny-GGUF")
    assert server.requests("GET", ".gguf") == 0


def test_unreachable_hub_fails_fast(server):
    server.stop()
    t0 = time.perf_counter()
    with pytest.raises(hub.HubUnreachable, match="cannot reach the Hugging Face Hub"):
        catalog.resolve("testorg/tiny-GGUF")
    assert time.perf_counter() - t0 < 8


def test_precision_patterns_do_not_confuse_bf16_or_q4_0_4_4():
    files = ["m-bf16.gguf", "m-F16.gguf", "m-Q4_0_4_4.gguf", "m-Q4_0.gguf", "m-Q4_K_M.gguf", "m-Q8_0.gguf",
             "qwen2.5-7b-instruct-fp16.gguf"]
    assert catalog.match_files(files, "f16") == ["m-F16.gguf"]
    assert catalog.match_files(files, "q4_0") == ["m-Q4_0.gguf"]
    assert catalog.match_files(files, "q4_k_m") == ["m-Q4_K_M.gguf"]
    assert catalog.match_files(["qwen2.5-0.5b-instruct-fp16.gguf"], "f16") == ["qwen2.5-0.5b-instruct-fp16.gguf"]


def test_engine_from_hub_repo_runs_identically(server):
    from specquant.engine import load_engine

    eng = load_engine("testorg/tiny-GGUF", n_ctx=512)
    assert eng.model_set.source == "hub"
    # Named as in the repo, not by the cache's blob hash (and loaded through the cache's link,
    # where llama.cpp finds a sharded model's other files).
    assert eng.target.path.name == "tiny-llama-F16.gguf" and eng.target.path.is_symlink()
    assert [m["name"] for m in eng.describe()["models"]][0].startswith("tiny-llama-F16")
    plain = eng.run("Hello there", draft="none", max_tokens=20)
    spec = eng.run("Hello there", draft="q8", k=3, max_tokens=20)
    assert spec.tokens == plain.tokens and spec.stats.drafted > 0
    assert eng.draft_path("q8") == eng.model_set.drafts["q8"]  # the downloaded draft, not a local one


def test_mlx_model_folder_from_the_hub(server, mlx_paths):
    """An MLX repo (config, safetensors, tokenizer) downloads as one folder that loads and runs."""
    from backends import load_model
    from specquant.speculative import run

    repo = server.root / "testorg" / "tiny-mlx"
    shutil.copytree(mlx_paths["tiny"]["parent"], repo)
    ms = catalog.resolve("testorg/tiny-mlx", backend="mlx")
    assert ms.source == "hub" and (ms.target / "config.json").exists()
    assert str(ms.target).startswith(str(hub.cache_dir())) and ms.missing == ["q8", "q4"]
    m = load_model(ms.target, "mlx", n_ctx=256)
    assert run(m, m.tokenize("Hello there"), max_tokens=4, stop_at_eos=False).stats.tokens == 4
    with pytest.raises(hub.NotOnHub, match="not an MLX model repo"):
        catalog.resolve("testorg/tiny-GGUF", backend="mlx")
    # A catalog family on MLX: the bf16 parent and the mlx-community 8-bit / 4-bit drafts.
    fam = catalog.get_family("smollm2-135m").repos["mlx"]
    for key, src in (("bf16", "parent"), ("8bit", "8bit"), ("4bit", "4bit")):
        shutil.copytree(mlx_paths["tiny"][src], server.root / fam[key])
    ms = catalog.resolve("smollm2-135m", backend="mlx")
    assert set(ms.drafts) == {"q8", "q4"} and not ms.missing
    assert json.loads((ms.drafts["q8"] / "config.json").read_text())["quantization"]["bits"] == 8


def test_family_fetches_what_auto_weighs_and_the_rest_on_first_use(server, tiny_paths):
    # A family as published (tiny bytes under real names): the target and the drafts policy auto
    # weighs come at once, with the sibling's Q8_0 alone; Q4_K_M only when a run asks for it.
    for repo, stem in (("bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct"),
                       ("bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct")):
        d = server.root / repo
        d.mkdir(parents=True)
        for q, src in (("f16", "F16"), ("Q8_0", "Q8_0"), ("Q4_K_M", "Q4_0"), ("Q4_0", "Q4_0")):
            shutil.copy(tiny_paths[src], d / f"{stem}-{q}.gguf")
    ms = catalog.resolve("smollm2-360m", with_sibling=True)
    assert set(ms.drafts) == {"q8", "q4_0"} and ms.later == {"q4": ["SmolLM2-360M-Instruct-Q4_K_M.gguf"]}
    assert ms.sibling.name == "SmolLM2-135M-Instruct-Q8_0.gguf"
    repo = "bartowski/SmolLM2-360M-Instruct-GGUF"
    assert "SmolLM2-360M-Instruct-Q4_K_M.gguf" not in hub.cached_files(repo)
    assert server.requests("HEAD", "Q4_K_M") == 0 and server.requests("HEAD", "135M-Instruct-f16") == 0
    from specquant.engine import Engine

    eng = Engine.from_model_set(ms, n_ctx=512)
    plain = eng.run("Hello there", draft="none", max_tokens=12)
    assert eng.run("Hello there", draft="q4", k=3, max_tokens=12).tokens == plain.tokens
    assert "SmolLM2-360M-Instruct-Q4_K_M.gguf" in hub.cached_files(repo)  # fetched by that run
    assert eng.draft_path("q4").name.endswith("Q4_K_M.gguf") and eng.model_set.later == {}
    assert eng.run("Hello there", draft="sibling", k=3, max_tokens=12).tokens == plain.tokens


def test_a_missing_sibling_leaves_the_family_working(server, tiny_paths):
    d = server.root / "bartowski" / "SmolLM2-360M-Instruct-GGUF"
    d.mkdir(parents=True)
    shutil.copy(tiny_paths["F16"], d / "SmolLM2-360M-Instruct-f16.gguf")
    ms = catalog.resolve("smollm2-360m", with_sibling=True)
    assert ms.sibling is None and "no sibling draft" in ms.note and "SmolLM2-135M-Instruct-GGUF" in ms.note


def test_the_app_service_loads_the_family_with_its_sibling(server, tiny_paths, monkeypatch, tmp_path):
    # What `python app.py` does with a family: files from the Hub, the sibling among the drafts
    # auto weighs, each loading phase timed for the page.
    from specquant.service import Service

    monkeypatch.setenv("SPECQUANT_HOME", str(tmp_path / "sq"))  # a calibration of its own
    for repo, stem in (("bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct"),
                       ("bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct")):
        d = server.root / repo
        d.mkdir(parents=True)
        for q in ("F16", "Q8_0"):
            shutil.copy(tiny_paths[q], d / f"{stem}-{q.lower() if q == 'F16' else q}.gguf")
    svc = Service("smollm2-360m", n_ctx=512)
    eng = svc.engine(timeout=120)
    assert eng.sibling.name == "SmolLM2-135M-Instruct-Q8_0.gguf" and "sibling" in eng.auto_sources()
    info = svc.describe()
    assert info["status"] == "ready" and set(info["phases"]) == {"files", "load", "calibration", "floor"}


def test_a_sharded_model_loads_and_quantizes_through_the_cache(server, smol_paths):
    # Real shards (gguf's writer splits them as the Hub has them): llama.cpp finds the other
    # files next to the first, so the model must be opened through the cache's link, not at
    # blobs/<hash>; the missing Q8_0 draft is made from the shards.
    from specquant.engine import load_engine
    from specquant.models import _vocab_fields, write_tiny_gguf

    d = server.root / "testorg" / "split-GGUF"
    d.mkdir(parents=True)
    first = write_tiny_gguf(d / "split-f16.gguf", _vocab_fields(smol_paths["F16"]), seed=3, split_max_tensors=10)
    assert first.name == "split-f16-00001-of-00002.gguf"
    eng = load_engine("testorg/split-GGUF", n_ctx=512)
    assert eng.target.path.name == first.name and eng.model_set.missing == ["q8", "q4", "q4_0"]
    plain = eng.run("Hello there", max_tokens=10)
    assert len(plain.tokens) == 10 and eng.run("Hello there", draft="q8", k=3, max_tokens=10).tokens == plain.tokens
    assert eng.draft_path("q8").name.startswith("split.Q8_0.")  # named after the model, not a hash
