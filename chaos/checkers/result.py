"""What every checker returns, and how verdicts combine.

Contract: a checker is a pure function of an already-paired, already-split history; it returns
a :class:`CheckResult` whose ``valid`` is True, False or ``"unknown"`` (Jepsen's three-valued
verdict: "unknown" when the history cannot show the property either way, e.g. no final drain
was recorded). Anomaly counts are exact; examples are bounded so a million-op history with a
systematic bug still yields a readable results.json.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_EXAMPLES", "Anomalies", "CheckResult", "Valid", "merge_valid"]

Valid = bool | Literal["unknown"]
MAX_EXAMPLES = 8


def merge_valid(values: Iterable[Valid]) -> Valid:
    """False beats "unknown" beats True (an invalid run stays invalid whatever else is unknown)."""
    out: Valid = True
    for v in values:
        if v is False:
            return False
        if v == "unknown":
            out = "unknown"
    return out


@dataclass(slots=True)
class CheckResult:
    name: str
    valid: Valid
    anomalies: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "anomalies": dict(self.anomalies),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "stats": self.stats,
        }


class Anomalies:
    """Counts anomalies by kind, keeping the first :data:`MAX_EXAMPLES` examples of each."""

    __slots__ = ("counts", "examples", "limit")

    def __init__(self, limit: int = MAX_EXAMPLES) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.limit = limit

    def add(self, kind: str, example: dict[str, Any], count: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + count
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < self.limit:
            bucket.append(example)

    def result(
        self, name: str, stats: dict[str, Any] | None = None, unknown: bool = False
    ) -> CheckResult:
        if any(self.counts.values()):
            valid: Valid = False
        else:
            valid = "unknown" if unknown else True
        return CheckResult(name, valid, dict(self.counts), dict(self.examples), stats or {})
