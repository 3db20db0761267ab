"""Logging for the broker process: structlog JSON lines on stderr.

Contract:
- One line per event, a JSON object with at least ``timestamp`` (ISO 8601, UTC), ``level``,
  ``event`` (snake_case, e.g. ``leader_elected``) and ``node_id``; any other bound or passed
  fields are written as they are (non-JSON values via ``repr``).
- ``configure_logging`` is called once, by the process entry point (``replog server``), never by
  library code; modules take a logger from ``get_logger(**bind)`` and bind ``group_id``/``term``.
- Records from the standard ``logging`` module (grpc, asyncio) are rendered the same way, so a
  log file holds one format only.
- Events below the configured level are dropped before any formatting work.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = ["LEVELS", "configure_logging", "get_logger"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _constant_fields(**fields: Any) -> Processor:
    """A processor adding fixed fields (without overriding ones the caller bound)."""

    def add(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add


def configure_logging(level: str, node_id: int, *, stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging to ``stream`` (default stderr) as JSON lines.

    ``level`` is one of debug, info, warning, error, critical (case-insensitive).
    """
    level_num = LEVELS.get(level.lower())
    if level_num is None:
        raise ValueError(f"unknown log level {level!r}; use one of: {', '.join(LEVELS)}")
    out = sys.stderr if stream is None else stream
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _constant_fields(node_id=node_id),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_num),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setLevel(level_num)  # libraries may lower their own loggers' levels
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(default=repr),
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_num)


def get_logger(**bind: Any) -> FilteringBoundLogger:
    """A logger with ``bind`` fields attached, e.g. ``get_logger(group_id=7)``."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(**bind)
    return logger
