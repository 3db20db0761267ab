"""Shared pytest options. ``--rewrite`` regenerates scenario scripts' expected output."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite tests/raft/testdata/*.txt with the actual output (review the diff)",
    )
