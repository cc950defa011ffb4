"""Prompt sets: the bundled one (``specquant/data/prompts.json``) or a file in the same shape,
and grading an answer against a prompt's reference strings."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


SPEC_BENCH = {  # Spec-Bench's categories -> the column names of its tables
    "mt_bench": "Multi-turn", "translation": "Translation", "summarization": "Summarization", "qa": "QA",
    "math_reasoning": "Math", "rag": "RAG",
}
# Spec-Bench's question.jsonl files its MT-bench questions under MT-bench's own eight categories; its
# tables put them all in one "Multi-turn conversation" column (MT-bench's "math" included: Spec-Bench's
# "Math" column is math_reasoning, GSM8K's questions)
MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def load_prompts(path: str | Path | None = None) -> list[dict]:
    """A prompt set: the bundled one, a JSON file in its shape (``{"prompts": [{"id", "prompt",
    ...}]}``), or Spec-Bench's ``question.jsonl`` (see ``load_spec_bench``)."""
    if path and Path(path).suffix == ".jsonl":
        return load_spec_bench(path)
    name = str(path) if path else "the bundled prompt set"
    text = Path(path).read_text() if path else resources.files("specquant").joinpath("data/prompts.json").read_text()
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{name}: not JSON ({e}); a prompt set is {{\"prompts\": [{{\"id\": ..., "
                         "\"prompt\": ...}, ...]}, or Spec-Bench's question.jsonl") from None
    prompts = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(prompts, list) or not prompts:
        raise ValueError(f"{name}: no prompts (a prompt set is {{\"prompts\": [...]}} or a list of prompts)")
    seen = set()
    for p in prompts:
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not isinstance(p.get("id"), (str, int)) \
                or p["id"] == "":
            raise ValueError(f"{name}: each prompt needs an 'id' and a 'prompt' text: {p!r}")
        if p["id"] in seen:
            raise ValueError(f"{name}: prompt id {p['id']!r} appears twice")
        seen.add(p["id"])
    return prompts


def load_spec_bench(path: str | Path) -> list[dict]:
    """Spec-Bench's format: one JSON object per line with ``question_id``, ``category`` and
    ``turns`` (the user's messages; a multi-turn question answers each turn with the chat so far,
    the model's own earlier answers included). The data itself is not bundled."""
    out, seen = [], set()
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}, line {i}: not a JSON object ({e})") from None
        turns = q.get("turns") if isinstance(q, dict) else None
        if not isinstance(q, dict) or q.get("question_id") in (None, "") or not isinstance(q.get("category"), str) \
                or not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{path}, line {i}: a Spec-Bench question needs 'question_id', 'category' and "
                             "'turns' (a list of non-empty texts)")
        qid = str(q["question_id"])
        if qid in seen:
            raise ValueError(f"{path}, line {i}: question_id {qid} appears twice")
        seen.add(qid)
        column = "mt_bench" if q["category"] in MT_BENCH else q["category"]
        out.append({"id": qid, "category": q["category"], "column": column, "prompt": turns[0], "turns": turns})
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def correct(text: str, reference: list[str] | str | None) -> bool | None:
    if not reference:
        return None
    refs = [reference] if isinstance(reference, str) else reference
    low = text.lower()
    return any(r.lower() in low for r in refs)
