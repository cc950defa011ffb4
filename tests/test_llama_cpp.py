"""llama.cpp specifics on real GGUF files (the backend-independent suite is test_equivalence.py)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backends import load_model
from specquant.control import DraftControl
from specquant.drafts import ModelDraft, PromptLookup
from specquant.speculative import run

from .test_equivalence import KS, Scripted


def test_build_is_batch_invariant(tiny, smol):
    # Exactness rests on this: a verify pass over k+1 tokens must compute exactly what
    # k+1 one-token passes compute (scripts/build_llama_cpp.py; flash attention off).
    assert tiny.batch_invariant()
    assert smol.batch_invariant()


@pytest.mark.parametrize("start", [37, 509, 700, 1100])
def test_batches_equal_single_tokens_deep_in_the_context(smol, start):
    # Past 512 cached tokens llama.cpp's CPU flash attention splits one token's attention over
    # threads (and tiles a batch's): the backend turns it off. Check verify-sized batches there.
    rng = np.random.default_rng(start)
    toks = [int(t) for t in rng.integers(0, smol.n_vocab, start + 9)]
    for b, batched, single in smol.batches_against_steps(toks, (2, 3, 5, 9), prefix=start):
        assert np.array_equal(batched, single), f"batch of {b} at position {start}"


@pytest.mark.parametrize("n_embd,n_ff", [(72, 200), (64, 176)])
def test_every_verify_size_equals_single_tokens_with_odd_dimensions(tmp_path, smol_paths, n_embd, n_ff):
    # On x86 (AVX2 or AVX-512) one token and batches of up to 33 take the build's own kernel (tiles of
    # 4-8 rows, columns three at a time: remainders of 1 and 2), longer ones tinyBLAS; both sum in
    # tinyBLAS's order where the inner dimension is a multiple of the vector width (8 floats with AVX2,
    # 16 with AVX-512) and the rows come in fours. Elsewhere every size takes ggml's dot product. 72
    # and 200 leave a remainder past 16; 64 and 176 do not. Up to 40 tokens: past the kernel's limit.
    # On an NVIDIA GPU float16 weights take MMVF up to 17 tokens (scripts/build_llama_cpp.py's CUDA edits).
    from specquant.models import _vocab_fields, write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "odd.F16.gguf", _vocab_fields(smol_paths["F16"]), n_embd=n_embd, n_ff=n_ff,
                           n_head=4, n_head_kv=2)
    m = load_model(path, n_ctx=512)
    rng = np.random.default_rng(0)
    toks = [int(t) for t in rng.integers(0, m.n_vocab, 80)]
    m.prefill(toks[:40])
    for b in range(2, 18 if m.on_gpu else 41):
        batched = m.eval(toks[40 : 40 + b])
        m.rollback(40)
        single = np.concatenate([m.eval([t]) for t in toks[40 : 40 + b]])
        m.rollback(40)
        assert np.array_equal(batched, single), f"batch of {b}"
    m.close()


def test_eos_inside_a_draft_stops_there(smol):
    # SmolLM2 answers "What is 2+2?" in a few tokens and then EOS: a draft of 8 proposes
    # the answer, the EOS and junk after it; nothing past EOS may appear.
    prompt = smol.tokenize(smol.apply_chat_template([{"role": "user", "content": "What is 2+2?"}]))
    plain = run(smol, prompt, max_tokens=64)
    assert plain.stats.finish_reason == "stop" and len(plain.tokens) < 20
    eos = min(smol.eos_ids)
    src = Scripted(len(prompt), plain.tokens + [eos] + smol.tokenize(" and more text", add_special=False))
    spec = run(smol, prompt, draft=src, control=DraftControl(8), max_tokens=64)
    assert spec.tokens == plain.tokens
    assert spec.stats.finish_reason == "stop"
    assert not set(spec.tokens) & smol.eos_ids
    own = ModelDraft(load_model(smol.path, n_ctx=smol.n_ctx), smol)
    spec2 = run(smol, prompt, draft=own, control=DraftControl(8), max_tokens=64)
    assert spec2.tokens == plain.tokens and spec2.stats.finish_reason == "stop"


def test_smollm2_greedy_identical_on_chat_prompts(smol, smol_drafts):
    from specquant.prompts import load_prompts

    by_kind = {}
    for p in load_prompts():  # one prompt of each kind, two grounded ones (where lookup drafts most)
        by_kind.setdefault(p["category"], []).append(p)
    prompts = [p for kind, ps in by_kind.items() for p in ps[: 2 if kind == "grounded" else 1]]
    sources = {name: ModelDraft(m, smol, name=name) for name, m in smol_drafts.items()}
    sources["lookup"] = PromptLookup()
    total_drafted = 0
    for p in prompts:
        tokens = smol.tokenize(smol.apply_chat_template([{"role": "user", "content": p["prompt"]}]))
        plain = run(smol, tokens, max_tokens=24)
        for name, src in sources.items():
            for k in KS:
                spec = run(smol, tokens, draft=src, control=DraftControl(k), max_tokens=24)
                assert spec.tokens == plain.tokens, f"{name} k={k} differs on {p['id']}"
                total_drafted += spec.stats.drafted
    assert total_drafted > 0


def test_stream_safe_detokenize(smol):
    text = "héllo wörld — 東京 🌍🚀 ok"
    toks = smol.tokenize(text, add_special=False)
    d = smol.detokenizer()
    pieces = [d.add(t) for t in toks] + [d.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text
    assert any(p == "" for p in pieces), "expected a character split across tokens"


def test_chat_template_from_gguf(smol):
    text = smol.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_file_loaded_twice_is_loaded_once(tiny_paths):
    from backends import llama_cpp

    a = load_model(tiny_paths["F16"], n_ctx=256)
    b = load_model(tiny_paths["F16"], n_ctx=256)
    assert a._w is b._w and a._ctx != b._ctx
    assert len([k for k in llama_cpp._weights if k[0] == str(tiny_paths["F16"].resolve())]) == 1


def test_a_small_context_takes_batches_of_its_own_size(tiny_paths):
    # llama.cpp caps a batch at the context asked for (16 here) and pads the context itself to 256:
    # a 200-token prompt fits, and prefilling it in batches of 512 aborted the whole process. A verify
    # pass longer than that batch (k = 32) goes in parts, each exact, so the output is still plain's.
    small = load_model(tiny_paths["F16"], n_ctx=16)
    assert small.n_batch <= 16 < small.n_ctx
    prompt = [int(t) for t in np.random.default_rng(5).integers(0, small.n_vocab, 200)]
    plain = run(small, prompt, max_tokens=40, stop_at_eos=False)
    spec = run(small, prompt, max_tokens=40, stop_at_eos=False, draft=Scripted(len(prompt), plain.tokens),
               control=DraftControl(32))
    assert len(plain.tokens) == 40 and spec.tokens == plain.tokens
    assert spec.stats.target_passes <= 3  # 33-token passes, each in three parts


# --- bad input --------------------------------------------------------------------------

@pytest.mark.skipif(not all(shutil.which(t) for t in ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake")),
                    reason="needs g++-aarch64-linux-gnu, qemu-user and cmake (scripts/setup.sh test installs them)")
def test_the_patched_build_is_exact_on_arm_too(tiny_paths):
    # llama.cpp's ARM float16 kernels switch to tinyBLAS at 8 tokens; the patch keeps every pass of up
    # to 48 tokens on ggml's dot products there. Cross-compiled for ARMv8.2 + fp16 and run under qemu.
    r = subprocess.run(["bash", "scripts/check_arm.sh", str(tiny_paths["F16"])], capture_output=True, text=True,
                       timeout=1800, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and "batch-invariant at every size 2-33" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_quantized_drafts_run_batched_passes(smol_paths):
    """Drafts prefill prompts and catch up in batches. On AMX CPUs (Intel Sapphire Rapids and newer)
    stock llama.cpp 0.3.36 built by GCC 12 raised SIGILL on any batch of 2+ tokens of a quantized
    model (its tile configuration was optimized away; the patch keeps it in .rodata). Run in a child
    process, so a crash fails this test in words instead of killing the whole run."""
    import sys

    code = ("import sys; import numpy as np; from backends import load_model\n"
            "for path in sys.argv[1:]:\n"
            "    m = load_model(path, n_ctx=256)\n"
            "    for n in (2, 5, 33, 64):\n"
            "        m.rollback(0); assert np.isfinite(m.eval(list(range(100, 100 + n)))).all()\n"
            "    print('ok', path)\n")
    paths = [str(smol_paths[k]) for k in ("Q8_0", "Q4_K_M", "Q4_0")]
    r = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and r.stdout.count("ok ") == 3, (
        f"exit status {r.returncode} (-4 is SIGILL): {r.stdout[-1000:]} {r.stderr[-2000:]}")


def test_builds_whose_amx_kernels_may_crash_load_models_without_them(monkeypatch):
    """A llama.cpp build other than ours at patch level 5+ that reports AMX loads models without
    llama.cpp's extra CPU layouts (see backends.llama_cpp.amx_unsafe): slower drafts, no SIGILL."""
    import llama_cpp

    from backends import llama_cpp as backend

    amx, no_amx = "CPU : AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 | ", "CPU : AVX2 = 1 | REPACK = 1 | "
    for version, info, unsafe in [("0.3.36", amx, True), ("0.3.36+specquant.4", amx, True),
                                  ("0.3.36+specquant.5", amx, False), ("0.3.36+specquant.12", amx, False),
                                  ("0.3.36+specquant.x", amx, True), ("0.3.36", no_amx, False)]:
        monkeypatch.setattr(llama_cpp, "__version__", version)
        monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda info=info: info.encode())
        backend.amx_unsafe.cache_clear()
        assert backend.amx_unsafe() is unsafe, (version, info)
    backend.amx_unsafe.cache_clear()  # the real build's answer again once monkeypatch undoes the above


