"""partition/ imports only raft.types and client.batch of ours, and nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"raft", "partition", "metadata", "server", "client", "chaos"}
ALLOWED_OURS = {"raft.types", "client.batch"}
FORBIDDEN = {"asyncio", "grpc", "socket", "threading", "time", "os", "io", "random", "datetime"}


def imported_modules(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
    return mods


def test_partition_import_contract() -> None:
    files = sorted((ROOT / "partition").glob("*.py"))
    assert len(files) >= 8
    for f in files:
        for mod in imported_modules(f):
            top = mod.split(".")[0]
            assert top not in FORBIDDEN, f"{f.name} imports {mod}"
            if top in OURS and top != "partition":
                assert mod in ALLOWED_OURS, f"{f.name} imports {mod}"


def test_batch_codec_is_a_leaf() -> None:
    for mod in imported_modules(ROOT / "client" / "batch.py"):
        assert mod.split(".")[0] not in OURS, mod
