"""Routing with injected costs and acceptances, the tier rule, overrides, and hardware."""
import os
import statistics
import subprocess
import sys
import time

import pytest

from specquant import hardware, routing
from specquant.acceptance import Tally
from specquant.costs import Costs, expected_speedup

CPU = {  # measured shape on 2 CPU cores: drafts cost 0.5-0.7 of a step, verify is steep
    "q8": Costs({1: 1.0, 2: 1.46, 3: 1.56, 5: 1.84, 9: 2.75}, draft_step=0.68),
    "q4_0": Costs({1: 1.0, 2: 1.46, 3: 1.56, 5: 1.84, 9: 2.75}, draft_step=0.49),
    "lookup": Costs({1: 1.0, 2: 1.46, 3: 1.56, 5: 1.84, 9: 2.75}, draft_step=0.0),
}
GPU = {  # H100 shape: verifying 5 tokens ~1.5 steps, Q8 0.75, Q4_0 0.65, a 0.5B sibling 0.2
    "q8": Costs({1: 1.0, 2: 1.1, 3: 1.2, 5: 1.46, 9: 2.0}, draft_step=0.75),
    "q4_0": Costs({1: 1.0, 2: 1.1, 3: 1.2, 5: 1.46, 9: 2.0}, draft_step=0.65),
    "sibling": Costs({1: 1.0, 2: 1.1, 3: 1.2, 5: 1.46, 9: 2.0}, draft_step=0.2),
    "lookup": Costs({1: 1.0, 2: 1.1, 3: 1.2, 5: 1.46, 9: 2.0}, draft_step=0.0),
}


def test_auto_picks_the_argmax_and_says_why():
    d = routing.decide("medium", GPU)
    best = max(GPU, key=lambda s: max(expected_speedup(GPU[s], routing.prior_acceptance(s, "medium", False), k)
                                      for k in range(1, 9)))
    assert d.draft == best == "sibling" and d.policy == "auto"
    assert d.expected_speedup == pytest.approx(d.candidates[0]["expected_speedup"])
    assert d.expected_speedup == max(c["expected_speedup"] for c in d.candidates)
    assert d.k == "auto" and d.k_start and f"k={d.k_start}:" in d.reason
    assert "expected" in d.reason and "draft cost 0.20 of a step" in d.reason


def test_auto_says_no_draft_when_nothing_pays():
    models = {s: c for s, c in CPU.items() if s != "lookup"}
    d = routing.decide("medium", models)
    assert d.draft == "none" and d.expected_speedup == 1.0
    assert d.reason.startswith("no draft: nothing is expected to beat plain decoding")
    assert "Q8_0 draft" in d.reason


def test_free_prompt_lookup_is_the_floor_until_runs_here_say_it_fails():
    # Nothing clears the bar on these CPU costs, but prompt lookup drafts only where the answer
    # repeats the prompt: it is tried, adapted in the run, rather than ruled out by its prior.
    book = routing.AcceptanceBook()
    d = routing.decide("medium", CPU, book=book)
    assert d.draft == "lookup" and d.adaptive and d.expected_speedup == 1.0
    assert "no draft model is expected at the 1.20x a model draft must promise here (best: Q8_0 draft" in d.reason
    assert "free" in d.reason
    book.record("lookup", "open", Tally(100, 60))  # its copies kept 60% here: still worth it
    assert routing.decide("medium", CPU, book=book).draft == "lookup"
    book.record("lookup", "open", Tally(900, 10))  # now 7%: copying open questions loses
    assert routing.decide("medium", CPU, book=book).draft == "none"
    assert routing.decide("high", CPU, book=book).draft == "none"  # at any tier: copying depends on material
    assert routing.decide("high", CPU, grounded=True, book=book).draft == "lookup"  # which these prompts carry


def test_acceptance_is_learnt_per_kind_of_prompt_the_source_depends_on():
    # Lookup's copies on open questions say nothing of its copies on a passage to summarise, and a
    # model draft's acceptance follows how hard the text is, not whether it quotes the prompt.
    assert routing.evidence("lookup", "high", True) == "grounded" and routing.evidence("lookup", "low", False) == "open"
    assert routing.evidence("q8", "high", True) == routing.evidence("q8", "high", False) == "high"
    book = routing.AcceptanceBook()
    book.record("lookup", "open", Tally(2000, 100))
    d = routing.decide("high", CPU, grounded=True, book=book)
    assert d.draft == "lookup" and d.acceptance == pytest.approx(routing.GROUNDED_LOOKUP)


def test_grounded_prompts_bring_prompt_lookup_in():
    d = routing.decide("high", CPU, grounded=True)
    assert d.draft == "lookup" and d.expected_speedup > 1.0


