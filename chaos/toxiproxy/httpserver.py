"""A minimal HTTP/1.1 server on asyncio streams: enough for Toxiproxy clients (keep-alive,
Content-Length and chunked request bodies, ``Expect: 100-continue``), nothing more."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

MAX_LINE = 64 * 1024
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT = 60.0  # upstream's IdleTimeout
READ_TIMEOUT = 15.0  # upstream's ReadTimeout, for the rest of a request once it has begun


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, as gorilla/mux matches it
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    pass


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise BadRequest("line too long") from None
    return line.rstrip(b"\r\n")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = (await _read_line(reader)).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while await _read_line(reader):  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise BadRequest("body too large")
            parts.append(await reader.readexactly(size))
            await _read_line(reader)
    length = headers.get("content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise BadRequest("bad content-length") from None
    if size < 0 or size > MAX_BODY:
        raise BadRequest("bad content-length")
    return await reader.readexactly(size)


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[Request, str] | None:
    """The next request and its HTTP version, or None at a clean end of the connection."""
    line = b""
    try:
        while not line:  # blank lines between requests are tolerated, as Go does
            line = await asyncio.wait_for(_read_line(reader), IDLE_TIMEOUT)
    except (asyncio.IncompleteReadError, TimeoutError):
        return None
    try:
        method, target, version = line.decode("latin-1").split(" ")
    except ValueError:
        raise BadRequest("malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest("unsupported version")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = await _read_line(reader)
        if not raw:
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest("malformed header")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest("too many headers")
    if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    body = await _read_body(reader, headers)
    parts = urlsplit(target)
    return Request(method, unquote(parts.path), parts.query, headers, body), version


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _encode(response: Response, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {formatdate(usegmt=True)}"]
    if response.content_type is not None:
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{k}: {v}" for k, v in response.headers.items())
    if response.status != 204:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (b"" if response.status == 204 else response.body)


async def _serve_connection(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                got = await asyncio.wait_for(
                    _read_request(reader, writer), IDLE_TIMEOUT + READ_TIMEOUT
                )
            except (BadRequest, TimeoutError, asyncio.IncompleteReadError, UnicodeError):
                bad = Response(400, b"400 Bad Request", "text/plain; charset=utf-8")
                writer.write(_encode(bad, keep_alive=False))
                await writer.drain()
                return
            if got is None:
                return
            request, version = got
            keep = _keep_alive(version, request.headers)
            response = await handler(request)
            writer.write(_encode(response, keep))
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_LINE)
