"""A local fleet (``specquant fleet up``: llama-server replicas, SpecQuant's patched build) behind
``specquant serve --fleet``: real processes, real HTTP, the OpenAI client; no stand-ins."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from specquant.fleet import load_fleet, parse_kinds, preference

from .test_server import GROUNDED, OPEN, _chat, _free_port, _stream

ROOT = Path(__file__).resolve().parent.parent


def test_fleet_files_and_kinds_are_checked(tmp_path):
    assert parse_kinds("lookup,q8:2") == [("plain", 1), ("lookup", 1), ("q8", 2)]
    for bad in ("nope", "q8:0", "q8:x"):
        with pytest.raises(ValueError):
            parse_kinds(bad)
    f = tmp_path / "fleet.toml"
    f.write_text('[[endpoint]]\nkind = "lookup"\nurl = "http://127.0.0.1:1"\n')
    with pytest.raises(ValueError, match="needs a plain endpoint"):
        load_fleet(f)
    f.write_text('[[endpoint]]\nkind = "plain"\nurl = "127.0.0.1:1"\n')
    with pytest.raises(ValueError, match="url must be"):
        load_fleet(f)
    f.write_text('[[endpoint]]\nkind = "plain"\nurl = "http://a:1"\nmodel = "x"\n[[endpoint]]\nkind = "q8"\n'
                 'url = "http://b:1"\nmodel = "y"\n')
    with pytest.raises(ValueError, match="same model"):
        load_fleet(f)
    assert preference("medium", True)[0] == "lookup" and preference("low", False)[0] == "q4_0"
    assert preference("high", False) == ["lookup", "plain"]


@pytest.fixture(scope="module")
def llama_server():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_llama_server.py")], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip("no patched llama-server (scripts/build_llama_server.py failed: needs cmake and a compiler):\n"
                    + out.stderr[-800:])
    return out.stdout.strip().splitlines()[-1]


def _wait(what, ok, proc, log, timeout=300):
    deadline = time.time() + timeout
    while not ok():
        assert proc.poll() is None, f"{what} exited:\n" + Path(log).read_text()[-2000:]
        assert time.time() < deadline, f"{what} was not ready:\n" + Path(log).read_text()[-2000:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def fleet(llama_server, smol_paths, tmp_path_factory):
    import httpx

    d = tmp_path_factory.mktemp("fleet")
    toml, port = d / "fleet.toml", _free_port()
    up_log, serve_log = d / "up.log", d / "serve.log"
    with open(up_log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "specquant", "fleet", "up", "--model", "demo", "--kinds",
                               "plain:2,lookup,q8", "--ctx", "2048", "--port", str(_free_port() + 10),
                               "--llama-server", llama_server, "--out", str(toml)], stdout=out, stderr=subprocess.STDOUT)
    _wait("fleet up", toml.exists, up, up_log)
    with open(serve_log, "w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "specquant", "serve", "--fleet", str(toml), "--port", str(port)],
                                 stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("specquant serve --fleet", ready, serve, serve_log)
    yield {"url": url, "toml": toml}
    serve.terminate()
    up.send_signal(signal.SIGTERM)
    for p in (serve, up):
        p.wait(30)
    for r in load_fleet(toml):  # every replica went with the fleet
        with pytest.raises(ProcessLookupError):
            os.kill(r.pid, 0)


@pytest.fixture(scope="module")
def client(fleet):
    from openai import OpenAI

    return OpenAI(base_url=fleet["url"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_every_kind_gives_the_plain_endpoints_greedy_answer_on_the_bundled_prompts(client):
    """The patched build makes llama-server's verify passes batch-invariant on the CPU too."""
    from specquant.prompts import load_prompts

    kept = {"lookup": 0, "q8": 0}
    for p in load_prompts():
        plain = _chat(client, p["prompt"], max_tokens=32, draft="none")
        assert plain.specquant["draft"] == "plain" and plain.specquant["drafted"] == 0
        for kind in ("lookup", "q8", "auto"):
            r = _chat(client, p["prompt"], max_tokens=32, draft=kind)
            assert r.choices[0].message.content == plain.choices[0].message.content, (p["id"], kind)
            assert r.specquant["identical_by_construction"] is True and r.specquant["replica"]
            if kind in kept:
                assert r.specquant["draft"] == kind
                kept[kind] += r.specquant["accepted"]
    assert kept["lookup"] > 0 and kept["q8"] > 0  # both drafted and were verified, not idle


