"""benchmarks/gpu_check.py's report: the costs measured on an H100 through the real router."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "h100-2026-11-28"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_of_the_h100_costs_routes_to_prompt_lookup():
    text = _gpu_check().report([RESULTS / "synthetic.json", RESULTS / "synthetic-7b-rerun.json"])
    assert "NVIDIA H100" in text and "batch-invariant: False" in text
    decisions = [line for line in text.splitlines() if "acceptance 0." in line]
    assert len(decisions) == 6  # 1.7B, 7B, 7B again; at 0.6 and 0.8
    for line in decisions:  # quantized copies and the sibling are expected to lose there; lookup pays
        assert "-> prompt lookup draft" in line
        for src in ("q8", "q4_0", "sibling"):
            speedup = float(line.split(f" {src} ")[1].split("x")[0])
            assert speedup < 1.0, line
