"""A client that goes away mid-stream stops the upstream stream too (no tokens paid for nobody)."""

from __future__ import annotations

import asyncio
import time

import orjson

from llmrelay import Relay
from llmrelay.server import build_app

from .conftest import gateway_config

LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"


async def test_disconnect_mid_stream_closes_the_upstream(simulator):
    config = gateway_config(simulator.url)
    config["models"].append({"name": "slow", "provider": "up-openai", "upstream": "slow-model"})
    relay = Relay(config)
    app = build_app(relay)
    await relay.start()
    body = orjson.dumps({"model": "slow", "stream": True, "messages": [{"role": "user", "content": LONG}]})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [],
        "query_string": b"",
    }
    delivered = asyncio.Event()
    gone = asyncio.Event()
    received = [False]
    sent: list[bytes] = []

    async def receive():
        if not received[0]:
            received[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            delivered.set()

    try:
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(delivered.wait(), 5)
        gone.set()  # the client hangs up after the first chunk
        started = time.perf_counter()
        await asyncio.wait_for(task, 3)  # the whole reply would take ~4 s more
        assert time.perf_counter() - started < 1.5
        assert not any(b"[DONE]" in chunk for chunk in sent)
    finally:
        await relay.aclose()