def test_measured_acceptance_moves_the_decision():
    book = routing.AcceptanceBook()
    assert routing.decide("high", CPU, grounded=True, book=book).draft == "lookup"
    book.record("lookup", "grounded", Tally(200, 20))  # lookup kept failing here
    assert routing.decide("high", CPU, grounded=True, book=book).draft == "none"


def test_tier_rule_and_overrides():
    assert routing.decide("low", CPU, policy="tier-rule").draft == "q4"
    assert routing.decide("medium", CPU, policy="seed").draft == "q8"  # the rule's first name still works
    d = routing.decide("high", CPU, policy="tier-rule")
    assert d.draft == "none" and "tier rule" in d.reason and d.policy == "tier-rule"
    assert routing.decide("low", CPU, policy="seed").k == routing.TIER_RULE_K
    with pytest.raises(ValueError, match="use auto or tier-rule"):
        routing.decide("low", CPU, policy="fastest")
    o = routing.decide("high", CPU, draft_override="q4_0", k_override=3)
    assert (o.draft, o.k, o.policy) == ("q4_0", 3, "override") and "chosen by you" in o.reason
    assert not o.adaptive and routing.decide("high", CPU, draft_override="q8").adaptive
    with pytest.raises(ValueError):
        routing.decide("extreme", CPU)
    with pytest.raises(ValueError):
        routing.decide("low", CPU, policy="fastest")


def test_is_grounded():
    text = "The council met on Tuesday to discuss new bicycle lanes. " * 8
    assert routing.is_grounded(f"Summarise the following text.\n\n{text}")
    assert routing.is_grounded("Rename x to y:\n```python\n" + "x = 1\nprint(x)\n" * 20 + "```")
    memo = (
        "Dear team, the quarterly review moved from Monday to Wednesday at 10 am in room 4B. Please bring "
        "your project updates and the budget spreadsheet."
    )
    assert routing.is_grounded(f"Rewrite this email in a formal tone.\n\n{memo} Lunch is provided. Ask Maria.")
    assert routing.is_grounded(f"Read the text and answer: where is the review?\n\n{memo} {memo}")
    assert not routing.is_grounded("What is the capital of France?")
    assert not routing.is_grounded("Write a long essay about " + "the sea " * 60)


def fake_hw(kind="cpu", cores=2, ram_gib=24, gpu_gib=0):
    g = 2**30
    return hardware.Hardware(kind, "llama.cpp", "test", cores, cores, int(ram_gib * g), int(ram_gib * g),
                             int(gpu_gib * g), int(gpu_gib * g))


def test_default_family_follows_hardware():
    assert hardware.default_family(fake_hw()) == "smollm2-1.7b"  # 2 cores: ~30 s for 1.7B
    assert hardware.default_family(fake_hw(cores=16, ram_gib=64)) == "llama3.2-3b"  # 7B: ~50 s, too slow
    assert hardware.default_family(fake_hw("cuda", gpu_gib=80)) == "qwen2.5-7b"
    assert hardware.default_family(fake_hw(ram_gib=2)) == "smollm2-135m"  # nothing fits: the smallest
    with pytest.raises(MemoryError, match="does not fit here"):
        hardware.check_fits(fake_hw(ram_gib=8), 7.62, "Qwen2.5-7B-Instruct")
    hardware.check_fits(fake_hw(ram_gib=8), 0.49, "Qwen2.5-0.5B-Instruct")


def test_detect_this_machine():
    hw = hardware.detect()
    assert hw.kind in ("cpu", "cuda", "apple") and hw.physical_cores >= 1 and hw.ram_bytes > 0
    assert hw.backend == ("mlx" if hw.kind == "apple" else "llama.cpp")
    assert hw.device in hw.summary()


