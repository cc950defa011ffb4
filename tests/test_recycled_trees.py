"""benchmarks/recycled_trees.py: trees built from a recycling table, and what a tree keeps along an answer."""
from __future__ import annotations


def test_a_tree_branches_as_its_shape_says_from_the_table(bench_script):
    rt = bench_script("recycled_trees")
    table = {1: (2, 3, 4), 2: (5, 6), 3: (7,), 5: (9,)}
    tokens, parents = rt.tree(table, 1, (2, 2, 1))
    assert tokens == [2, 3, 5, 6, 7, 9]  # depth 1: 2, 3; depth 2: 5, 6 under 2, 7 under 3; depth 3: 9 under 5
    assert parents == [-1, -1, 0, 0, 1, 2]
    assert rt.tree(table, 8, (3,)) == ([], [])  # a token the table has not seen proposes nothing


def test_a_tree_keeps_the_longest_path_along_the_answer(bench_script):
    rt = bench_script("recycled_trees")
    tokens, parents = [2, 3, 5, 6, 7, 9], [-1, -1, 0, 0, 1, 2]
    assert rt.kept(tokens, parents, [2, 5, 9, 4], 0) == 3
    assert rt.kept(tokens, parents, [0, 3, 7, 1], 1) == 2  # from position 1 on
    assert rt.kept(tokens, parents, [3, 5], 0) == 1  # 5 hangs under 2, not 3
    assert rt.kept(tokens, parents, [4], 0) == 0


def test_copies_alone_take_one_pass_per_token_where_nothing_repeats(bench_script):
    rt = bench_script("recycled_trees")
    answer = [11, 12, 13, 14]
    tops = [(10, (11,)), (11, (12,)), (12, (13,)), (13, (14,))]
    assert rt.replay([10], answer, tops, ()) == 4
    # a one-level tree learnt in the run: the table knows nothing until a row is kept, then each pass
    # proposes the token that followed last time (here never seen before), so it still takes 4 passes
    assert rt.replay([10], answer, tops, (1,)) == 4
    # learnt along another answer first: every next token is in the table, two per pass
    assert rt.replay([10], answer, tops, (1,), table=dict(tops)) == 2
