"""The page's functions for agents: ``answer`` and ``compare``, served as MCP tools (Gradio's
``mcp_server``, at ``/gradio_api/mcp/``) and as API endpoints. Thin: ``answer`` runs through the
same executor as ``specquant serve``; ``compare`` is the page's comparison without the page."""
from __future__ import annotations

import json
import threading

import gradio as gr

from specquant.server import APIError, Delta, Final, InProcess, parse_request
from specquant.service import DRAFT_CHOICES, InputError, Service, Settings

DRAFTS = "auto, none, lookup, q8, q4, q4_0, sibling or tier-rule"
MAX_TOKENS = 1024


def make_tools(service: Service):
    """(answer, compare) for ``service``'s default model."""
    # the model in this process, or the server the page compares through (SPECQUANT_SERVER)
    executor = service.executor() if hasattr(service, "executor") else InProcess(service, service.default_model)

    def answer(prompt: str, draft: str = "auto", max_tokens: int = 128, temperature: float = 0.0,
               seed: int = 0) -> str:
        """Answer a prompt with SpecQuant: the local FP16 model, sped up by speculative decoding that the
        FP16 model verifies, so with temperature 0 the text is token for token the FP16 model's own.
        The prompt's complexity and this machine's measured costs decide whether and how to draft.

        Args:
            prompt: The question or task, as a user would type it.
            draft: How to draft: auto (routed, the default), none, lookup, q8, q4, q4_0, sibling or tier-rule.
            max_tokens: The most new tokens in the answer (1 to 1024).
            temperature: 0 for greedy decoding (the default); above 0 samples from the FP16 model's distribution.
            seed: The random seed when sampling.

        Returns:
            A JSON object: the answer's text, why it finished, and how it was produced: the tier, the draft
            chosen and the reason, tokens drafted and accepted, tokens per second, and whether the text is
            identical to plain decoding by construction.
        """
        req = _request(prompt, draft, max_tokens, temperature, seed)
        text, final = [], None
        try:
            for ev in executor.run(req, threading.Event()):
                if isinstance(ev, Delta):
                    text.append(ev.text)
                elif isinstance(ev, Final):
                    final = ev
        except APIError as e:
            raise gr.Error(e.message) from None
        return json.dumps({"text": "".join(text), "finish_reason": final.finish_reason, "completion_tokens":
                           final.completion_tokens, "prompt_tokens": final.prompt_tokens, **final.info})

    def compare(prompt: str, draft: str = "auto", max_tokens: int = 128) -> str:
        """Answer a prompt twice on this machine, one run after the other: plain FP16 decoding, then SpecQuant's
        speculative decoding verified by the same FP16 model (greedy), and report both answers, the speed-up,
        the acceptance rate and whether the answers are identical.

        Args:
            prompt: The question or task.
            draft: How SpecQuant drafts: auto (routed, the default), none, lookup, q8, q4, q4_0 or tier-rule.
            max_tokens: The most new tokens in each answer (1 to 1024).

        Returns:
            A JSON object: both answers' texts and statistics, the speed-up of SpecQuant over plain decoding, whether the
            answers are identical, and the routing decision with its reason.
        """
        choice = _page_choice(draft)
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
            raise gr.Error(f"max_tokens must be from 1 to {MAX_TOKENS}")
        out = {}
        try:
            for ev in service.compare(prompt, Settings(draft=choice, max_tokens=max_tokens)):
                if ev["type"] in ("plain_done", "spec_done"):
                    out[ev["type"][:-5]] = {"text": ev["text"], "tokens": ev["tokens"], "stats": ev["stats"]}
                elif ev["type"] == "summary":
                    out.update(speedup=ev["speedup"], identical=ev["identical"], decision=ev["decision"],
                               unreliable=ev["unreliable"] or None)
        except InputError as e:
            raise gr.Error(str(e)) from None
        return json.dumps(out)

    return answer, compare


def page_only(fn):
    """Keep one of the page's own handlers out of the MCP tool list (its inputs and outputs are the
    page's components). Gradio lists as tools the endpoints whose function is not marked as another
    MCP kind (``gradio.mcp``'s ``_mcp_type``, which ``gr.mcp.tool`` sets to "tool")."""
    fn._mcp_type = "page"
    return fn


def _request(prompt, draft, max_tokens, temperature, seed):
    body = {"messages": [{"role": "user", "content": prompt}], "draft": draft, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed}
    try:
        req = parse_request(body, "chat")
    except APIError as e:
        raise gr.Error(e.message) from None
    if req.max_tokens > MAX_TOKENS:
        raise gr.Error(f"max_tokens must be from 1 to {MAX_TOKENS}")
    return req


def _page_choice(draft: str) -> str:
    """The page's name for a draft given as the API names it (q4_0 -> Q4_0, tier-rule -> tier rule)."""
    key = (draft or "auto").strip()
    by_lower = {c.lower(): c for c in DRAFT_CHOICES} | {"tier-rule": "tier rule", "seed": "tier rule",
                                                         "q8_0": "Q8", "q4_k_m": "Q4"}
    if key.lower() not in by_lower:
        raise gr.Error(f"unknown draft {draft!r}: use {DRAFTS}")
    return by_lower[key.lower()]
