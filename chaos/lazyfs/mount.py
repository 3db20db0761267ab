"""Running LazyFS from other code (the power-loss nemesis, tests): is FUSE usable here, mount
in a child process, send control commands, unmount and stop.

The nemesis sequence is: SIGKILL the broker, ``LazyFS.crash()``, start the broker again on the
same mountpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

INSTALL_HINT = (
    "install libfuse3 and fusermount3 with `apt-get install -y fuse3 libfuse3-3` and the Python "
    "binding with `pip install mfusepy`; the kernel must offer /dev/fuse (in a container: "
    "--device /dev/fuse --cap-add SYS_ADMIN)"
)


def fuse_unavailable_reason() -> str | None:
    """None when LazyFS can mount here; otherwise what is missing and how to install it."""
    if not os.path.exists("/dev/fuse"):
        return f"/dev/fuse does not exist; {INSTALL_HINT}"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened ({exc.strerror}); {INSTALL_HINT}"
    if shutil.which("fusermount3") is None:
        return f"fusermount3 is not on PATH; {INSTALL_HINT}"
    try:
        import mfusepy
    except (ImportError, OSError) as exc:  # mfusepy raises OSError when libfuse is missing
        return f"the FUSE binding cannot be loaded ({exc}); {INSTALL_HINT}"
    if mfusepy.fuse_version_major != 3:
        return f"libfuse {mfusepy.fuse_version_major} was loaded, LazyFS needs 3; {INSTALL_HINT}"
    return None


def send(control: str, *words: str, timeout: float = 30.0) -> dict[str, Any]:
    """One control command (``ping``, ``status``, ``sync``, ``crash [SEED]``); its JSON reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(control)
        sock.sendall((" ".join(words) + "\n").encode())
        reply = sock.makefile("r").readline()
    if not reply:
        raise ConnectionError(f"lazyfs at {control} closed without answering {words}")
    out: dict[str, Any] = json.loads(reply)
    if not out.get("ok"):
        raise RuntimeError(f"lazyfs {' '.join(words)}: {out.get('error')}")
    return out


class LazyFS:
    """A LazyFS mount served by a child process (``python -m chaos.lazyfs``)."""

    def __init__(
        self, mountpoint: str, backing: str, control: str | None = None, verbose: bool = False
    ) -> None:
        self.verbose = verbose
        self.mountpoint = os.path.abspath(mountpoint)
        self.backing = os.path.abspath(backing)
        self._tmp = None
        if control is None:
            # a Unix socket path is limited to 107 bytes: test folders can be deeper than that
            self._tmp = tempfile.mkdtemp(prefix="lazyfs-")
            control = os.path.join(self._tmp, "control.sock")
        self.control = control
        self.log_path = os.path.join(
            self._tmp or os.path.dirname(self.backing),
            f"lazyfs-{os.path.basename(self.mountpoint)}.log",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LazyFS:
        reason = fuse_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"LazyFS cannot run on this machine: {reason}")
        os.makedirs(self.mountpoint, exist_ok=True)
        os.makedirs(self.backing, exist_ok=True)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaos.lazyfs",
                    self.mountpoint,
                    "--backing",
                    self.backing,
                    "--control",
                    self.control,
                    "--parent-pid",  # so a killed test run does not leave a mount behind
                    str(os.getpid()),
                    *(["--verbose"] if self.verbose else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lazyfs exited with {self.proc.returncode}: {self._log_tail()}")
            if os.path.ismount(self.mountpoint) and os.path.exists(self.control):
                try:
                    send(self.control, "ping", timeout=2.0)
                    return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"lazyfs did not mount in {timeout}s: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def crash(self, torn_seed: int | None = None) -> dict[str, Any]:
        """Forgets all that was not made durable; kill the processes using the mount first."""
        words = ["crash"] if torn_seed is None else ["crash", str(torn_seed)]
        return send(self.control, *words)

    def sync(self) -> dict[str, Any]:
        return send(self.control, "sync")

    def status(self) -> dict[str, Any]:
        return send(self.control, "status")

    def stop(self, timeout: float = 10.0) -> None:
        """Unmounts (lazily if still busy) and waits for the server, killing it by pid if it
        does not exit. A clean unmount writes back all pending state first."""
        if self.proc is None:
            return
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        self.proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LazyFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
