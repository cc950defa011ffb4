"""The page over a SpecQuant server (SPECQUANT_SERVER): plain and routed runs are requests to a real
``specquant serve`` process; the page shows both with the server's statistics."""
from __future__ import annotations

import json

import pytest

from specquant.remote import RemoteService
from specquant.server import Delta, Final, parse_request
from specquant.service import Settings
from specquant.speculative import InputError

from .test_server import GROUNDED, server  # noqa: F401 - the server fixture

pytestmark = pytest.mark.smollm


def test_comparison_through_the_server(server):  # noqa: F811
    remote = RemoteService(server)
    assert remote.status().status == "ready"
    info = remote.describe()
    assert info["status"] == "ready" and "in-process" in info["backend"]
    events = list(remote.compare(GROUNDED, Settings(draft="lookup", k="4", max_tokens=40)))
    types = [e["type"] for e in events]
    assert types[0] == "analysis" and types[-1] == "summary" and "plain_done" in types and "spec_done" in types
    summary = events[-1]
    done = {e["type"]: e for e in events if e["type"].endswith("_done")}
    assert summary["identical"] is True and done["plain_done"]["text"] == done["spec_done"]["text"]
    assert summary["decision"]["draft"] == "lookup" and summary["spec"]["drafted"] >= summary["spec"]["accepted"] > 0
    assert summary["plain"]["drafted"] == 0 and summary["speedup"] > 0
    assert summary["spec"]["tokens"] == summary["plain"]["tokens"] > 0
    with pytest.raises(InputError, match="empty"):
        list(remote.compare("  ", Settings()))
    with pytest.raises(InputError, match="longer than the model's context"):
        list(remote.compare("word " * 3000, Settings(max_tokens=4)))


def test_the_page_and_its_answer_tool_over_the_server(server, monkeypatch):  # noqa: F811
    from gradio_client import Client

    from ui import build_demo, launch_kwargs
    from ui.tools import make_tools

    monkeypatch.setenv("SPECQUANT_SERVER", server)
    demo = build_demo()
    demo.queue(default_concurrency_limit=1).launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        c = Client(demo.local_url, verbose=False)
        final = c.predict(prompt=GROUNDED, draft="lookup", k="auto", tier="from analysis", temperature=0, seed=0,
                          max_tokens=32, family="default", alone="off", api_name="/compare_page")
        assert "identical output" in final[4] and "Speed-up" in final[4], final[4]
        assert "Tier:" in final[6]
    finally:
        demo.close()
    answer, _ = make_tools(RemoteService(server))
    out = json.loads(answer(GROUNDED, draft="lookup", max_tokens=24))
    assert out["text"] and out["draft"] == "lookup" and out["identical_by_construction"] is True
    req = parse_request({"messages": [{"role": "user", "content": GROUNDED}], "max_tokens": 8, "temperature": 0},
                        "chat")
    evs = list(RemoteService(server).executor().run(req, None))
    assert isinstance(evs[-1], Final) and all(isinstance(e, Delta) for e in evs[:-1])
