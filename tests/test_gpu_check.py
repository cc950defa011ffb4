"""benchmarks/gpu_check.py's report: the costs measured on an H100 through the real router."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "h100-2026-11-28"


def test_report_of_the_h100_costs_routes_to_prompt_lookup(bench_script):
    text = bench_script("gpu_check").report([RESULTS / "synthetic.json", RESULTS / "synthetic-7b-rerun.json"])
    assert "NVIDIA H100" in text and "batch-invariant: False" in text
    decisions = [line for line in text.splitlines() if "acceptance 0." in line]
    assert len(decisions) == 6  # 1.7B, 7B, 7B again; at 0.6 and 0.8
    for line in decisions:  # quantized copies and the sibling are expected to lose there; lookup pays
        assert "-> prompt lookup draft" in line
        for src in ("q8", "q4_0", "sibling"):
            speedup = float(line.split(f" {src} ")[1].split("x")[0])
            assert speedup < 1.0, line


def test_the_h200_tables_say_which_route_is_exact_up_to_where(bench_script):
    import json

    h200 = ROOT / "benchmarks" / "results" / "h200-2026-12-04"
    gc = bench_script("gpu_check")
    stock = json.loads((h200 / "curve-synthetic-stock.json").read_text())
    ours = gc.ab(json.loads((h200 / "curve-synthetic-patched.json").read_text()), stock)
    mmvf = gc.ab(json.loads((h200 / "curve-synthetic-mmvf.json").read_text()), stock)
    assert "| synthetic-7b | <= 12, <= 9 / no, no |" in ours  # MMF: every size checked up to 16 tokens
    assert "| synthetic-7b | <= 17, <= 17 / no, no |" in mmvf
    assert "(0.921x speed)" in ours and "(1.070x speed)" in mmvf


def test_the_curve_times_every_length_in_both_patterns(tiny_paths, tmp_path, bench_script):
    import json

    gc = bench_script("gpu_check")
    out = tmp_path / "curve.json"
    res = gc.curve({"tiny": tiny_paths["F16"]}, lambda r: out.write_text(json.dumps(r)), n_ctx=1024)
    m = res["models"]["tiny"]
    assert res["mode"] == "patched" and json.loads(out.read_text())["models"]["tiny"]["file"] == tiny_paths["F16"].name
    for pattern in ("block", "alternating", "alternating_one"):
        assert sorted(int(n) for n in m[pattern]) == list(range(1, 18))
        assert all(t > 0 for t in m[pattern].values())
    assert all(v["identical"] for v in m["batches"].values())  # the CPU build: exact at every size
    assert all(v["identical"] for v in m["deep"].values())
    text = gc.ab(res, res)
    assert "| tiny | <= 33, <= 17 / <= 33, <= 17 | " in text and "(1.000x speed)" in text
