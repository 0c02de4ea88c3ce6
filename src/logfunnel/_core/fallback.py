"""Where a process's records go while the writer cannot be reached: standard error or a file.

Owned by one ``Connection`` (and by the handler for a process with no funnel
at all); written only by the thread holding that connection's lock.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from logfunnel._core import plain as _plain

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import IO, Final

_FALLBACK_FORMAT: Final = (
    "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(name)s: %(message)s"
)


class Fallback:
    """Where records go while the writer cannot be reached: standard error or a file."""

    def __init__(self, path: str | None) -> None:
        """Write to the file at ``path`` (opened for each write), or to stderr if None."""
        self._path = path
        self._formatter = logging.Formatter(_FALLBACK_FORMAT)
        self.count = 0

    def _stream(self) -> IO[str]:
        if self._path is None:
            return sys.stderr
        return open(self._path, "a", encoding="utf-8", errors="backslashreplace")

    def say(self, text: str) -> None:
        """Write one line about the funnel itself."""
        self._write(f"logfunnel: {text}\n")

    def record(self, record: logging.LogRecord) -> None:
        """Write one record that could not be sent."""
        self.count += 1
        try:
            line = self._formatter.format(record)
        except Exception:
            line = f"{record.levelname} {record.name}: {_plain.get_message(record)}"
        self._write(line + "\n")

    def line(self, text: str) -> None:
        """Write one line its process rendered for the sinks, which could not be delivered."""
        self.count += 1
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        with contextlib.suppress(Exception):  # the last resort must not raise either
            stream = self._stream()
            try:
                stream.write(text)
                stream.flush()
            finally:
                if self._path is not None:
                    stream.close()
