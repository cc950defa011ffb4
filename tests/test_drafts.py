"""Draft sources on their own."""
import pytest

from specquant.drafts import MATCH_PRIOR, PromptLookup
from specquant.sampling import Sampler


def test_prompt_lookup_copies_what_followed_the_latest_match():
    pl = PromptLookup(ngram_max=3, ngram_min=1)
    pl.begin([], Sampler())
    ctx = [1, 2, 3, 4, 5, 6, 9, 9, 2, 3]
    assert pl.propose(ctx, 3).tokens == [4, 5, 6]
    assert pl.propose(ctx + [4], 2).tokens == [5, 6]  # incremental: longer n-gram, same place


def test_prompt_lookup_prefers_longer_ngrams_and_latest_occurrence():
    pl = PromptLookup(ngram_max=2, ngram_min=1)
    ctx = [7, 1, 8, 3, 1, 9, 5, 3, 1]
    # bigram (3, 1) occurred at 3..4 -> followed by 9; unigram 1 latest at 4 too
    assert pl.propose(ctx, 2).tokens == [9, 5]


def test_prompt_lookup_says_how_long_its_match_was_and_where():
    pl = PromptLookup(ngram_max=4, ngram_min=2)
    prompt = [10, 11, 12, 13, 14, 15]
    pl.begin(prompt, Sampler())
    d = pl.propose(prompt + [20, 11, 12, 13], 2)
    assert (d.tokens, pl._last) == ([14, 15], (3, True))
    assert pl.estimate(d) == pytest.approx(MATCH_PRIOR[(3, True)] + (0,))
    d = pl.propose(prompt + [20, 11, 12, 13, 30, 31, 5, 30, 31], 1)  # the latest (30, 31) is in the answer
    assert (d.tokens, pl._last) == ([5], (2, False))
    pl.accepted(1, 0)  # that copy was wrong: the record of bigrams in the answer says so
    first, later, seen = pl.estimate(d)
    assert seen == 1 and first < MATCH_PRIOR[(2, False)][0] and later == MATCH_PRIOR[(2, False)][1]


def test_prompt_lookup_without_match_proposes_nothing():
    pl = PromptLookup()
    assert pl.propose([1, 2, 3], 4).tokens == []


def test_prompt_lookup_restarts_on_shorter_context():
    pl = PromptLookup(ngram_min=1)
    pl.propose([1, 2, 3, 1], 2)
    assert pl.propose([5, 6, 5], 1).tokens == [6]


def test_prompt_lookup_ignores_matches_shorter_than_ngram_min():
    pl = PromptLookup(ngram_max=5, ngram_min=3)
    assert pl.propose([1, 2, 3, 4, 9, 2, 3], 2).tokens == []  # only a bigram repeats
    assert pl.propose([1, 2, 3, 4, 9, 1, 2, 3], 2).tokens == [4, 9]
