"""Start a Toxiproxy server for the chaos suite: the real ``toxiproxy-server`` when it is on
PATH, otherwise the bundled one, as a child process that is stopped by its PID."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ToxiproxyHandle:
    host: str
    port: int
    pid: int
    bundled: bool  # False when the toxiproxy-server binary is running
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ToxiproxyHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    # Only for the binary, which cannot report a port it picked itself; the bundled server
    # binds port 0 and reports the port, which has no race.
    with socket.create_server((host, 0)) as sock:
        return int(sock.getsockname()[1])


def _read_line(stream: IO[bytes], deadline: float) -> bytes:
    fd = stream.fileno()
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("toxiproxy did not report its address in time")
        byte = os.read(fd, 1)  # unbuffered: nothing past the line is consumed
        if not byte:
            raise RuntimeError("toxiproxy exited before reporting its address")
        line += byte
    return line


def _wait_ready(handle: ToxiproxyHandle, deadline: float) -> None:
    while True:
        if handle.process.poll() is not None:
            raise RuntimeError(f"toxiproxy exited with status {handle.process.returncode}")
        try:
            with urllib.request.urlopen(f"{handle.url}/version", timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"toxiproxy at {handle.url} not ready in time")
        time.sleep(0.05)  # polling interval for readiness; the deadline bounds the wait


def start_toxiproxy(
    host: str = "127.0.0.1",
    port: int = 8474,
    *,
    bundled: bool | None = None,
    ready_timeout: float = 10.0,
    log: IO[bytes] | int | None = subprocess.DEVNULL,
) -> ToxiproxyHandle:
    """Start a server and wait (at most ``ready_timeout`` s) until ``GET /version`` answers.

    ``bundled=None`` uses ``toxiproxy-server`` from PATH if present, else the bundled server;
    True or False forces one. ``port=0`` picks a free port. ``log`` receives the server's
    stderr (the bundled server's stdout carries only its address line).
    """
    binary = None if bundled else shutil.which("toxiproxy-server")
    if bundled is False and binary is None:
        raise FileNotFoundError("toxiproxy-server is not on PATH")
    deadline = time.monotonic() + ready_timeout
    if binary is not None:
        port = port or _free_port(host)
        cmd = [binary, "-host", host, "-port", str(port)]
        env = None
        stdout: int | IO[bytes] | None = log
    else:
        cmd = [sys.executable, "-m", "chaos.toxiproxy", "--host", host, "--port", str(port)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        stdout = subprocess.PIPE
    process = subprocess.Popen(cmd, stdout=stdout, stderr=log, env=env, stdin=subprocess.DEVNULL)
    handle = ToxiproxyHandle(host, port, process.pid, binary is None, process)
    try:
        if binary is None:
            assert process.stdout is not None
            reported = json.loads(_read_line(process.stdout, deadline))["listening"]
            handle.port = int(reported.rsplit(":", 1)[1])
        _wait_ready(handle, deadline)
    except BaseException:
        handle.stop()
        raise
    return handle
