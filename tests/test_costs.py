"""Calibration: timing passes as decoding meets them, with a stand-in target on a real clock."""
import pytest

from specquant.costs import Costs, measure_costs, plausible


class _Timed:
    """A stand-in target whose passes take scripted times (ms per pass length): the first
    calibration sees a busy machine (a 1-token pass dearer than a 9-token one), the next a
    quiet one. ``rebuild``: extra ms for a pass whose length differs from the previous one's
    (as llama.cpp rebuilds its graph when the batch shape changes)."""

    n_ctx = 512
    PER_TRY = 9 * 4 * 4  # (8 rounds + warm-up) x 4 longer shapes x 4 passes

    def __init__(self, plans, rebuild=0.0):
        self.plans, self.rebuild, self.calls, self.prev = plans, rebuild, 0, None

    def reset(self):
        pass

    def prefill(self, tokens):
        pass

    def rollback(self, n):
        pass

    def eval(self, tokens):
        import time

        plan = self.plans[min(self.calls // self.PER_TRY, len(self.plans) - 1)]
        self.calls += 1
        extra = self.rebuild if self.prev not in (None, len(tokens)) else 0.0
        self.prev = len(tokens)
        time.sleep((plan[len(tokens)] + extra) / 1000)


def test_an_implausible_calibration_is_taken_again():


    busy = {1: 12, 2: 6, 3: 6.5, 5: 7, 9: 8}
    quiet = {1: 4, 2: 5, 3: 5.5, 5: 6.5, 9: 8}
    c = measure_costs(_Timed([busy, quiet]), context=[1, 2, 3], budget_s=100)
    assert plausible(c) and c.T(2) / c.T(1) == pytest.approx(1.25, rel=0.15)
    worst = measure_costs(_Timed([busy]), context=[1, 2, 3], attempts=2, budget_s=100)  # never quiet: made monotone
    assert plausible(worst) and worst.T(2) >= worst.T(1)
    large = _Timed([busy, quiet])  # one try outlasts 3 x the budget (a large model): no second try
    c = measure_costs(large, context=[1, 2, 3], budget_s=0.01)
    assert large.calls == (1 + 3) * 4 * 4 and plausible(c)


def test_calibration_times_passes_in_the_order_decoding_meets_them():
    # One-token steps in a row reuse their graph; a 2-token pass between them pays for a
    # rebuild, and so does the step after it. Timing the shapes back to back would charge the
    # rebuild to every one-token step and make drafting look cheap.


    plan = {1: 4, 2: 5, 3: 5.5, 5: 6.5, 9: 8}
    c = measure_costs(_Timed([plan], rebuild=3.0), context=[1, 2, 3], budget_s=100)
    assert c.T(1) == pytest.approx(0.004, rel=0.25)
    assert c.T(2) == pytest.approx(0.008, rel=0.25)
    assert c.settle == pytest.approx(0.003, rel=0.3)
    assert c.round_cost(2) == pytest.approx(0.011, rel=0.25) and c.round_cost(1) == c.T(1)
    slow = _Timed([plan])  # a large model: a round takes longer than the budget allows
    quick = measure_costs(slow, context=[1, 2, 3], budget_s=0.05)
    assert slow.calls == (1 + 3) * 4 * 4  # warm-up + the 3 rounds at least
    assert quick.T(1) == pytest.approx(0.004, rel=0.25)


class _Model(_Timed):
    """A stand-in that returns logits (a draft's step includes its p_min check) and counts
    passes by length."""

    def __init__(self, plans, **kw):
        super().__init__(plans, **kw)
        self.lengths = []

    def eval(self, tokens):
        import numpy as np

        self.lengths.append(len(tokens))
        super().eval(tokens)
        return np.zeros((len(tokens), 8), dtype=np.float32)


def test_a_second_draft_reuses_the_target_curve_and_keeps_its_proportion():
    # The curve was measured when a target step took 8 ms; now one takes 4 ms and a draft step
    # 2 ms: the draft is half a target step, so it is stated as 4 ms against the curve's 8.
    curve = measure_costs(_Model([{1: 8, 2: 10, 3: 11, 5: 13, 9: 16}]), context=[1, 2, 3], budget_s=100)
    target, draft = _Model([{1: 4, 2: 5}]), _Model([{1: 2, 2: 3}])
    c = measure_costs(target, draft, context=[1, 2, 3], budget_s=100, curve=curve)
    assert set(target.lengths) == {1}  # no target pass but one-token steps: the curve is not measured again
    assert c.verify == curve.verify and c.settle == curve.settle
    assert c.draft_step / c.T(1) == pytest.approx(0.5, rel=0.2)
    assert 2 in draft.lengths  # its catch-up pass is timed as 2 tokens: 3 ms + the next step's 2, vs 2 x 2 ms
    assert c.draft_round / c.T(1) == pytest.approx(0.25, rel=0.35)
    assert c.draft_prefill == 0.0 or c.draft_prefill < c.T(1)


def test_a_calibration_taken_while_the_machine_is_busy_is_used_but_not_kept(tiny_paths, tmp_path, monkeypatch):
    import json
    import subprocess
    import sys

    from specquant.engine import Engine

    monkeypatch.setenv("SPECQUANT_HOME", str(tmp_path))
    spin = "import time\nt = time.time()\nwhile time.time() - t < 60: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(3)]  # every core of a 2-core VM, and more
    try:
        eng = Engine(tiny_paths["F16"], n_ctx=512)
        c = eng.costs("none")
    finally:
        for h in hogs:
            h.kill()
    assert c.T(1) > 0 and "not kept" in eng.calibration_note
    assert not (tmp_path / "calibration.json").exists()
    import specquant.engine

    monkeypatch.setattr(specquant.engine, "busy_meter", lambda: lambda: 0.02)  # a quiet machine, whatever this one is doing
    quiet = Engine(tiny_paths["F16"], n_ctx=512)  # the next load measures again: kept
    quiet.costs("none")
    data = json.loads((tmp_path / "calibration.json").read_text())
    (entry,) = data.values()
    assert entry["conditions"]["others_cpu_share"] == 0.02 and not quiet.calibration_note


def test_runs_that_keep_beating_the_calibration_have_it_measured_again(tiny_paths, tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import specquant.engine
    from specquant.engine import FASTER_RUNS, Engine

    monkeypatch.setenv("SPECQUANT_HOME", str(tmp_path))
    monkeypatch.setattr(specquant.engine, "busy_meter", lambda: lambda: 0.02)  # kept on disk, however busy this is
    measured = []

    def spy(*a, **kw):
        measured.append(measure_costs(*a, **kw))
        return measured[-1]

    monkeypatch.setattr(specquant.engine, "measure_costs", spy)
    eng = Engine(tiny_paths["F16"], n_ctx=512)
    real = eng.costs("none")
    assert measured == [real] and (tmp_path / "calibration.json").exists()
    busy = Costs({n: 2.0 * t for n, t in real.verify.items()})  # as if taken while the machine was busy
    eng._costs["_target"] = eng._costs["none"] = busy
    fast = SimpleNamespace(stats=SimpleNamespace(plain_step_s=real.T(1), finish_reason="stop", tokens=9))
    slow = SimpleNamespace(stats=SimpleNamespace(plain_step_s=3.0 * real.T(1), finish_reason="stop", tokens=9))
    eng._check_calibration(fast)
    eng._check_calibration(slow)  # a slower run (a long context, a busy spell) is the level's business
    assert "_target" in eng._costs and not eng.stale
    for _ in range(FASTER_RUNS):
        eng._check_calibration(fast)
    assert "_target" not in eng._costs and "measured again" in eng.stale
    assert json.loads((tmp_path / "calibration.json").read_text()) == {}  # dropped from disk too: not read back
    again = eng.costs("none")  # before the next run starts: measured again, not the busy one kept
    # (No timing is compared: on a shared machine the second measurement may be slower or faster.)
    assert len(measured) == 2 and again is measured[-1] and again.verify != busy.verify
