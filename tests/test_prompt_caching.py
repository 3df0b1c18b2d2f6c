"""The providers' prompt caching: where breakpoints go, how the simulator reports caching, and the
exact dollars a client is charged for cache writes and reads (official SDKs -> gateway -> simulator).
"""

from __future__ import annotations

import copy
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from llmrelay.catalog import Catalog
from llmrelay.config import Settings
from llmrelay.errors import ConfigError
from llmrelay.providers import anthropic_format as af
from llmrelay.providers.openai_format import parse_request
from llmrelay.simulator.caching import PromptCache

from .conftest import recorded, serve_config, stop_process

LONG = "The quick brown fox jumps over the lazy dog near the river bank. " * 120  # ~1600 tokens
EPHEMERAL = {"type": "ephemeral"}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def _wire(
    messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None, model="claude-sonnet-4-5"
):
    body: dict[str, Any] = {"model": "m", "messages": messages}
    if tools:
        body["tools"] = tools
    return af.request_to_wire(parse_request(body), model, stream=False)


def _marks(body: dict[str, Any]) -> list[str]:
    """Where the breakpoints are: "tool:<name>", "system:<i>" or "message:<i>.<j>"."""
    out = [f"tool:{t['name']}" for t in body.get("tools", ()) if "cache_control" in t]
    system = body.get("system")
    out += [
        f"system:{j}"
        for j, b in enumerate(system if isinstance(system, list) else ())
        if "cache_control" in b
    ]
    for i, m in enumerate(body["messages"]):
        blocks = m["content"] if isinstance(m["content"], list) else ()
        out += [f"message:{i}.{j}" for j, b in enumerate(blocks) if "cache_control" in b]
    return out


# --- where auto mode puts breakpoints ---------------------------------------------------------------


def test_auto_marks_system_history_end_tools_and_first_message():
    long_tool = {**TOOL, "function": {**TOOL["function"], "description": LONG}}
    body = _wire(
        [
            {"role": "system", "content": "You answer questions about the document."},
            {"role": "user", "content": "The document: " + LONG},
            {"role": "assistant", "content": "Read it."},
            {"role": "user", "content": "What is it about?"},
            {"role": "assistant", "content": "A fox."},
            {"role": "user", "content": "And the dog?"},
        ],
        tools=[TOOL, long_tool],
    )
    af.apply_prompt_caching(body, "auto")
    assert _marks(body) == ["tool:lookup", "system:0", "message:0.0", "message:3.0"]
    assert body["system"] == [
        {"type": "text", "text": "You answer questions about the document.", "cache_control": EPHEMERAL}
    ]
    assert body["messages"][-1] == {"role": "user", "content": "And the dog?"}  # the new turn: never marked


def test_auto_marks_nothing_below_the_models_minimum():
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "q"}]
    sonnet = af.apply_prompt_caching(_wire(messages), "auto")
    assert _marks(sonnet) == ["system:0"]  # ~1600 tokens >= 1024
    haiku = _wire(messages, model="claude-haiku-4-5")
    unmarked = copy.deepcopy(haiku)
    assert af.apply_prompt_caching(haiku, "auto") == unmarked  # < 4096: the body is left as it was
    assert _marks(af.apply_prompt_caching(_wire(messages), "auto", min_tokens=5000)) == []
    short = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    assert _marks(af.apply_prompt_caching(_wire(short), "auto")) == []


def test_auto_counts_the_whole_prefix_towards_the_minimum():
    # No block is long on its own, but the conversation up to the last turn is.
    turns = [{"role": r, "content": LONG[:1100]} for r in ("user", "assistant") * 3]
    body = af.apply_prompt_caching(_wire([*turns, {"role": "user", "content": "q"}]), "auto")
    assert _marks(body) == ["message:5.0"]  # the first message alone (~220 tokens) is too short


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-sonnet-4-5", 1024),
        ("claude-sonnet-4-6", 1024),
        ("claude-opus-4-1-20250805", 1024),
        ("claude-opus-4-5", 4096),
        ("claude-haiku-4-5-20251001", 4096),
        ("anthropic/claude-3-5-haiku-latest", 2048),
        ("some-other-model", 1024),
    ],
)
def test_min_cacheable_tokens(model, minimum):
    assert af.min_cacheable_tokens(model) == minimum


