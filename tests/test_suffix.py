"""Suffix drafting: the walk over occurrences, the answer cache's bound, and a repeated question answered
from the last answer, exactly."""
import pytest

from specquant.drafts import MATCH_PRIOR
from specquant.sampling import Sampler
from specquant.suffix import MIN_PROB, AnswerCache, SuffixDraft, walk


def test_walk_follows_what_the_occurrences_agree_on_and_stops_where_they_split():
    a = [1, 2, 3, 4, 5, 6]
    b = [1, 2, 3, 4, 9, 9]
    c = [1, 2, 3, 7, 7, 7]
    tokens, shares = walk([(a, 2), (b, 2), (c, 2)], 4)  # after [1, 2]: 3 three times, then 4 twice of three
    assert tokens[:2] == [3, 4] and shares[:2] == [1.0, pytest.approx(2 / 3)]
    # at the third position the two left split 5 / 9: one half; 2/3 * 1/2 = 1/3 >= MIN_PROB goes on
    assert tokens[2] in (5, 9) and shares[2] == 0.5 and len(tokens) == 4
    lone = [[1, 2, t, 0] for t in range(20)]  # twenty occurrences that all went on differently
    assert walk([(s, 2) for s in lone], 4) == ([], [])  # a share of 1/20 < MIN_PROB: nothing worth proposing
    assert MIN_PROB == 0.1


def test_suffix_copies_a_passage_of_the_prompt_like_prompt_lookup():
    src = SuffixDraft()
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13]
    src.begin(prompt, Sampler())
    d = src.propose(prompt + [6, 7], 4)
    assert d.tokens == [8, 9, 10, 11]
    first, later, seen = src.estimate(d)
    assert 0 < first <= 1 and seen == 0


def test_in_the_context_suffix_copies_the_latest_occurrence_and_from_earlier_answers_the_most_frequent():
    prompt = [9, 1, 2, 3, 5, 9, 1, 2, 3, 5, 9, 1, 2, 3, 4, 9]
    src = SuffixDraft()
    src.begin(prompt, Sampler())
    assert src.propose(prompt + [1, 2, 3], 1).tokens == [4]  # as prompt lookup: the latest (replay: recency wins)
    cache = AnswerCache()
    question = [50, 51, 52, 53, 54, 55]
    for answer in ([7, 8, 9], [7, 8, 9], [7, 6, 6]):
        cache.add(question, answer)
    src = SuffixDraft(cache)
    src.begin(question, Sampler())
    d = src.propose(question, 3)
    assert d.tokens == [7, 8, 9]  # 7 three times of three, then 8 twice of three
    first, later, seen = src.estimate(d)
    assert first <= 1.0 and src._shares == [1.0, pytest.approx(2 / 3), 1.0]


def test_one_token_matches_are_proposed_only_where_each_copy_is_judged(monkeypatch):
    # A one-token match's copy is the weakest kind: under k = auto the controller would judge it by its
    # kind's record; a fixed k would verify it whatever it is worth, so it is never proposed there. (Left
    # out by default: measured not to pay on the CPUs measured; benchmarks/one_token_matches.py.)
    from specquant import suffix

    assert suffix.JUDGED_MIN_MATCH == suffix.MIN_MATCH == 2
    monkeypatch.setattr(suffix, "JUDGED_MIN_MATCH", 1)
    shared = SuffixDraft(AnswerCache())
    prompt = [5, 6, 7, 8]
    judged, fixed = shared.for_run(private=False, judged=True), shared.for_run(private=False, judged=False)
    assert fixed is shared and judged is not shared and judged.cache is shared.cache
    for src in (judged, fixed):
        src.begin(prompt, Sampler())
    d = judged.propose(prompt + [9, 6], 3)
    assert d.tokens == [7, 8, 9] and judged._last == (1, True)
    assert judged.estimate(d)[0] == pytest.approx(MATCH_PRIOR[(1, True)][0])
    assert fixed.propose(prompt + [9, 6], 3).tokens == []
    private = shared.for_run(private=True, judged=False)
    assert private is not shared and private.cache is None and shared.cache is not None


def test_answer_cache_keeps_its_bound_oldest_first_and_forgets_dropped_answers():
    cache = AnswerCache(max_tokens=100)
    prompts = [[1000 + 10 * i + j for j in range(4)] for i in range(10)]
    for i, p in enumerate(prompts):
        cache.add(p, [i] * 20)  # 4 + 20 tokens each
    assert cache.tokens <= 100 and len(cache) == 4  # the last four
    n, occ = cache.find(prompts[-1])
    assert n == 4 and occ and all(doc[e] == 9 for doc, e in occ)
    assert cache.find(prompts[0]) == (0, [])  # dropped: never proposed again
    cache.clear()
    assert len(cache) == 0 and cache.find(prompts[-1]) == (0, [])


def test_a_repeated_question_is_answered_from_the_last_answer_exactly_and_faster(smol_paths, tiny_paths):
    from specquant.engine import Engine

    eng = Engine(smol_paths["F16"], n_ctx=1024)
    q = "Write a short story about a lighthouse keeper and the storm that changed her life."
    plain = eng.run(q, draft="none", max_tokens=64, stop_at_eos=False, private=True)
    first = eng.run(q, draft="suffix", k=8, max_tokens=64, stop_at_eos=False)  # leaves its answer in the cache
    again = eng.run(q, draft="suffix", k=8, max_tokens=64, stop_at_eos=False)
    assert first.tokens == plain.tokens and again.tokens == plain.tokens
    assert again.stats.accepted >= 0.8 * again.stats.tokens  # copied from the first answer
    assert again.stats.target_passes <= first.stats.target_passes / 3 and again.stats.wall_s < first.stats.wall_s
    private = eng.run(q, draft="suffix", k=8, max_tokens=64, stop_at_eos=False, private=True)
    assert private.tokens == plain.tokens and private.stats.target_passes > again.stats.target_passes
    eng.forget_answers()
    assert len(eng.answers) == 0
    off = Engine(tiny_paths["F16"], n_ctx=512, answer_cache=False)  # a served page's default
    off.run(q, draft="suffix", k=8, max_tokens=16)
    assert off.answers is None
