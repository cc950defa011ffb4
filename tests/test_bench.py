"""The benchmark's like-for-like table (quantized models alone: agreement and accuracy beside
speed) and Spec-Bench's question format, multi-turn included; in-process on the tiny models."""
import json

import pytest

from specquant.bench import agreement, category_table, run_bench, seed_table, to_markdown
from specquant.engine import Engine
from specquant.prompts import load_prompts

QUESTIONS = [
    {"question_id": 81, "category": "mt_bench", "turns": ["Write a short poem about the sea.", "Now make it rhyme."]},
    {"question_id": "t1", "category": "translation", "turns": ["Translate to French: I like green apples."]},
    {"question_id": 7, "category": "qa", "turns": ["Who wrote the play Hamlet?"]},
]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_agreement_counts_the_first_difference_and_equal_tokens():
    assert agreement([1, 2, 3, 4], [1, 2, 3, 4]) == {"identical": True, "first_diff": None, "equal_share": 1.0}
    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == {"identical": False, "first_diff": 2, "equal_share": 0.75}
    assert agreement([1, 2, 3, 4], [1, 2]) == {"identical": False, "first_diff": 2, "equal_share": 0.5}


def test_a_model_alone_that_is_the_target_agrees_fully_and_a_quantized_one_less(tiny_paths):
    # "q8" is the F16 file itself here: running it alone must agree on every token. The real
    # Q4_0 of a random tiny model departs from the F16 answers.
    eng = Engine(tiny_paths["F16"], n_ctx=512, draft_files={"q8": tiny_paths["F16"], "q4_0": tiny_paths["Q4_0"]})
    prompts = [p for p in load_prompts() if p.get("reference")][:6]
    res = run_bench(eng, prompts, [("lookup", 2)], policies=["auto"], max_tokens=24, alone=["q8", "q4_0"],
                    max_repeats=1)
    same, q4 = res["summary"]["Q8_0 alone"], res["summary"]["Q4_0 alone"]
    assert same["identical"] == 6 and same["equal_share"] == 1.0 and same["first_diff_mean"] is None
    assert same["accuracy_spec"] == same["accuracy_plain"]
    assert q4["identical"] < 6 and q4["equal_share"] < 1.0 and q4["differing"] == 6 - q4["identical"]
    for e in res["prompts"]:  # computed from the runs themselves
        r = e["runs"]["Q4_0 alone"]
        assert r["identical"] == (r["first_diff"] is None)
    for name in ("lookup k=2", "policy auto"):  # SpecQuant: identical, FP16's accuracy
        assert res["summary"][name]["identical"] == 6
        assert res["summary"][name]["accuracy_spec"] == res["summary"][name]["accuracy_plain"]
    assert res["summary"]["oracle (best fixed per prompt)"]  # the oracle chooses among exact runs only
    assert all(not e["oracle"]["choice"].endswith("alone") for e in res["prompts"])
    table = "\n".join(seed_table(res))
    assert "| FP16 alone (plain) |" in table and "| Q8_0 alone |" in table and "identical on 6/6" in table
    assert "| SpecQuant lookup k=2 |" in table and "of tokens equal" in table


