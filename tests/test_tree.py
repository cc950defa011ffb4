"""Trees of drafts: one exact pass over several candidates (the llama.cpp backend on our CPU build), the
walk that keeps the target's own tokens, the width the controller verifies, and token recycling's table
that proposes them."""
import numpy as np
import pytest

from backends.llama_cpp import tree_paths
from specquant.control import DraftControl
from specquant.costs import Costs, best_width
from specquant import suffix
from specquant.sampling import Sampler
from specquant.speculative import run
from specquant.suffix import RECYCLED_PRIOR, WIDTH, AnswerCache, Recycled, SuffixDraft, top_tokens
from specquant.verify import verify_tree


def _plain_rows(m, prompt, n):
    """The one-token passes of plain greedy decoding: rows[j] after the prompt and j answer tokens."""
    m.reset()
    m.prefill(prompt[:-1])
    last, answer, rows = prompt[-1], [], []
    for _ in range(n):
        row = m.eval([last])[0]
        rows.append(row)
        last = int(np.argmax(row))
        answer.append(last)
    m.reset()
    return answer, rows


def test_tree_paths_put_the_first_children_first():
    depth, paths = tree_paths([-1, 0, 0, 2, 1])
    assert depth == [0, 1, 1, 2, 2]
    assert paths == [[0, 1, 4], [0, 2, 3]]  # the path through node 1 (the first chain) is the cache's own


def test_every_row_of_a_tree_pass_equals_one_token_passes_along_its_path(smol):
    m = smol
    if not m.trees:
        pytest.skip("this build verifies chains only")
    prompt = m.tokenize("Explain how a bicycle gear works, in detail.")
    answer, rows = _plain_rows(m, prompt, 6)
    alt = int(np.argsort(-rows[0])[1])
    m.prefill(prompt[:-1])
    n0 = m.n_past
    # siblings before the answer's own chain: its cells are not in order, its logits are still exact
    tokens = [prompt[-1], alt, answer[0], 77, answer[1], answer[2]]
    parents = [-1, 0, 0, 1, 2, 4]
    out = m.eval_tree(tokens, parents)
    for i, j in [(0, 0), (2, 1), (4, 2), (5, 3)]:
        assert np.array_equal(out[i], rows[j]), f"tree row {i} differs from plain step {j}"
    # the first chain is [0, 1, 3]: of the path [0, 2, 4, 5] only the root stays cached
    assert m.keep_path(tokens, [0, 2, 4, 5]) == 1 and m.n_past == n0 + 1
    again = m.eval(answer[:3])  # the caller evaluates the rest again: exact, as if no tree had been
    assert np.array_equal(again[-1], rows[3])
    # off the answer's path: a sibling's rows equal one-token passes along its own path
    m.rollback(n0)
    ref = m.eval([prompt[-1], alt, 77])
    m.rollback(n0)
    out = m.eval_tree([prompt[-1], answer[0], alt, 77], [-1, 0, 0, 2])
    assert np.array_equal(out[2], ref[1]) and np.array_equal(out[3], ref[2])
    assert m.keep_path([prompt[-1], answer[0], alt, 77], [0, 1]) == 2  # the first chain stays in place
    assert np.array_equal(m.eval([answer[1]])[0], rows[2])
    m.reset()


def test_a_bad_tree_is_refused_and_an_unsettled_one_rolled_back(smol):
    m = smol
    if not m.trees:
        pytest.skip("this build verifies chains only")
    prompt = m.tokenize("Hello there")
    m.reset()
    m.prefill(prompt[:-1])
    with pytest.raises(ValueError, match="not a tree"):
        m.eval_tree([1, 2, 3], [-1, 2, 0])
    with pytest.raises(ValueError, match="paths"):
        m.eval_tree([1] + [2] * 9, [-1] + [0] * 9)
    n0 = m.n_past
    m.eval_tree([prompt[-1], 5, 6], [-1, 0, 0])
    m.rollback(n0)  # a run stopped between the pass and its verdict: the tree goes, the cache is usable
    answer, rows = _plain_rows(m, prompt, 2)
    m.prefill(prompt[:-1])
    assert np.array_equal(m.eval([prompt[-1]])[0], rows[0])
    m.reset()


def test_the_walk_keeps_the_targets_own_tokens():
    V = 8
    logits = np.full((5, V), -5.0, np.float32)
    logits[0, 3] = 5  # after `last`: 3
    logits[2, 6] = 5  # after candidate 1 (token 3): 6
    logits[4, 2] = 5  # after node 3 (token 6): 2
    draft, parents = [1, 3, 4, 6], [-1, -1, -1, 1]
    assert verify_tree(Sampler(), logits, draft, parents) == ([1, 3], 2)
    assert verify_tree(Sampler(), logits, [1, 4], [-1, -1]) == ([], 3)  # none of them: the target's token


def test_a_sampled_walk_is_distributed_as_the_target():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(np.tile(p, (4, 1))).astype(np.float32)
    s = Sampler(1.0, seed=1)
    firsts = []
    for _ in range(4000):  # candidates 0 and 2 side by side: the first token is still the target's sample
        path, nxt = verify_tree(s, logits, [0, 2], [-1, -1])
        firsts.append([0, 2][path[0]] if path else nxt)
    freq = np.bincount(firsts, minlength=4) / len(firsts)
    assert np.allclose(freq, p, atol=0.03)


