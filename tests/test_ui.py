"""The Gradio page: rendering, the API through gradio_client, and a real Chromium via Playwright."""
from __future__ import annotations

import os
import threading
import time

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from ui import render  # noqa: E402

from .browser import CHROMIUM, launch  # noqa: E402
from .conftest import ARTIFACTS  # noqa: E402

GROUNDED = ("Rewrite the following text in simpler words, keeping every fact.\n\nThe city council met on Tuesday to "
            "discuss the new bicycle lanes on Main Street. Supporters said the lanes would make cycling safer and "
            "reduce traffic. Opponents worried about the loss of parking spaces for local shops.")


def test_pane_marks_draft_tokens_and_escapes():
    out = render.pane_html(["<b>", "Hi", " there", "!"], [False, True, True, False])
    assert '<span class="sq-tok sq-target">&lt;b&gt;</span>' in out
    assert '<span class="sq-tok sq-draft">Hi there</span>' in out
    assert render.pane_html(["a", "b"]) == '<div class="sq-pane">ab</div>'


def test_loading_line_says_how_far_and_how_long():
    from specquant.service import Loading

    st = Loading(status="loading", message="downloading m-f16.gguf", done=10**9, total=4 * 10**9,
                 since=time.perf_counter() - 10)
    assert st.line == "downloading m-f16.gguf (25%: 1.0 of 4.0 GB, about 30 s left)"
    st.since = time.perf_counter() - 100
    assert st.line.endswith("about 5 min left)")
    assert render.model_status_md({"status": "loading", "message": st.line}).startswith("**Model:** loading — down")
    ready = {"status": "ready", "label": "SmolLM2", "phases": {"files": 60.2, "load": 4, "calibration": 30}}
    assert render.model_status_md(ready) == "**Model:** SmolLM2 — ready 94 s after start"


def test_quantized_alone_pane_marks_where_it_departs_and_the_summary_states_the_trade():
    out = render.diff_pane_html(["The", " cat", " sat", "."], [1, 2, 3, 4], [1, 2, 9, 4])
    assert '<span class="sq-tok sq-target">The cat</span>' in out
    assert '<span class="sq-tok sq-diff" id="first-diff"> sat.</span>' in out
    assert "sq-diff" not in render.diff_pane_html(["a", "b"], [1, 2], [1, 2, 3])  # a prefix: no departure yet
    stats = {"wall_s": 1.0, "tokens_per_s": 50.0, "ttft_s": 0.01, "target_passes": 50, "tokens_per_pass": 1.0,
             "drafted": 0, "accepted": 0, "draft_s": 0.0, "verify_s": 1.0, "acceptance_by_pos": []}
    ev = {"plain": stats, "spec": {**stats, "tokens_per_s": 65.0}, "speedup": 1.3, "identical": True, "greedy": True,
          "decision": {"draft": "lookup"}, "alone": {"label": "Q4_0", "speedup": 2.1, "identical": False,
                                                    "first_diff": 13, "equal_share": 0.4,
                                                    "stats": {**stats, "tokens_per_s": 105.0}}}
    md = render.summary_md(ev)
    assert ("**Q4_0 alone: 2.10× faster, differs from FP16 from token 14 on (40% of tokens equal); "
            "SpecQuant: 1.30× faster, identical.**") in md
    assert "| | Plain FP16 | SpecQuant | Q4_0 alone |" in md and "| tokens/s | 50.0 | 65.0 | 105.0 |" in md
    assert "Q4_0 alone" not in render.summary_md({**ev, "alone": None})