def test_spec_bench_file_runs_each_turn_with_its_own_history(tiny_paths, tmp_path):
    eng = Engine(tiny_paths["F16"], n_ctx=1024, draft_files={"q4_0": tiny_paths["Q4_0"]})
    prompts = load_prompts(_write(tmp_path / "question.jsonl", QUESTIONS))
    assert [p["id"] for p in prompts] == ["81", "t1", "7"] and prompts[0]["turns"][1] == "Now make it rhyme."
    seen = []  # what each second turn was given as its history
    real = eng.prompt_tokens

    def spy(prompt, **kw):
        if kw.get("history"):
            seen.append((prompt, [dict(m) for m in kw["history"]]))
        return real(prompt, **kw)

    eng.prompt_tokens = spy
    res = run_bench(eng, prompts, [("lookup", 2)], policies=["auto"], max_tokens=16, alone=["q4_0"], max_repeats=1)
    first = eng.run("Write a short poem about the sea.", max_tokens=16).text
    first_q4 = eng.run("Write a short poem about the sea.", alone="q4_0", max_tokens=16).text
    assert seen and all(p == "Now make it rhyme." for p, _ in seen)
    for _, history in seen:
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[0]["content"] == "Write a short poem about the sea."
    answers = {h[1]["content"] for _, h in seen}
    assert first in answers  # plain, lookup and policy auto: the FP16 answer
    assert first_q4 in answers  # Q4_0 alone: its own first answer
    mt = res["prompts"][0]
    assert mt["plain"]["text"].startswith(first) and mt["plain"]["tokens"] > 16  # both turns, one run
    assert mt["runs"]["lookup k=2"]["identical"] and mt["runs"]["policy auto"]["identical"]
    table = "\n".join(category_table(res))
    assert "| configuration | Multi-turn | Translation | QA | tokens per target pass | overall |" in table
    assert "Multi-turn" in to_markdown(res)
    # the second turn measured apart, against the plain runs' second turns
    assert mt["runs"]["lookup k=2"]["later_turns_speedup"] > 0
    assert "later_turns_speedup" not in res["prompts"][1]["runs"]["lookup k=2"]  # one turn: nothing apart
    assert "the later turns alone" in table and "lookup k=2" in table.split("the later turns alone")[1]


@pytest.mark.parametrize("line, says", [
    ("{not json", "line 2: not a JSON object"),
    (json.dumps({"question_id": 5, "category": "qa"}), "line 2: a Spec-Bench question needs"),
    (json.dumps({"question_id": 5, "category": "qa", "turns": ["ok", ""]}), "line 2: a Spec-Bench question needs"),
    (json.dumps({"question_id": 81, "category": "qa", "turns": ["again"]}), "line 2: question_id 81 appears twice"),
])
def test_spec_bench_bad_lines_name_the_line(tmp_path, line, says):
    f = _write(tmp_path / "question.jsonl", [QUESTIONS[0], line])
    with pytest.raises(ValueError, match=says):
        load_prompts(f)


@pytest.mark.parametrize("text, says", [
    ("not json", "not JSON .*a prompt set is"),
    ('{"questions": []}', "no prompts"),
    ("[]", "no prompts"),
    ('[{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]', "prompt id 'a' appears twice"),
    ('{"prompts": [{"id": ["a"], "prompt": "x"}]}', "each prompt needs an 'id' and a 'prompt' text"),
    ('{"prompts": [{"id": "a"}]}', "each prompt needs an 'id' and a 'prompt' text"),
])
def test_a_bad_prompt_set_says_what_is_wrong_and_where(tmp_path, text, says):
    f = tmp_path / "mine.json"
    f.write_text(text)
    with pytest.raises(ValueError, match=f"{f}: {says}"):
        load_prompts(f)


def test_plain_vs_stock_splits_into_the_build_and_the_loop_with_an_interval(monkeypatch):
    # native_compare times stock llama-bench, llama-bench relinked against our build, and our loop; the
    # verdicts judge the kernels (build vs stock) apart, and say how far the rounds' median can be trusted.
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from native_compare import _ratios, interval
    from never_slower import verdicts

    assert interval([0.97] * 9) == [0.97, 0.97]
    rounds = [0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 1.02, 1.06]
    lo, hi = interval(rounds)
    assert 0.90 <= lo < 0.97 < hi <= 1.06 and interval(rounds) == [lo, hi]  # seeded: the same rounds, the same
    tg = {**_ratios([96.0, 97.0, 95.0], [100.0] * 3), **_ratios([99.0, 101.0, 100.0], [100.0] * 3, "build_"),
          **_ratios([96.0, 97.0, 95.0], [99.0, 101.0, 100.0], "python_"), "loop_outside_share": 0.021}
    assert tg["ratio_of_pairs"] == 0.96 and tg["build_ratio_of_pairs"] == 1.0
    rows = {r["check"]: r for r in verdicts({"tg": tg}, {})}
    plain = rows["plain vs stock llama-bench tg (median of the rounds' ratios)"]
    assert plain["ok"] is False and "90% interval 0.950-0.970x" in plain["note"]
    assert rows["llama-bench on SpecQuant's build vs stock (its kernels, no Python)"]["ok"] is True
    loop = rows["SpecQuant's loop vs llama-bench, both on SpecQuant's build"]
    assert loop["ok"] is None and loop["value"] == 97 / 101  # the middle of 96/99, 97/101, 95/100
    assert rows["SpecQuant's plain loop: share of decoding outside llama_decode"]["value"] == "2.1%"


