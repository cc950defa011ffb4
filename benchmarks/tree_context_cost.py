"""What the context that trees need costs plain decoding: one-token steps with n_seq_max 8 (a unified cache,
as ``LlamaCppModel`` makes on our CPU build for ``eval_tree``) against n_seq_max 1, the same weights in one
process, 64 greedy tokens a run, the two interleaved (the order alternating by round).

    python benchmarks/tree_context_cost.py MODEL.gguf ROUNDS
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import backends  # noqa: E402, F401 - llama.cpp loads before numpy
from backends import llama_cpp as B  # noqa: E402
from backends import load_model  # noqa: E402
import numpy as np  # noqa: E402

path, rounds = sys.argv[1], int(sys.argv[2])
a = load_model(path, "llama.cpp", n_ctx=2048)
paths, B.TREE_PATHS = B.TREE_PATHS, 1  # the second context: one sequence (the weights are shared)
b = load_model(path, "llama.cpp", n_ctx=2048)
B.TREE_PATHS = paths
prompt = a.tokenize("Explain, step by step, how a refrigerator moves heat from its inside to the room around it.")


def decode(m, n=64):
    m.reset()
    t = int(np.argmax(m.prefill(prompt)[-1]))
    t0 = time.perf_counter()
    for _ in range(n):
        t = int(np.argmax(m.eval([t])[-1]))
    return (time.perf_counter() - t0) / n


decode(a)
decode(b)
ra, rb = [], []
for r in range(rounds):
    for m, acc in ((a, ra), (b, rb)) if r % 2 == 0 else ((b, rb), (a, ra)):
        acc.append(decode(m))
ratios = [y / x for x, y in zip(ra, rb)]
print(f"step ms: seq8 {statistics.median(ra)*1e3:.3f}  seq1 {statistics.median(rb)*1e3:.3f};"
      f" speed seq8/seq1 = {statistics.median(ratios):.3f} (rounds {[round(x,3) for x in ratios]})")