def test_auto_keeps_the_clients_breakpoints_within_four():
    system = [{"type": "text", "text": "rules"}, {"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "doc " + LONG, "cache_control": EPHEMERAL}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "q2", "cache_control": {"type": "ephemeral", "ttl": "5m"}}],
        },
    ]
    body = _wire([{"role": "system", "content": system}, *turns], tools=[TOOL])
    af.apply_prompt_caching(body, "auto")
    # Three were the client's (kept as they were); one slot was left: the end of the history.
    assert _marks(body) == ["system:1", "message:0.0", "message:3.0", "message:4.0"]
    assert body["messages"][4]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    full = _wire(
        [
            {"role": "system", "content": system},
            *turns[:4],
            {
                **turns[4],
                "content": [
                    {"type": "text", "text": "q2", "cache_control": EPHEMERAL},
                    {"type": "text", "text": "q3", "cache_control": EPHEMERAL},
                ],
            },
        ],
        tools=[TOOL],
    )
    before = copy.deepcopy(full)
    assert af.apply_prompt_caching(full, "auto") == before  # four already: nothing added


def test_auto_never_puts_a_5_minute_mark_before_a_clients_1_hour_one():
    hour = {"type": "ephemeral", "ttl": "1h"}
    messages = [
        {"role": "system", "content": LONG},
        {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": hour}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "q"},
    ]
    body = af.apply_prompt_caching(_wire(messages), "auto")
    assert _marks(body) == ["message:0.0", "message:1.0"]  # not the system prompt, before the 1h mark


def test_off_removes_every_breakpoint_and_passthrough_keeps_them():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"type": "text", "text": "sunny", "cache_control": EPHEMERAL}],
        },
    ]
    tools = [{**TOOL, "cache_control": EPHEMERAL}]
    kept = af.apply_prompt_caching(_wire(messages, tools=tools), "passthrough")
    assert _marks(kept) == ["tool:lookup", "system:0", "message:2.0"]  # the tool result's, on its block
    assert kept["messages"][2]["content"][0]["content"] == [{"type": "text", "text": "sunny"}]
    assert _marks(af.apply_prompt_caching(_wire(messages, tools=tools), "off")) == []


def test_a_tool_results_breakpoint_survives_the_round_trip():
    """An Anthropic client's cache_control on a tool_result (where agent loops put it) reaches an
    Anthropic upstream on the tool_result block."""
    client_body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "sunny",
                        "cache_control": EPHEMERAL,
                    }
                ],
            },
        ],
    }
    wire = af.request_to_wire(af.parse_request(client_body), "claude-sonnet-4-5", stream=False)
    assert wire["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "t1",
            "content": [{"type": "text", "text": "sunny"}],
            "cache_control": EPHEMERAL,
        }
    ]
    bad = copy.deepcopy(client_body)
    bad["messages"][2]["content"][0]["cache_control"] = "yes"
    with pytest.raises(Exception, match=r"messages\.2\.content\.0\.cache_control"):
        af.parse_request(bad)


# --- configuration --------------------------------------------------------------------------------