def test_the_width_verified_follows_the_costs():
    hits = [0.25, 0.35, 0.42]
    flat = Costs({1: 1.0, 2: 1.0, 3: 1.02, 4: 1.05, 5: 1.2})  # candidates side by side cost almost nothing
    dear = Costs({1: 1.0, 2: 1.1, 3: 1.17, 4: 1.4, 5: 1.64})  # the engine's demo-size costs on a 2-core VM
    assert best_width(flat, hits, 1.2).k == 3
    assert best_width(dear, hits, 1.2).k == 0
    assert DraftControl("auto", costs=flat, free_draft=True).keep_width(hits) == 3
    assert DraftControl("auto", costs=dear, free_draft=True).keep_width(hits) == 0
    assert DraftControl(2, costs=dear, free_draft=True).keep_width(hits) == 2  # a fixed k: up to k of them
    assert DraftControl("auto", costs=flat, free_draft=True).keep_width([]) == 0
    # a judged run tries recycled candidates only where some width can pay at the hit rates measured
    assert DraftControl("auto", costs=flat, free_draft=True).width_can_pay(SuffixDraft.prior_hits(True))
    assert not DraftControl("auto", costs=dear, free_draft=True).width_can_pay(SuffixDraft.prior_hits(True))
    assert SuffixDraft.prior_hits(False) == list(RECYCLED_PRIOR[:1])  # chains alone: one candidate
    assert not DraftControl(3, costs=flat, free_draft=True).width_can_pay(list(RECYCLED_PRIOR))


def test_the_recycled_table_holds_the_targets_top_tokens_and_is_bounded_by_the_vocabulary():
    row = np.array([0.1, 3.0, -1.0, 2.0, 5.0], np.float32)
    assert top_tokens(row.copy(), 3) == (4, 1, 3)
    r = Recycled()
    rows = np.stack([row, row[::-1].copy()])
    for _ in range(3):
        r.learn([7, 8], rows)
    assert len(r) == 2 and r.get(7) == (4, 1, 3) and r.get(8) == (0, 3, 1) and r.get(9) == ()
    assert np.array_equal(rows[0], row)  # the logits are left as they were
    cache = AnswerCache()
    cache.recycled.learn([7], rows[:1])
    cache.clear()  # cleared with the answers it was learnt from
    assert len(cache.recycled) == 0


def test_recycled_candidates_are_proposed_where_nothing_matches_only_in_judged_runs():
    cache = AnswerCache()
    cache.recycled.update([(42, (5, 6, 7))])
    shared = SuffixDraft(cache)
    judged = shared.for_run(private=False, judged=True)
    judged.begin([1, 2, 3], Sampler())
    d = judged.propose([1, 2, 3, 42], 8)
    assert d.tokens == [5, 6, 7] and d.parents == [-1] * WIDTH and len(d.hits) == WIDTH
    assert d.hits == pytest.approx(list(RECYCLED_PRIOR), abs=1e-9)
    judged.accepted_tree(d, [1])  # the second candidate was kept: a proposal of one alone would have missed
    assert judged.hit_rates()[0] < RECYCLED_PRIOR[0] and judged.hit_rates()[1] > RECYCLED_PRIOR[1]
    assert not shared.for_run(private=False, judged=True, recycle=False).recycle  # where no width can pay
    try:
        suffix.RECYCLE = True  # measured anyway (benchmarks/recycled_candidates.py)
        assert shared.for_run(private=False, judged=True, recycle=False).recycle
        suffix.RECYCLE = False
        assert not shared.for_run(private=False, judged=True).recycle
    finally:
        suffix.RECYCLE = None
    fixed = shared.for_run(private=False, judged=False)
    fixed.begin([1, 2, 3], Sampler())
    assert fixed.propose([1, 2, 3, 42], 8).tokens == []  # a fixed k: copies alone
    private = shared.for_run(private=True, judged=True)
    private.begin([1, 2, 3], Sampler())
    assert private.propose([1, 2, 3, 42], 8).tokens == []  # a private run neither reads nor feeds the table
    private.verified([9], np.zeros((1, 50), np.float32))
    assert cache.recycled.get(9) == ()


def test_recycled_trees_in_a_run_are_exact_and_teach_the_shared_table(smol):
    m = smol
    cache = AnswerCache()
    src = SuffixDraft(cache)
    src.recycle = True
    prompts = [m.tokenize(t) for t in ("List the planets of the solar system.", "Why is the sky blue?",
                                       "Name three colours and say why you like them.")]
    trees = 0
    for rnd in range(2):
        for p in prompts:
            plain = run(m, p, max_tokens=40)
            spec = run(m, p, draft=src, control=DraftControl(3), max_tokens=40)
            assert spec.tokens == plain.tokens
            trees += spec.stats.drafted > sum(spec.stats.drafted_by_pos)  # candidates side by side
    assert len(cache.recycled) > 20 and trees
