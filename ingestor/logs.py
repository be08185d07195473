"""JSON logs: one object per line, rendered by orjson straight to bytes.

Event names are stable snake_case (``file_ingested``, ``file_unreadable``...);
context goes in keys (``path``, ``sha256``, ``error``). Logs go to stderr so
that commands printing data (``status --json``, ``verify --json``) keep stdout
clean; systemd's journal captures both.

Paths are ``surrogateescape`` str (names need not be UTF-8) and orjson refuses
lone surrogates, so every non-ASCII string value is checked and, if needed,
rendered with the invalid bytes as ``\\xNN`` escapes: a log line is always one
valid JSON object.
"""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO

import orjson
import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

from ingestor import runs

LEVELS = ("debug", "info", "warning", "error", "critical")


def _safe_text(value: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _sanitize(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if type(value) is str and not value.isascii():
            event_dict[key] = _safe_text(value)
        elif isinstance(value, bytes):
            event_dict[key] = value.decode("utf-8", "backslashreplace")
    return event_dict


def _with_run(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Every line of a run carries its ``run_id``."""
    if runs.RUN_ID is not None:
        event_dict.setdefault("run_id", runs.RUN_ID)
    return event_dict


def _dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


_sink: Any = None  # the configured stream's BytesLogger: one lock per file with structlog's own


def configure(level: str = "info", stream: BinaryIO | None = None) -> None:
    """Route every structlog logger to JSON lines on ``stream`` (stderr)."""
    global _sink
    factory = structlog.BytesLoggerFactory(file=stream or sys.stderr.buffer)
    _sink = factory()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _with_run,
            _sanitize,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # library warnings too: every stderr line is JSON


class _ToStructlog(logging.Handler):
    """Library messages (asyncio, watchdog, sqlite...) become JSON lines like ours."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger().log(
                record.levelno,
                "library_log",
                logger=record.name,
                message=record.getMessage(),
                exc_info=record.exc_info if record.exc_info else None,
            )
        except Exception:  # a log handler must never raise into the caller
            self.handleError(record)


def info_many(log: Any, event: str, rows: Iterable[dict[str, Any]]) -> None:
    """One ``info`` line per row, the same JSON as ``log.info(event, **row)``, in one write.

    The per-file lines of a batch: structlog's processor chain costs tens of
    microseconds a line, this a few. Same keys and order (context, fields,
    event, level, ts), same escaping of names that are not UTF-8.
    """
    if _sink is None or not log.is_enabled_for(logging.INFO):
        for row in rows:
            log.info(event, **row)
        return
    context = structlog.get_context(log)
    tail = {"event": event, "level": "info", "ts": _now_iso()}
    if runs.RUN_ID is not None:
        tail["run_id"] = runs.RUN_ID
    lines = []
    for row in rows:
        obj = {**context, **row, **tail}
        try:
            lines.append(orjson.dumps(obj))
        except TypeError:  # a lone surrogate (a name that is not UTF-8), or an odd value
            lines.append(_dumps(_sanitize(None, "info", obj)))
    if lines:
        _sink.msg(b"\n".join(lines))


def _now_iso() -> str:
    """structlog's ``TimeStamper(fmt="iso", utc=True)`` format."""
    return datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")


def get_logger(**context: Any) -> Any:
    """A logger with ``context`` bound to every line it writes."""
    return structlog.get_logger().bind(**context)
