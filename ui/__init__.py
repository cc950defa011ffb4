"""The Gradio page: plain FP16 and SpecQuant side by side, streaming. Thin by design: it asks
``specquant.service`` for events and renders them with ``ui.render``; no model logic here."""
import json
import os
import tempfile
import threading
import time
from types import SimpleNamespace

import gradio as gr

from specquant.prompts import load_prompts
from specquant.service import DRAFT_CHOICES, InputError, Service, Settings

from . import render
from .tools import make_tools, page_only

EXAMPLES = [  # one per tier, and grounded tasks where prompt lookup shines
    "What is the capital of France?",
    "Please list five fruits that are red or yellow.",
    "Compare the economies of Germany, Japan and Brazil, and explain how their exports differ because of "
    "history and geography.",
]
ALONE = {"off": None, "Q4_0": "q4_0", "Q8_0": "q8"}  # the page's choice -> the quantized copy run alone
UPDATE_EVERY_S = 0.08  # stream at most ~12 page updates per second per pane


def _grounded_examples() -> list[str]:
    ps = [p for p in load_prompts() if p.get("grounded")]
    return [p["prompt"] for p in ps[:3]]


INTRO = (
    "# SpecQuant\nThe same prompt answered twice on this machine, **one after the other**: plain FP16 "
    "decoding, then speculative decoding where a draft (a Q8/Q4 copy of the model, or prompt lookup) "
    "proposes tokens and the FP16 target verifies them in one batched pass. With greedy decoding the "
    "answer is token for token the FP16 model's own. Whether drafting pays depends on the hardware: "
    "the router measures it here and says so."
)


def build_demo(service: Service | None = None, *, default_model: str | None = None) -> gr.Blocks:
    """The page: each tab laid out by one function and wired to the service by another."""
    default_model = default_model or os.environ.get("SPECQUANT_MODEL") or None
    if service is None and os.environ.get("SPECQUANT_SERVER"):  # compare through a SpecQuant server
        from specquant.remote import RemoteService

        service = RemoteService(os.environ["SPECQUANT_SERVER"])
    service = service or Service(default_model)
    service.start_loading()  # in the background: the page is served at once
    with gr.Blocks(title="SpecQuant — exact speculative decoding") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Compare"):
            ui = _compare_tab(default_model)
        with gr.Tab("Hardware & models"):
            ui.hw_md = gr.Markdown("loading…", elem_id="hardware")
            ui.refresh = gr.Button("Refresh")
        with gr.Tab("Benchmark"):
            ui.bench = _bench_tab()
        handlers = [*_wire_compare(service, ui), _wire_bench(service, ui)]
        _wire_hardware(demo, service, ui)
        for fn in handlers:  # the page's own endpoints: API clients may call them; no MCP tools
            page_only(fn)
        for fn in make_tools(service):  # answer, compare: typed, documented, for agents (MCP) and API clients
            gr.api(fn, api_name=fn.__name__)
    return demo