def test_the_never_slower_verdicts_read_a_real_bench_and_catch_each_miss(tiny_paths, monkeypatch):
    # benchmarks/never_slower.py judges `specquant bench` results against the promises' targets.
    import copy
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from never_slower import noise_floor, verdicts

    eng = Engine(tiny_paths["F16"], n_ctx=512, draft_files={"q4_0": tiny_paths["Q4_0"]})
    res = run_bench(eng, load_prompts()[:3], [("lookup", "auto"), ("q4_0", "auto")], policies=["auto"],
                    max_tokens=16, alone=[], max_repeats=1)
    rows = {r["check"]: r for r in verdicts({"tg": {"ratio": 0.99, "ratio_of_pairs": 0.98}}, {"set": res})}
    tg = "plain vs stock llama-bench tg (median of the rounds' ratios)"
    floor = "set: noise floor (plain decoding judged as a configuration), worst prompt"
    assert set(rows) == {tg, floor, "set: every output identical to plain",
                         "set: lookup k=auto, worst prompt", "set: q4_0 k=auto, worst prompt",
                         "set: policy auto, total", "set: policy auto, vs the oracle", "set: policy auto, worst prompt"}
    assert rows["set: every output identical to plain"]["ok"]  # the speculative runs are exact
    assert rows["set: policy auto, total"]["value"] == res["summary"]["policy auto"]["speedup"]

    bad = copy.deepcopy(res)  # the tiny model's own speed-ups are noise: set the figures judged
    bad["summary"]["q4_0 k=auto"].update(identical=2, min_speedup=0.90)
    bad["summary"]["lookup k=auto"].update(min_speedup=0.89)
    bad["summary"]["policy auto"].update(speedup=1.0, vs_oracle=None, min_speedup=0.95)
    worse = {r["check"]: r for r in verdicts({"tg": {"ratio": 0.98, "ratio_of_pairs": 0.96}}, {"set": bad})}
    missed = {c for c, r in worse.items() if r["ok"] is False}
    assert missed == {tg, "set: every output identical to plain",
                      "set: lookup k=auto, worst prompt", "set: policy auto, vs the oracle"}
    assert "q4_0 k=auto" in worse["set: every output identical to plain"]["note"]

    # The noise floor judges plain runs as the bench judges a configuration: against the plain runs
    # either side. Runs that all took as long: 1.0; one prompt's middle plain runs 10% slower: below.
    even = copy.deepcopy(res)
    for e in even["prompts"]:
        e["plain_runs_s"] = [1.0] * len(e["plain_runs_s"])
    assert noise_floor(even) == 1.0
    n = len(even["summary"]) - 1  # configurations per round; each round has n + 1 plain runs
    for i in range(0, len(even["prompts"][0]["plain_runs_s"]), n + 1):
        even["prompts"][0]["plain_runs_s"][i + 1:i + n] = [1.2] * (n - 1)
    floor = noise_floor(even)
    assert 1 / 1.2 <= floor < 0.95
    bad["summary"]["policy auto"].update(min_speedup=(floor + 0.95) / 2)  # no lower than plain itself: said so
    floor_row = {r["check"]: r for r in verdicts(None, {"set": even | {"summary": bad["summary"]}})}
    assert "within the noise" in floor_row["set: policy auto, worst prompt"]["note"]
    assert floor_row["set: policy auto, worst prompt"]["ok"] is False


