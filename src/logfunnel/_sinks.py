"""Sinks: the handlers ``install()`` builds from its options, and the JSON lines formatter."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import logging.handlers
import os
from typing import Any, Final

from logfunnel._options import parse_level
from logfunnel._wire import STANDARD_ATTRS

#: The line format of file sinks when ``fmt`` is not given.
DEFAULT_FORMAT: Final = (
    "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(name)s: %(message)s"
)


class LineFormatter(logging.Formatter):
    """A ``logging.Formatter`` that keeps every record on lines of its own.

    A message, traceback or stack with newlines in it is written with each
    continuation line indented by ``"  | "``, so a reader can always tell
    where one record ends and the next begins: a line that does not start
    with that prefix starts a record.
    """

    continuation: Final = "\n  | "

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; indent every line after the first."""
        text = super().format(record)
        if "\n" in text or "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", self.continuation)
        return text


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object on one line (JSON lines).

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``process``, ``process_name``, ``thread_name``, ``module``, ``line``,
    ``function``; ``exc_text`` and ``stack_info`` when present; then every
    ``extra=`` attribute.  Newlines and control characters are escaped by
    JSON itself, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        created = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
        out: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "process_name": record.processName,
            "thread_name": record.threadName,
            "module": record.module,
            "line": record.lineno,
            "function": record.funcName,
        }
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            out["exc_text"] = exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        task = getattr(record, "taskName", None)
        if task:
            out["task_name"] = task
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS and key not in out:
                out[key] = value
        return json.dumps(out, ensure_ascii=False, default=repr)


def build_handlers(spec: dict[str, Any]) -> list[logging.Handler]:
    """Build the handlers ``install(file=..., json=..., console=...)`` asks for.

    Raises ``ValueError`` or ``OSError`` with a message that says what to change.
    """
    handlers: list[logging.Handler] = []
    formatter: logging.Formatter
    if spec.get("json"):
        formatter = JsonFormatter()
    else:
        try:
            formatter = LineFormatter(spec.get("fmt") or DEFAULT_FORMAT, spec.get("datefmt"))
        except ValueError as exc:
            msg = f"fmt={spec.get('fmt')!r} is not a valid %-style format: {exc}"
            raise ValueError(msg) from None
    path = spec.get("file")
    if path:
        path = os.path.abspath(path)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            msg = f"file={spec['file']!r}: directory {directory!r} does not exist; create it first"
            raise ValueError(msg)
        if not os.access(directory, os.W_OK):
            msg = f"file={spec['file']!r}: directory {directory!r} is not writable"
            raise ValueError(msg)
        max_bytes = int(spec.get("max_bytes") or 0)
        backups = int(spec.get("backups") or 0)
        file_handler: logging.Handler
        if max_bytes:
            file_handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        else:
            file_handler = logging.FileHandler(path, encoding="utf-8")
        handlers.append(file_handler)
    if spec.get("console") or not path:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers


def validate_spec(spec: dict[str, Any]) -> None:
    """Check sink options without opening anything; raise ``ValueError`` saying what to change."""
    max_bytes, backups = spec.get("max_bytes") or 0, spec.get("backups") or 0
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes={max_bytes!r}: give a size in bytes >= 0 (0: never rotate)")
    if not isinstance(backups, int) or backups < 0:
        raise ValueError(f"backups={backups!r}: give a number of rotated files to keep, >= 0")
    if backups and not max_bytes:
        raise ValueError(f"backups={backups} needs max_bytes: rotation happens at that size")
    if max_bytes and not spec.get("file"):
        raise ValueError("max_bytes needs file=: only a file sink rotates")
    if spec.get("level") is not None:
        parse_level(spec["level"])
    config = spec.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValueError(
            f"config must be a logging.config.dictConfig dict, not {type(config).__name__}"
        )
    if config is not None and (spec.get("file") or spec.get("json") or spec.get("fmt")):
        raise ValueError("give either config= or file=/fmt=/json=, not both")


def configure_writer_process(spec: dict[str, Any]) -> None:
    """Build the sinks of a writer process from ``install()``'s options."""
    root = logging.getLogger()
    # Levels are applied where records are made (the installing process and,
    # through LOGFUNNEL_LEVELS, every child): the writer passes on all it gets
    # unless the configuration itself sets levels.
    root.setLevel(logging.NOTSET)
    if spec.get("config") is not None:
        logging.config.dictConfig(spec["config"])
    else:
        for handler in build_handlers(spec):
            root.addHandler(handler)