def _compare_tab(default_model) -> SimpleNamespace:
    """The prompt, the settings, the two (or three) panes, the summary and the charts."""
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=4, placeholder="Ask something, or pick an example")
            with gr.Row():
                go = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            gr.Examples(EXAMPLES + _grounded_examples(), inputs=[prompt], label="Examples (low, medium, "
                        "high tier; then grounded tasks)", examples_per_page=6)
        with gr.Column(scale=2):
            with gr.Accordion("Settings", open=False, elem_id="settings"):
                draft = gr.Dropdown(list(DRAFT_CHOICES), value="auto", label="Policy / draft",
                                    info="auto: measured router · tier rule: low→Q4, medium→Q8, high→none · "
                                         "or force a draft")
                k = gr.Dropdown(["auto", "1", "2", "3", "4", "6", "8"], value="auto", label="Draft length")
                tier = gr.Dropdown(["from analysis", "low", "medium", "high"], value="from analysis",
                                   label="Tier")
                temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                seed = gr.Number(value=0, precision=0, label="Seed")
                max_tokens = gr.Slider(8, 512, value=128, step=8, label="Max new tokens")
                family = gr.Dropdown(_families(default_model), value=default_model or "default",
                                     label="Model family")
                alone = gr.Dropdown(list(ALONE), value="off", label="Also run a quantized model alone",
                                    info="a third pane: the Q4_0 or Q8_0 copy answering by itself, "
                                         "faster where it is, but not always the FP16 answer")
            analysis = gr.Markdown("*The analysis of your prompt appears here.*", elem_id="analysis")
    model_status = gr.Markdown("**Model:** starting…", elem_id="model-status")
    status = gr.HTML("", elem_id="status")
    gr.Markdown("Both panes run **on the same hardware, one after the other** (plain first).")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Plain FP16")
            plain_pane = gr.HTML(render.pane_html([], empty="waiting"), elem_id="plain-pane")
            plain_live = gr.HTML("", elem_id="plain-live")
        with gr.Column():
            spec_title = gr.Markdown("### SpecQuant (FP16 + draft)")
            gr.HTML(render.LEGEND)
            spec_pane = gr.HTML(render.pane_html([], empty="waiting"), elem_id="spec-pane")
            spec_live = gr.HTML("", elem_id="spec-live")
        with gr.Column(visible=False) as alone_col:
            alone_title = gr.Markdown("### Quantized alone")
            gr.HTML(render.ALONE_LEGEND)
            alone_pane = gr.HTML(render.pane_html([], empty="waiting"), elem_id="alone-pane")
            alone_live = gr.HTML("", elem_id="alone-live")
    summary = gr.Markdown("", elem_id="summary")
    with gr.Row():
        race = gr.LinePlot(x="seconds", y="tokens", color="run", title="Race: tokens over time",
                           height=260)
        accept = gr.BarPlot(x="position", y="acceptance", title="Acceptance by draft position",
                            y_lim=[0, 1], height=260)
    names = dict(locals())
    del names["default_model"]
    return SimpleNamespace(**names)


def _bench_tab() -> SimpleNamespace:
    """The prompt categories, draft sources and lengths to run, and the results."""
    gr.Markdown("Runs the bundled prompt set plain and with each draft source; plain runs are interleaved "
                "so drift hits both sides. Model loading and warm-up are left out of the timings.")
    with gr.Row():
        cats = gr.CheckboxGroup(sorted({p["category"] for p in load_prompts()}), value=["grounded", "facts"],
                                label="Categories")
        limit = gr.Slider(1, len(load_prompts()), value=6, step=1, label="At most this many prompts")
        drafts = gr.CheckboxGroup(["q8", "q4", "q4_0", "lookup"], value=["q8", "lookup"], label="Draft sources")
        ks = gr.CheckboxGroup(["1", "2", "4", "8", "auto"], value=["4", "auto"], label="Draft lengths")
        alone = gr.CheckboxGroup(["q8", "q4", "q4_0"], value=[], label="Quantized copies alone",
                                 info="each as the only model: faster, its own answer")
        tokens = gr.Slider(16, 256, value=64, step=16, label="Max new tokens")
    go = gr.Button("Run benchmark", variant="primary")
    status = gr.HTML("")
    table = gr.Dataframe(label="Results", interactive=False)
    plot = gr.BarPlot(x="configuration", y="speedup", color="draft", title="Speed-up by configuration", height=280)
    file = gr.File(label="bench.json")
    return SimpleNamespace(**locals())


