"""``specquant serve``: a real server process on the demo model, spoken to over real HTTP by the
OpenAI Python client (and by raw requests for what that client refuses to send)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from specquant.server import APIError, StopText, parse_request

pytestmark = pytest.mark.smollm

GROUNDED = ("Rewrite this sentence in the past tense, keeping every other word: The committee reviews the "
            "budget every spring, and the members discuss the new projects before they vote on them.")
OPEN = "Write a long story about a lighthouse keeper and a storm."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smol_paths, tmp_path_factory):
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "specquant", "serve", "--model", "demo", "--ctx", "1024",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "the server never became ready: " + log.read_text()[-2000:]
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client, prompt, **kw):
    kw.setdefault("temperature", 0)
    extra = {k: kw.pop(k) for k in ("draft", "draft_len") if k in kw}
    return client.chat.completions.create(model="demo", messages=[{"role": "user", "content": prompt}],
                                          extra_body=extra or None, **kw)


def _stream(client, prompt, **kw):
    """(text, the last chunk with choices, the usage chunk or None)"""
    kw.setdefault("temperature", 0)
    extra = {k: kw.pop(k) for k in ("draft", "draft_len") if k in kw}
    text, last, usage = [], None, None
    for chunk in client.chat.completions.create(model="demo", messages=[{"role": "user", "content": prompt}],
                                                stream=True, extra_body=extra or None, **kw):
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            last = chunk
        if chunk.usage is not None:
            usage = chunk.usage
    return "".join(text), last, usage


# --- pure parts -----------------------------------------------------------------------------
def test_stop_text_holds_back_only_a_possible_stop():
    cut = StopText(["END", "\n\n"])
    assert cut.feed("Hello E") == "Hello " and not cut.hit  # "E" may begin END
    assert cut.feed("ND of it") == "" and cut.hit
    cut = StopText(["END"])
    assert cut.feed("EN") == "" and cut.feed("ough") == "ENough" and cut.flush() == ""
    cut = StopText(["xyz"])
    assert cut.feed("ab x") == "ab " and cut.flush() == "x"
    assert StopText([]).feed("anything") == "anything"


def test_requests_are_checked_before_anything_runs():
    ok = parse_request({"model": "demo", "messages": [{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "Hi"},
                                                      {"role": "assistant", "content": "Hello!"},
                                                      {"role": "user", "content": [{"type": "text", "text": "Why?"}]}],
                        "stop": "\n", "seed": 7, "draft": "Q8_0", "draft_len": 3}, "chat")
    assert (ok.system, ok.prompt, ok.stop, ok.seed, ok.draft, ok.draft_len) == ("Be brief.", "Why?", ["\n"], 7, "q8_0", "3")
    assert ok.history == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    bad = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "last message"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text content"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n must be"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop"),
        ({"messages": [{"role": "user", "content": "x"}], "draft": "/etc/passwd"}, "unknown draft"),
        ({"messages": [{"role": "user", "content": "x"}], "draft_len": 0}, "draft_len"),
        ([1, 2], "JSON object"),
    ]
    for body, words in bad:
        with pytest.raises(APIError) as e:
            parse_request(body, "chat")
        assert e.value.status == 400 and words in e.value.message, (body, e.value.message)
    with pytest.raises(APIError, match="prompt must be a string"):
        parse_request({"prompt": 3}, "text")


# --- the served endpoint --------------------------------------------------------------------
def test_models_health_and_metrics(server, client):
    import httpx

    assert [m.id for m in client.models.list().data] == ["demo"]
    h = httpx.get(server + "/health").json()
    assert h["status"] == "ok" and h["executor"] == "in-process"
    _chat(client, "Say hello.", max_tokens=4)
    text = httpx.get(server + "/metrics").text
    for name in ("specquant_requests_total{endpoint=\"chat\",status=\"200\"}", "specquant_completion_tokens_total",
                 "specquant_drafted_tokens_total", "specquant_route_total{draft=", "specquant_request_seconds_bucket",
                 "specquant_requests_in_flight 0"):
        assert name in text, name


def test_greedy_answers_are_identical_whatever_drafts(client):
    for prompt in (GROUNDED, "What is the capital of France?"):
        plain = _chat(client, prompt, max_tokens=48, draft="none")
        assert plain.specquant["drafted"] == 0 and plain.specquant["draft"] == "none"
        for draft, k in (("lookup", "auto"), ("lookup", 4), ("q8", 3), ("q4_0", "auto"), ("auto", "auto")):
            r = _chat(client, prompt, max_tokens=48, draft=draft, draft_len=k)
            assert r.choices[0].message.content == plain.choices[0].message.content, (prompt, draft, k)
            assert r.usage.completion_tokens == plain.usage.completion_tokens
            sq = r.specquant
            assert sq["identical_by_construction"] is True and sq["tier"] in ("low", "medium", "high")
            assert sq["reason"] and sq["tokens_per_s"] > 0 and 0 <= sq["accepted"] <= sq["drafted"]
            assert r.timings["draft_n"] == sq["drafted"] and r.timings["draft_n_accepted"] == sq["accepted"]
    copied = _chat(client, GROUNDED, max_tokens=48, draft="lookup", draft_len=4)
    assert copied.specquant["accepted"] > 0  # the rewrite copies the prompt: lookup's drafts were kept


def test_streaming_gives_the_same_text_and_ends_with_statistics(client):
    whole = _chat(client, GROUNDED, max_tokens=40, draft="lookup")
    text, last, usage = _stream(client, GROUNDED, max_tokens=40, draft="lookup",
                                stream_options={"include_usage": True})
    assert text == whole.choices[0].message.content
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    sq = last.specquant  # what was drafted may differ: the controller learns from every run
    assert sq["draft"] == "lookup" and 0 <= sq["accepted"] <= sq["drafted"] and sq["tokens_per_s"] > 0
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_text_completions_stream_and_not(client):
    r = client.completions.create(model="demo", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text and r.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="demo", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_max_tokens_and_stop_sequences(client):
    r = _chat(client, OPEN, max_tokens=12)
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    full = _chat(client, OPEN, max_tokens=40).choices[0].message.content
    words = full.split()
    stop = " ".join(words[5:7])  # two words from the middle
    cut = full[:full.index(stop)]
    for streamed in (False, True):
        if streamed:
            text, last, _ = _stream(client, OPEN, max_tokens=40, stop=[stop, "@@never@@"])
            reason = last.choices[0].finish_reason
        else:
            r = _chat(client, OPEN, max_tokens=40, stop=stop)
            text, reason = r.choices[0].message.content, r.choices[0].finish_reason
            assert r.usage.completion_tokens < 40
        assert (text, reason) == (cut, "stop"), streamed


def test_sampling_with_a_seed_repeats(client):
    a = _chat(client, OPEN, max_tokens=24, temperature=0.9, seed=11, draft="lookup")
    b = _chat(client, OPEN, max_tokens=24, temperature=0.9, seed=11, draft="lookup")
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.specquant["identical_by_construction"] is False and "distribution" in a.specquant["note"]


def test_bad_requests_get_openai_errors(server, client):
    import httpx
    import openai

    r = httpx.post(server + "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="non-empty list"):
        client.chat.completions.create(model="demo", messages=[])
    with pytest.raises(openai.NotFoundError, match="does not exist") as e:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="longer than the model's context") as e:
        _chat(client, "word " * 3000, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="unknown draft"):
        _chat(client, "hi", draft="no-such-draft")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        _chat(client, "hi", temperature=-1)
    for stream in (False, True):  # the same error, before a stream starts, comes back as a status
        r = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}],
                                                              "stream": stream})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert _chat(client, "Say hello.", max_tokens=4).choices[0].message.content  # and the server still answers


def test_concurrent_streams_all_complete_and_a_dropped_client_frees_the_server(server, client):
    import httpx

    # a client that goes away mid-stream: its run ends, the next requests are not held up
    with httpx.stream("POST", server + "/v1/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": OPEN}], "max_tokens": 400, "stream": True}) as r:
        next(r.iter_lines())
    results, errors = {}, []

    def go(i):
        try:
            text, last, usage = _stream(client, OPEN if i % 2 else GROUNDED, max_tokens=16, draft="auto",
                                        stream_options={"include_usage": True})
            results[i] = (usage.completion_tokens, last.choices[0].finish_reason)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t0 = time.time()
    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors and len(results) == 8, errors
    assert all(n == 16 and why == "length" or why == "stop" and n < 16 for n, why in results.values()), results
    assert time.time() - t0 < 120
    m = httpx.get(server + "/metrics").text
    assert "specquant_requests_in_flight 0" in m, m