def test_a_model_entry_inherits_what_it_leaves_unset():
    settings = Settings.from_dict(
        {
            "prompt_caching": {"mode": "auto", "min_tokens": 2000},
            "providers": {"a": {"kind": "anthropic", "base_url": "http://127.0.0.1:1"}},
            "models": [
                {"name": "default", "provider": "a"},
                {"name": "off", "provider": "a", "prompt_caching": {"mode": "off"}},
                {"name": "longer", "provider": "a", "prompt_caching": {"min_tokens": 8000}},
            ],
        }
    )
    catalog = Catalog(settings)
    resolved = {m.name: m.deployments[0].prompt_caching for m in catalog}
    assert (resolved["default"].mode, resolved["default"].min_tokens) == ("auto", 2000)
    assert (resolved["off"].mode, resolved["off"].min_tokens) == ("off", 2000)
    assert (resolved["longer"].mode, resolved["longer"].min_tokens) == ("auto", 8000)
    assert Catalog(Settings.from_dict({})).__len__() == 0 and Settings().prompt_caching.mode == "passthrough"


def test_bad_prompt_caching_config_names_the_field():
    with pytest.raises(ConfigError, match="prompt_caching.mode"):
        Settings.from_dict({"prompt_caching": {"mode": "always"}})


# --- the simulator's prompt cache -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _anthropic_body(
    system_mark: dict[str, Any] | None, *turns: str, model="claude-sonnet-4-6"
) -> dict[str, Any]:
    system: dict[str, Any] = {"type": "text", "text": LONG}
    if system_mark:
        system["cache_control"] = system_mark
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"model": model, "max_tokens": 10, "system": [system], "messages": messages}


def test_simulated_anthropic_cache_writes_reads_and_expires():
    clock = Clock()
    cache = PromptCache(ttl_s=300, clock=clock)
    body = _anthropic_body(EPHEMERAL, "q1")
    first = cache.anthropic(body)
    assert first.read == 0 and first.write > 1024
    assert cache.anthropic(_anthropic_body(EPHEMERAL, "q2")) == type(first)(read=first.write, write=0)
    clock.now += 299  # a hit refreshes the TTL ("5 minutes from last use") ...
    assert cache.anthropic(body).read == first.write
    clock.now += 301  # ... and 5 minutes without one expire it
    assert cache.anthropic(body) == first
    assert cache.anthropic(_anthropic_body(None, "q1")) == type(first)()  # no breakpoint: nothing cached
    hour = PromptCache(ttl_s=300, clock=clock)
    hour.anthropic(_anthropic_body({"type": "ephemeral", "ttl": "1h"}, "q1"))
    clock.now += 3000
    assert hour.anthropic(_anthropic_body({"type": "ephemeral", "ttl": "1h"}, "q1")).read == first.write


def test_simulated_anthropic_reports_1_hour_writes_apart_as_anthropic_bills_them():
    """Mixed TTLs: reads up to the hit, 1-hour writes up to the last 1-hour mark, 5-minute writes
    from there to the last mark."""
    cache = PromptCache(clock=Clock())
    hour = {"type": "ephemeral", "ttl": "1h"}
    alone = cache.anthropic(_anthropic_body(hour, "q1"))
    assert alone.write > 1024 and alone.write_1h == alone.write  # only a 1-hour mark: all of it
    body = _anthropic_body(hour, "doc " + LONG, "a1", "q2")
    body["system"][0]["text"] = "another system prompt " + LONG
    body["messages"][0]["content"] = [{"type": "text", "text": "doc " + LONG, "cache_control": EPHEMERAL}]
    mixed = cache.anthropic(body)
    assert mixed.read == 0 and mixed.write - mixed.write_1h > 1024  # the document: 5 minutes
    assert 0 < mixed.write_1h - alone.write < 10  # the (slightly longer) system prompt: 1 hour
    again = cache.anthropic(body)  # the system prompt and the document are read: nothing written
    assert (again.read, again.write, again.write_1h) == (mixed.write, 0, 0)
    body["messages"][0]["content"][0]["text"] = "another doc " + LONG
    after_hit = cache.anthropic(body)  # the 1-hour entry is read; only the new document is written
    assert after_hit.read == mixed.write_1h and after_hit.write_1h == 0 and after_hit.write > 1024