def test_streaming_stops_limits_and_errors_through_the_fleet(fleet, client):
    import httpx
    import openai

    whole = _chat(client, GROUNDED, max_tokens=40, draft="lookup")
    text, last, usage = _stream(client, GROUNDED, max_tokens=40, draft="lookup", stream_options={"include_usage": True})
    assert text == whole.choices[0].message.content and usage.completion_tokens == whole.usage.completion_tokens
    assert last.specquant["draft"] == "lookup" and last.timings["draft_n"] >= last.timings["draft_n_accepted"]
    r = _chat(client, OPEN, max_tokens=12, draft="none")
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    full = _chat(client, OPEN, max_tokens=40, draft="none").choices[0].message.content
    stop = " ".join(full.split()[5:7])
    r = _chat(client, OPEN, max_tokens=40, draft="q8", stop=[stop])
    assert r.choices[0].message.content == full[:full.index(stop)].rstrip(" ") or \
        r.choices[0].message.content == full[:full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    a = _chat(client, OPEN, max_tokens=16, temperature=0.8, seed=5, draft="none")
    b = _chat(client, OPEN, max_tokens=16, temperature=0.8, seed=5, draft="none")
    assert a.choices[0].message.content == b.choices[0].message.content
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="non-empty list"):
        client.chat.completions.create(model="demo", messages=[])
    with pytest.raises(openai.BadRequestError, match="no 'q4_0' endpoint"):
        _chat(client, "hi", draft="q4_0")
    with pytest.raises(openai.BadRequestError, match="context"):
        _chat(client, "word " * 3000, max_tokens=4, draft="none")
    r = httpx.post(fleet["url"] + "/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]


def _many(client, n, draft, during=None):
    """n streaming clients at once; ``during()`` runs while they stream. (results, errors)"""
    results, errors = {}, []

    def go(i):
        try:
            _, last, usage = _stream(client, OPEN if i % 2 else GROUNDED, max_tokens=16, draft=draft,
                                     stream_options={"include_usage": True})
            results[i] = (usage.completion_tokens, last.choices[0].finish_reason)
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    if during:
        during()
    for t in threads:
        t.join(300)
    assert all(k == 16 and why == "length" or why == "stop" and k < 16 for k, why in results.values()), results
    return results, errors


def test_32_streaming_clients_then_a_replica_dies_and_its_kind_still_answers(fleet, client):
    import httpx

    results, errors = _many(client, 32, "auto")
    assert not errors and len(results) == 32, errors
    plain = [r for r in load_fleet(fleet["toml"]) if r.kind == "plain"]

    def kill():
        time.sleep(0.5)
        os.kill(plain[0].pid, signal.SIGKILL)

    results, errors = _many(client, 16, "none", during=kill)
    # with -np 1 a replica streams one answer at a time: only that one can break mid-answer (an error
    # event, never a hang); the requests queued there are retried on the other replica
    assert len(errors) <= 1 and len(results) + len(errors) == 16, errors
    assert all("failed mid-answer" in e for e in errors), errors
    h = httpx.get(fleet["url"] + "/health").json()
    state = {r["url"]: r for r in h["replicas"]}
    assert state[plain[0].url]["healthy"] is False and state[plain[1].url]["healthy"] is True
    assert h["status"] == "ok"
    results, errors = _many(client, 4, "none")
    assert not errors and len(results) == 4
