"""Engine and loop behaviour found by reading the code: drafts that don't fit the target,
concurrent runs and pollers, and what a run reports."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import VERIFY_CHECKED
from specquant import routing
from specquant.control import DraftControl
from specquant.costs import Costs
from specquant.drafts import ModelDraft
from specquant.sampling import Sampler
from specquant.speculative import Done, decode, run

from .test_accounting import V, Clock, StandIn


class Padded(StandIn):
    """A draft whose vocabulary is padded past the target's and which likes a padding id best."""

    def _row(self, pos):
        row = np.zeros(self.n_vocab, dtype=np.float32)
        row[(self.tokens[pos] * 7 + 3) % V] = 5.0
        row[V + 1] = 9.0
        return row


class Bounded(StandIn):
    """A model that, like llama.cpp, refuses to hold more than its context."""

    def eval(self, tokens):
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise RuntimeError("context full")
        return super().eval(tokens)

    def prefill(self, tokens):
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise RuntimeError("context full")
        return super().prefill(tokens)


def _stand_in(cls=StandIn, **kw):
    clock = Clock()
    return cls(clock, kw.pop("name", "m.gguf"), step=0.01, extra=0.001, prefill=0.001, **kw)


def test_a_padded_draft_never_proposes_an_id_the_target_lacks():
    target = _stand_in()
    draft = _stand_in(Padded, name="padded.gguf")
    draft.n_vocab = V + 3  # within llama.cpp's padding allowance
    src = ModelDraft(draft, target)
    prompt = [1, 2, 3]
    src.begin(prompt, Sampler())
    d = src.propose(prompt, 4)
    assert d.tokens and all(t < V for t in d.tokens)
    sampled = Sampler(temperature=1.0, seed=1)
    src.begin(prompt, sampled)
    d = src.propose(prompt, 4)
    assert all(t < V for t in d.tokens) and d.probs.shape[1] == V


def test_a_draft_with_a_shorter_context_stops_drafting_instead_of_failing_the_run():
    target = _stand_in(Bounded)
    target.n_ctx = 4096
    draft = _stand_in(Bounded, name="short.gguf")
    draft.n_ctx = 50
    prompt = list(range(1, 41))
    plain = run(target, prompt, max_tokens=40, stop_at_eos=False)
    spec = run(target, prompt, draft=ModelDraft(draft, target), control=DraftControl(4), max_tokens=40,
               stop_at_eos=False)
    assert spec.tokens == plain.tokens and 0 < spec.stats.drafted


def test_a_plain_step_of_lookup_reports_no_draft_length():
    target = _stand_in()
    from specquant.drafts import PromptLookup

    events = list(decode(target, [1, 2, 3, 4], draft=PromptLookup(), control=DraftControl(
        "auto", costs=Costs({1: 1.0, 2: 1.2, 3: 1.3, 5: 1.5, 9: 2.0}), free_draft=True), max_tokens=12,
        stop_at_eos=False))
    steps = [e for e in events if not isinstance(e, Done)]
    assert all(s.k == s.drafted for s in steps) and any(s.k == 0 for s in steps)


def test_a_forced_draft_with_k_auto_states_its_expectation():
    c = Costs({1: 1.0, 2: 1.05, 3: 1.1, 5: 1.2, 9: 1.5}, draft_step=0.1)
    d = routing.decide("low", {"q8": c}, draft_override="q8", k_override="auto")
    assert d.k == "auto" and d.expected_speedup > 1.0 and "expected" in d.reason


@pytest.fixture
def engine(tiny_paths):
    from specquant.engine import Engine

    return Engine(tiny_paths["F16"], n_ctx=512, draft_files={"q8": tiny_paths["Q8_0"]})


def test_describe_while_a_run_loads_a_draft(engine, monkeypatch):
    # The page polls describe() while a run may add a draft; reading the table as it grows failed.
    src = engine.draft("q8")
    real = src.model.describe

    def grows_meanwhile():
        engine.draft("lookup")  # another thread adds a source at this moment
        return real()

    monkeypatch.setattr(src.model, "describe", grows_meanwhile)
    info = engine.describe()
    assert len(info["models"]) == 2


def test_a_second_run_does_not_change_the_first_runs_draft_settings(engine, monkeypatch):
    seen = []
    real = ModelDraft.propose

    def propose(self, context, k):
        seen.append(self.p_min)
        return real(self, context, k)

    monkeypatch.setattr(ModelDraft, "propose", propose)
    first = engine.stream("Hello there", draft="q8", k=4, p_min=0.9, max_tokens=6)
    second = engine.stream("Hello there", draft="q8", k=4, p_min=0.0, max_tokens=6)
    list(first)
    assert seen and set(seen) == {0.9}
    seen.clear()
    list(second)
    assert set(seen) == {0.0}
    assert engine.draft("q8").p_min == 0.0  # the shared source was never changed


