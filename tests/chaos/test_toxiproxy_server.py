"""The bundled Toxiproxy-compatible server (chaos/toxiproxy/), driven through toxiproxy-python
against an echo server on 127.0.0.1, as the chaos suite drives it.

Timing assertions are lower bounds only (a toxic that delays must delay at least so much);
every wait is bounded by a socket timeout or a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaos.toxiproxy.launcher import REPO_ROOT, ToxiproxyHandle, start_toxiproxy

# Bound on any single wait for data, a close or an API answer. Generous because on a shared
# machine a process may be paused for seconds; passing runs never wait this long.
WAIT = 30.0


class _Echo(socketserver.BaseRequestHandler):
    server: _EchoServer

    def handle(self) -> None:
        sock = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
                with self.server.echoed_changed:
                    self.server.echoed += len(data)
                    self.server.echoed_changed.notify_all()
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.echoed = 0  # bytes echoed so far, over all connections
        self.echoed_changed = threading.Condition()

    def wait_echoed(self, total: int) -> None:
        with self.echoed_changed:
            assert self.echoed_changed.wait_for(lambda: self.echoed >= total, WAIT)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


@pytest.fixture
def echo(echo_server: _EchoServer) -> str:
    return f"127.0.0.1:{echo_server.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[ToxiproxyHandle]:
    with start_toxiproxy("127.0.0.1", 0, bundled=True, ready_timeout=WAIT) as handle:
        yield handle


@pytest.fixture(scope="module", autouse=True)
def _bounded_api_calls() -> Iterator[None]:
    # toxiproxy-python passes no timeout to requests; the default socket timeout bounds it.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(WAIT)
    yield
    socket.setdefaulttimeout(previous)


@pytest.fixture
def toxi(server: ToxiproxyHandle) -> Iterator[toxiproxy.Toxiproxy]:
    client = toxiproxy.Toxiproxy()
    client.update_api_consumer(server.host, server.port)
    yield client
    client.destroy_all()


def connect(proxy: toxiproxy.Proxy) -> socket.socket:
    host, port = proxy.listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def read_to_close(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the proxy closes the connection, and how it closed: eof or reset."""
    buf = bytearray()
    try:
        while data := sock.recv(65536):
            buf += data
    except ConnectionResetError:
        return bytes(buf), "reset"
    return bytes(buf), "eof"


def echo_time(sock: socket.socket, payload: bytes) -> float:
    start = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - start


def api(server: ToxiproxyHandle, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, server.url + path, timeout=WAIT, **kwargs)


# --- API -----------------------------------------------------------------------------------


def test_launcher_started_the_bundled_server(server: ToxiproxyHandle, toxi) -> None:
    assert server.bundled
    assert json.loads(toxi.version())["version"]


def test_create_list_show_delete(server, toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="one")
    assert proxy.enabled and proxy.listen.startswith("127.0.0.1:")
    assert not proxy.listen.endswith(":0")  # the bound port is reported
    assert set(toxi.proxies()) == {"one"}
    shown = api(server, "GET", "/proxies/one")
    assert shown.status_code == 200
    assert shown.json() == {
        "name": "one",
        "listen": proxy.listen,
        "upstream": echo,
        "enabled": True,
        "toxics": [],
    }
    created = api(
        server, "POST", "/proxies", json={"name": "two", "upstream": echo, "listen": "127.0.0.1:0"}
    )
    assert created.status_code == 201
    assert set(toxi.proxies()) == {"one", "two"}
    assert proxy.destroy()
    assert set(toxi.proxies()) == {"two"}
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/one")
    with pytest.raises(NotFound):
        APIConsumer.delete("/proxies/one")


