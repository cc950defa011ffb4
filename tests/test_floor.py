"""The machine's floor: the arithmetic of a pass's least cost, and a real measurement of both rates."""
import json
import os

import pytest

from specquant.floor import Floor, curve_lines, measure


def test_a_pass_is_bound_by_memory_then_by_arithmetic():
    # 3.4 GB of weights at 50 GB/s: 68 ms; 1.7e9 params x 2 FLOPs at 200 GFLOP/s: 17 ms a token
    f = Floor(bandwidth=50e9, flops=200e9, threads=2)
    size, params = 3.4e9, 1.7e9
    assert f.step_s(size, params) == pytest.approx(0.068)
    assert f.memory_bound_upto(size, params) == 4
    assert [f.pass_steps(n, size, params) for n in (1, 2, 4)] == [1.0, 1.0, 1.0]
    assert f.pass_steps(8, size, params) == pytest.approx(8 * 0.017 / 0.068)
    assert f.pass_steps(17, size, params) > f.pass_steps(9, size, params) > 1.0
    # arithmetic-bound already at one token (a slow core beside fast memory): every extra token costs a step
    slow = Floor(bandwidth=500e9, flops=20e9, threads=1)
    assert slow.memory_bound_upto(size, params) == 1 and slow.pass_steps(3, size, params) == pytest.approx(3.0)


def test_curve_lines_show_the_floor_beside_what_was_measured():
    lines = curve_lines(Floor(50e9, 200e9, 2), 3.4e9, 1.7e9, measured={2: 1.06, 9: 2.1}, ns=(2, 9))
    assert "memory 50 GB/s" in lines[0] and "200 GFLOP/s" in lines[0] and "up to 4 tokens" in lines[0]
    assert lines[1].split() == ["n=2", "floor", "1.00", "measured", "1.06"]
    assert lines[2].split()[:3] == ["n=9", "floor", "2.25"] and lines[2].endswith("2.10")


def test_measured_rates_are_real_and_quick():
    import time

    measure.cache_clear()
    t0 = time.perf_counter()
    f = measure(2)
    assert time.perf_counter() - t0 < 5.0  # about a second on 2 cores
    # any machine this runs on reads faster than 1 GB/s and multiplies faster than 1 GFLOP/s, and no
    # 2-thread job reads 2 TB/s or computes 20 TFLOP/s on a CPU
    assert 1e9 < f.bandwidth < 2e12 and 1e9 < f.flops < 2e13 and f.threads == 2
    assert measure(2) is f  # once per process


def test_hardware_command_reports_the_floor(tiny_paths):
    from tests.test_cli import cli

    out = json.loads(cli("hardware", "--json").stdout)
    assert out["floor"]["bandwidth"] > 1e9 and out["floor"]["flops"] > 1e9 and out["family"]
    r = cli("hardware", "--target", str(tiny_paths["F16"]))
    assert "floor here: memory" in r.stdout and "measured" in r.stdout and "one-token step measured" in r.stdout
    out = json.loads(cli("hardware", "--target", str(tiny_paths["F16"]), "--json").stdout)
    steps, fl = out["pass_costs"]["steps"], out["pass_costs"]["floor"]
    assert set(steps) == {"2", "3", "5", "9", "17"} and all(v > 0 for v in steps.values())
    assert fl["steps"]["2"] >= 1.0 and fl["step_ms"] > 0


def test_the_suite_keeps_its_own_home(user_calibration_untouched):
    from specquant.paths import cache_dir, models_dir

    assert cache_dir() / "calibration.json" != user_calibration_untouched  # calibrations: the suite's own
    assert os.environ["SPECQUANT_MODELS"] == str(models_dir())  # prepared models: shared with the user's