def test_a_comparison_says_when_the_machine_changed_speed_between_its_runs():
    from specquant.compare import load_changed
    from specquant.speculative import Stats

    steady = Stats(step_times=[0.010, 0.0102, 0.0099, 0.0101] * 8)
    also_steady = Stats(step_times=[0.0101, 0.0099, 0.0100, 0.0102])
    assert load_changed(steady, also_steady) == ""
    busy_later = Stats(step_times=[0.0131, 0.0128, 0.0133, 0.0130])  # the browser drew during the second run
    assert "unreliable" in load_changed(steady, busy_later)
    drifting = Stats(step_times=[0.010] * 16 + [0.013] * 16)  # ...or during the first
    assert "unreliable" in load_changed(drifting, Stats())
    assert load_changed(Stats(), Stats()) == ""  # too short to tell: no claim


class SwitchesKernel(StandIn):
    """Computes a pass of ``at`` or more tokens slightly differently from one-token passes, as llama.cpp's
    ARM float16 path does from 8 tokens (stock x86 builds from 2)."""

    at = 8

    def eval(self, tokens):
        out = super().eval(tokens)
        return out + np.float32(1e-6) if len(tokens) >= self.at else out


def test_the_exactness_check_covers_every_verify_pass_that_policy_auto_makes():
    m = _stand_in(SwitchesKernel)
    assert not m.batch_invariant()  # lookup's drafts of 8 tokens are verified in passes of 9
    assert m.batch_invariant(upto=7)
    later = _stand_in(SwitchesKernel)
    later.at = 17
    assert later.batch_invariant() and not later.batch_invariant(upto=17)
    assert m.tokens == [] and later.tokens == []  # the cache is left empty


def test_a_longer_fixed_draft_is_checked_once_before_its_run(engine, monkeypatch, capsys):
    asked = []

    def compare(probe):
        asked.append(len(probe) - 2)
        return len(probe) - 2 <= 12

    known = {VERIFY_CHECKED: True}  # what loading found
    monkeypatch.setattr(engine.target, "exactness", lambda: known)
    monkeypatch.setattr(engine.target, "_same_logits", compare)
    monkeypatch.setattr(engine, "exact", True)
    for k in (8, 11, 11):
        engine.run("Hello there", draft="lookup", k=k, max_tokens=2)
    assert asked == [12] and engine.exact  # k = 8 was checked at loading, 11 once
    engine.run("Hello there", draft="lookup", k=16, max_tokens=2)
    assert asked == [12, 17] and not engine.exact
    assert "a verify pass of 17 tokens computes differently" in capsys.readouterr().err


def test_inexact_warning_names_the_gpu_case():
    from types import SimpleNamespace

    from specquant.engine import GPU_INEXACT_WARNING, INEXACT_WARNING, inexact_warning

    def eng(exact, on_gpu):
        return SimpleNamespace(exact=exact, target=SimpleNamespace(on_gpu=on_gpu))

    assert inexact_warning(eng(True, True)) is None
    assert inexact_warning(eng(False, True)) == GPU_INEXACT_WARNING
    assert inexact_warning(eng(False, False)) == INEXACT_WARNING
    assert "SPECQUANT_GPU_LAYERS=0" in GPU_INEXACT_WARNING and "scripts/build_llama_cpp.py" in INEXACT_WARNING


def test_a_run_is_filed_under_the_kind_of_prompt_its_source_depends_on(engine):
    # What lookup kept on a passage to rewrite informs later grounded prompts, not open questions.
    from specquant.acceptance import Tally
    from specquant.speculative import Done, Stats

    material = "Rewrite this text politely:\n\n" + "Send me the report by Friday or else. " * 8
    _, d = engine.route(material, draft="lookup")
    assert d.grounded
    stats = Stats()
    for kept in (1, 0, 2, 0, 0, 0, 0, 0, 0):  # 12 positions examined, 3 kept
        stats.record(4, kept, draft_s=0.0, verify_s=0.0)
    engine.record(d, Done(tokens=[], text="", stats=stats, sources=[]))
    assert engine.book.counts == {("lookup", "grounded"): Tally(12, 3)}
    _, open_q = engine.route("Why is the sky blue?", draft="lookup")
    _, again = engine.route(material, draft="lookup")
    assert again.acceptance < routing.GROUNDED_LOOKUP  # learnt from
    assert open_q.acceptance == pytest.approx(routing.prior_acceptance("lookup", open_q.tier, False))  # untouched
