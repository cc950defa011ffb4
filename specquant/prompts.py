"""Prompt sets: the bundled one (``specquant/data/prompts.json``) or a file in the same shape,
and grading an answer against a prompt's reference strings."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


def load_prompts(path: str | Path | None = None) -> list[dict]:
    if path:
        data = json.loads(Path(path).read_text())
    else:
        data = json.loads(resources.files("specquant").joinpath("data/prompts.json").read_text())
    prompts = data["prompts"] if isinstance(data, dict) else data
    for p in prompts:
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not p.get("id"):
            raise ValueError(f"each prompt needs an 'id' and a 'prompt' text: {p!r}")
    return prompts


def correct(text: str, reference: list[str] | str | None) -> bool | None:
    if not reference:
        return None
    refs = [reference] if isinstance(reference, str) else reference
    low = text.lower()
    return any(r.lower() in low for r in refs)