def test_gpu_layers_from_the_environment(tiny_paths, monkeypatch):
    """SPECQUANT_GPU_LAYERS=0 keeps a CUDA build on the CPU (exact there); a bad value is refused
    in words before anything loads; a CPU-only build never reports a GPU whatever the number."""
    from backends import BackendError
    from backends.llama_cpp import gpu_layers_default, gpu_offload

    monkeypatch.setenv("SPECQUANT_GPU_LAYERS", "0")
    assert gpu_layers_default() == 0
    for bad in ("all", "-1", "1.5"):
        monkeypatch.setenv("SPECQUANT_GPU_LAYERS", bad)
        with pytest.raises(BackendError, match="SPECQUANT_GPU_LAYERS must be a whole number"):
            load_model(tiny_paths["F16"], n_ctx=256)
    monkeypatch.setenv("SPECQUANT_GPU_LAYERS", "7")
    m = load_model(tiny_paths["F16"], n_ctx=256)
    assert m.on_gpu == gpu_offload() and (m.describe()["gpu_layers"] == 7) == gpu_offload()
    monkeypatch.delenv("SPECQUANT_GPU_LAYERS")
    assert gpu_layers_default() == (999 if gpu_offload() else 0)


def test_llama_cpp_loads_before_numpy():
    """See backends/__init__.py: on a CUDA image, loading a model crashed when numpy came first."""
    import sys

    code = ("import backends, sys; m = list(sys.modules); "  # modules in the order their imports finished
            "print(m.index('llama_cpp.llama_cpp') < m.index('numpy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "True", out.stderr[-500:]
