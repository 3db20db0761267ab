"""The HTTP API: upstream's routes, JSON shapes and status codes (api.go)."""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from chaos.toxiproxy import errors
from chaos.toxiproxy.httpserver import Request, Response
from chaos.toxiproxy.proxy import Proxy, ProxyCollection, parse_proxy
from chaos.toxiproxy.toxic_collection import decode_json

# Reported by GET /version: the upstream release whose API this follows, marked as bundled.
VERSION = "2.12.0-replog"

JSON = "application/json"


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return Response(status, body, JSON)


def error_response(err: errors.ApiError) -> Response:
    # Upstream writes the JSON through http.Error, which makes it text/plain with a newline.
    body = (json.dumps(err.to_json(), separators=(",", ":")) + "\n").encode()
    return Response(
        err.status, body, "text/plain; charset=utf-8", {"X-Content-Type-Options": "nosniff"}
    )


Route = Callable[[Request, list[str]], Awaitable[Response]]


class Api:
    def __init__(self, collection: ProxyCollection | None = None) -> None:
        self.collection = collection or ProxyCollection()
        # Requests run one at a time: upstream takes a mutex per object, and serialising the
        # (short) handlers here gives the same outcomes with less to reason about.
        self._lock = asyncio.Lock()
        self._routes: list[tuple[tuple[str, ...], dict[str, Route]]] = [
            (("reset",), {"POST": self.reset}),
            (("proxies",), {"GET": self.proxy_index, "POST": self.proxy_create}),
            (("populate",), {"POST": self.populate}),
            (
                ("proxies", "*"),
                {
                    "GET": self.proxy_show,
                    "POST": self.proxy_update,
                    "PATCH": self.proxy_update,
                    "DELETE": self.proxy_delete,
                },
            ),
            (("proxies", "*", "toxics"), {"GET": self.toxic_index, "POST": self.toxic_create}),
            (
                ("proxies", "*", "toxics", "*"),
                {
                    "GET": self.toxic_show,
                    "POST": self.toxic_update,
                    "PATCH": self.toxic_update,
                    "DELETE": self.toxic_delete,
                },
            ),
            (("version",), {"GET": self.version}),
        ]

    async def handle(self, request: Request) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", "text/plain; charset=utf-8")
        segments = request.path.split("/")[1:] if request.path.startswith("/") else []
        method_mismatch = False
        for pattern, methods in self._routes:
            args = _match(pattern, segments)
            if args is None:
                continue
            route = methods.get(request.method)
            if route is None:
                method_mismatch = True
                continue
            async with self._lock:
                try:
                    return await route(request, args)
                except errors.ApiError as err:
                    return error_response(err)
                except Exception as exc:  # a bug: answer like upstream's untyped errors
                    traceback.print_exc(file=sys.stderr)
                    return error_response(errors.internal(f"{type(exc).__name__}: {exc}"))
        if method_mismatch:
            return Response(405)  # gorilla/mux answers a known path with an empty 405
        return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")

    async def reset(self, _request: Request, _args: list[str]) -> Response:
        for proxy in list(self.collection.proxies.values()):
            if not proxy.enabled:
                await proxy.start()
            await proxy.toxics.reset()
        return Response(204)

    async def proxy_index(self, _request: Request, _args: list[str]) -> Response:
        return json_response({name: p.to_json() for name, p in self.collection.proxies.items()})

    async def proxy_create(self, request: Request, _args: list[str]) -> Response:
        obj = _object(decode_json(request.body))
        name, listen, upstream, enabled = parse_proxy(obj, enabled=True)
        if not name:
            raise errors.MISSING_FIELD.joined("name")
        if not upstream:
            raise errors.MISSING_FIELD.joined("upstream")
        proxy = Proxy(name, listen, upstream)
        await self.collection.add(proxy, enabled)
        return json_response(proxy.to_json(), 201)

    async def populate(self, request: Request, _args: list[str]) -> Response:
        proxies, err = await self.collection.populate(request.body)
        body: dict[str, Any] = err.to_json() if err is not None else {}
        # Go marshals an empty (nil) list of proxies as null.
        body["proxies"] = [p.to_json() for p in proxies] or None
        return json_response(body, err.status if err is not None else 201)

    async def proxy_show(self, _request: Request, args: list[str]) -> Response:
        return json_response(self.collection.get(args[0]).to_json())

    async def proxy_update(self, request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        obj = _object(decode_json(request.body))
        _, listen, upstream, enabled = parse_proxy(
            obj, enabled=proxy.enabled, listen=proxy.listen, upstream=proxy.upstream
        )
        await proxy.update(listen, upstream, enabled)
        return json_response(proxy.to_json())

    async def proxy_delete(self, _request: Request, args: list[str]) -> Response:
        await self.collection.remove(args[0])
        return Response(204)

    async def toxic_index(self, _request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        return json_response([w.to_json() for w in proxy.toxics.toxics()])

    async def toxic_create(self, request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        wrapper = await proxy.toxics.add_json(request.body)
        return json_response(wrapper.to_json())  # 200, not 201, as upstream

    async def toxic_show(self, _request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        return json_response(proxy.toxics.get(args[1]).to_json())

    async def toxic_update(self, request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        wrapper = await proxy.toxics.update_json(args[1], request.body)
        return json_response(wrapper.to_json())

    async def toxic_delete(self, _request: Request, args: list[str]) -> Response:
        proxy = self.collection.get(args[0])
        await proxy.toxics.remove(args[1])
        return Response(204)

    async def version(self, _request: Request, _args: list[str]) -> Response:
        body = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body, "application/json;charset=utf-8")


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    args = []
    for want, got in zip(pattern, segments):
        if want == "*":
            if not got:
                return None
            args.append(got)
        elif want != got:
            return None
    return args


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BAD_REQUEST_BODY.joined("json: cannot unmarshal into a proxy")
    return value
