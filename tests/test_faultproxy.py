"""The fault-injecting OpenAI-compatible proxy (tools/faultproxy.py), driven by the official SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai  # noqa: E402 - .ci/run installs openai and aiohttp: missing is a failure, not a skip
import pytest

import faultproxy as fp  # tools/faultproxy.py (pytest puts tools/ on sys.path)

MODULE = Path(__file__).resolve().parents[1] / "tools" / "faultproxy.py"

MESSAGES = [{"role": "system", "content": "Answer with a letter."},
            {"role": "user", "content": "Which is right? A. 1 B. 2 C. 3 D. 4"}]


def _client(proxy, timeout: float = 5.0, api_key: str = "sk-test-secret"):
    return openai.OpenAI(base_url=proxy.base_url, api_key=api_key, max_retries=0, timeout=timeout)


def _chat(client, **kw):
    return client.chat.completions.create(model="m", messages=MESSAGES, **kw)


def _http(url: str, data: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def mock_proxy():
    with fp.ProxyThread(None, stall_s=10.0) as proxy:
        yield proxy


def test_mock_chat_and_completion_parse(mock_proxy):
    client = _client(mock_proxy)
    r = _chat(client)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "m"
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "stop"
    text = r.choices[0].message.content
    assert text == fp.mock_answer({"messages": MESSAGES}) and text[:14] == "The answer is " and text[14] in "ABCD"
    assert r.usage.prompt_tokens == -(-sum(len(m["content"]) for m in MESSAGES) // 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > r.usage.prompt_tokens
    assert _chat(client).choices[0].message.content == text  # deterministic

    c = client.completions.create(model="m", prompt="Question: 2+2=?\nAnswer:", max_tokens=2)
    assert c.object == "text_completion" and c.choices[0].finish_reason == "length"
    assert c.choices[0].text == fp.mock_answer({"prompt": "Question: 2+2=?\nAnswer:"})[:8]
    assert [m.id for m in client.models.list()] == ["mock-model"]
    assert mock_proxy.stats.received == mock_proxy.stats.forwarded == 4
    assert mock_proxy.stats.last_auth_present is True


def test_url_is_loopback_and_stream_is_rejected(mock_proxy):
    assert mock_proxy.url.startswith("http://127.0.0.1:") and mock_proxy.port > 0
    with pytest.raises(openai.BadRequestError, match="stream"):
        _chat(_client(mock_proxy), stream=True)
    assert mock_proxy.stats.forwarded == 0 and mock_proxy.stats.rejected_stream == 1


@pytest.mark.parametrize("kind", fp.FAULT_KINDS)
def test_each_fault_kind(mock_proxy, kind):
    mock_proxy.configure(fault_rate=1.0, faults=[kind], retry_after=3)
    client = _client(mock_proxy, timeout=0.5)
    t0 = time.monotonic()
    if kind == "429":
        with pytest.raises(openai.RateLimitError) as err:
            _chat(client)
        assert err.value.status_code == 429 and err.value.response.headers["retry-after"] == "3"
    elif kind == "500":
        with pytest.raises(openai.InternalServerError) as err:
            _chat(client)
        assert err.value.status_code == 500
    elif kind == "stall":
        with pytest.raises(openai.APITimeoutError):
            _chat(client)
    elif kind == "malformed":
        # The SDK does not wrap a body that fails to parse: the json error escapes as is.
        with pytest.raises(json.JSONDecodeError):
            _chat(client)
    elif kind == "empty":
        r = _chat(client)
        assert r.choices == [] and r.usage.total_tokens > 0
    elif kind == "drop":
        with pytest.raises(openai.APIConnectionError) as err:
            _chat(client)
        assert not isinstance(err.value, openai.APITimeoutError)
    assert time.monotonic() - t0 < 3
    stats = mock_proxy.stats
    assert stats.faults == {k: int(k == kind) for k in fp.FAULT_KINDS}
    assert stats.received == 1 and stats.forwarded == 0 and stats.accepted == 1

    mock_proxy.configure(fault_rate=0.0)  # the proxy still serves normally afterwards
    assert _chat(client).choices[0].message.content.startswith("The answer is")


def test_stall_answers_after_stall_s(mock_proxy):
    mock_proxy.configure(fault_rate=1.0, faults=["stall"], stall_s=0.3)
    t0 = time.monotonic()
    r = _chat(_client(mock_proxy, timeout=5))
    assert 0.3 <= time.monotonic() - t0 < 3 and r.choices[0].message.content.startswith("The answer is")
    assert mock_proxy.stats.faults["stall"] == 1 and mock_proxy.stats.forwarded == 1


def test_fault_rate_is_seeded_and_counted():
    def run(seed):
        with fp.ProxyThread(None, fault_rate=0.5, faults=["500", "empty"], seed=seed) as proxy:
            client = _client(proxy)
            outcomes = []
            for _ in range(30):
                try:
                    outcomes.append("empty" if _chat(client).choices == [] else "ok")
                except openai.InternalServerError:
                    outcomes.append("500")
            return outcomes, proxy.stats

    outcomes, stats = run(7)
    assert run(7)[0] == outcomes and run(8)[0] != outcomes
    assert stats.received == 30 and stats.forwarded == outcomes.count("ok")
    assert stats.faults["500"] == outcomes.count("500") > 0 and stats.faults["empty"] == outcomes.count("empty") > 0
    assert sum(stats.faults.values()) + stats.forwarded == 30


def test_rpm_limiter_sliding_window():
    window = 2.0  # wide enough that five quick requests fit in it on a loaded machine
    with fp.ProxyThread(None, rpm=5, window_s=window) as proxy:
        client = _client(proxy)
        for _ in range(5):
            _chat(client)
        with pytest.raises(openai.RateLimitError) as err:
            _chat(client)
        headers = err.value.response.headers
        assert 1 <= int(headers["retry-after"]) <= 2 and headers["x-faultproxy-limit"] == "rpm"
        stats = proxy.stats
        assert (stats.received, stats.forwarded, stats.rate_limited_rpm, stats.accepted) == (6, 5, 1, 5)
        assert stats.max_in_window(window) == 5
        time.sleep(max(0.0, stats.accepted_times[0] + window + 0.05 - time.monotonic()))
        _chat(client)  # the first slot has freed
        stats = proxy.stats
        assert stats.accepted == 6 and stats.rate_limited == 1 and stats.max_in_window(window) <= 5


def test_tpm_limiter():
    # each request: ceil(len(prompt) / 4) = 10 prompt tokens + 30 max_tokens = 40 estimated tokens
    with fp.ProxyThread(None, tpm=100, window_s=60.0) as proxy:
        client = _client(proxy)
        for _ in range(2):
            client.completions.create(model="m", prompt="x" * 40, max_tokens=30)
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model="m", prompt="x" * 40, max_tokens=30)
        assert err.value.response.headers["x-faultproxy-limit"] == "tpm"
        assert 59 <= int(err.value.response.headers["retry-after"]) <= 60
        with pytest.raises(openai.RateLimitError, match="too large"):
            client.completions.create(model="m", prompt="x", max_tokens=200)
        assert proxy.stats.rate_limited_tpm == 2 and proxy.stats.forwarded == 2


def test_stats_and_config_endpoints(mock_proxy):
    _chat(_client(mock_proxy))
    status, stats = _http(mock_proxy.url + "/_proxy/stats")
    assert status == 200 and stats["received"] == 1 and stats["forwarded"] == 1 and len(stats["accepted_times"]) == 1
    assert stats["faults"] == dict.fromkeys(fp.FAULT_KINDS, 0) and stats["last_auth_present"] is True

    status, config = _http(mock_proxy.url + "/_proxy/config", {"fault_rate": 1.0, "faults": ["500"]})
    assert status == 200 and config["fault_rate"] == 1.0 and config["faults"] == ["500"]
    assert mock_proxy.proxy.fault_rate == 1.0
    with pytest.raises(openai.InternalServerError):
        _chat(_client(mock_proxy))
    status, err = _http(mock_proxy.url + "/_proxy/config", {"faults": ["nope"]})
    assert status == 400 and "nope" in err["error"]["message"]
    status, err = _http(mock_proxy.url + "/_proxy/config", {"fault_rate": 2})
    assert status == 400 and mock_proxy.proxy.fault_rate == 1.0

    assert _http(mock_proxy.url + "/_proxy/reset", {})[0] == 200
    assert _http(mock_proxy.url + "/_proxy/stats")[1]["received"] == 0
    _http(mock_proxy.url + "/_proxy/config", {"fault_rate": 0})
    _chat(_client(mock_proxy))
    mock_proxy.reset_stats()
    assert mock_proxy.stats == fp.ProxyStats()


def test_constructor_validation():
    with pytest.raises(ValueError, match="fault_rate"):
        fp.FaultProxy(None, fault_rate=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        fp.FaultProxy(None, faults=["timeout"])
    with pytest.raises(ValueError, match="rpm"):
        fp.FaultProxy(None, rpm=0)


def test_max_in_window():
    stats = fp.ProxyStats(accepted_times=[0.0, 10.0, 59.0, 60.0, 61.0, 130.0])
    assert stats.max_in_window(60.0) == 4  # 10, 59, 60, 61
    assert stats.max_in_window(1.0) == 1 and fp.ProxyStats().max_in_window() == 0
    assert stats.achieved_rpm() == pytest.approx(5 * 60 / 130)


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_forwarding_to_an_upstream(suffix):
    with fp.ProxyThread(None) as upstream, fp.ProxyThread(upstream.url + suffix) as front:
        client = _client(front)
        r = _chat(client, max_tokens=16)
        assert r.choices[0].message.content == fp.mock_answer({"messages": MESSAGES})
        assert r.usage.prompt_tokens == -(-sum(len(m["content"]) for m in MESSAGES) // 4)
        assert [m.id for m in client.models.list()] == ["mock-model"]
        assert upstream.stats.last_auth_present is True and upstream.stats.received == 2
        assert front.stats.forwarded == 2

        # no Authorization header reaches the upstream when the client sends none
        status, body = _http(front.base_url + "/completions", {"model": "m", "prompt": "hi"})
        assert status == 200 and body["choices"][0]["text"] == fp.mock_answer({"prompt": "hi"})
        assert upstream.stats.last_auth_present is False

        # upstream errors come back as they are
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="m", input="x")

        # a fault in the front proxy never reaches the upstream
        front.configure(fault_rate=1.0, faults=["500"])
        before = upstream.stats.received
        with pytest.raises(openai.InternalServerError):
            _chat(client)
        assert upstream.stats.received == before


def test_unreachable_upstream_is_502():
    dead = fp.ProxyThread(None)
    dead.start()
    url = dead.url
    dead.stop()
    with fp.ProxyThread(url, upstream_timeout=3) as front:
        with pytest.raises(openai.InternalServerError) as err:
            _chat(_client(front))
        assert err.value.status_code == 502 and front.stats.upstream_errors == 1


def test_async_api_and_async_sdk():
    async def main():
        async with fp.FaultProxy(None, faults=["malformed"], fault_rate=1.0) as proxy:
            client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0, timeout=5)
            with pytest.raises(json.JSONDecodeError):
                await client.chat.completions.create(model="m", messages=MESSAGES)
            proxy.fault_rate = 0.0
            rs = await asyncio.gather(*(client.chat.completions.create(model="m", messages=MESSAGES)
                                        for _ in range(5)))
            assert {r.choices[0].message.content for r in rs} == {fp.mock_answer({"messages": MESSAGES})}
            await client.close()
            return proxy.stats

    stats = asyncio.run(main())
    assert stats.received == 6 and stats.forwarded == 5 and stats.faults["malformed"] == 1


def test_cli_prints_url_first():
    cmd = [sys.executable, str(MODULE)]  # the documented command: python tools/faultproxy.py
    proc = subprocess.Popen([*cmd, "--mock", "--port", "0", "--rpm", "100", "--faults", "500,drop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        status, config = _http(url + "/_proxy/config")
        assert status == 200 and config["rpm"] == 100 and config["faults"] == ["500", "drop"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=5)
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()

    bad = subprocess.run([*cmd, "--mock", "--faults", "timeout"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown fault" in bad.stderr