def test_summary_and_charts():
    stats = {"wall_s": 1.0, "tokens_per_s": 50.0, "ttft_s": 0.1, "target_passes": 50, "tokens_per_pass": 1.0,
             "drafted": 0, "accepted": 0, "acceptance_rate": 0.0, "draft_s": 0.0, "verify_s": 0.9,
             "acceptance_by_pos": [0.9, 0.5]}
    ev = {"plain": stats, "spec": dict(stats, tokens_per_s=75.0, drafted=10, accepted=8, acceptance_rate=0.8),
          "speedup": 1.5, "identical": True, "greedy": True, "decision": {"draft": "lookup"}}
    md = render.summary_md(ev)
    assert "Speed-up: **1.50×**" in md and "identical-mark" in md and "8 (80%)" in md
    none = render.summary_md(dict(ev, decision={"draft": "none"}))
    assert "chose **not to draft**" in none
    idle = render.summary_md(dict(ev, spec=stats))  # prompt lookup chosen, nothing copied: plain's work too
    assert "Prompt lookup found nothing to copy in this answer, so both runs did the same work" in idle
    assert "same work" not in render.summary_md(dict(ev, spec=stats, decision={"draft": "q8"}))  # it prefilled
    race = render.race_rows([(0.1, 1), (0.2, 2)], [(0.05, 2)])
    assert race["run"].count("Plain FP16") == 3 and race["tokens"][-1] == 2
    assert render.acceptance_rows(stats) == {"position": ["1", "2"], "acceptance": [0.9, 0.5]}


@pytest.fixture(scope="module")
def app(smol_paths):
    from specquant.service import Service
    from ui import build_demo, launch_kwargs

    service = Service("demo")
    demo = build_demo(service)
    demo.queue(default_concurrency_limit=1).launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    service.engine(timeout=300)  # loaded and calibrated before the tests time anything
    yield demo
    demo.close()


def _compare(client, prompt, draft="auto", k="auto", max_tokens=48, alone="off"):
    # by name, as an API user would: the endpoints' parameters say what they are
    return client.submit(prompt=prompt, draft=draft, k=k, tier="from analysis", temperature=0, seed=0,
                         max_tokens=max_tokens, family="default", alone=alone, api_name="/compare_page")


def test_compare_endpoint_streams_and_ends_with_statistics(app):
    from gradio_client import Client

    c = Client(app.local_url, verbose=False)
    job = _compare(c, GROUNDED, draft="lookup", k="4")
    updates = list(job)
    assert len(updates) >= 4  # analysis, streaming panes, done, summary
    final = job.result()
    summary = final[4]
    assert "Speed-up" in summary and "identical output" in summary and "tokens/s" in summary
    assert "Tier:" in final[6] and "Decision" in final[6]
    assert "sq-draft" in final[1]  # the SpecQuant pane marks drafted tokens


def test_compare_with_the_quantized_model_alone_through_the_api(app):
    from gradio_client import Client

    final = _compare(Client(app.local_url, verbose=False), "Name three colours of the rainbow.", alone="Q4_0").result()
    summary, alone_pane = final[4], final[10]
    assert "Q4_0 alone:" in summary and "SpecQuant:" in summary and "| Q4_0 alone |" in summary
    assert "sq-pane" in alone_pane and len(alone_pane) > 60
    assert ("sq-diff" in alone_pane) == ("differs from FP16" in summary)


def test_benchmark_tab_runs_quantized_alone_beside_the_exact_runs(app):
    from gradio_client import Client

    status, table, _, path = Client(app.local_url, verbose=False).predict(
        categories=["facts"], max_prompts=2, drafts=["lookup"], draft_lengths=["4"], max_tokens=16, family="default",
        alone=["q4_0"], api_name="/bench")
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert "Done: 2 prompts." in status and set(rows) >= {"lookup k=4", "policy auto", "Q4_0 alone"}
    assert rows["lookup k=4"]["identical"] == "2/2" and rows["lookup k=4"]["first difference (mean token)"] is None
    assert rows["Q4_0 alone"]["draft"] == "alone"


def test_bad_input_comes_back_as_a_clean_error(app):
    from gradio_client import Client

    c = Client(app.local_url, verbose=False)
    final = _compare(c, "   ").result()
    assert "sq-error" in final[5] and "the prompt is empty" in final[5]
    final = _compare(c, "Hi", draft="Q8", k="3").result()  # and the app keeps serving
    assert "Speed-up" in final[4]