def test_duplicate_and_invalid_proxies(server, toxi, echo) -> None:
    toxi.create(upstream=echo, name="dup")
    with pytest.raises(ProxyExists):  # the client checks first ...
        toxi.create(upstream=echo, name="dup")
    with pytest.raises(ProxyExists):  # ... and the server answers 409 too
        APIConsumer.post("/proxies", json={"name": "dup", "upstream": echo})
    resp = api(server, "POST", "/proxies", json={"name": "nameless-upstream"})
    assert resp.status_code == 400
    assert resp.json() == {"error": "missing required field: upstream", "status": 400}
    assert api(server, "POST", "/proxies", data=b"{nope").status_code == 400
    taken = toxi.proxies()["dup"].listen
    busy = api(server, "POST", "/proxies", json={"name": "x", "upstream": echo, "listen": taken})
    assert busy.status_code == 500 and "address already in use" in busy.json()["error"]


def test_toxic_api(server, toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="tox")
    proxy.add_toxic(type="latency", attributes={"latency": 50})
    created = api(
        server,
        "POST",
        "/proxies/tox/toxics",
        json={"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 9}},
    )
    assert created.status_code == 200
    assert created.json() == {
        "attributes": {"bytes": 9},
        "name": "limit_data_upstream",
        "type": "limit_data",
        "stream": "upstream",
        "toxicity": 1.0,
    }
    assert set(proxy.toxics()) == {"latency_downstream", "limit_data_upstream"}
    # Update merges attributes and keeps what is not given.
    updated = api(
        server,
        "PATCH",
        "/proxies/tox/toxics/latency_downstream",
        json={"attributes": {"jitter": 5}, "toxicity": 0.5},
    )
    assert updated.json()["attributes"] == {"latency": 50, "jitter": 5}
    assert updated.json()["toxicity"] == 0.5
    assert api(server, "GET", "/proxies/tox").json()["toxics"][0]["name"] == "limit_data_upstream"
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic", name="bad")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways", name="bad")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", name="bad", attributes={"latency": "slow"})
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/tox/toxics/nope")
    assert proxy.destroy_toxic("latency_downstream")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")
    assert set(proxy.toxics()) == {"limit_data_upstream"}


def test_routes_methods_and_keep_alive(server) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
    try:
        for _ in range(3):  # one connection, several requests
            conn.request("GET", "/version")
            resp = conn.getresponse()
            assert resp.status == 200 and b"version" in resp.read()
        conn.request("GET", "/nope")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (404, b"404 page not found\n")
        conn.request("PUT", "/proxies")
        resp = conn.getresponse()
        assert resp.status == 405
        resp.read()
    finally:
        conn.close()
    browser = api(server, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert browser.status_code == 403


def test_populate(server, toxi, echo) -> None:
    spec = [
        {"name": "p1", "upstream": echo, "listen": "127.0.0.1:0"},
        {"name": "p2", "upstream": echo, "listen": "127.0.0.1:0", "enabled": False},
    ]
    resp = api(server, "POST", "/populate", json=spec)
    assert resp.status_code == 201
    body = resp.json()["proxies"]
    assert [(p["name"], p["enabled"]) for p in body] == [("p1", True), ("p2", False)]
    bad = api(server, "POST", "/populate", json=[{"upstream": echo}])
    assert bad.status_code == 400
    assert bad.json()["error"] == "missing required field: name at proxy 1"
    assert set(toxi.proxies()) == {"p1", "p2"}


# --- traffic and toxics ---------------------------------------------------------------------


def test_passes_bytes_unchanged(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="plain")
    payload = os.urandom(1 << 20)
    with connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exactly(sock, len(payload)) == payload
        sender.join(WAIT)


def test_latency_both_directions_with_jitter(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="slow")
    with connect(proxy) as sock:  # toxics apply to connections already open
        proxy.add_toxic(type="latency", attributes={"latency": 200})
        assert echo_time(sock, b"ping") >= 0.2
        proxy.add_toxic(
            type="latency", stream="upstream", attributes={"latency": 150, "jitter": 50}
        )
        assert echo_time(sock, b"ping") >= 0.2 + 0.1
    with connect(proxy) as sock:  # and to new ones
        assert echo_time(sock, b"ping") >= 0.2 + 0.1


def test_toxicity_zero_never_applies(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="lucky")
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 60_000})
    with connect(proxy) as sock:
        echo_time(sock, b"fast")  # bounded by the socket timeout, far below 60 s


