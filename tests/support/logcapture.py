"""Run `bot.logs.configure_logging` inside a test and put the process's logging back afterwards.

`configure_logging` rewires the root logger (that is its job in `serve`); tests that exercise it must not leave
that wiring behind for the next test, nor lose pytest's own capture handlers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.logs import LIBRARY_LEVELS, configure_logging, extra_fields

_TOUCHED = (*LIBRARY_LEVELS, "uvicorn", "uvicorn.error", "uvicorn.access")


class RawRecords(logging.Handler):
    """Every record as it was logged, before any filter of another handler rewrote it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []  # (logger name, everything the record carries, as text)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg} {record.args}"
        parts = [message, repr(extra_fields(record))]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.lines.append((record.name, "\n".join(parts)))

    def text(self, prefix: str = "") -> str:
        return "\n".join(line for name, line in self.lines if name.startswith(prefix))


@dataclass
class Captured:
    """What `configure_logging` wrote (formatted, redacted) and what was logged (raw)."""

    stream: io.StringIO
    raw: RawRecords
    handler: logging.Handler

    @property
    def output(self) -> str:
        return self.stream.getvalue()

    def json_lines(self) -> list[dict[str, Any]]:
        """The output parsed line by line (fails the test if a line is not JSON)."""
        return [json.loads(line) for line in self.output.splitlines() if line.strip()]


@contextlib.contextmanager
def configured_logging(
    fmt: str = "json", level: str = "INFO", secrets: list[str] | None = None, *, library_level: str | None = None
) -> Iterator[Captured]:
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _TOUCHED}
    saved_propagate = {name: logging.getLogger(name).propagate for name in _TOUCHED}
    stream = io.StringIO()
    raw = RawRecords()
    try:
        handler = configure_logging(fmt, level, secrets or [], stream=stream, library_level=library_level)
        root.handlers.insert(0, raw)  # first: it sees each record before the redacting handler rewrites it
        # pytest's capture handlers stay attached too, after ours
        root.handlers.extend(h for h in saved_root[0] if h not in root.handlers)
        yield Captured(stream=stream, raw=raw, handler=handler)
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (lvl, handlers) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(lvl)
            logger.handlers[:] = handlers
            logger.propagate = saved_propagate[name]