CPUINFO_2X2 = "".join(f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu // 2}\n\n" for cpu in range(4))


def test_cpuinfo_blocks_one_dict_of_fields_per_cpu():
    from backends.cpus import cpu_topology, cpuinfo_blocks

    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13: 2 cores\nflags\t\t: fpu avx2\n\nprocessor\t: 1\n\n\n"
    assert cpuinfo_blocks(text) == [{"processor": "0", "model name": "AMD EPYC 7B13: 2 cores", "flags": "fpu avx2"},
                                    {"processor": "1"}]
    assert cpuinfo_blocks("") == [] and cpu_topology(text) == {}  # no core ids: no topology
    assert cpu_topology(CPUINFO_2X2) == {0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"), 3: ("0", "1")}


def test_physical_cores_counts_only_the_cores_this_process_may_use():
    from backends.cpus import physical_cores

    assert physical_cores(CPUINFO_2X2, {0, 1, 2, 3}) == 2  # two cores, each with its hyper-thread
    assert physical_cores(CPUINFO_2X2, {0, 2}) == 2  # one thread on each core: both cores' units
    assert physical_cores(CPUINFO_2X2, {0, 1}) == 1  # taskset to one core's two threads
    assert physical_cores("", {0, 1, 2}) == 3  # no topology (e.g. some VMs): the CPUs allowed
    # ARM's /proc/cpuinfo has processors but no core ids: each counts
    assert physical_cores("processor\t: 0\n\nprocessor\t: 1\n\n", {0}) == 1


def test_calibrated_costs_agree_with_direct_measurement(smol_paths, tmp_path, monkeypatch):
    """On the real SmolLM2 family: the engine's calibration vs timing the same passes directly.
    The two are seconds apart and this VM's speed moves by 20-30% now and then, so a pair that
    disagrees is measured again (up to three times); a calibration that measured the wrong thing
    disagrees every time.

    Run in a process of its own, as a user's calibration is. A full suite run on a clean clone failed
    here once, the draft's calibrated step 1.5x its direct timing in all three attempts, where the test
    alone passes: earlier tests in the suite's process call the models from other threads (the served
    page's model thread), and each calling thread keeps an OpenMP team that can compete for the 2 cores
    (benchmarks/calling_threads.py). (Running test_server's and test_remote's tests first in one process
    did not reproduce it; the isolation removes the suite's state from a timing comparison either way.)"""
    if os.environ.get("SPECQUANT_TEST_ALONE") != "1":
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_calibrated_costs_agree_with_direct_measurement"],
                           env={**os.environ, "SPECQUANT_TEST_ALONE": "1"}, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        return
    monkeypatch.setenv("SPECQUANT_HOME", str(tmp_path))  # no cached calibration
    from specquant.costs import measure_costs
    from specquant.drafts import top_probability
    from specquant.engine import CALIBRATION_TEXT, Engine

    eng = Engine(smol_paths["F16"], draft_files={"q8": smol_paths["Q8_0"]}, n_ctx=1024)
    d = eng.draft("q8").model

    def direct():
        """A plain run's per-pass time, and the draft model stepping on its own (with the p_min
        check on its logits, as a draft step in a run and in the calibration has)."""
        runs = [eng.run("Write a short poem about the sea.", draft="none", max_tokens=48) for _ in range(3)]
        step = statistics.median(r.stats.verify_s / r.stats.target_passes for r in runs)
        d.reset()
        d.prefill(eng.target.tokenize("Write a short poem about the sea and the sky."))
        times = []
        for t in range(40):
            t0 = time.perf_counter()
            top_probability(d.eval([100 + t])[-1])
            times.append(time.perf_counter() - t0)
        d.reset()
        return step, statistics.median(times)

    c = eng.costs("q8")  # the engine's own calibration first, then the same measurement again
    for attempt in range(3):
        if attempt:
            c = measure_costs(eng.target, d, context=eng.target.tokenize(CALIBRATION_TEXT))
        step, draft_step = direct()
        if c.T(1) == pytest.approx(step, rel=0.2) and c.draft_step == pytest.approx(draft_step, rel=0.2):
            break
    assert c.T(1) == pytest.approx(step, rel=0.2)
    assert c.draft_step == pytest.approx(draft_step, rel=0.2)
    c = eng.costs("q8")
    assert eng.costs("lookup").verify == c.verify  # lookup reuses the target's timings


def test_the_router_weighs_costs_at_the_level_runs_have_seen(tiny_paths):
    # The engine carries what runs observed of its passes: once multi-token passes are seen to
    # cost three times what the calibration said, copying no longer looks worth a verify pass.
    from specquant.engine import Engine

    eng = Engine(tiny_paths["F16"], n_ctx=1024)
    eng.auto_sources = lambda: ["lookup"]
    eng._costs["lookup"] = Costs({1: 1.0, 2: 1.1, 3: 1.2, 5: 1.46, 9: 2.0})  # as if calibrated so
    material = "Summarise this text in two sentences:\n\n" + "The river rose after three days of rain. " * 12
    assert eng.route(material)[1].draft == "lookup"
    eng.drift.shape = {n: 3.0 for n in (2, 3, 5, 9)}
    _, d = eng.route(material)
    assert d.draft == "none" and "prompt lookup" in d.reason
    ctl = eng.control("lookup", "auto")  # and a run starts from the same view
    assert ctl._costs().T(9) == pytest.approx(6.0)


def test_a_comparison_takes_the_tier_rules_old_name_and_refuses_bad_input():
    from specquant.service import Settings, checked
    from specquant.speculative import InputError

    assert checked("hi", Settings(draft="seed")) == checked("hi", Settings(draft="tier rule")) == ("tier-rule", None)
    assert checked("hi", Settings(draft="Q4_0")) == ("auto", "q4_0")
    for prompt, settings, words in (("  ", Settings(), "empty"), ("hi", Settings(draft="q5"), "unknown draft"),
                                    ("hi", Settings(max_tokens=0), "at least 1")):
        with pytest.raises(InputError, match=words):
            checked(prompt, settings)
