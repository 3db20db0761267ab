"""The whole CI check in one command: ``python -m tests [pytest args...]``.

Runs ruff (lint and format check), mypy (strict on raft/ and partition/), then pytest.
Pytest's exit code 5 ("no tests collected") is a failure here: a suite that ran nothing
proves nothing.
"""

from __future__ import annotations

import subprocess
import sys

PY = sys.executable
CHECKS: list[tuple[str, list[str]]] = [
    ("ruff lint", [PY, "-m", "ruff", "check", "."]),
    ("ruff format", [PY, "-m", "ruff", "format", "--check", "."]),
    ("mypy", [PY, "-m", "mypy", "raft", "partition"]),
]


def main(argv: list[str]) -> int:
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