def test_bandwidth_limits_rate(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="thin")
    proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # 100 KB/s = 100 bytes/ms
    payload = os.urandom(30_000)
    with connect(proxy) as sock:
        assert echo_time(sock, payload) >= 0.3 * 0.9  # small slack: owed time is rounded


def test_timeout_zero_drops_silently_until_removed(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="black-hole")
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    with connect(proxy) as sock:
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing comes back and the connection stays open
            sock.recv(16)
        sock.sendall(b"still open")
        sock.settimeout(WAIT)
        proxy.destroy_toxic("timeout_downstream")
        # As upstream: the data was dropped, and removing the toxic closes its connections.
        assert read_to_close(sock)[0] == b""
    with connect(proxy) as sock:
        echo_time(sock, b"healed")


def test_timeout_positive_closes_after_timeout(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="hang-up")
    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    with connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"dropped")
        data, _how = read_to_close(sock)
        assert data == b""
        assert time.monotonic() - start >= 0.2


def test_reset_peer_resets(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="rst")
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    with connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"hello")
        assert read_to_close(sock) == (b"", "reset")
        assert time.monotonic() - start >= 0.1


def test_limit_data_closes_after_n_bytes(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="limited")
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    with connect(proxy) as sock:
        sock.sendall(b"0123456789abcdefghij")
        data, _how = read_to_close(sock)
        assert data == b"0123456789"


def test_slicer_delivers_everything_in_pieces(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="sliced")
    # Pieces of at most 100 bytes with 10 ms after each: 1000 bytes take at least 10 pieces,
    # so the last leaves at least 90 ms after the first, however the kernel chunked the reads.
    proxy.add_toxic(
        type="slicer",
        stream="upstream",
        attributes={"average_size": 100, "size_variation": 0, "delay": 10_000},
    )
    payload = os.urandom(1000)
    with connect(proxy) as sock:
        assert echo_time(sock, payload) >= 9 * 0.01


def test_slow_close_delays_the_close(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="lingering")
    proxy.add_toxic(type="slow_close", attributes={"delay": 200})
    with connect(proxy) as sock:
        echo_time(sock, b"hi")
        start = time.monotonic()
        # As upstream, end of stream from the client closes the upstream socket; the close
        # then reaches the client only after the delay.
        sock.shutdown(socket.SHUT_WR)
        assert read_to_close(sock)[0] == b""
        assert time.monotonic() - start >= 0.2


def test_held_bytes_survive_update_add_and_remove(toxi, echo, echo_server) -> None:
    proxy = toxi.create(upstream=echo, name="held")
    proxy.add_toxic(type="latency", attributes={"latency": 30_000})
    parts = [bytes([i]) * 1000 for i in range(1, 21)]
    with connect(proxy) as sock:
        for part in parts:
            # One at a time, so that they come back as separate chunks: once echoed, each is
            # held by the latency toxic (the first sleeping, the rest queued behind it).
            expected = echo_server.echoed + len(part)
            sock.sendall(part)
            echo_server.wait_echoed(expected)
        APIConsumer.post(
            "/proxies/held/toxics/latency_downstream", json={"attributes": {"latency": 20_000}}
        )
        proxy.add_toxic(type="slicer", attributes={"average_size": 300, "delay": 10})
        proxy.destroy_toxic("latency_downstream")
        assert recv_exactly(sock, 20_000) == b"".join(parts)


def test_rewiring_while_streaming_never_loses_or_reorders_bytes(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="busy")
    payload = os.urandom(400_000)
    with connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        got = bytearray(sock.recv(65536))
        proxy.add_toxic(type="latency", attributes={"latency": 5})
        proxy.add_toxic(type="slicer", attributes={"average_size": 500, "delay": 10})
        proxy.add_toxic(type="latency", stream="upstream", name="up", attributes={"latency": 3})
        APIConsumer.post(
            "/proxies/busy/toxics/latency_downstream", json={"attributes": {"latency": 1}}
        )
        proxy.destroy_toxic("latency_downstream")
        proxy.destroy_toxic("up")
        proxy.destroy_toxic("slicer_downstream")
        got += recv_exactly(sock, len(payload) - len(got))
        sender.join(WAIT)
        assert bytes(got) == payload


