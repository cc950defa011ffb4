"""The CLI and the benchmark, run as a user would (subprocesses), on the tiny models."""
import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ)


def cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "specquant", *args], capture_output=True, text=True, env=ENV, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_compare_json(tiny_paths):
    r = cli("--target", str(tiny_paths["F16"]), "--draft", "q8", "--draft-len", "3", "--prompt", "Hello there",
            "--compare", "--json", "--max-tokens", "24")
    out = json.loads(r.stdout)
    assert out["identical"] is True and out["speedup"] > 0
    assert set(out["runs"]) == {"plain", "speculative"}
    spec = out["runs"]["speculative"]
    assert spec["stats"]["drafted"] > 0 and len(spec["from_draft"]) == len(spec["tokens"]) == 24
    for key in ("wall_s", "ttft_s", "tokens_per_s", "target_passes", "acceptance_rate", "tokens_per_pass",
                "acceptance_by_pos", "draft_s", "verify_s"):
        assert key in spec["stats"]
    names = [m["name"] for m in out["models"]["models"]]
    assert names[0] == tiny_paths["F16"].name and "Q8_0" in names[1]
    assert out["models"]["batch_invariant"] is True


def test_human_output_and_lookup_and_auto(tiny_paths):
    r = cli("--target", str(tiny_paths["F16"]), "--draft", "lookup", "--prompt", "a b a b a b a b", "--max-tokens", "16")
    assert "tok/s" in r.stdout and "model: tiny-llama.F16.gguf" in r.stdout
    r = cli("--target", str(tiny_paths["F16"]), "--draft", "q4_0", "--draft-len", "auto", "--compare",
            "--prompt", "Once upon a time", "--max-tokens", "16")
    assert "speed-up:" in r.stdout and "outputs identical" in r.stdout
    assert "measurement noise" not in r.stdout  # a draft was forced
    r = cli("--target", str(tiny_paths["F16"]), "--draft", "none", "--compare", "--prompt", "Once upon a time",
            "--max-tokens", "8")
    assert "both runs did the same work" in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "hi", "--draft-len", "0"], "draft length must be from 1 to 32"),
    (["--prompt", "hi", "--draft-len", "33"], "draft length must be from 1 to 32"),
    (["--prompt", "hi", "--draft-len", "many"], "draft length must be an integer"),
    (["--prompt", "hi", "--max-tokens", "0"], "max_tokens must be"),
    (["--prompt", "hi", "--draft", "q17"], "unknown draft"),
    (["--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["--prompt", "hi", "--temperature", "0.7", "--seed", "-1"], "seed must be a whole number >= 0"),
    (["--prompt", "hi", "--ctx", "0"], "argument --ctx: a whole number from 1 is needed, got '0'"),
    (["--prompt", "hi", "--threads", "two"], "argument --threads: a whole number from 1 is needed"),
])
def test_bad_input_is_a_clear_error(tiny_paths, args, msg):
    r = cli("--target", str(tiny_paths["F16"]), *args, check=False)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_bench_counts_from_one(tiny_paths):
    r = cli("bench", "--target", str(tiny_paths["F16"]), "--max-repeats", "-1", check=False)
    assert r.returncode == 2 and "argument --max-repeats: a whole number from 1 is needed, got '-1'" in r.stderr


def test_bad_files(tiny_paths, tmp_path):
    r = cli("--target", str(tmp_path / "none.gguf"), "--prompt", "hi", check=False)
    assert r.returncode == 2 and "model file not found" in r.stderr
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    r = cli("--target", str(bad), "--prompt", "hi", check=False)
    assert r.returncode == 2 and "not a GGUF file" in r.stderr
    r = cli("--target", str(tiny_paths["F16"]), "--draft", str(tiny_paths["other"]), "--prompt", "hi", check=False)
    assert r.returncode == 2 and "vocabularies differ" in r.stderr
    r = cli("--target", str(tiny_paths["F16"]), "--ctx", "256", "--raw", "--prompt", "word " * 400, check=False)
    assert r.returncode == 2 and "longer than the model's context" in r.stderr


