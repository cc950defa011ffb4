"""Pure functions that turn the service's events into what the page shows (HTML, Markdown,
tables). No Gradio here, so they are tested without a browser."""
from __future__ import annotations

import html

from specquant import sources

LEGEND = ('<div class="sq-legend"><span class="sq-tok sq-draft">accepted from the draft</span> '
          '<span class="sq-tok sq-target">the target\'s own token</span></div>')

ALONE_LEGEND = ('<div class="sq-legend"><span class="sq-tok sq-diff">departs from the FP16 answer</span> '
                '<span class="sq-tok sq-target">same as FP16 so far</span></div>')

CSS = """
.sq-pane { min-height: 14em; max-height: 28em; overflow-y: auto; white-space: pre-wrap; line-height: 1.55;
           font-size: 0.95em; padding: 0.6em; border: 1px solid var(--border-color-primary); border-radius: 8px; }
.sq-tok.sq-draft { background: #c9f0c1; color: #111; border-radius: 3px; }
.sq-tok.sq-target { background: transparent; }
.sq-tok.sq-diff { background: #ffd8a8; color: #111; border-radius: 3px; }
.sq-legend { font-size: 0.85em; margin: 0.3em 0; }
.sq-legend .sq-tok { padding: 0.1em 0.4em; border: 1px solid #aaa; border-radius: 4px; }
.sq-live { font-variant-numeric: tabular-nums; font-size: 0.9em; }
.sq-error { color: #b00020; font-weight: 600; }
.sq-ok { background: #1a7f37; color: white; padding: 0.15em 0.5em; border-radius: 4px; font-weight: 600; }
.sq-bad { background: #b00020; color: white; padding: 0.15em 0.5em; border-radius: 4px; font-weight: 600; }
"""


def pane_html(pieces: list[str], from_draft: list[bool] | None = None, *, empty: str = "") -> str:
    """Tokens as spans; draft-accepted tokens get class sq-draft."""
    if not pieces:
        return f'<div class="sq-pane"><span class="sq-muted">{html.escape(empty)}</span></div>'
    if from_draft is None:
        return f'<div class="sq-pane">{html.escape("".join(pieces))}</div>'
    spans = []
    run, run_draft = [], None
    for piece, d in zip(pieces, from_draft):
        if run and d != run_draft:
            spans.append(_span("".join(run), run_draft))
            run = []
        run.append(piece)
        run_draft = d
    if run:
        spans.append(_span("".join(run), run_draft))
    return '<div class="sq-pane">' + "".join(spans) + "</div>"


def _span(text: str, draft: bool) -> str:
    cls = "sq-draft" if draft else "sq-target"
    return f'<span class="sq-tok {cls}">{html.escape(text)}</span>'


def diff_pane_html(pieces: list[str], tokens: list[int], reference: list[int], *, empty: str = "") -> str:
    """A quantized model's answer: from the first token that departs from the FP16 answer
    (``reference``) on, the text is marked (class sq-diff)."""
    if not pieces:
        return pane_html([], empty=empty)
    first = next((i for i, t in enumerate(tokens) if i >= len(reference) or t != reference[i]), len(tokens))
    same, rest = html.escape("".join(pieces[:first])), html.escape("".join(pieces[first:]))
    return (f'<div class="sq-pane"><span class="sq-tok sq-target">{same}</span>'
            + (f'<span class="sq-tok sq-diff" id="first-diff">{rest}</span>' if rest else "") + "</div>")


def live_line(n_tokens: int, seconds: float, drafted: int = 0, accepted: int = 0) -> str:
    tps = n_tokens / seconds if seconds > 0 else 0.0
    s = f'<span class="sq-live">{n_tokens} tokens · {seconds:.2f} s · <b>{tps:.1f} tok/s</b>'
    if drafted:
        s += f" · acceptance {accepted / drafted:.0%}"
    return s + "</span>"


