"""The whole CI check in one command: ``python -m tests [pytest args...]``.

Runs ruff (lint and format check), mypy (strict on raft/ and partition/), then pytest.
Pytest's exit code 5 ("no tests collected") is a failure here: a suite that ran nothing
proves nothing.

The chaos suite's power-loss filesystem (chaos/lazyfs) needs FUSE 3. When it is missing and
this runs as root on a machine with apt-get (Debian/Ubuntu, as CI), Debian's ``fuse3`` is
installed first, saying so; otherwise the LazyFS tests fail and say what to install (they
never skip: a power-loss check that did not run proves nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PY = sys.executable
CHECKS: list[tuple[str, list[str]]] = [
    ("ruff lint", [PY, "-m", "ruff", "check", "."]),
    ("ruff format", [PY, "-m", "ruff", "format", "--check", "."]),
    ("mypy", [PY, "-m", "mypy", "raft", "partition"]),
]


def _ensure_fuse() -> None:
    from chaos.lazyfs.mount import fuse_unavailable_reason

    reason = fuse_unavailable_reason()
    if reason is None:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"== FUSE unavailable ({reason}); the LazyFS tests will fail", flush=True)
        return
    print("== FUSE 3 missing: apt-get install -y fuse3 (for chaos/lazyfs)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.call(["apt-get", "install", "-y", "-q", "fuse3"], env=env) != 0:
        subprocess.call(["apt-get", "update", "-q"], env=env)
        subprocess.call(["apt-get", "install", "-y", "-q", "fuse3"], env=env)


def main(argv: list[str]) -> int:
    _ensure_fuse()
    for name, cmd in CHECKS:
        print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"== {name} failed (exit {rc})", flush=True)
            return rc
    cmd = [PY, "-m", "pytest", "-n", "2", "--dist", "loadgroup", *argv]
    print(f"== pytest: {' '.join(cmd[2:])}", flush=True)
    rc = subprocess.call(cmd)
    if rc == 5:
        print("== pytest collected no tests: failing, since nothing was checked", flush=True)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
