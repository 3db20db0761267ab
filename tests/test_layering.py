"""The layering contract of DESIGN.md, checked by walking every module's imports.

raft/ (outside raft/storage) is a pure state machine: no asyncio, sockets, threads, clocks,
OS randomness or file I/O, and nothing of ours. client/ shares only the wire schema and the
batch codec with the broker: it never imports server/, metadata/, partition/ or raft/.
Imports point downward: metadata/ and partition/ never import server/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"raft", "partition", "metadata", "server", "client", "chaos"}
IO_MODULES = {
    "asyncio",
    "socket",
    "selectors",
    "threading",
    "time",
    "os",
    "io",
    "random",
    "subprocess",
    "grpc",
    "datetime",
    "concurrent",
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules in {package}/"
    return files


def core_modules() -> list[Path]:
    return [p for p in modules("raft") if "storage" not in p.relative_to(ROOT / "raft").parts]


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_raft_core_is_sans_io(path: Path) -> None:
    for mod in imports(path):
        top = mod.split(".")[0]
        # `random` is allowed for the injected random.Random type only: no module-level calls.
        if top == "random":
            text = path.read_text()
            for call in ("random.random(", "random.randint(", "random.choice(", "random.seed("):
                assert call not in text, f"raft/{path.name} uses the global {call}"
            continue
        assert top not in IO_MODULES, f"raft/{path.name} imports {mod}: the core must stay sans-IO"
        if top in OURS:
            in_storage = mod == "raft.storage" or mod.startswith("raft.storage.")
            assert top == "raft" and not in_storage, f"raft/{path.name} imports {mod}"


@pytest.mark.parametrize("path", modules("client"), ids=lambda p: str(p.relative_to(ROOT)))
def test_client_shares_only_wire_and_codec(path: Path) -> None:
    for mod in imports(path):
        top = mod.split(".")[0]
        assert top not in {"server", "metadata", "partition", "raft", "chaos"}, (
            f"{path.relative_to(ROOT)} imports {mod}: client/ must not reach into the broker"
        )


@pytest.mark.parametrize("package", ["raft", "partition", "metadata"])
def test_lower_layers_never_import_the_broker(package: str) -> None:
    for path in modules(package):
        for mod in imports(path):
            assert mod.split(".")[0] not in {"server", "chaos"}, f"{path} imports {mod}"
