"""Single-line, logfmt-style logs through the standard library.

Every record becomes one line: `time=... level=... logger=... msg="..."` followed by any `extra=` fields, with
a traceback (if any) folded into an escaped `exc="..."` field, so a log shipper never splits one event into many.
Callers never pass secrets; this module does not try to find them.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

#: Attributes every `LogRecord` has; anything else on a record came from `extra=` and is printed as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: Loggers whose `extra=` fields only repeat their message (aiohttp's access log passes each format atom).
_MESSAGE_ONLY_LOGGERS = frozenset({"aiohttp.access"})


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(ch in text for ch in ' "=\\\n\r\t'):
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line (UTC timestamps with milliseconds)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        parts = [
            f"time={moment.strftime('%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
            f"level={record.levelname}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        if record.name not in _MESSAGE_ONLY_LOGGERS:
            for key, value in record.__dict__.items():
                if key not in _STANDARD_ATTRS and not key.startswith("_"):
                    parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        elif record.exc_text:
            parts.append(f"exc={_quote(record.exc_text)}")
        return " ".join(parts)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the moment of the record (it may be replaced after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _BotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so a second call replaces it instead of adding one."""


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (default: the current stderr) as single lines, at `level` and up.

    Calling it again replaces the handler it installed before; handlers installed by others stay.
    """
    handler: logging.Handler = _BotHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, (_BotHandler, _StderrHandler)):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
