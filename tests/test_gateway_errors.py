"""Bad input and failing upstreams: a clear error in the route's own wire format, right status,
never a 500 or a hang."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import anthropic
import httpx
import openai
import pytest

from .conftest import MASTER_KEY, gateway_config, serve_config, stop_process

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def clients(gateway):
    """A factory for SDK clients pointed at the gateway; all are closed after the test."""
    made = []

    def make(sdk, **kw):
        base = gateway.url + ("/v1" if sdk is openai.OpenAI else "")
        made.append(sdk(base_url=base, api_key=kw.pop("api_key", MASTER_KEY), max_retries=0, **kw))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def oa(clients):
    return lambda **kw: clients(openai.OpenAI, **kw)


@pytest.fixture
def an(clients):
    return lambda **kw: clients(anthropic.Anthropic, **kw)


def assert_openai_error(response: httpx.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_ and error["message"]
    return error


def assert_anthropic_error(response: httpx.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == type_ and body["error"]["message"]
    return body["error"]


# --- auth -------------------------------------------------------------------------------------


def test_missing_and_wrong_key(gateway, oa, an):
    with pytest.raises(openai.AuthenticationError):
        oa(api_key="sk-wrong").chat.completions.create(**HELLO)
    with pytest.raises(anthropic.AuthenticationError):
        an(api_key="sk-wrong").messages.create(max_tokens=10, **HELLO)
    response = httpx.post(gateway.url + "/v1/chat/completions", json=HELLO)
    assert_openai_error(response, 401, "authentication_error")


def test_x_api_key_header_is_accepted(gateway):
    response = httpx.post(gateway.url + "/v1/chat/completions", json=HELLO, headers={"x-api-key": MASTER_KEY})
    assert response.status_code == 200
    # An empty x-api-key (a client's unset variable) does not hide the Bearer key beside it.
    both = {"x-api-key": "", "authorization": f"Bearer {MASTER_KEY}"}
    assert httpx.post(gateway.url + "/v1/chat/completions", json=HELLO, headers=both).status_code == 200
    response = httpx.post(gateway.url + "/v1/chat/completions", json=HELLO, headers={"x-api-key": ""})
    assert "No API key provided" in assert_openai_error(response, 401, "authentication_error")["message"]


# --- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": []}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}',
            "temperature",
        ),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"}',
            "max_tokens",
        ),
        # JSON types as OpenAI takes them: no coercion of text, flags or decimals.
        *(
            (
                b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], ' + field + b"}",
                param,
            )
            for field, param in [
                (b'"max_tokens": "10"', "max_tokens"),
                (b'"max_tokens": true', "max_tokens"),
                (b'"max_tokens": 10.0', "max_tokens"),
                (b'"temperature": true', "temperature"),
                (b'"stream": "yes"', "stream"),
                (b'"stream": 1', "stream"),
                (b'"seed": "7"', "seed"),
                (b'"stream_options": {"include_usage": true}', "stream_options"),
                (b'"tool_choice": "required"', "tool_choice"),
                (
                    b'"tools": [{"type": "function", "function": {"name": "f"}}], '
                    b'"tool_choice": {"type": "function", "function": {"name": "g"}}',
                    "tool_choice",
                ),
            ]
        ),
        # Only an assistant turn (that called tools) may come without content, as in OpenAI's API.
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": null}]}', "messages.0.content"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "system"}, {"role": "user", "content": "hi"}]}',
            "messages.0.content",
        ),
    ],
)
def test_openai_bad_bodies_are_400(gateway, body, param):
    response = httpx.post(gateway.url + "/v1/chat/completions", content=body, headers=AUTH)
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}]}',  # no max_tokens
        b'{"model": "claude-haiku", "max_tokens": 5}',
        b'{"model": "claude-haiku", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "bogus"}]}]}',
    ],
)
def test_anthropic_bad_bodies_are_400(gateway, body):
    response = httpx.post(gateway.url + "/v1/messages", content=body, headers={"x-api-key": MASTER_KEY})
    assert_anthropic_error(response, 400, "invalid_request_error")


def _nested(depth: int) -> object:
    value: object = {}
    for _ in range(depth - 1):
        value = {"type": "object", "properties": {"x": value}}
    return value


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
def test_json_nested_too_deep_to_pass_on_is_400(gateway, model):
    # orjson reads 1,024 levels but writes 254: a body in between was read, then failed on its way
    # upstream (a 500). Refused up front beyond 128 levels; real requests and schemas nest far less.
    deep = {**HELLO, "model": model, "x": json.loads("[" * 300 + "]" * 300)}
    tool = {"type": "function", "function": {"name": "f", "parameters": _nested(150)}}
    for body in (
        deep,
        {**HELLO, "model": model, "tools": [tool]},
        {**HELLO, "model": model, "temperature": 0, "x": deep["x"]},
    ):
        response = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH)
        error = assert_openai_error(response, 400, "invalid_request_error")
        assert "128 levels deep" in error["message"]
    anthropic_body = {
        "model": model,
        "max_tokens": 5,
        "messages": HELLO["messages"],
        "metadata": {"x": deep["x"]},
    }
    response = httpx.post(
        gateway.url + "/v1/messages", json=anthropic_body, headers={"x-api-key": MASTER_KEY}
    )
    assert "128 levels deep" in assert_anthropic_error(response, 400, "invalid_request_error")["message"]
    # As deep as a real JSON schema may go, and then some: served.
    tool["function"]["parameters"] = _nested(60)
    response = httpx.post(
        gateway.url + "/v1/chat/completions", json={**HELLO, "model": model, "tools": [tool]}, headers=AUTH
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "arguments",
    [
        '{"a": ' + "9" * 5000 + "}",
        '{"a": "\\ud800"}',
        "[" * 5000 + "]" * 5000,
        '{"a": ' + "[" * 300 + "]" * 300 + "}",
        "[1]",
    ],
)
def test_tool_call_arguments_that_cannot_pass_to_anthropic_are_400(gateway, arguments):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    body = {
        "model": "claude-haiku",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    }
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH)
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert error["param"] == "messages.1.tool_calls.0.function.arguments"


def test_a_long_prompt_is_tokenized_off_the_event_loop(simulator, tmp_path):
    # Counting an 8 MB prompt takes the tokenizer seconds; done on the event loop, it held up every
    # other request (health checks included) that long. The context-window check still refuses it.
    gateway = serve_config(gateway_config(simulator.url, master_key=MASTER_KEY), tmp_path)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a" * 8_000_000}]}
    url = gateway.url + "/v1/chat/completions"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            big = pool.submit(httpx.post, url, json=body, headers=AUTH, timeout=60)
            slowest = 0.0
            while not big.done():
                started = time.monotonic()
                assert httpx.get(gateway.url + "/healthz", timeout=30).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.05)
            response = big.result()
    finally:
        stop_process(gateway)
    assert_openai_error(response, 400, "invalid_request_error")
    assert "context" in response.json()["error"]["message"]
    assert slowest < 1.0, f"/healthz waited {slowest:.2f} s behind the long prompt"


def test_a_body_that_stops_arriving_is_408(simulator, tmp_path):
    # A client that declares more bytes than it sends held its connection (and a task) for good.
    config = gateway_config(simulator.url, master_key=MASTER_KEY)
    config["server"]["body_timeout_s"] = 0.5
    gateway = serve_config(config, tmp_path)
    try:
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"authorization: Bearer {MASTER_KEY}\r\ncontent-length: 1000\r\n\r\n".encode()
                + b'{"model": "gpt-4o-mini", '
            )
            answer = ""
            while '"code"' not in answer and (chunk := conn.recv(65536)):
                answer += chunk.decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert '"code":"request_timeout"' in answer
        # A body sent in pieces, each in time, is read in full.
        with httpx.Client(base_url=gateway.url, headers=AUTH) as client:

            def pieces():
                for piece in (
                    b'{"model": "gpt-4o-mini", ',
                    b'"messages": [{"role": "user", ',
                    b'"content": "hi"}]}',
                ):
                    time.sleep(0.3)
                    yield piece

            assert client.post("/v1/chat/completions", content=pieces()).status_code == 200
    finally:
        stop_process(gateway)


def test_unknown_model_is_404_in_both_formats(gateway, oa, an):
    with pytest.raises(openai.NotFoundError) as e:
        oa().chat.completions.create(model="gpt-17", messages=HELLO["messages"])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        an().messages.create(model="gpt-17", max_tokens=10, messages=HELLO["messages"])


def test_oversized_body_is_413(gateway):
    huge = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_openai_error(
        httpx.post(gateway.url + "/v1/chat/completions", json=huge, headers=AUTH),
        413,
        "invalid_request_error",
    )
    response = httpx.post(gateway.url + "/v1/messages", json={**huge, "max_tokens": 5}, headers=AUTH)
    assert_anthropic_error(response, 413, "request_too_large")


def test_unknown_path_and_wrong_method(gateway):
    assert_openai_error(
        httpx.post(gateway.url + "/v1/nothing", json={}, headers=AUTH), 404, "invalid_request_error"
    )
    assert_openai_error(
        httpx.get(gateway.url + "/v1/chat/completions", headers=AUTH), 405, "invalid_request_error"
    )


def test_capability_mismatch_is_400_not_an_upstream_surprise(gateway, oa):
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        oa().chat.completions.create(
            model="text-only",
            messages=HELLO["messages"],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )


# --- failing upstreams ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_upstream_rate_limit_is_429_with_retry_after(gateway, dialect, oa):
    with pytest.raises(openai.RateLimitError) as e:
        oa().chat.completions.create(model=f"429-{dialect}", messages=HELLO["messages"])
    assert e.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("500", openai.InternalServerError, 503),
        ("503", openai.InternalServerError, 503),
        ("drop", openai.InternalServerError, 502),
        ("malformed", openai.InternalServerError, 502),
        ("truncate", openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_upstream_failures_map_to_5xx(gateway, kind, error, status, dialect, oa):
    with pytest.raises(error) as e:
        oa().chat.completions.create(model=f"{kind}-{dialect}", messages=HELLO["messages"])
    assert e.value.status_code == status
    assert e.value.body["type"] == "api_error"


def test_upstream_hang_hits_the_total_deadline(gateway, oa):
    # The gateway's execute.timeout_s is 5 in this config: a 504, well before the client gives up.
    with pytest.raises(openai.APIStatusError) as e:
        oa(timeout=20).chat.completions.create(model="hang-openai", messages=HELLO["messages"])
    assert e.value.status_code == 504


def test_unreachable_upstream_is_502(gateway, oa):
    with pytest.raises(openai.InternalServerError) as e:
        oa().chat.completions.create(model="unreachable", messages=HELLO["messages"])
    assert e.value.status_code == 502 and "connect" in e.value.message.lower()


def test_missing_provider_key_names_the_fix(gateway, oa):
    with pytest.raises(openai.InternalServerError, match="LLMRELAY_TEST_UNSET_KEY"):
        oa().chat.completions.create(model="needs-key", messages=HELLO["messages"])


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_error_before_first_byte_of_a_stream_is_a_plain_http_error(gateway, dialect, oa, an):
    with pytest.raises(openai.RateLimitError):
        oa().chat.completions.create(model=f"429-{dialect}", messages=HELLO["messages"], stream=True)
    with pytest.raises(anthropic.RateLimitError):
        an().messages.create(model=f"429-{dialect}", max_tokens=10, messages=HELLO["messages"], stream=True)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_truncated_stream_ends_in_an_explicit_error_never_silent_success(gateway, dialect, oa, an):
    stream = oa().chat.completions.create(
        model=f"truncate-{dialect}",
        messages=[{"role": "user", "content": "a reply long enough to cut short"}],
        stream=True,
    )
    with pytest.raises(openai.APIError, match="truncated"):
        for _ in stream:
            pass
    with (
        pytest.raises(anthropic.APIStatusError, match="truncated"),
        an().messages.stream(
            model=f"truncate-{dialect}",
            max_tokens=100,
            messages=[{"role": "user", "content": "a reply long enough to cut short"}],
        ) as astream,
    ):
        for _ in astream:
            pass


def test_gateway_still_healthy_after_all_that(gateway):
    assert httpx.get(gateway.url + "/healthz").json()["status"] == "ok"
    assert "Traceback" not in gateway.log()