def test_benches_of_parts_of_a_set_merge_into_the_whole_sets_totals(tiny_paths):
    # never_slower --pin runs a prompt set in parts, each on its own cores, and merges them
    from specquant.bench import ORACLE, merge, summarise

    eng = Engine(tiny_paths["F16"], n_ctx=512, draft_files={"q4_0": tiny_paths["Q4_0"]})
    res = run_bench(eng, load_prompts()[:3], [("lookup", "auto"), ("q4_0", 2)], policies=["auto"],
                    max_tokens=8, alone=[], max_repeats=1)
    specs = [(n, {k: s[k] for k in ("draft", "k", "policy") if k in s}) for n, s in res["summary"].items()
             if n != ORACLE]

    def part(prompts):
        return res | {"prompts": prompts, "summary": summarise(prompts, specs, oracle=True),
                      "plain_seconds": 1.0}

    whole = merge([part(res["prompts"][:1]), part(res["prompts"][1:])])
    assert [e["id"] for e in whole["prompts"]] == [e["id"] for e in res["prompts"]]
    assert whole["summary"] == res["summary"] and whole["parts"] == 2 and whole["plain_seconds"] == 2.0
    assert whole["summary"]["policy auto"]["vs_oracle"] is not None
    with pytest.raises(ValueError, match="different configurations or settings"):
        merge([res, res | {"settings": {**res["settings"], "max_tokens": 9}}])
    with pytest.raises(ValueError, match="nothing to merge"):
        merge([])


def test_pinned_runs_take_pairs_of_whole_cores_of_one_socket(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from never_slower import core_pairs

    # two sockets of 4 cores, hyper-threads numbered after the cores (0-7 first threads, 8-15 twins)
    info = "".join(f"processor\t: {cpu}\nphysical id\t: {cpu // 4 % 2}\ncore id\t\t: {cpu % 4}\n\n"
                   for cpu in range(16))
    assert core_pairs(info, set(range(16))) == [[0, 1], [2, 3]]  # socket 0's cores, one thread each
    assert core_pairs(info, set(range(16)), most=1) == [[0, 1]]
    assert core_pairs(info, {1, 9, 2, 3, 4}) == [[1, 2]]  # allowed CPUs only; 3 left over, unpaired
    with pytest.raises(SystemExit, match="name the CPU sets"):
        core_pairs("", {0, 1})


def test_spec_bench_groups_mt_bench_categories_into_one_multi_turn_column(tmp_path):
    # The real question.jsonl files MT-bench's questions under its eight categories; Spec-Bench's tables show
    # them as one Multi-turn column, and MT-bench's "math" stays out of the Math column (math_reasoning).
    lines = [{"question_id": 81, "category": "writing", "turns": ["a", "b"]},
             {"question_id": 111, "category": "math", "turns": ["c", "d"]},
             {"question_id": 121, "category": "coding", "turns": ["e", "f"]},
             {"question_id": "g1", "category": "math_reasoning", "turns": ["g"]},
             {"question_id": "t1", "category": "translation", "turns": ["h"]},
             {"question_id": "s1", "category": "summarization", "turns": ["i"]},
             {"question_id": "q1", "category": "qa", "turns": ["j"]},
             {"question_id": "r1", "category": "rag", "turns": ["k"]}]
    prompts = load_prompts(_write(tmp_path / "question.jsonl", lines))
    assert [p["column"] for p in prompts[:4]] == ["mt_bench", "mt_bench", "mt_bench", "math_reasoning"]
    assert prompts[1]["category"] == "math"  # --category still selects MT-bench's own categories

    def entry(p, speedup):
        run = {"speedup": speedup, "seconds": 1.0 / speedup, "plain_seconds": 1.0, "tokens": 10, "identical": True,
               "acceptance": 0.5, "tokens_per_pass": 1.5, "drafted": 10, "accepted": 5, "target_passes": 7,
               "correct": None, "agreement": {"identical": True, "first_diff": None, "equal_share": 1.0}}
        return {"id": p["id"], "category": p["category"], "column": p["column"], "grounded": False,
                "plain": {"tokens": 10, "correct": None}, "runs": {"lookup k=2": run}}

    per_prompt = [entry(p, 2.0 if p["column"] == "mt_bench" else 1.0) for p in prompts]
    res = {"prompts": per_prompt, "summary": {"lookup k=2": {"tokens_per_pass": 1.5, "speedup": 1.3}}}
    table = category_table(res)
    assert table[2] == "| configuration | Multi-turn | Translation | Summarization | QA | Math | RAG | tokens per target pass | overall |"
    cells = table[4].split(" | ")
    assert cells[1] == "2.00x" and cells[5] == "1.00x"  # the three MT-bench questions, and Math = math_reasoning alone
