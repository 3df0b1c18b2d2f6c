"""``llmrelay batch submit|status|results``: the batch API from a terminal, over HTTP to a gateway,
as the OpenAI SDK would call it (docs/batch.md).

    llmrelay batch submit tickets.jsonl --model gpt-4o-mini --wait
    llmrelay batch status batch_...
    llmrelay batch results batch_... -o out.jsonl [--errors errors.jsonl]

A line of FILE is a batch request (``{"custom_id", "method", "url", "body"}``) or just a chat body
(``{"messages": [...]}``), which gets ``custom_id`` ``line-<n>``. ``--model`` sets every body's model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from tqdm import tqdm

FINAL = ("completed", "failed", "expired", "cancelled")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="submit batches to a gateway, follow them, fetch their results")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=os.environ.get("LLMRELAY_BASE_URL", "http://127.0.0.1:4000"),
        help="the gateway (default $LLMRELAY_BASE_URL or http://127.0.0.1:4000)",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("LLMRELAY_API_KEY") or os.environ.get("OPENAI_API_KEY"),
        help="a key of the gateway (default $LLMRELAY_API_KEY, else $OPENAI_API_KEY)",
    )
    common.add_argument(
        "--poll", type=_seconds, default=2.0, help="seconds between status checks while waiting"
    )
    actions = p.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="upload a JSONL file and start a batch", parents=[common])
    submit.add_argument("file", type=Path, help="JSONL: batch requests, or chat bodies")
    submit.add_argument("--model", help="the model of every request (overrides the file's)")
    submit.add_argument(
        "--meta", action="append", default=[], metavar="K=V", help="batch metadata (repeatable)"
    )
    submit.add_argument("--wait", action="store_true", help="follow it with a progress bar until it ends")
    status = actions.add_parser("status", help="a batch's status and counts", parents=[common])
    status.add_argument("id")
    status.add_argument("--wait", action="store_true", help="follow it with a progress bar until it ends")
    results = actions.add_parser(
        "results", help="wait for a batch to end, then save its output (and errors)", parents=[common]
    )
    results.add_argument("id")
    results.add_argument("-o", "--output", type=Path, required=True, help="where to write the output JSONL")
    results.add_argument("--errors", type=Path, help="where to write the error JSONL (failed requests)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 3600")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except CliError as exc:
        print(f"llmrelay batch: {exc}", file=sys.stderr)
        return 1


class CliError(Exception):
    pass


def _gateway_root(base_url: str) -> str:
    """The gateway's root URL: the SDKs' ``.../v1`` is taken too (the paths here start at /v1)."""
    url = base_url.strip().rstrip("/").removesuffix("/v1")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:  # "Invalid IPv6 URL", a port out of range
        raise CliError(f"--base-url {base_url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise CliError(
            f"--base-url must be the gateway's http(s) address, like http://127.0.0.1:4000; got {base_url!r}"
        )
    return url


# No limit on the whole exchange (an upload may be large), but a gateway that accepts and never
# answers is an error, not a wait without end.
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)


async def _run(args: argparse.Namespace) -> int:
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    root = _gateway_root(args.base_url)
    if getattr(args, "id", None) is not None and not args.id.strip():
        raise CliError("the batch id is empty")
    async with aiohttp.ClientSession(root, headers=headers, timeout=_TIMEOUT) as http:
        client = _Client(http)
        if args.action == "submit":
            content = _requests(args.file, args.model)
            file = await client.upload(args.file.name, content)
            metadata = dict(m.split("=", 1) for m in args.meta if "=" in m)
            batch = await client.json(
                "POST",
                "/v1/batches",
                {
                    "input_file_id": file["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": metadata or None,
                },  # fmt: skip
            )
            print(batch["id"])
            if args.wait:
                batch = await _follow(client, batch, args.poll)
                _show(batch)
            return 0
        batch = await client.json("GET", f"/v1/batches/{args.id}")
        if args.action == "status":
            if args.wait:
                batch = await _follow(client, batch, args.poll)
            _show(batch)
            return 0
        batch = await _follow(client, batch, args.poll)
        _show(batch)
        await _save(client, batch.get("output_file_id"), args.output)
        if args.errors is not None:
            await _save(client, batch.get("error_file_id"), args.errors)
        return 0 if batch["status"] == "completed" else 1


class _Client:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else {}
        return _checked(await self._send(method, path, data=data, headers=hdrs))

    async def upload(self, filename: str, content: bytes) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=filename, content_type="application/jsonl")
        return _checked(await self._send("POST", "/v1/files", data=form))

    async def content(self, file_id: str) -> bytes:
        status, raw = await self._send("GET", f"/v1/files/{file_id}/content")
        if status >= 400:
            _checked((status, raw))
        return raw

    async def _send(self, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
        try:
            async with self.http.request(method, path, **kw) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientError as exc:
            raise CliError(f"cannot reach the gateway: {exc}") from None


def _checked(answer: tuple[int, bytes]) -> dict[str, Any]:
    status, raw = answer
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if status >= 400:
        message = (body or {}).get("error", {}).get("message") if isinstance(body, dict) else None
        raise CliError(f"HTTP {status}: {message or raw[:300].decode('utf-8', 'replace')}")
    if not isinstance(body, dict):
        raise CliError(f"the gateway answered with something other than a JSON object: {raw[:200]!r}")
    return body


def _requests(path: Path, model: str | None) -> bytes:
    """The file as batch requests: chat bodies wrapped, ``model`` set on each."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    out = []
    for number, raw in enumerate(text.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CliError(f"{path}, line {number}: not valid JSON") from None
        if isinstance(item, dict) and "body" not in item and "messages" in item:
            item = {
                "custom_id": f"line-{number}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": item,
            }
        if model and isinstance(item, dict) and isinstance(item.get("body"), dict):
            item["body"]["model"] = model
        out.append(orjson.dumps(item))
    return b"\n".join(out) + b"\n"


async def _follow(client: _Client, batch: dict[str, Any], poll: float) -> dict[str, Any]:
    """Poll until the batch ends, with a progress bar of its finished requests."""
    counts = batch.get("request_counts") or {}
    with tqdm(total=counts.get("total") or None, unit="req", desc=batch["id"], file=sys.stderr) as bar:
        while True:
            counts = batch.get("request_counts") or {}
            bar.total = counts.get("total") or bar.total
            bar.n = (counts.get("completed") or 0) + (counts.get("failed") or 0)
            bar.set_postfix_str(batch["status"], refresh=False)
            bar.refresh()
            if batch["status"] in FINAL:
                return batch
            await asyncio.sleep(poll)
            batch = await client.json("GET", f"/v1/batches/{batch['id']}")


def _show(batch: dict[str, Any]) -> None:
    counts = batch.get("request_counts") or {}
    extra = batch.get("x_llmrelay") or {}
    print(
        f"{batch['id']}  {batch['status']}  model={batch.get('model')}  mode={extra.get('mode')}  "
        f"total={counts.get('total')} completed={counts.get('completed')} failed={counts.get('failed')}  "
        f"cost_usd={extra.get('cost_usd')}"
    )
    for error in (batch.get("errors") or {}).get("data") or ():
        print(f"  error: {error.get('message')}")


async def _save(client: _Client, file_id: str | None, path: Path) -> None:
    content = await client.content(file_id) if file_id else b""
    path.write_bytes(content)
    lines = content.count(b"\n")
    print(f"{path}: {lines} line{'s' if lines != 1 else ''}")
