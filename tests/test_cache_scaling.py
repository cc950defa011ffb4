"""benchmarks/cache_scaling.py: what a bigger answer cache gives suffix drafting along recorded answers."""
from __future__ import annotations


def _entry(name, qid, prompt, answer):
    tops = [(t, (n,)) for t, n in zip([prompt[-1]] + answer[:-1], answer)]  # the target's top token: the next
    return (name, qid, 1, prompt, answer, tops)


def test_an_earlier_answer_to_another_question_is_copied_and_the_questions_own_never(bench_script):
    cs = bench_script("cache_scaling")
    answer = list(range(100, 140))
    mine = _entry("set", "a", [1, 2, 3], answer)
    other = _entry("set", "b", [7, 8, 9], [5, 6] + answer)  # another question whose answer held the same text
    alone = cs.tokens_per_pass([mine], [], False)
    assert alone["passes"] == len(answer)  # nothing repeats in the context: one token a pass
    # the question's own answer (an earlier round of it) is never in its cache
    assert cs.tokens_per_pass([mine], [mine], False)["tokens_per_pass"] == alone["tokens_per_pass"]
    cached = cs.tokens_per_pass([mine], [mine, other], False)
    assert cached["tokens"] == len(answer) and cached["passes"] < len(answer) / 3  # copies of up to 4 tokens
    # a same-named question in another set is another question
    assert cs.tokens_per_pass([mine], [_entry("more", "a", [7, 8, 9], [5, 6] + answer)], False)["passes"] < 14


def test_recycled_candidates_learnt_along_the_pool_fill_the_gaps_copies_leave(bench_script):
    cs = bench_script("cache_scaling")
    answer = [20, 21, 22, 23, 24, 25, 26]
    mine = _entry("set", "a", [1, 2], answer)
    # another answer with no two of these tokens in a row (nothing to copy), along which the target's top
    # candidates after each of them were the next token of `mine`
    text = [9, 20, 9, 21, 9, 22, 9, 23, 9, 24, 9, 25]
    other = ("set", "b", 1, [3, 4], text, [(t, (t + 1,)) for t in range(20, 26)])
    assert cs.tokens_per_pass([mine], [mine, other], False)["passes"] == len(answer)
    assert cs.tokens_per_pass([mine], [], True)["passes"] == len(answer)  # a table of its own run: too late
    both = cs.tokens_per_pass([mine], [mine, other], True)
    # 20 (nothing known before it), then [21 | candidate 22], [23 | 24], [25 | 26]: one candidate a pass
    assert both["tokens"] == len(answer) and both["passes"] == 4


def test_the_oracle_copies_the_best_occurrence_and_never_the_future(bench_script):
    cs = bench_script("cache_scaling")
    # "0 5" occurs twice in the context: followed by 1 2 3 4 (earlier), and by 1 2 9 9 (the latest, which
    # prompt lookup copies)
    prompt = [0, 5, 1, 2, 3, 4, 0, 5, 1, 2, 9, 9, 0]
    answer = [5, 1, 2, 3, 4, 7, 7]
    mine = ("set", "a", 1, prompt, answer, [])
    # lookup: [5], [1 2 kept of 1 2 9 9, then 3], [4 kept of 4 0, then 7], [7]
    assert cs.tokens_per_pass([mine], [], False)["passes"] == 4
    # the oracle copies the earlier occurrence: [5], [1 2 3 4 kept, then 7], [7]
    assert cs.oracle_tokens_per_pass([mine], [])["passes"] == 3
    # an answer that repeats a token copies only what is written: [4], [4], [4], [4 kept, 4], [4]; reading
    # the answer's own future would keep 4 at the fourth pass
    assert cs.oracle_tokens_per_pass([("set", "b", 1, [9], [4] * 6, [])], [])["passes"] == 5
    # an earlier answer to another question in the pool, and the question's own never
    other = ("set", "c", 1, [8], [3, 7, 7, 7, 7, 7], [])
    alone = ("set", "d", 1, [6], [2, 3, 7, 7, 7, 7], [])
    assert cs.oracle_tokens_per_pass([alone], [alone])["passes"] == 6
    assert cs.oracle_tokens_per_pass([alone], [other])["passes"] < 6