def test_simulated_anthropic_cache_respects_the_models_minimum():
    cache = PromptCache(clock=Clock())
    body = _anthropic_body(EPHEMERAL, "q1", model="claude-haiku-4-5")  # ~1600 tokens < 4096
    assert cache.anthropic(body) == cache.anthropic(body) == type(cache.anthropic(body))()


def test_simulated_anthropic_reads_look_back_from_a_moving_breakpoint():
    """A breakpoint at the end of the history moves every turn; the read finds the previous one."""
    cache = PromptCache(clock=Clock())
    turn1 = _anthropic_body(None, "q1", "a1", "q2")
    turn1["messages"][1]["content"] = [{"type": "text", "text": "a1", "cache_control": EPHEMERAL}]
    written = cache.anthropic(turn1).write
    turn2 = _anthropic_body(None, "q1", "a1", "q2", "a2", "q3")
    turn2["messages"][3]["content"] = [{"type": "text", "text": "a2", "cache_control": EPHEMERAL}]
    second = cache.anthropic(turn2)
    assert second.read == written and 0 < second.write < 10  # only q2 and a2 are new


def test_simulated_openai_cache_in_128_token_steps():
    clock = Clock()
    cache = PromptCache(ttl_s=300, clock=clock)
    long = parse_request(
        {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "q1"}],
        }
    )
    assert cache.openai(long).read == 0
    again = cache.openai(
        long.model_copy(
            update={"messages": [*long.messages[:1], long.messages[1].model_copy(update={"content": "q2"})]}
        )
    )
    assert again.read >= 1024 and (again.read - 1024) % 128 == 0
    clock.now += 301
    assert cache.openai(long).read == 0  # expired
    short = parse_request({"model": "gpt-4o", "messages": [{"role": "user", "content": LONG[:2000]}]})
    assert cache.openai(short).read == cache.openai(short).read == 0  # under 1024 tokens: never cached


# --- end to end: SDKs -> gateway -> simulator, priced to the digit -----------------------------------

# Published prices, USD per million tokens (anthropic.com/pricing and openai.com/api/pricing), written
# out here so that a wrong catalog lookup fails these tests.
SONNET_4_5 = {
    "input": "3",
    "cache_write": "3.75",
    "cache_write_1h": "6",
    "cache_read": "0.30",
    "output": "15",
}
GPT_4O_MINI = {
    "input": "0.15",
    "cache_write": "0.15",
    "cache_read": "0.075",
    "output": "0.60",
}  # no write fee


def _dollars(
    prices: dict[str, str], *, uncached: int, written: int, read: int, output: int, written_1h: int = 0
) -> Decimal:
    """``written``: 5-minute cache writes; ``written_1h``: 1-hour ones."""
    return (
        uncached * Decimal(prices["input"])
        + written * Decimal(prices["cache_write"])
        + written_1h * Decimal(prices.get("cache_write_1h", "0"))
        + read * Decimal(prices["cache_read"])
        + output * Decimal(prices["output"])
    ) / 1_000_000


def _header_dollars(headers: Any) -> Decimal:
    return Decimal(headers["x-llmrelay-cost-usd"])


def _as_header(cost: Decimal) -> Decimal:
    return cost.quantize(Decimal("0.00000001"))


