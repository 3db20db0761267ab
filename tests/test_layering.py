"""The layering contract of DESIGN.md, checked by importing (not by reading import lines).

An AST walk of each module's direct imports misses transitive ones: partition/ once imported
``client.batch``, whose package ``__init__`` pulled in grpc. So each check starts a fresh
interpreter with the forbidden modules set to ``None`` in ``sys.modules`` (importing them then
raises ImportError wherever in the chain it happens) and imports the package under test.

- wire/, raft/ (core and storage), partition/ and metadata/ import without grpc and asyncio.
- The raft core (raft/ minus raft/storage) also imports without the clocks, threads, sockets,
  OS files and the broker: time enters as tick(), randomness as an injected random.Random.
- client/ imports without server/, metadata/, partition/ and raft/: it shares only ``wire``.
- metadata/ and partition/ import without server/, client/ and chaos/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_blocked(modules: list[str], blocked: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        f"for mod in {modules!r}:\n"
        "    __import__(mod)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def package_modules(package: str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        found.append(name)
    assert found, f"no modules in {package}/"
    return found


CASES = {
    "state machines and codec without grpc/asyncio": (
        package_modules("wire", exclude=("wire.replog_pb2_grpc",))
        + package_modules("raft")
        + package_modules("partition")
        + package_modules("metadata"),
        ["grpc", "asyncio", "server", "client", "chaos"],
    ),
    "raft core is sans-IO": (
        package_modules("raft", exclude=("raft.storage",)),
        [
            "grpc",
            "asyncio",
            "socket",
            "selectors",
            "threading",
            "time",
            "subprocess",
            "concurrent",
            "raft.storage",
            "server",
            "client",
            "partition",
            "metadata",
        ],
    ),
    "client shares only wire": (
        package_modules("client"),
        ["server", "metadata", "partition", "raft", "chaos"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_imports_with_forbidden_modules_blocked(case: str) -> None:
    modules, blocked = CASES[case]
    proc = import_blocked(modules, blocked)
    assert proc.returncode == 0, f"{case}: importing with {blocked} blocked failed:\n{proc.stderr}"


def test_the_check_can_fail() -> None:
    """The mechanism itself: a module that needs a blocked one must fail to import."""
    proc = import_blocked(["client.connection"], ["grpc"])
    assert proc.returncode != 0 and "grpc" in proc.stderr