def analysis_md(ev: dict) -> str:
    a, d = ev["analysis"], ev["decision"]
    rows = [
        "| measure | value | level |", "|---|---|---|",
        f"| length (words) | {a['words']} | {a['length_level']} |",
        f"| syntactic (CC/IN/TO{' + long sentences' if a['long_sentences'] else ''}) | {a['syntactic']} "
        f"| {a['syntactic_level']} |",
        f"| semantic (named entities) | {a['semantic']} | {a['semantic_level']} |",
    ]
    ents = ", ".join(a["entities"][:6]) if a["entities"] else "none"
    return (
        f"**Tier: {a['tier']}** (score {a['score']} = 1×length + 2×semantic + 3×syntactic; analyzer: "
        f"{a['analyzer']})\n\n" + "\n".join(rows) + f"\n\nEntities: {html.escape(ents)}\n\n"
        f"**Decision ({d['policy']}):** {html.escape(d['reason'])}"
    )


def summary_md(ev: dict) -> str:
    p, s = ev["plain"], ev["spec"]
    speed = ev["speedup"]
    if ev["greedy"]:
        same = ('<span class="sq-ok" id="identical-mark">✓ identical output</span> greedy: token for token the '
                "FP16 target's own" if ev["identical"] else '<span class="sq-bad">✗ outputs differ</span>')
    else:
        same = "Sampling: both runs follow the target's distribution, so their tokens differ."
    acc = f"{s['acceptance_rate']:.0%}" if s["drafted"] else "—"
    note = ""
    why = sources.same_work(ev["decision"]["draft"], s["drafted"])
    if why:
        lead = ("SpecQuant chose **not to draft** here (see the decision above)" if ev["decision"]["draft"] == "none"
                else why[0].upper() + why[1:])
        note = f"\n\n{lead}, so both runs did the same work: the difference is measurement noise."
    if ev.get("unreliable"):
        note += f"\n\n⚠ Unreliable figure: {ev['unreliable']}."
    if s.get("draft_dropped"):
        note += f"\n\nDrafting stopped during the run: {s['draft_dropped']}; the rest was decoded plainly."

    al = ev.get("alone")
    trade, a = [], (al or {}).get("stats")
    if al:
        differs = ("identical to FP16" if al["identical"] else
                   f"differs from FP16 from token {al['first_diff'] + 1} on ({al['equal_share']:.0%} of tokens equal)")
        spec_says = ("identical" if ev["identical"] else "differs") if ev["greedy"] else "the target's distribution"
        trade = [f"**{al['label']} alone: {_x(al['speedup'])} faster, {differs}; SpecQuant: {_x(speed)} faster, "
                 f"{spec_says}.**", ""]
    col = (lambda cell: f" {cell} |") if al else (lambda cell: "")
    return "\n".join([
        (f"### Speed-up: **{speed:.2f}×**" if speed else "### Speed-up: —") + note, "",
        same, "", *trade,
        "| | Plain FP16 | SpecQuant |" + col(f"{al['label']} alone" if al else ""), "|---|---|---|" + col("---"),
        f"| time | {p['wall_s']:.2f} s | {s['wall_s']:.2f} s |" + col(a and f"{a['wall_s']:.2f} s"),
        f"| tokens/s | {p['tokens_per_s']:.1f} | {s['tokens_per_s']:.1f} |" + col(a and f"{a['tokens_per_s']:.1f}"),
        f"| first token | {p['ttft_s'] * 1000:.0f} ms | {s['ttft_s'] * 1000:.0f} ms |"
        + col(a and f"{a['ttft_s'] * 1000:.0f} ms"),
        f"| target passes | {p['target_passes']} | {s['target_passes']} |" + col(a and "— (its own model)"),
        f"| tokens per target pass | {p['tokens_per_pass']:.2f} | {s['tokens_per_pass']:.2f} |" + col("—"),
        f"| drafted / accepted | — | {s['drafted']} / {s['accepted']} ({acc}) |" + col("—"),
        f"| time drafting / verifying | — | {s['draft_s']:.2f} s / {s['verify_s']:.2f} s |" + col("—"),
    ])


def _x(speedup: float | None) -> str:
    return f"{speedup:.2f}×" if speedup else "—"