@pytest.fixture(scope="module")
def caching_gateway(simulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prompt-caching")
    home = tmp / "home"
    config = {
        "execute": {"timeout_s": 10},
        "calllog": {"directory": str(home), "flush_interval_s": 0.05},
        "providers": {
            "oa": {"kind": "openai", "base_url": simulator.url + "/v1"},
            "an": {"kind": "anthropic", "base_url": simulator.url},
        },
        "models": [
            {
                "name": "sonnet",
                "provider": "an",
                "upstream": "claude-sonnet-4-5",
                "prompt_caching": {"mode": "auto"},
            },
            {"name": "sonnet-plain", "provider": "an", "upstream": "claude-sonnet-4-5"},
            {
                "name": "sonnet-off",
                "provider": "an",
                "upstream": "claude-sonnet-4-5",
                "prompt_caching": {"mode": "off"},
            },
            {"name": "gpt-4o-mini", "provider": "oa"},
        ],
    }
    server = serve_config(config, tmp)
    yield server
    stop_process(server)


def _system() -> str:
    return f"[{uuid.uuid4()}] " + LONG  # a prefix no earlier test (or run) has cached


@pytest.fixture
def claude(caching_gateway):
    with anthropic.Anthropic(base_url=caching_gateway.url, api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
def oai(caching_gateway):
    with openai.OpenAI(base_url=caching_gateway.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


async def test_anthropic_client_auto_breakpoints_pay_the_write_then_the_read(claude, caching_gateway):
    system = _system()  # a plain string: the client marked nothing, the gateway does
    costs = []
    for question in ("What is this?", "Summarise it."):
        raw = claude.messages.with_raw_response.create(
            model="sonnet", max_tokens=50, system=system, messages=[{"role": "user", "content": question}]
        )
        usage = raw.parse().usage
        cost = _dollars(
            SONNET_4_5,
            uncached=usage.input_tokens,
            written=usage.cache_creation_input_tokens or 0,
            read=usage.cache_read_input_tokens or 0,
            output=usage.output_tokens,
        )
        assert _header_dollars(raw.headers) == _as_header(cost)
        record = await recorded(caching_gateway.home, raw.headers["x-llmrelay-request-id"])
        assert Decimal(record.cost_usd) == cost and record.cost_exact
        assert (record.cache_write_tokens, record.cached_tokens) == (
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
        )
        costs.append((usage, cost))
    (first, first_cost), (second, second_cost) = costs
    assert first.cache_creation_input_tokens > 1024 and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0 and second.input_tokens < 30
    # Writing costs 1.25x plain input, reading 0.1x: the second call is much cheaper.
    assert second_cost < first_cost / 5


async def test_anthropic_client_stream_reports_cache_tokens_and_its_record_prices_them(
    claude, caching_gateway
):
    system = _system()
    messages = [{"role": "user", "content": "stream please"}]
    claude.messages.create(model="sonnet", max_tokens=50, system=system, messages=messages)
    with claude.messages.stream(model="sonnet", max_tokens=50, system=system, messages=messages) as stream:
        usage = stream.get_final_message().usage
        call_id = stream.response.headers["x-llmrelay-request-id"]
        assert "x-llmrelay-cost-usd" not in stream.response.headers  # known only at the stream's end
    assert usage.cache_read_input_tokens > 1024 and usage.cache_creation_input_tokens == 0
    record = await recorded(caching_gateway.home, call_id)
    assert record.stream and record.cached_tokens == usage.cache_read_input_tokens
    expected = _dollars(
        SONNET_4_5,
        uncached=usage.input_tokens,
        written=0,
        read=usage.cache_read_input_tokens,
        output=usage.output_tokens,
    )
    assert Decimal(record.cost_usd) == expected


async def test_openai_client_calling_claude_gets_breakpoints_across_turns(oai, caching_gateway):
    """An OpenAI-format client cannot say cache_control; with auto the gateway says it for it."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": _system()}]
    seen = []
    for question in ("first question", "second question", "third question"):
        messages.append({"role": "user", "content": question})
        raw = oai.chat.completions.with_raw_response.create(model="sonnet", messages=messages)
        completion = raw.parse()
        usage = completion.usage
        details = usage.prompt_tokens_details
        written = details.cache_write_tokens
        cost = _dollars(
            SONNET_4_5,
            uncached=usage.prompt_tokens - details.cached_tokens - written,
            written=written,
            read=details.cached_tokens,
            output=usage.completion_tokens,
        )
        assert _header_dollars(raw.headers) == _as_header(cost)
        assert (
            Decimal((await recorded(caching_gateway.home, raw.headers["x-llmrelay-request-id"])).cost_usd)
            == cost
        )
        seen.append((details.cached_tokens, written))
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    (read1, write1), (read2, write2), (read3, write3) = seen
    assert read1 == 0 and write1 > 1024  # the system prompt, written once
    assert read2 == write1 and 0 < write2 < 20  # the history's end: the first exchange
    assert read3 == read2 + write2 and 0 < write3 < 20  # read up to the previous turn's breakpoint


async def test_openai_client_stream_to_claude_has_cache_usage(oai, caching_gateway):
    messages = [{"role": "system", "content": _system()}, {"role": "user", "content": "hello"}]
    oai.chat.completions.create(model="sonnet", messages=messages)
    raw = oai.chat.completions.with_raw_response.create(
        model="sonnet", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    call_id = raw.headers["x-llmrelay-request-id"]
    usage = chunks[-1].usage
    read = usage.prompt_tokens_details.cached_tokens
    assert read > 1024 and usage.prompt_tokens_details.cache_write_tokens == 0
    record = await recorded(caching_gateway.home, call_id)
    expected = _dollars(
        SONNET_4_5, uncached=usage.prompt_tokens - read, written=0, read=read, output=usage.completion_tokens
    )
    assert Decimal(record.cost_usd) == expected


HOUR = {"type": "ephemeral", "ttl": "1h"}


async def test_anthropic_client_1_hour_mark_pays_the_1_hour_write(claude, caching_gateway):
    """A 1-hour mark on the system prompt and a 5-minute one on a long document: the first call pays
    each write at its own rate ($6 and $3.75 per million), the next one reads both."""
    system = [{"type": "text", "text": _system(), "cache_control": HOUR}]
    doc = {"type": "text", "text": "The document: " + _system(), "cache_control": EPHEMERAL}
    seen = []
    for question in ("What is it?", "Summarise it."):
        content = [doc, {"type": "text", "text": question}]
        raw = claude.messages.with_raw_response.create(
            model="sonnet-plain",
            max_tokens=50,
            system=system,
            messages=[{"role": "user", "content": content}],
        )
        usage = raw.parse().usage
        by_ttl = usage.cache_creation
        assert by_ttl is not None
        assert (
            by_ttl.ephemeral_5m_input_tokens + by_ttl.ephemeral_1h_input_tokens
            == usage.cache_creation_input_tokens
        )
        cost = _dollars(
            SONNET_4_5,
            uncached=usage.input_tokens,
            written=by_ttl.ephemeral_5m_input_tokens,
            written_1h=by_ttl.ephemeral_1h_input_tokens,
            read=usage.cache_read_input_tokens or 0,
            output=usage.output_tokens,
        )
        assert _header_dollars(raw.headers) == _as_header(cost)
        record = await recorded(caching_gateway.home, raw.headers["x-llmrelay-request-id"])
        assert Decimal(record.cost_usd) == cost and record.cost_exact
        assert record.cache_write_tokens == usage.cache_creation_input_tokens  # both TTLs, as before
        seen.append(usage)
    first, second = seen
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_1h_input_tokens > 1024  # the system prompt
    assert first.cache_creation.ephemeral_5m_input_tokens > 1024  # the document after it
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0


async def test_anthropic_client_stream_1_hour_write_priced_in_its_record(claude, caching_gateway):
    system = [{"type": "text", "text": _system(), "cache_control": HOUR}]
    messages = [{"role": "user", "content": "stream please"}]
    with claude.messages.stream(
        model="sonnet-plain", max_tokens=50, system=system, messages=messages
    ) as stream:
        delta_usage = [e.usage for e in stream if e.type == "message_delta"][-1]
        usage = stream.get_final_message().usage
        call_id = stream.response.headers["x-llmrelay-request-id"]
    written = usage.cache_creation_input_tokens
    assert written > 1024 and usage.cache_read_input_tokens == 0
    # The split comes at the end of the stream (Anthropic sends it in message_start, before the
    # gateway has it), in message_delta's usage.
    assert getattr(delta_usage, "cache_creation", None) == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": written,
    }
    record = await recorded(caching_gateway.home, call_id)
    expected = _dollars(
        SONNET_4_5,
        uncached=usage.input_tokens,
        written=0,
        written_1h=written,
        read=0,
        output=usage.output_tokens,
    )
    assert Decimal(record.cost_usd) == expected and record.cache_write_tokens == written


async def test_openai_client_1_hour_mark_priced_and_usage_shape_unchanged(oai, caching_gateway):
    system = {"role": "system", "content": [{"type": "text", "text": _system(), "cache_control": HOUR}]}
    raw = oai.chat.completions.with_raw_response.create(
        model="sonnet-plain", messages=[system, {"role": "user", "content": "hello"}]
    )
    usage = raw.http_response.json()["usage"]
    written = usage["prompt_tokens_details"]["cache_write_tokens"]
    assert written > 1024
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": written}
    cost = _dollars(
        SONNET_4_5,
        uncached=usage["prompt_tokens"] - written,
        written=0,
        written_1h=written,
        read=0,
        output=usage["completion_tokens"],
    )
    assert _header_dollars(raw.headers) == _as_header(cost)
    assert (
        Decimal((await recorded(caching_gateway.home, raw.headers["x-llmrelay-request-id"])).cost_usd) == cost
    )


def test_passthrough_sends_the_clients_breakpoints_and_off_removes_them(claude):
    marked = [{"type": "text", "text": _system(), "cache_control": EPHEMERAL}]
    plain = _system()
    question = [{"role": "user", "content": "q"}]

    def usage(model: str, system: Any) -> tuple[int, int]:
        u = claude.messages.create(model=model, max_tokens=20, system=system, messages=question).usage
        return u.cache_creation_input_tokens or 0, u.cache_read_input_tokens or 0

    write, read = usage("sonnet-plain", marked)
    assert write > 1024 and read == 0
    assert usage("sonnet-plain", marked) == (0, write)  # the client's breakpoint, honoured
    assert usage("sonnet-plain", plain) == (0, 0)  # passthrough adds none
    other = [{**marked[0], "text": _system()}]
    assert usage("sonnet-off", other) == (0, 0)  # off: the client's breakpoint was removed
    assert usage("sonnet-off", other) == (0, 0)


async def test_openai_cached_tokens_priced_at_the_cached_rate(oai, caching_gateway):
    system = _system()
    seen = []
    for question in ("first", "second"):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
        usage = raw.parse().usage
        cached = usage.prompt_tokens_details.cached_tokens
        cost = _dollars(
            GPT_4O_MINI,
            uncached=usage.prompt_tokens - cached,
            written=0,
            read=cached,
            output=usage.completion_tokens,
        )
        assert _header_dollars(raw.headers) == _as_header(cost)
        assert (
            Decimal((await recorded(caching_gateway.home, raw.headers["x-llmrelay-request-id"])).cost_usd)
            == cost
        )
        seen.append((usage.prompt_tokens, cached))
    assert seen[0][1] == 0
    prompt, cached = seen[1]
    assert 1024 <= cached <= prompt - 5 and cached % 128 == 0  # OpenAI caches in 128-token steps
    # Streamed: the cached tokens arrive in the usage chunk and the record prices them.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "third"}]
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    usage = list(raw.parse())[-1].usage
    call_id = raw.headers["x-llmrelay-request-id"]
    assert usage.prompt_tokens_details.cached_tokens == cached
    expected = _dollars(
        GPT_4O_MINI,
        uncached=usage.prompt_tokens - cached,
        written=0,
        read=cached,
        output=usage.completion_tokens,
    )
    assert Decimal((await recorded(caching_gateway.home, call_id)).cost_usd) == expected
