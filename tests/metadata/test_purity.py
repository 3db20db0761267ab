"""metadata/ is pure: no I/O, no clock, no randomness, no asyncio/gRPC, nothing of ours but
raft.types, raft.errors and partition.config (the shared topic-config rules) (DESIGN.md, "Imports point downward only")."""

from __future__ import annotations

import ast
from pathlib import Path

import metadata

ALLOWED = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "fractions",
    "json",
    "types",
    "typing",
    "raft.types",
    "raft.errors",  # InvariantViolation: the one per-group failure model (#12 defect 5)
    "partition.config",  # the one topic-config validation (#12 defect 13)
    "partition.errors",
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_metadata_imports_only_pure_modules() -> None:
    package = Path(metadata.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        foreign = {
            m for m in imported_modules(path) if m not in ALLOWED and not m.startswith("metadata")
        }
        assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_the_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\nimport grpc.aio\n")
    assert imported_modules(bad) - ALLOWED == {"time", "asyncio", "grpc.aio"}
