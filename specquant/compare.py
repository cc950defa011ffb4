"""Comparing runs: a conversation's turns as one result (``chain``), how far an answer agrees with a
reference answer (``agreement``), and whether the machine's speed changed between two runs compared
side by side (``load_changed``). The bench and the page read these; decoding does not."""
from __future__ import annotations

from .speculative import Done, Stats


def chain(dones: list["Done"]) -> "Done":
    """The turns of one conversation as one result: tokens, texts and statistics added up (the
    first token's latency is the first turn's; the finish reason the last turn's)."""
    st = Stats(ttft_s=dones[0].stats.ttft_s, finish_reason=dones[-1].stats.finish_reason)
    for d in dones:
        s = d.stats
        for f in ("tokens", "wall_s", "prefill_s", "draft_s", "verify_s", "target_passes", "drafted", "accepted",
                  "rejections", "prompt_tokens", "draft_prefill_s"):
            setattr(st, f, getattr(st, f) + getattr(s, f))
        for f in ("drafted_by_pos", "accepted_by_pos"):
            a, b = getattr(st, f), getattr(s, f)
            setattr(st, f, [x + y for x, y in zip(a + [0] * (len(b) - len(a)), b + [0] * (len(a) - len(b)))])
        st.step_times += s.step_times
        st.draft_dropped = st.draft_dropped or s.draft_dropped
    return Done([t for d in dones for t in d.tokens], "\n\n".join(d.text for d in dones), st,
                [x for d in dones for x in d.sources], turns=list(dones))


def agreement(ref: list[int], out: list[int]) -> dict:
    """How far an answer (token ids) agrees with a reference answer, e.g. FP16's: identical, the first differing token
    (None if none), and the share of positions with the same token up to the longer one's end."""
    n = max(len(ref), len(out))
    first = next((i for i, (a, b) in enumerate(zip(ref, out)) if a != b), None)
    if first is None and len(ref) != len(out):
        first = min(len(ref), len(out))
    same = sum(a == b for a, b in zip(ref, out))
    return {"identical": ref == out, "first_diff": first, "equal_share": same / n if n else 1.0}


LOAD_TOLERANCE = 0.15  # one-token passes within a run vary by a few per cent on a quiet machine


def load_changed(plain, spec) -> str:
    """Why a side-by-side figure can't be trusted, or "": the machine's speed changed while the two
    runs went one after the other (another program, or on a small machine the browser drawing
    this page, took the cores). Seen in the runs' own one-token passes: the plain run's first
    half against its second, and the speculative run's plain steps against the plain run's."""
    t = plain.step_times
    halves = [sorted(x)[len(x) // 2] for x in (t[: len(t) // 2], t[len(t) // 2 :]) if len(x) >= 3]
    pairs = [tuple(halves)] if len(halves) == 2 else []
    if plain.plain_step_s and spec.plain_step_s:
        pairs.append((plain.plain_step_s, spec.plain_step_s))
    for a, b in pairs:
        if abs(b / a - 1) > LOAD_TOLERANCE:
            return (f"the machine's speed changed during the comparison (one-token steps took {a * 1000:.1f} ms, "
                    f"then {b * 1000:.1f} ms): something else used the processor, so the speed-up is unreliable")
    return ""