def _wire_compare(service, ui: SimpleNamespace):
    """The comparison, streamed into the panes; Stop. Returns the handlers."""
    stops: dict[str, threading.Event] = {}

    def settings_of(draft, k, tier, temperature, seed, max_tokens, family, alone="off") -> Settings:
        if alone not in ALONE:
            raise InputError(f"unknown choice {alone!r} for the quantized model alone: use {', '.join(ALONE)}")
        return Settings(draft=draft, k=k, temperature=float(temperature), seed=int(seed or 0),
                        max_tokens=int(max_tokens), tier=None if tier == "from analysis" else tier,
                        model=None if family in (None, "default") else family, alone=ALONE[alone])

    # The handlers' parameters are named for API users (gradio_client shows them); inside, they
    # shadow the input components of the same names, which the handlers don't use.
    def page_compare(prompt, draft, k, tier, temperature, seed, max_tokens, family, alone="off",
                     request: gr.Request = None):
        sid = getattr(request, "session_hash", None) or "anon"
        stop = stops[sid] = threading.Event()
        # Every yield carries the whole view, so the last one is the complete result (API too).
        view = {ui.plain_pane: render.pane_html([], empty="…"),
                ui.spec_pane: render.pane_html([], empty="waiting"),
                ui.plain_live: "", ui.spec_live: "", ui.summary: "", ui.status: "", ui.analysis: "*Analysing…*",
                ui.spec_title: "### SpecQuant (FP16 + draft)", ui.race: None, ui.accept: None,
                ui.alone_pane: render.pane_html([], empty="waiting"), ui.alone_live: "",
                ui.alone_col: gr.Column(visible=ALONE.get(alone) is not None),
                ui.alone_title: f"### {alone} alone (plain decoding, its own answer)"}

        def show(changes):
            view.update(changes)
            return dict(view)

        yield show({})
        # per run: pieces, from_draft, points, counts, token ids
        cur = {side: ([], [], [], [0, 0], []) for side in ("plain", "spec", "alone")}
        last = 0.0
        try:
            settings = settings_of(draft, k, tier, temperature, seed, max_tokens, family, alone)
            st = service.status(settings.model)
            while st.status == "loading":
                yield show({ui.status: render.note_html(f"Loading the model: {st.line}")})
                time.sleep(0.5)
            for ev in service.compare(prompt, settings, stop=stop):
                typ = ev["type"]
                if typ == "analysis":
                    label = ev["label"] if ev["decision"]["draft"] != "none" else "no draft"
                    yield show({ui.analysis: render.analysis_md(ev),
                                ui.spec_title: f"### SpecQuant (FP16 + {label})", ui.status: ""})
                elif typ in ("plain", "spec", "alone"):
                    pieces, src, pts, counts, ids = cur[typ]
                    ids += ev["tokens"]
                    pieces += ev["pieces"]
                    src += ev["from_draft"]
                    pts.append((ev["t"], len(pieces)))
                    counts[0] += ev["drafted"]
                    counts[1] += ev["accepted"]
                    now = time.perf_counter()
                    if now - last >= UPDATE_EVERY_S:
                        last = now
                        yield show(_pane_update(typ, cur, ev, panes))
                elif typ in ("plain_done", "spec_done", "alone_done"):
                    side = typ[:-5]
                    s = ev["stats"]
                    pane, live = panes[side]
                    yield show({pane: _pane(side, cur, empty="(no tokens)"),
                                live: render.live_line(s["tokens"], s["wall_s"], s["drafted"], s["accepted"])})
                elif typ == "stopped":
                    where = {"plain": "plain", "spec": "SpecQuant", "alone": f"{alone} alone"}[ev["side"]]
                    yield show({ui.status: render.note_html(f"Stopped during the {where} run.")})
                elif typ == "summary":
                    import pandas as pd

                    yield show({ui.summary: render.summary_md(ev),
                                ui.race: pd.DataFrame(render.race_rows(cur["plain"][2], cur["spec"][2],
                                                                    cur["alone"][2], alone)),
                                ui.accept: pd.DataFrame(render.acceptance_rows(ev["spec"]))})
        except Exception as e:  # noqa: BLE001 - every failure is shown in plain words; the app keeps serving
            yield show({ui.status: render.error_md(str(e) or e.__class__.__name__)})
        finally:
            stops.pop(sid, None)

    def do_stop(request: gr.Request):
        ev = stops.get(getattr(request, "session_hash", None) or "anon")
        if ev:
            ev.set()

    panes = {"plain": (ui.plain_pane, ui.plain_live), "spec": (ui.spec_pane, ui.spec_live),
             "alone": (ui.alone_pane, ui.alone_live)}
    inputs = [ui.prompt, ui.draft, ui.k, ui.tier, ui.temperature, ui.seed, ui.max_tokens, ui.family, ui.alone]
    outputs = [ui.plain_pane, ui.spec_pane, ui.plain_live, ui.spec_live, ui.summary, ui.status, ui.analysis,
               ui.spec_title, ui.race, ui.accept, ui.alone_pane, ui.alone_live, ui.alone_col, ui.alone_title]
    ui.go.click(page_compare, inputs, outputs, api_name="compare_page")
    ui.prompt.submit(page_compare, inputs, outputs, api_name=False)
    ui.stop_btn.click(do_stop, None, None, api_name="stop", queue=False)
    return page_compare, do_stop


