"""Structured logging: one line per event, as key=value pairs or JSON.

Never pass patient data (names, IDs, birth dates, accession numbers) as a field: log UIDs, destination
ids, sizes and reasons. pynetdicom's own loggers are capped at WARNING because at DEBUG/INFO they print
whole datasets, identifying attributes included.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from karnak_shared.safe_text import has_controls

_SERVICE = "karnak"


def _render_value(value: Any) -> str:
    text = str(value)
    # Quoted as JSON, whose escapes cover every control character (and, ASCII-only, C1 controls, bidi
    # overrides and line separators): a value from a message cannot fake a line or hide what follows.
    if text == "" or any(c in text for c in ' "=\\') or has_controls(text):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=... service=... event=... key=value ...` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": _SERVICE,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).replace("\n", " | ")
        return " ".join(f"{k}={_render_value(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "service": _SERVICE,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str)


def configure_logging(service: str, level: str = "INFO", fmt: str = "kv") -> None:
    """Send every log record to stderr as one structured line tagged with the service name."""
    global _SERVICE
    _SERVICE = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs datasets (with patient names) at DEBUG/INFO; pika is silenced by the broker module.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's validation warnings quote the offending value, which may be a name or a birth date.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


class EventLogger:
    """A logger whose calls read as events with fields: ``log.info("c-store.accepted", size=512)``."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, extra={"fields": fields}, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, False, fields)

    def error(self, event: str, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logging a broker or database address."""
    import re

    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)