def race_rows(plain: list[tuple[float, int]], spec: list[tuple[float, int]], alone=None, alone_label="") -> dict:
    """Tokens against seconds for each run, as columns for a line plot."""
    rows = {"seconds": [], "tokens": [], "run": []}
    runs = [("Plain FP16", plain), ("SpecQuant", spec)] + ([(f"{alone_label} alone", alone)] if alone else [])
    for name, pts in runs:
        for t, n in [(0.0, 0)] + pts:
            rows["seconds"].append(round(t, 4))
            rows["tokens"].append(n)
            rows["run"].append(name)
    return rows


def acceptance_rows(stats: dict) -> dict:
    acc = stats.get("acceptance_by_pos") or []
    return {"position": [str(i + 1) for i in range(len(acc))], "acceptance": [round(a, 4) for a in acc]}


_PHASES = {"files": "model files (download or cache)", "load": "loading", "calibration": "measuring costs",
           "floor": "measuring the floor"}


def model_status_md(info: dict) -> str:
    """One line above the panes: what is loading and how far, or which model is ready."""
    if info.get("status") != "ready":
        return f"**Model:** {info.get('status')} — {html.escape(info.get('message', ''))}"
    ph = info.get("phases") or {}
    took = f" {sum(ph.values()):.0f} s after start" if ph else ""
    return f"**Model:** {html.escape(info.get('label', ''))} — ready{took}"


def _exactness(info: dict) -> str:
    return info.get("exactness") or ("yes (exact)" if info.get("batch_invariant") else "NO")


def hardware_md(info: dict) -> str:
    if info.get("status") != "ready":
        return f"**Model:** {info.get('status')} — {html.escape(info.get('message', ''))}"
    lines = [f"**Hardware:** {html.escape(info.get('hardware_summary') or '?')}",
             f"**Backend:** {info['backend']} · batch-invariant kernels: {_exactness(info)}",
             f"**Models:** {html.escape(info.get('label', ''))}"]
    if info.get("phases"):
        ph = info["phases"]
        lines.append(f"Ready {sum(ph.values()):.0f} s after start: " + ", ".join(
            f"{_PHASES.get(k, k)} {v:.1f} s" for k, v in ph.items()))
    ms = info.get("model_set") or {}
    if ms.get("note"):
        lines.append(f"*{html.escape(ms['note'])}*")
    for m in info.get("models", []):
        lines.append(f"- `{html.escape(m['name'])}` — {m['file_bytes'] / 2**20:.0f} MiB, {m['n_params'] / 1e6:.0f}M params, "
                     f"{m['threads']} threads{', GPU offload' if m.get('gpu_layers') else ''}")
    pc = info.get("pass_costs")
    if pc:
        lines.append(pass_costs_md(pc))
    hw = info.get("hardware") or {}
    if hw:
        gib = 2**30
        lines.append(f"Memory: {hw['ram_available_bytes'] / gib:.1f} of {hw['ram_bytes'] / gib:.1f} GiB RAM available"
                     + (f"; GPU {hw['gpu_free_bytes'] / gib:.1f} of {hw['gpu_memory_bytes'] / gib:.1f} GiB free"
                        if hw.get("gpu_memory_bytes") else ""))
    return "\n\n".join(lines)


def pass_costs_md(pc: dict) -> str:
    """What a verify pass over n tokens costs here, in one-token steps, beside the least the machine allows."""
    fl = pc.get("floor")
    head = (f"**Verify pass costs** (the FP16 model, in one-token steps of {pc['step_ms']:.1f} ms)"
            + (f", beside the floor of this machine — memory {fl['bandwidth'] / 1e9:.0f} GB/s, "
               f"float32 FMA {fl['flops'] / 1e9:.0f} GFLOP/s, one-token step at least {fl['step_ms']:.1f} ms:"
               if fl else ":"))
    cells = [f"{n} tokens: {v:.2f}" + (f" (floor {fl['steps'][n]:.2f})" if fl else "") for n, v in pc["steps"].items()]
    return head + " " + " · ".join(cells)


def error_md(msg: str) -> str:
    return f'<div class="sq-error">Error: {html.escape(msg)}</div>'


def note_html(msg: str) -> str:
    return f'<div class="sq-live">{html.escape(msg)}</div>'
