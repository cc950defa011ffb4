"""What the benchmark scripts share."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_result(res: dict, out: str | Path) -> Path:
    """Write a benchmark's result as JSON (making the folder) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return out


def prompt_rounds(doc: str, out: str):
    """The arguments of a script that runs rounds over prompt sets (--model, --prompts, repeatable,
    --rounds, --max-tokens, --out), and the engine, loaded and calibrated (with prompt lookup's costs
    and the floor) before any timing."""
    import argparse

    from specquant.engine import load_engine

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--prompts", action="append", help="a prompt set (default: the bundled one); repeatable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=out)
    args = ap.parse_args()
    eng = load_engine(args.model)
    eng.costs("lookup")
    eng.pass_costs()
    return args, eng


def variant_summary(name: str, rows: list[dict], variants) -> dict:
    """Totals of a set's rows, per variant: ``rows[i][v]`` holds ``plain_s`` and ``spec_s`` (seconds summed
    over rounds), ``speedup`` (the prompt's median) and ``tokens_per_pass``; each row ``identical`` and
    ``grounded``. Speed-ups are sums of time; printed as one line."""
    import statistics

    def ratio(part, v):
        spec = sum(r[v]["spec_s"] for r in part)
        return sum(r[v]["plain_s"] for r in part) / spec if spec else None

    grounded = [r for r in rows if r.get("grounded")]
    out = {v: {"speedup": ratio(rows, v), "grounded": ratio(grounded, v) if grounded else None,
               "worst": min(r[v]["speedup"] for r in rows),
               "tokens_per_pass": statistics.mean(r[v]["tokens_per_pass"] for r in rows)} for v in variants}
    out["identical"] = f"{sum(r['identical'] for r in rows)}/{len(rows)}"
    print(f"\n{name}: " + "; ".join(
        f"{v}: {x['speedup']:.3f}x overall" + (f", {x['grounded']:.3f}x grounded" if x["grounded"] else "")
        + f", worst {x['worst']:.2f}x, {x['tokens_per_pass']:.2f} tokens/pass" for v, x in out.items() if v in variants)
        + f"; identical {out['identical']}\n", flush=True)
    return out
