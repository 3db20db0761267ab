"""Proxies and the proxy collection (upstream's proxy.go and proxy_collection.go)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from typing import Any

from chaos.toxiproxy import errors
from chaos.toxiproxy.link import Link
from chaos.toxiproxy.stream import DOWNSTREAM, UPSTREAM
from chaos.toxiproxy.toxic_collection import ToxicCollection, decode_json, get_field

# Upstream listens on every interface when "listen" is empty; the bundled server stays on
# loopback unless told otherwise.
DEFAULT_LISTEN = "127.0.0.1:0"


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port) if port else 0
    except ValueError:
        raise ValueError(f"address {address}: invalid port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"address {address}: invalid port")
    return host, number


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(address: str) -> tuple[int, str, int]:
    """(family, ip, port) of a listen address, IPv4 first as Go's ResolveTCPAddr prefers."""
    try:
        host, port = split_host_port(address or DEFAULT_LISTEN)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (ValueError, OSError) as exc:
        raise errors.internal(f"resolve tcp {address}: {exc}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0]), int(sockaddr[1])


class Connection:
    """A client connection and, once dialled, its upstream connection and two links."""

    def __init__(self, proxy: Proxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writers = [client]
        self.links: list[Link] = []
        self.aborted = False

    def link_done(self, _link: Link) -> None:
        if all(link.dead for link in self.links):
            self.proxy.connections.discard(self)

    def abort(self) -> None:
        self.aborted = True
        for writer in self.writers:
            writer.transport.abort()
        for link in self.links:
            link.kill()


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen or DEFAULT_LISTEN
        self.upstream = upstream
        self.enabled = False
        self.toxics = ToxicCollection()
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._generation = 0  # accepts from an earlier start are refused after a restart

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [w.to_json() for w in self.toxics.toxics()],
        }

    async def start(self) -> None:
        """Listen; the caller checks ``enabled`` first (upstream's ErrProxyAlreadyStarted)."""
        family, ip, port = await resolve(self.listen)
        try:
            sock = socket.create_server((ip, port), family=family)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise errors.internal(f"listen tcp {self.listen}: bind: {reason}") from None
        self._generation += 1
        accept = functools.partial(self._accept, self._generation)
        self._server = await asyncio.start_server(accept, sock=sock)
        bound = sock.getsockname()
        self.listen = join_host_port(str(bound[0]), int(bound[1]))
        self.enabled = True

    async def stop(self) -> None:
        """Stop listening and close every connection (disabling is a hard cut)."""
        if not self.enabled:
            return
        self.enabled = False
        self._generation += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        if await self.differs(listen, upstream):
            await self.stop()
            self.listen = listen or DEFAULT_LISTEN
            self.upstream = upstream
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                await self.stop()

    async def differs(self, listen: str, upstream: str) -> bool:
        _, ip, port = await resolve(listen)
        return self.listen != join_host_port(ip, port) or self.upstream != upstream

    async def _accept(
        self, generation: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if generation != self._generation:
            writer.transport.abort()
            return
        conn = Connection(self, writer)
        self.connections.add(conn)
        try:
            host, port = split_host_port(self.upstream)
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, ValueError):
            # Upstream logs the dial error and closes the client.
            self.connections.discard(conn)
            writer.close()
            return
        if conn.aborted or generation != self._generation:
            up_writer.transport.abort()
            writer.transport.abort()
            return
        conn.writers.append(up_writer)
        conn.links = [
            self.toxics.open_link(UPSTREAM, reader, writer, up_writer, conn.link_done),
            self.toxics.open_link(DOWNSTREAM, up_reader, up_writer, writer, conn.link_done),
        ]


class ProxyCollection:
    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise errors.PROXY_NOT_FOUND
        return proxy

    async def add(self, proxy: Proxy, start: bool) -> None:
        if proxy.name in self.proxies:
            raise errors.PROXY_ALREADY_EXISTS
        if start:
            await proxy.start()
        self.proxies[proxy.name] = proxy

    async def add_or_replace(self, proxy: Proxy, start: bool) -> Proxy:
        existing = self.proxies.get(proxy.name)
        if existing is not None:
            if not await existing.differs(proxy.listen, proxy.upstream):
                return existing
            await existing.stop()
        if start:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    async def remove(self, name: str) -> None:
        proxy = self.get(name)
        await proxy.stop()
        del self.proxies[name]

    async def clear(self) -> None:
        for name in list(self.proxies):
            await self.remove(name)

    async def populate(self, body: bytes) -> tuple[list[Proxy], errors.ApiError | None]:
        """Create or replace proxies from a JSON array; on error, those done so far."""
        try:
            items = decode_json(body)
            if not isinstance(items, list):
                if items is not None:
                    raise errors.BAD_REQUEST_BODY.joined("json: cannot unmarshal into an array")
                items = []
            specs = []
            # Upstream validates every entry before creating any.
            for i, item in enumerate(items, start=1):
                if not isinstance(item, dict):
                    raise errors.BAD_REQUEST_BODY.joined("json: cannot unmarshal into a proxy")
                spec = parse_proxy(item, enabled=True)
                if not spec[0]:
                    raise errors.MISSING_FIELD.joined(f"name at proxy {i}")
                if not spec[2]:
                    raise errors.MISSING_FIELD.joined(f"upstream at proxy {i}")
                specs.append(spec)
        except errors.ApiError as exc:
            return [], exc
        done: list[Proxy] = []
        for name, listen, upstream, enabled in specs:
            try:
                done.append(await self.add_or_replace(Proxy(name, listen, upstream), enabled))
            except errors.ApiError as exc:
                return done, exc
        return done, None

    async def shutdown(self) -> None:
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                await proxy.stop()


def parse_proxy(
    obj: dict[str, Any], *, enabled: bool, listen: str = "", upstream: str = ""
) -> tuple[str, str, str, bool]:
    return (
        get_field(obj, "name", (str,), ""),
        get_field(obj, "listen", (str,), listen),
        get_field(obj, "upstream", (str,), upstream),
        get_field(obj, "enabled", (bool,), enabled),
    )