def _wire_hardware(demo, service, ui: SimpleNamespace) -> None:
    """The hardware tab and the model line, refreshed every 2 s."""
    def both(fam):
        info = service.describe(None if fam in (None, "default") else fam)
        return render.hardware_md(info), render.model_status_md(info)

    ui.refresh.click(both, [ui.family], [ui.hw_md, ui.model_status], api_name=False)
    demo.load(both, [ui.family], [ui.hw_md, ui.model_status], api_name=False)
    gr.Timer(2.0).tick(both, [ui.family], [ui.hw_md, ui.model_status], api_name=False)


def _wire_bench(service, ui: SimpleNamespace):
    """The benchmark tab. Returns its handler."""
    def bench(categories, max_prompts, drafts, draft_lengths, max_tokens, family, alone=(),
              progress=gr.Progress()):
        import pandas as pd

        prompts = [p for p in load_prompts() if p["category"] in (categories or [])][: int(max_prompts)]
        if not prompts or not drafts or not draft_lengths:
            return render.error_md("Pick at least one category, one draft source and one draft length."), \
                None, None, None
        try:
            res = service.bench(prompts, ",".join(drafts), ",".join(draft_lengths), ["auto"], int(max_tokens),
                                progress=lambda i, total, msg: progress(i / total, desc=msg),
                                model=None if family in (None, "default") else family, alone=alone or ())
        except Exception as e:  # noqa: BLE001
            return render.error_md(str(e)), None, None, None
        rows = [{"configuration": name,
                 "draft": s.get("draft", s.get("policy", "alone" if s.get("alone") else "oracle")),
                 "speedup": round(s["speedup"] or 0, 3),
                 "min per prompt": None if s["min_speedup"] is None else round(s["min_speedup"], 3),
                 "acceptance": None if s["acceptance"] is None else round(s["acceptance"], 3),
                 "tokens/pass": None if s["tokens_per_pass"] is None else round(s["tokens_per_pass"], 2),
                 "identical": f"{s['identical']}/{s['prompts']}",
                 "first difference (mean token)": None if s.get("first_diff_mean") is None
                 else round(s["first_diff_mean"], 1),
                 "accuracy": None if s.get("accuracy_spec") is None else round(s["accuracy_spec"], 3),
                 "time normal (s)": round(s["seconds_plain"], 2), "time SpecQuant (s)": round(s["seconds_spec"], 2)}
                for name, s in res["summary"].items()]
        path = os.path.join(tempfile.mkdtemp(prefix="specquant-bench-"), "bench.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        df = pd.DataFrame(rows)
        return (render.note_html(f"Done: {len(prompts)} prompts."), df,
                df[["configuration", "speedup", "draft"]], path)

    b = ui.bench
    b.go.click(bench, [b.cats, b.limit, b.drafts, b.ks, b.tokens, ui.family, b.alone],
               [b.status, b.table, b.plot, b.file], api_name="bench", cancels=None)
    return bench


def _pane(side, cur, empty=""):
    """A run's pane: draft tokens marked (SpecQuant), departures from FP16 marked (alone)."""
    pieces, src, _, _, ids = cur[side]
    if side == "alone":
        return render.diff_pane_html(pieces, ids, cur["plain"][4], empty=empty)
    return render.pane_html(pieces, src if side == "spec" else None, empty=empty)


def _pane_update(typ, cur, ev, panes):
    pieces, _, _, (drafted, accepted), _ = cur[typ]
    pane, live = panes[typ]
    return {pane: _pane(typ, cur), live: render.live_line(len(pieces), ev["t"], drafted, accepted)}


def _families(default_model):
    from specquant.catalog import families

    return ["default", "demo"] + list(families()) + ([default_model] if default_model and default_model not in
                                                      families() and default_model != "demo" else [])


def launch_kwargs() -> dict:
    """What every launch passes: the page's CSS, no server-side rendering, and the MCP server (the
    ``answer`` and ``compare`` tools at /gradio_api/mcp/) where the ``mcp`` package is installed,
    unless SPECQUANT_MCP=0."""
    import importlib.util

    mcp = os.environ.get("SPECQUANT_MCP", "1") != "0" and importlib.util.find_spec("mcp") is not None
    return {"css": render.CSS, "ssr_mode": False, "mcp_server": mcp}


def launch(demo=None, **kw):
    """Queue (one run at a time by default: SPECQUANT_CONCURRENCY) and serve."""
    demo = demo or build_demo()
    concurrency = int(os.environ.get("SPECQUANT_CONCURRENCY", "1"))
    demo.queue(default_concurrency_limit=concurrency)
    return demo.launch(**{**launch_kwargs(), **kw})