def test_disable_enable(toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="switch")
    host, port = proxy.listen.rsplit(":", 1)
    with connect(proxy) as sock:
        echo_time(sock, b"up")
        proxy.disable()
        assert read_to_close(sock)[0] == b""  # open connections are cut
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=WAIT).close()
    assert toxi.proxies()["switch"].enabled is False
    proxy.enable()
    assert toxi.proxies()["switch"].listen == proxy.listen  # same address again
    with connect(proxy) as sock:
        echo_time(sock, b"back")


def test_update_listen_and_upstream(server, toxi, echo) -> None:
    proxy = toxi.create(upstream=echo, name="moving")
    old_host, old_port = proxy.listen.rsplit(":", 1)
    moved = api(server, "PATCH", "/proxies/moving", json={"listen": "127.0.0.1:0"}).json()
    assert moved["enabled"] and moved["listen"] != proxy.listen
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((old_host, int(old_port)), timeout=WAIT).close()
    proxy.listen = moved["listen"]
    with connect(proxy) as sock:
        echo_time(sock, b"moved")
    # An upstream that refuses: the proxy accepts, fails to dial, closes the client.
    api(server, "POST", "/proxies/moving", json={"upstream": "127.0.0.1:1"})
    with connect(proxy) as sock:
        assert read_to_close(sock)[0] == b""
    api(server, "POST", "/proxies/moving", json={"upstream": echo})
    with connect(proxy) as sock:
        echo_time(sock, b"back")


def test_reset_enables_all_and_removes_toxics(server, toxi, echo) -> None:
    first = toxi.create(upstream=echo, name="r1")
    second = toxi.create(upstream=echo, name="r2")
    first.add_toxic(type="latency", attributes={"latency": 60_000})
    second.add_toxic(type="timeout", attributes={"timeout": 0})
    second.disable()
    assert api(server, "POST", "/reset").status_code == 204
    for name, proxy in toxi.proxies().items():
        assert proxy.enabled, name
        assert proxy.toxics() == {}, name
    for proxy in (first, second):
        with connect(proxy) as sock:
            echo_time(sock, b"clean")


def test_interrupt_is_never_swallowed_by_a_completing_get() -> None:
    # The race behind Python 3.11's wait_for bug: a chunk arrives and the stage is cancelled
    # in the same loop iteration. The get must end cancelled (or an interrupt would wait for
    # ever) and the chunk must stay queued for whoever reads next.
    from chaos.toxiproxy.stream import Chan, Chunk

    async def scenario() -> None:
        chan = Chan()
        getter = asyncio.ensure_future(chan.get(timeout=60))
        await asyncio.sleep(0)  # let it park on the channel
        await chan.put(Chunk(b"x", 0.0))
        getter.cancel()
        await asyncio.wait([getter])
        assert getter.cancelled()
        assert chan.take_all() == [Chunk(b"x", 0.0)]
        with pytest.raises(TimeoutError):
            await chan.get(timeout=0.01)

    asyncio.run(scenario())


def test_launcher_prefers_binary_on_path(tmp_path, monkeypatch) -> None:
    # A stand-in "toxiproxy-server" (the bundled server accepts Go-style -host/-port).
    fake = tmp_path / "toxiproxy-server"
    fake.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m chaos.toxiproxy "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    handle = start_toxiproxy("127.0.0.1", 0, ready_timeout=WAIT)
    try:
        assert not handle.bundled
        assert requests.get(handle.url + "/version", timeout=WAIT).status_code == 200
    finally:
        handle.stop()
    assert handle.process.poll() is not None
