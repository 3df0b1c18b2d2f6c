"""The floor: a minimal OpenAI-compatible pass-through with the gateway's stack and none of its work.

Raw ASGI on uvicorn (httptools + uvloop, as ``llmrelay serve``), one pooled aiohttp session,
orjson: read the body, parse it, swap the model, POST it upstream, parse the answer, send it back.
No validation, no cost, no headers of our own. ``bench/overhead.py --passthrough`` measures it
next to the gateway, so what the gateway costs above its HTTP stack is visible in the same run.

    .venv/bin/python bench/passthrough.py --upstream http://127.0.0.1:8100/v1 --port 4001
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import orjson
import uvicorn


class PassThrough:
    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await _send(send, 200, b'{"status":"ok"}')
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = orjson.loads(b"".join(chunks))
        assert self.session is not None
        async with self.session.post(
            self.url, data=orjson.dumps(body), headers={"content-type": "application/json"}
        ) as resp:
            answer = orjson.loads(await resp.read())
            status = resp.status
        await _send(send, status, orjson.dumps(answer))


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL (…/v1)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4001)
    args = ap.parse_args()
    uvicorn.run(
        PassThrough(args.upstream),
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