def test_two_clients_at_once_both_complete(app):
    from gradio_client import Client

    results = {}

    def go(name, prompt):
        c = Client(app.local_url, verbose=False)
        results[name] = _compare(c, prompt, max_tokens=24).result()

    threads = [threading.Thread(target=go, args=(n, p)) for n, p in
               (("a", "What is the capital of France?"), ("b", "List three colours."))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert set(results) == {"a", "b"}
    assert all("Speed-up" in r[4] for r in results.values())


def _browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return launch()


def _pick(page, label, option):
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_browser_runs_an_example_and_shows_results(app):
    pw, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(app.local_url)
        page.get_by_text("Rewrite the following text in simpler words").first.click()  # an example
        page.locator("#settings").get_by_text("Settings").first.click()
        _pick(page, "Policy / draft", "Q8")
        _pick(page, "Draft length", "4")
        page.locator("#compare-btn").click()
        page.wait_for_selector("#identical-mark", timeout=180_000)
        assert page.locator("#plain-pane").inner_text().strip()
        assert page.locator("#spec-pane").inner_text().strip()
        summary = page.locator("#summary").inner_text()
        assert "Speed-up:" in summary and "×" in summary
        assert page.locator("#spec-pane .sq-draft").count() > 0  # draft-marked tokens
        assert "accepted from the draft" in page.content()  # the legend
        ARTIFACTS.mkdir(exist_ok=True)
        time.sleep(1.0)  # let the charts draw
        page.screenshot(path=str(ARTIFACTS / "ui-compare.png"), full_page=True)
    finally:
        browser.close()
        pw.stop()


def test_browser_third_pane_runs_the_quantized_model_alone(app):
    pw, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1800})
        page.goto(app.local_url)
        assert not page.locator("#alone-pane").is_visible()  # off by default
        page.get_by_label("Prompt", exact=True).fill("Write a short story about a robot who learns to paint.")
        page.locator("#settings").get_by_text("Settings").first.click()
        _pick(page, "Also run a quantized model alone", "Q4_0")
        page.get_by_label("Max new tokens").last.fill("40")
        page.get_by_label("Max new tokens").last.press("Enter")
        page.locator("#compare-btn").click()
        page.wait_for_selector("#summary :text('Q4_0 alone:')", timeout=180_000)
        assert page.locator("#alone-pane").is_visible() and page.locator("#alone-pane").inner_text().strip()
        summary = page.locator("#summary").inner_text()
        assert "SpecQuant:" in summary and "identical" in summary
        assert (page.locator("#alone-pane .sq-diff").count() > 0) == ("differs from FP16" in summary)
        assert "departs from the FP16 answer" in page.content()  # the pane's legend
        ARTIFACTS.mkdir(exist_ok=True)
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "ui-alone.png"), full_page=True)
    finally:
        browser.close()
        pw.stop()


def test_browser_stop_ends_a_run(app):
    pw, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(app.local_url)
        page.get_by_label("Prompt").fill("Write a very long story about a dragon who learns to cook.")
        page.locator("#settings").get_by_text("Settings").first.click()
        page.get_by_label("Max new tokens").last.fill("512")
        page.get_by_label("Max new tokens").last.press("Enter")
        page.locator("#compare-btn").click()
        page.wait_for_function("document.querySelector('#plain-pane').innerText.length > 40", timeout=120_000)
        page.locator("#stop-btn").click()
        page.wait_for_selector("#status :text('Stopped')", timeout=30_000)
        time.sleep(1.0)
        n = len(page.locator("#plain-pane").inner_text())
        time.sleep(1.5)
        assert len(page.locator("#plain-pane").inner_text()) == n  # nothing more arrives
        assert "Speed-up" not in page.locator("#summary").inner_text()
    finally:
        browser.close()
        pw.stop()


def test_exactness_line_says_what_holds_on_cpu_and_gpu():
    """The page tells a GPU user what was measured there, and a CPU user how to get the exact build: the
    engine's words (one place), shown as they are."""
    from types import SimpleNamespace

    from specquant.engine import Engine

    def said(exact, on_gpu):
        eng = SimpleNamespace(exact=exact, target=SimpleNamespace(on_gpu=on_gpu, describe=lambda: {}),
                              _drafts={}, load_s={}, _meta=__import__("threading").Lock(), backend="llama.cpp",
                              label="m", model_set=None, _floor=None, calibration_note="", stale="")
        eng.pass_costs = lambda: None
        return render._exactness(Engine.describe(eng))

    assert said(True, False) == "yes (exact)"
    gpu = said(False, True)
    assert "NO on the GPU" in gpu and "1 of 182" in gpu and "SPECQUANT_GPU_LAYERS=0" in gpu
    assert "scripts/build_llama_cpp.py" in said(False, False)