def test_bench_writes_json_and_markdown(tiny_paths, tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "specquant", "bench", "--target", str(tiny_paths["F16"]),
                        "--drafts", "q8,lookup", "--k", "2,auto", "--limit", "3", "--max-tokens", "16",
                        "--alone", "q8", "--min-seconds", "0", "--out", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "bench.json").read_text())
    assert set(res["summary"]) == {"q8 k=2", "q8 k=auto", "lookup k=2", "lookup k=auto", "policy auto",
                                   "policy tier-rule", "Q8_0 alone", "oracle (best fixed per prompt)"}
    for name, s in res["summary"].items():
        assert s["speedup"] > 0 and s["prompts"] == 3
        if not name.startswith("oracle") and not name.endswith("alone"):
            assert s["identical"] == 3, name
    assert 0 < res["summary"]["policy auto"]["vs_oracle"]
    assert len(res["prompts"]) == 3 and all(len(e["plain_runs_s"]) == 8 for e in res["prompts"])  # 7 runs, 8 plain
    for e in res["prompts"]:
        assert e["runs"]["policy tier-rule"]["decision"] in ("q4", "q8", "none")
        assert e["oracle"]["speedup"] >= max(1.0, *(r["speedup"] for n, r in e["runs"].items()
                                                   if "policy" not in n and not n.endswith(" alone")))
    md = (out / "bench.md").read_text()
    assert "| configuration | time normal (s) | time SpecQuant (s) | speed-up |" in md
    assert "accuracy normal" in md and "the oracle's throughput" in md
    assert "| configuration | time (s) | speed-up | agreement with FP16 | accuracy |" in md and "| Q8_0 alone |" in md
    r = subprocess.run([sys.executable, "-m", "specquant", "bench", "--target", str(tiny_paths["F16"]),
                        "--alone", "q9", "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 2 and "'q9' is not a quantized copy of the target" in r.stderr


def test_bench_gives_short_answers_more_rounds(tiny_paths, tmp_path):
    # The tiny model answers 8 tokens in milliseconds: far under --min-seconds, so each prompt's
    # sequence runs --max-repeats times, and a prompt's speed-up is the median over the rounds.
    import statistics

    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "specquant", "bench", "--target", str(tiny_paths["F16"]),
                        "--drafts", "lookup", "--k", "2", "--policies", "", "--alone", "", "--limit", "2",
                        "--max-tokens", "8",
                        "--min-seconds", "60", "--max-repeats", "3", "--out", str(out)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "bench.json").read_text())
    for e in res["prompts"]:
        run = e["runs"]["lookup k=2"]
        assert e["rounds"] == 3 and len(e["plain_runs_s"]) == 6 and len(run["speedup_rounds"]) == 3
        assert run["speedup"] == statistics.median(run["speedup_rounds"])
    assert "[18/18]" in r.stdout  # progress counts the added rounds


def test_bundled_prompt_set():
    from specquant.prompts import load_prompts

    ps = load_prompts()
    assert len(ps) >= 24 and len({p["id"] for p in ps}) == len(ps)
    cats = {p["category"] for p in ps}
    assert {"facts", "code", "lists", "reasoning", "creative", "grounded"} <= cats
    assert sum(1 for p in ps if p.get("reference")) >= 10
    assert sum(1 for p in ps if p.get("grounded")) >= 6


def test_analyze_and_models_commands(tiny_paths):
    r = cli("analyze", "John and Mary flew from Paris to London to visit Google.", "--target", str(tiny_paths["F16"]),
            "--analyzer", "fallback", "--json")
    out = json.loads(r.stdout)
    assert out["analysis"]["tier"] == "high" and out["analysis"]["score"] == 22
    assert out["decision"]["policy"] == "auto" and out["decision"]["reason"]
    r = cli("analyze", "Hi there", "--target", str(tiny_paths["F16"]), "--policy", "seed", "--tier", "medium")
    assert "decision (tier-rule): tier rule: tier medium -> Q8_0 draft, k=4" in r.stdout and "(tier set by you)" in r.stdout
    r = cli("analyze", "Hi there", "--target", str(tiny_paths["F16"]), "--policy", "tier-rule", "--tier", "medium")
    assert "decision (tier-rule): tier rule: tier medium" in r.stdout
    r = cli("models")
    assert "qwen2.5-7b" in r.stdout and "default family here:" in r.stdout and "demo" in r.stdout
    out = json.loads(cli("models", "--json").stdout)
    assert {f["family"] for f in out["families"]} >= {"qwen2.5-0.5b", "smollm2-135m", "llama3.2-1b"}


def test_bad_input_writes_nothing_outside_cache_and_data(tiny_paths, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = dict(ENV, HOME=str(home), SPECQUANT_HOME=str(tmp_path / "sq"), HF_HUB_CACHE=str(tmp_path / "hf"),
               SPECQUANT_NLTK_DOWNLOAD="0", XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local"),
               HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there: the Hub is unreachable
    env.pop("HF_HUB_OFFLINE", None)
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 100_000)
    binary = tmp_path / "image.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    cases = [
        (["--target", str(tiny_paths["F16"]), "--prompt", "   "], "the prompt is empty"),
        (["--target", str(tiny_paths["F16"]), "--ctx", "512", "--prompt-file", str(huge)], "longer than the model's context"),
        (["--target", str(tiny_paths["F16"]), "--prompt-file", str(binary)], "not text"),
        (["--model", "no-such-family", "--prompt", "hi"], "unknown model family"),
        (["analyze", "   ", "--target", str(tiny_paths["F16"])], "the prompt is empty"),
        (["--model", "testorg/repo", "--prompt", "hi"], "cannot reach the Hugging Face Hub"),
    ]
    for args, msg in cases:
        r = subprocess.run([sys.executable, "-m", "specquant", *args], capture_output=True, text=True, env=env,
                           cwd=work, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-500:])
    assert list(work.iterdir()) == [] and list(home.iterdir()) == []
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"sq", "hf", "huge.txt", "image.bin"}


def test_non_text_prompt_is_refused(tiny_paths):
    from specquant.engine import Engine, InputError

    eng = Engine(tiny_paths["F16"], n_ctx=256)
    for bad in (b"\xff\xfe\xfa", "abc\x00def", 42):
        with pytest.raises(InputError):
            eng.route(bad)
