"""`rnnrs serve`: the OpenAI-compatible API against the official `openai` client, continuous
batching (every request's text equals generating it alone), the bad-request battery, client
disconnects, the API key (through the real CLI) and the queue limit; and the core's
`ContinuousSampler` through the binding. The servers run on 127.0.0.1 on free ports."""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

import rnnrs
from rnnrs import _rnnrs
from rnnrs.generate import DEFAULT_MODEL_DIR

REQUIRED = bool(os.environ.get("RNNRS_REQUIRED"))
HAVE_MODEL = os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors"))


def _need_server_stack():
    if not HAVE_MODEL and not REQUIRED:
        pytest.skip("the built-in model is not installed")
    for mod in ("fastapi", "uvicorn", "httpx", "openai"):
        if REQUIRED:
            __import__(mod)  # CI installs .[serve,test]: a missing one is a failure
        else:
            pytest.importorskip(mod)


@pytest.fixture(scope="module")
def gen():
    if not HAVE_MODEL and not REQUIRED:
        pytest.skip("the built-in model is not installed")
    return rnnrs.LyricGenerator.default()


@contextmanager
def serving(app):
    """Run `app` with uvicorn in a thread on 127.0.0.1:<free port>; yields the base URL."""
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def server(gen):
    _need_server_stack()
    from rnnrs.serve import create_app
    app = create_app(gen, "songci", max_batch=32, max_tokens=2000)
    with serving(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def solo(gen, prompt, max_tokens=16, temperature=1.0, top_p=1.0, seed=0, **kw):
    """What the server must return: `LyricGenerator.generate` with the same options, minus the prompt."""
    text = gen.generate(prompt, length=max_tokens, temperature=temperature, top_p=top_p, seed=seed, **kw)
    assert text.startswith(prompt)
    return text[len(prompt):]


def error_of(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in r.text
    return body["error"]


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


# ---------------------------------------------------------------- the core sampler through the binding

def test_continuous_sampler_join_leave_equals_each_alone(gen):
    core = gen.model._core
    banned = gen._banned_ids()
    opts = [dict(temperature=0.8, top_p=0.9), dict(temperature=1.3), dict(temperature=0.0),
            dict(top_k=5, repetition_penalty=1.2), dict(temperature=0.6, top_p=0.5)]
    prompts = ["明月", "春风又绿", "", "一", "夜来风雨声"]
    s = _rnnrs.ContinuousSampler(core, 4)
    jobs = []  # (join step, prefix, seed, options, length)
    for i in range(10):
        ids, _ = gen.encode_prefix(prompts[i % 5])
        jobs.append((i * 3, ids, 40 + i, dict(opts[i % 5], banned_tokens=banned), 5 + (i * 7) % 30))
    got, where, waiting = {}, {}, list(range(len(jobs)))
    cancelled = {}
    step = 0
    while waiting or len(s):
        for k in list(waiting):
            if jobs[k][0] <= step and len(s) < s.capacity:
                at, ids, seed, o, n = jobs[k]
                where[s.add(ids, seed, n, top_logprobs=2, **o)] = k
                got[k] = []
                waiting.remove(k)
        if step == 12:  # cancel one in flight: it leaves, the others are unchanged
            sid = s.ids[0]
            assert s.remove(sid) and not s.remove(sid)
            cancelled[where[sid]] = True
        for sid, token, lp, top, finished, stopped, nonfinite in s.step():
            assert not nonfinite and not stopped
            if token is not None:
                got[where[sid]].append(token)
                assert len(top) == 2 and top[0][1] >= top[1][1] and top[0][1] >= lp
        step += 1
        assert step < 5000
    for k, (at, ids, seed, o, n) in enumerate(jobs):
        alone = _rnnrs.sample(core, [ids], [seed], n, **o)[0][0].tolist()
        if k in cancelled:
            assert got[k] == alone[:len(got[k])] and len(got[k]) < n
        else:
            assert got[k] == alone, f"sequence {k}"


def test_continuous_sampler_errors(gen):
    core = gen.model._core
    with pytest.raises(ValueError, match="capacity"):
        _rnnrs.ContinuousSampler(core, 0)
    s = _rnnrs.ContinuousSampler(core, 1)
    ok = np.array([1, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="temperature"):
        s.add(ok, 0, 5, temperature=-1.0)
    with pytest.raises(ValueError, match="top_logprobs"):
        s.add(ok, 0, 5, top_logprobs=21)
    with pytest.raises(ValueError, match="prefix"):
        s.add(np.array([10**6], dtype=np.int64), 0, 5)
    s.add(ok, 0, 5)
    with pytest.raises(ValueError, match="full"):
        s.add(ok, 1, 5)
    assert len(s) == 1


# ----------------------------------------------------------------------------- the openai client

@pytest.mark.parametrize("opts", [
    dict(),
    dict(temperature=0.8, top_p=0.9),
    dict(temperature=0.0),
    dict(temperature=1.1, top_k=8, repetition_penalty=1.3),
])
def test_completion_equals_generate(client, gen, opts):
    extra = {k: opts[k] for k in ("top_k", "repetition_penalty") if k in opts}
    std = {k: v for k, v in opts.items() if k not in extra}
    r = client.completions.create(model="songci", prompt="明月", max_tokens=40, seed=11, extra_body=extra or None,
                                  **std)
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "length"
    assert r.choices[0].text == solo(gen, "明月", 40, seed=11, **opts)
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 40 and r.usage.total_tokens == 42
    assert r.object == "text_completion" and r.model == "songci" and r.id.startswith("cmpl-")


def test_default_max_tokens_is_16_and_empty_prompt(client, gen):
    r = client.completions.create(model="songci", prompt="", seed=5)
    assert r.usage.completion_tokens == 16
    assert r.choices[0].text == solo(gen, "", 16, seed=5)


def test_stream_equals_completion_and_reports_usage(client, gen):
    want = solo(gen, "春风", 120, temperature=0.9, top_p=0.95, seed=3)
    stream = client.completions.create(model="songci", prompt="春风", max_tokens=120, temperature=0.9, top_p=0.95,
                                       seed=3, stream=True, stream_options={"include_usage": True})
    pieces, usage, reasons = [], None, []
    for chunk in stream:
        if chunk.choices:
            assert chunk.usage is None
            pieces.append(chunk.choices[0].text)
            reasons.append(chunk.choices[0].finish_reason)
        else:
            usage = chunk.usage
    assert "".join(pieces) == want
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert usage is not None and usage.completion_tokens == 120 and usage.prompt_tokens == 2


def test_stream_wire_format_ends_with_done(server):
    import httpx
    with httpx.stream("POST", server + "/v1/completions", timeout=60,
                      json={"prompt": "明月", "max_tokens": 30, "seed": 1, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ")
        chunk = json.loads(e[6:])
        assert chunk["object"] == "text_completion" and "usage" not in chunk
        assert all(set(c) == {"text", "index", "logprobs", "finish_reason"} for c in chunk["choices"])


def test_n_choices_use_consecutive_seeds(client, gen):
    r = client.completions.create(model="songci", prompt="明月", max_tokens=30, n=3, seed=20, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.text for c in r.choices]
    assert texts == [solo(gen, "明月", 30, seed=20 + i) for i in range(3)]
    assert len(set(texts)) > 1
    assert r.usage.completion_tokens == 90 and r.usage.prompt_tokens == 2
    # A list of prompts: choice p * n + j uses seed + p * n + j.
    r = client.completions.create(model="songci", prompt=["明月", "春风"], max_tokens=10, n=2, seed=7)
    assert [c.text for c in r.choices] == [solo(gen, p, 10, seed=7 + 2 * k + j) for k, p in enumerate(["明月", "春风"])
                                           for j in range(2)]
    assert r.usage.prompt_tokens == 4


def test_seed_reproducibility(client):
    def text(seed):
        return client.completions.create(model="songci", prompt="秋", max_tokens=40, seed=seed).choices[0].text
    a = text(123)
    assert a == text(123)
    assert a != text(124)


def test_stop_strings_cut_the_text_and_are_not_included(client, gen):
    full = solo(gen, "明月", 100, seed=2)
    stops = ["。", "\n"]
    cut = min(i for i in (full.find(s) for s in stops) if i >= 0)
    r = client.completions.create(model="songci", prompt="明月", max_tokens=100, seed=2, stop=stops)
    assert r.choices[0].text == full[:cut] and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(model="songci", prompt="明月", max_tokens=100,
                                                                    seed=2, stop=stops, stream=True) if c.choices]
    assert "".join(pieces) == full[:cut]
    # A two-character stop string, held back while it might be starting.
    two = full[cut + 1:cut + 3] if len(full) > cut + 3 else full[:2]
    k = full.find(two)
    r = client.completions.create(model="songci", prompt="明月", max_tokens=100, seed=2, stop=two, stream=True)
    assert "".join(c.choices[0].text for c in r if c.choices) == full[:k]


def test_logprobs(client, gen):
    text, lps = gen.generate("明月", length=25, temperature=1.0, top_p=1.0, seed=9, return_logprobs=True)
    r = client.completions.create(model="songci", prompt="明月", max_tokens=25, seed=9, logprobs=3)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text == text[2:]
    assert lp.token_logprobs == pytest.approx(lps.tolist(), abs=0.0)
    assert lp.text_offset == [2 + i for i in range(25)]  # one character per token, after the prompt
    for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and max(top.values()) >= l
        if tok in top:
            assert top[tok] == l
    # Streamed: the same entries, chunk by chunk.
    got = {"tokens": [], "token_logprobs": []}
    for c in client.completions.create(model="songci", prompt="明月", max_tokens=25, seed=9, logprobs=3, stream=True):
        if c.choices and c.choices[0].logprobs:
            got["tokens"] += c.choices[0].logprobs.tokens
            got["token_logprobs"] += c.choices[0].logprobs.token_logprobs
    assert got["tokens"] == lp.tokens and got["token_logprobs"] == lp.token_logprobs


def test_models_health_and_page(server, gen):
    import httpx
    m = httpx.get(server + "/v1/models").json()
    assert m["object"] == "list" and [d["id"] for d in m["data"]] == ["songci"]
    assert m["data"][0]["config"] == gen.model.config and m["data"][0]["max_tokens"] == 2000
    assert httpx.get(server + "/v1/models/songci").json()["id"] == "songci"
    error_of(httpx.get(server + "/v1/models/gpt-4"), 404)
    assert httpx.get(server + "/health").json()["status"] == "ok"
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="generate"' in page.text and 'id="stop"' in page.text and 'id="prefix"' in page.text
    assert "<script src" not in page.text and "<link" not in page.text and "//cdn" not in page.text.lower()


# ------------------------------------------------------------------------------- concurrency

def test_16_concurrent_streams_each_equal_their_solo_generation(server, gen):
    import httpx
    before = httpx.get(server + "/metrics").text
    jobs = [dict(prompt=["明月", "春风", "", "江南好"][i % 4], max_tokens=150 + 10 * i, seed=100 + i,
                 temperature=[0.7, 1.0, 1.2, 0.5][i % 4], top_p=[0.9, 1.0, 0.8, 0.95][(i // 4) % 4]) for i in range(16)]

    async def one(http, job, start):
        await start.wait()
        parts = []
        async with http.stream("POST", server + "/v1/completions", json=dict(job, stream=True)) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    parts += [c["text"] for c in json.loads(line[6:])["choices"]]
        return "".join(parts)

    async def health(http, start):
        await start.wait()
        worst = 0.0
        for _ in range(10):
            t = time.perf_counter()
            assert (await http.get(server + "/health")).status_code == 200
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0.05)
        return worst

    async def main():
        start = asyncio.Event()
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=40)) as http:
            tasks = [asyncio.create_task(one(http, j, start)) for j in jobs]
            probe = asyncio.create_task(health(http, start))
            await asyncio.sleep(0.1)
            start.set()
            return await asyncio.gather(*tasks), await probe

    texts, worst = asyncio.run(main())
    for job, text in zip(jobs, texts):
        want = solo(gen, job["prompt"], job["max_tokens"], job["temperature"], job["top_p"], job["seed"])
        assert text == want, job
    # The event loop answered while the sampler ran (it never waits for a step).
    assert worst < 2.0, worst
    after = httpx.get(server + "/metrics").text
    def wide_steps(text):  # steps of more than 8 sequences
        return metric(text, 'rnnrs_batch_sequences_bucket{le="+Inf"}') - metric(text, 'rnnrs_batch_sequences_bucket{le="8"}')
    assert wide_steps(after) - wide_steps(before) > 0, "no step batched more than 8 of the 16 streams"
    assert metric(after, "rnnrs_completion_tokens_total") - metric(before, "rnnrs_completion_tokens_total") >= \
        sum(j["max_tokens"] for j in jobs)


# ------------------------------------------------------------------------------- bad requests

BAD = [
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": [1, 2, 3]}, 400, "prompt"),
    ({"prompt": ["a", 3]}, 400, "prompt"),
    ({"prompt": "明月", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "明月", "max_tokens": "5"}, 400, "max_tokens"),
    ({"prompt": "明月", "max_tokens": 1.5}, 400, "max_tokens"),
    ({"prompt": "明月", "max_tokens": 2001}, 400, "max_tokens"),
    ({"prompt": "明月", "temperature": -0.1}, 400, "temperature"),
    ({"prompt": "明月", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "明月", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "明月", "temperature": True}, 400, "temperature"),
    ({"prompt": "明月", "top_p": 0}, 400, "top_p"),
    ({"prompt": "明月", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "明月", "n": 0}, 400, "n"),
    ({"prompt": "明月", "n": 129}, 400, "n"),
    ({"prompt": ["a"] * 70, "n": 2}, 400, "n"),
    ({"prompt": "明月", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": "明月", "stop": [1]}, 400, "stop"),
    ({"prompt": "明月", "stop": ""}, 400, "stop"),
    ({"prompt": "明月", "seed": -1}, 400, "seed"),
    ({"prompt": "明月", "seed": "x"}, 400, "seed"),
    ({"prompt": "明月", "seed": 2**64}, 400, "seed"),
    ({"prompt": "明月", "stream": "yes"}, 400, "stream"),
    ({"prompt": "明月", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"prompt": "明月", "stream": True, "stream_options": {"include_usage": "x"}}, 400, "include_usage"),
    ({"prompt": "明月", "stream": True, "stream_options": {"other": 1}}, 400, "stream_options"),
    ({"prompt": "明月", "logprobs": 6}, 400, "logprobs"),
    ({"prompt": "明月", "logprobs": -1}, 400, "logprobs"),
    ({"prompt": "明月", "echo": True}, 400, "echo"),
    ({"prompt": "明月", "best_of": 3}, 400, "best_of"),
    ({"prompt": "明月", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"prompt": "明月", "frequency_penalty": 1}, 400, "frequency_penalty"),
    ({"prompt": "明月", "logit_bias": {"1": 5}}, 400, "logit_bias"),
    ({"prompt": "明月", "user": 5}, 400, "user"),
    ({"prompt": "明月", "suffix": "x"}, 400, "suffix"),
    ({"prompt": "明月", "top_k": 0}, 400, "top_k"),
    ({"prompt": "明月", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"prompt": "明月", "ban": ["not a token"]}, 400, "ban"),
    ({"prompt": "明月", "ban": "明"}, 200, None),
    ({"prompt": "明月", "max_tokens": 0}, 200, None),
    ({"prompt": "明月", "frobnicate": 1}, 400, "frobnicate"),
    ({"prompt": "明" * 2001, "max_tokens": 16}, 400, "prompt"),
    ({"prompt": ["明月", "明" * 2001]}, 400, "prompt"),
    ({"prompt": "明" * 2000, "max_tokens": 2000, "seed": 1}, 200, None),
    ({"prompt": "明月", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "明月", "model": 3}, 400, "model"),
    (["not", "an", "object"], 400, None),
    # Neutral values of OpenAI's fields are accepted.
    ({"prompt": "明月", "echo": False, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
      "logit_bias": {}, "user": "u-1", "suffix": None, "model": "songci", "logprobs": None, "stop": None}, 200, None),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[f"{i}-{b if isinstance(b, list) else sorted(b)[-1]}"
                                                         for i, (b, _, _) in enumerate(BAD)])
def test_bad_fields(server, body, status, param):
    import httpx
    r = httpx.post(server + "/v1/completions", json=body, timeout=60)
    if status == 200:
        assert r.status_code == 200, r.text
        want = body.get("max_tokens", 16)
        assert r.json()["usage"]["completion_tokens"] == want and r.json()["choices"][0]["finish_reason"] == "length"
        return
    e = error_of(r, status)
    if param is not None:
        assert e["param"] == param or param in e["message"], e


def test_malformed_bodies_routes_and_sizes(server, client):
    import httpx
    e = error_of(httpx.post(server + "/v1/completions", content=b'{"prompt": "a",', timeout=30), 400)
    assert e["code"] == "invalid_json"
    error_of(httpx.post(server + "/v1/completions", content="明月".encode("utf-16"), timeout=30), 400)
    e = error_of(httpx.post(server + "/v1/completions", content=b"{" + b" " * (2 << 20) + b"}", timeout=30), 413)
    assert e["code"] == "request_too_large"

    def chunks():  # no Content-Length: the size is counted while reading
        for _ in range(40):
            yield b" " * 65536
    error_of(httpx.post(server + "/v1/completions", content=chunks(), timeout=30), 413)
    error_of(httpx.get(server + "/v1/nothing"), 404)
    error_of(httpx.get(server + "/v1/completions"), 405)
    error_of(httpx.put(server + "/health"), 405)
    # Still serving.
    assert client.completions.create(model="songci", prompt="明月", max_tokens=5, seed=0).usage.completion_tokens == 5


def test_client_disconnect_mid_stream_frees_the_slot(server, client):
    import httpx
    before = metric(httpx.get(server + "/metrics").text, "rnnrs_completion_tokens_total")
    n = 16  # 16 × 2000 tokens: seconds of work, cut short by the disconnect
    with httpx.stream("POST", server + "/v1/completions", timeout=60,
                      json={"prompt": "明月", "max_tokens": 2000, "n": n, "stream": True, "seed": 1}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # (kept: dropping the iterator would close the response)
        events = 0
        while events < 3:
            events += next(lines).startswith("data: ")
        assert httpx.get(server + "/health").json()["active"] >= 1
    # Closed before the end: the sequences leave the sampler.
    deadline = time.monotonic() + 10
    while httpx.get(server + "/health").json()["active"] != 0:
        assert time.monotonic() < deadline, "the disconnected stream kept its slots"
        time.sleep(0.05)
    after = metric(httpx.get(server + "/metrics").text, "rnnrs_completion_tokens_total")
    assert after - before < n * 2000, "the sequences ran to the end"
    assert client.completions.create(model="songci", prompt="春", max_tokens=5, seed=0).usage.completion_tokens == 5
    # A non-streaming request whose client gives up is cancelled too.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server + "/v1/completions", json={"prompt": "明月", "max_tokens": 2000, "n": n}, timeout=0.3)
    deadline = time.monotonic() + 10
    while httpx.get(server + "/health").json()["active"] != 0:
        assert time.monotonic() < deadline, "the abandoned request kept its slots"
        time.sleep(0.05)


def test_queue_full_is_503(gen):
    _need_server_stack()
    import httpx
    from rnnrs.serve import create_app
    app = create_app(gen, "songci", max_batch=1, max_queue=1, max_tokens=20000)
    with serving(app) as base:
        with httpx.stream("POST", base + "/v1/completions", timeout=60,
                          json={"prompt": "明月", "max_tokens": 20000, "stream": True}) as first:
            first_lines = first.iter_lines()  # (kept: dropping the iterator would close the response)
            next(first_lines)  # running: it holds the only slot
            with httpx.stream("POST", base + "/v1/completions", timeout=60,
                              json={"prompt": "春", "max_tokens": 20000, "stream": True}) as second:
                assert second.status_code == 200  # waiting in the queue
                assert httpx.get(base + "/health").json()["queued"] == 1
                r = httpx.post(base + "/v1/completions", json={"prompt": "秋"}, timeout=30)
                e = error_of(r, 503)
                assert e["code"] == "queue_full" and r.headers.get("retry-after") == "1"
                assert 'rnnrs_queue_length 1' in httpx.get(base + "/metrics").text
        deadline = time.monotonic() + 10
        while httpx.get(base + "/health").json() != {"status": "ok", "model": "songci", "active": 0, "queued": 0}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.post(base + "/v1/completions", json={"prompt": "秋", "max_tokens": 3}).status_code == 200


# --------------------------------------------------------------------------- the command itself

def test_cli_serve_with_api_key(tmp_path):
    _need_server_stack()
    import httpx
    from openai import AuthenticationError, OpenAI
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RNNRS_API_KEY="")
    proc = subprocess.Popen([sys.executable, "-m", "rnnrs", "serve", "--port", str(port), "--api-key", "sekret",
                             "--max-batch", "4"], stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rnnrs serve did not start"
            time.sleep(0.1)
        e = error_of(httpx.get(base + "/v1/models"), 401)
        assert e["code"] == "invalid_api_key"
        error_of(httpx.get(base + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        error_of(httpx.post(base + "/v1/completions", json={"prompt": "a"}), 401)
        error_of(httpx.get(base + "/metrics"), 401)
        assert httpx.get(base + "/").status_code == 200  # the page itself is public (it asks for the key)
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).completions.create(model="songci", prompt="a")
        ok = OpenAI(base_url=base + "/v1", api_key="sekret", max_retries=0)
        assert ok.completions.create(model="songci", prompt="明月", max_tokens=4).usage.completion_tokens == 4
        assert "rnnrs_requests_total" in httpx.get(base + "/metrics", headers={"Authorization": "Bearer sekret"}).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "rnnrs serve: songci on http://127.0.0.1:" in proc.stderr.read()


def test_cli_serve_errors_and_lazy_imports():
    code = ("import sys, rnnrs, rnnrs.serve, rnnrs.serve.engine, rnnrs.serve.api, rnnrs.cli; "
            "assert not any(m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') for m in sys.modules), "
            "sorted(m for m in sys.modules if 'fastapi' in m or 'uvicorn' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)
    r = subprocess.run([sys.executable, "-m", "rnnrs", "serve", "--model", "/nonexistent/model", "--port", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("rnnrs serve: error: --model /nonexistent/model"), r.stderr
    r = subprocess.run([sys.executable, "-m", "rnnrs", "serve", "--max-batch", "0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--max-batch" in r.stderr
    # Without FastAPI: one line saying what to install.
    code = "import sys; sys.modules['fastapi'] = None; from rnnrs.cli import main; sys.exit(main(['serve']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'rnnrs[serve]'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_engine_survives_a_failing_step(gen):
    """A sampler step that raises fails the running requests with a message; the next ones are served."""
    from rnnrs.serve.engine import Engine, Sequence

    class Flaky:
        def __init__(self, inner):
            self.inner, self.fail = inner, True

        def step(self, steps=1):
            if self.fail:
                self.fail = False
                raise RuntimeError("boom")
            return self.inner.step(steps)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    eng = Engine(gen.model, max_batch=4)
    eng.sampler = Flaky(eng.sampler)
    ids, _ = gen.encode_prefix("明月")

    async def run():
        loop = asyncio.get_running_loop()
        out = []
        for k in range(2):
            q = asyncio.Queue()
            eng.submit([Sequence(0, ids, 3, dict(length=5, banned_tokens=gen._banned_ids()), 0, loop, q)])
            items = []
            while not items or not items[-1][4]:
                items.append(await asyncio.wait_for(q.get(), 30))
            out.append(items)
        return out

    try:
        failed, ok = asyncio.run(run())
    finally:
        eng.close()
    assert failed[-1][1] is None and "boom" in failed[-1][2]
    assert [i[1] for i in ok] == \
        _rnnrs.sample(gen.model._core, [ids], [3], 5, banned_tokens=gen._banned_ids())[0][0].tolist()
