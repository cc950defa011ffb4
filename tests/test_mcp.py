"""The page's MCP tools (``answer``, ``compare``), called by the ``mcp`` package's client against the
running app, as an agent would."""
from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.smollm
mcp = pytest.importorskip("mcp", reason="the MCP tools need gradio[mcp]")

GROUNDED = ("Rewrite this sentence in the past tense, keeping every other word: The committee reviews the "
            "budget every spring, and the members discuss the new projects before they vote on them.")


@pytest.fixture(scope="module")
def app_url(smol_paths):
    from specquant.service import Service
    from ui import build_demo, launch_kwargs

    service = Service("demo")
    demo = build_demo(service)
    kw = launch_kwargs()
    assert kw["mcp_server"] is True
    demo.queue(default_concurrency_limit=1).launch(prevent_thread_lock=True, quiet=True, **kw)
    service.engine(timeout=300)
    yield demo.local_url.rstrip("/")
    demo.close()


def _session(url, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def go():
        async with streamable_http_client(url + "/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await work(s)

    return asyncio.run(go())


def _result(r) -> dict:
    assert not r.isError, r.content
    return json.loads(r.content[0].text)


def test_tools_are_listed_with_typed_parameters_and_descriptions(app_url):
    tools = {t.name: t for t in _session(app_url, lambda s: s.list_tools()).tools}
    assert {"answer", "compare"} <= set(tools), list(tools)
    assert not {"compare_page", "bench", "stop"} & set(tools)  # the page's own endpoints are not tools
    a = tools["answer"]
    assert "verifies" in a.description
    props = a.inputSchema["properties"]
    assert props["max_tokens"]["type"] == "integer" and props["temperature"]["type"] == "number"
    assert "lookup" in props["draft"]["description"]


def test_answer_and_compare_through_mcp(app_url):
    async def work(s):
        plain = _result(await s.call_tool("answer", {"prompt": GROUNDED, "draft": "none", "max_tokens": 32}))
        routed = _result(await s.call_tool("answer", {"prompt": GROUNDED, "draft": "lookup", "max_tokens": 32}))
        both = _result(await s.call_tool("compare", {"prompt": GROUNDED, "draft": "lookup", "max_tokens": 32}))
        bad = await s.call_tool("answer", {"prompt": "   "})
        return plain, routed, both, bad

    plain, routed, both, bad = _session(app_url, work)
    assert plain["text"] and routed["text"] == plain["text"] and plain["drafted"] == 0
    assert routed["identical_by_construction"] is True and routed["draft"] == "lookup" and routed["reason"]
    assert both["identical"] is True and both["spec"]["text"] == both["plain"]["text"] == plain["text"]
    assert both["speedup"] > 0 and both["decision"]["draft"] == "lookup"
    assert bad.isError and "empty" in bad.content[0].text
