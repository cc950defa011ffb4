"""SpecQuant's loop on the MLX backend vs mlx-lm's own ``speculative_generate_step``, on the same
loaded models (target, draft), draft length and prompts, greedy. Runs alternate, and only
decoding after the prompt is timed on both sides.

    python benchmarks/mlx_compare.py [--target FOLDER --draft FOLDER] [--k 1,2,4] [--prompts 3]

Default models: the SmolLM2-135M demo model converted to MLX (bf16 parent, 8-bit draft).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

from common import write_result  # noqa: E402 - also puts the project on sys.path

from backends import load_model  # noqa: E402
from specquant.prompts import load_prompts  # noqa: E402
from specquant.control import DraftControl  # noqa: E402
from specquant.drafts import ModelDraft  # noqa: E402
from specquant.speculative import run  # noqa: E402


def mlx_lm_run(target, draft, prompt: list[int], k: int, n: int) -> dict:
    """mlx-lm's speculative decoding; it does not stop at EOS by itself, so we do."""
    import mlx.core as mx

    gen = importlib.import_module("mlx_lm.generate")
    toks, from_draft = [], 0
    t0 = time.perf_counter()
    t_first = None
    for tok, _, fd in gen.speculative_generate_step(mx.array(prompt), target.model, draft.model,
                                                    num_draft_tokens=k, max_tokens=n):
        tok = int(tok)
        if t_first is None:
            t_first = time.perf_counter()
        if tok in target.eos_ids:
            break
        toks.append(tok)
        from_draft += bool(fd)
    t1 = time.perf_counter()
    # The first token includes the prompt's prefill: leave it out, as for our side.
    return {"tokens": toks, "decode_s": t1 - t_first, "n": len(toks), "from_draft": from_draft,
            "total_s": t1 - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target")
    ap.add_argument("--draft")
    ap.add_argument("--k", default="1,2,4")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench-results/mlx.json")
    args = ap.parse_args()
    if not args.target:
        from specquant.mlx_models import prepare_mlx

        p = prepare_mlx()["smollm2"]
        args.target, args.draft = str(p["parent"]), str(p["8bit"])
    target = load_model(args.target, "mlx")
    draft = load_model(args.draft, "mlx")
    src = ModelDraft(draft, target)
    prompts = load_prompts()[: args.prompts]
    res = {"target": args.target, "draft": args.draft, "rows": []}
    for k in [int(x) for x in args.k.split(",")]:
        ours_tps, theirs_tps, same = [], [], 0
        for p in prompts:
            toks = target.tokenize(target.apply_chat_template([{"role": "user", "content": p["prompt"]}]))
            for _ in range(args.rounds):
                theirs = mlx_lm_run(target, draft, toks, k, args.max_tokens)
                ours = run(target, toks, draft=src, control=DraftControl(k), max_tokens=args.max_tokens)
                # decode rate after the first token on both sides
                ours_s = ours.stats.wall_s - ours.stats.ttft_s
                ours_tps.append((len(ours.tokens) - 1) / ours_s if ours_s > 0 else 0)
                theirs_tps.append((theirs["n"] - 1) / theirs["decode_s"] if theirs["decode_s"] > 0 else 0)
                same += ours.tokens == theirs["tokens"]
        ratio = statistics.median(ours_tps) / statistics.median(theirs_tps)
        res["rows"].append({"k": k, "ours_tok_s": statistics.median(ours_tps),
                            "mlx_lm_tok_s": statistics.median(theirs_tps), "ratio": ratio,
                            "identical_outputs": same, "runs": len(ours_tps)})
        print(f"k={k}: ours {statistics.median(ours_tps):.2f} tok/s vs mlx-lm {statistics.median(theirs_tps):.2f} "
              f"-> {ratio:.3f}x; identical outputs {same}/{len(ours_tps)}", flush=True)
    write_result(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
