"""The console sink: coloured lines on standard error that leave progress bars whole.

``install(console=True)`` / ``logfunnel run --console``.  Three parts:

* ``ConsoleSink``: the handler the writer writes to (a ``LineSink``: it takes
  records and lines rendered in other processes alike).  It colours a line's
  level name by its level and its process name by the process (so
  interleaved processes read apart), and hands whole lines to an output.
* ``terminal.Terminal``: that output in the installing process, which
  writes each batch above any live tqdm or rich progress bar (``terminal``
  also decides whether to colour: ``colour_wanted``).
* ``ConsoleRelay``: with ``host="process"`` the sinks live in another
  process, which cannot take the installer's tqdm lock or rich console.
  There the writer's console sink writes its batches as frames to a socket
  pair, and a thread of the installing process (``logfunnel-console``) reads
  them, prints them with its ``Terminal`` and acknowledges each: the
  installer is the one process that writes the terminal, under both hosts.

Who owns what: a ``ConsoleSink`` is the writer's, used by its thread (and, in
a thread host, by the program's threads under the handler's lock); a
``ConsoleRelay`` belongs to the host that started the writer process
(``_hosts``), which joins its thread when that process has ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import struct
import sys
import threading
import weakref
import zlib
from typing import Any, Final

from logfunnel._core.formatters import DEFAULT_FORMAT
from logfunnel._core.sink import LineSink
from logfunnel.sinks.terminal import Terminal, colour_wanted

__all__ = ["ConsoleRelay", "ConsoleSink", "SocketOutput", "connect"]

_RESET: Final = "\x1b[0m"
_LEVEL_COLOURS: Final = (  # (lowest level, SGR); the first that the level reaches
    (logging.CRITICAL, "\x1b[1;37;41m"),
    (logging.ERROR, "\x1b[1;31m"),
    (logging.WARNING, "\x1b[33m"),
    (logging.INFO, "\x1b[32m"),
    (logging.NOTSET, "\x1b[2m"),
)
# Process names in colours that are not the levels' (no red, yellow or green).
_PROCESS_COLOURS: Final = ("\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[96m", "\x1b[95m", "\x1b[94m")
_FRAME: Final = struct.Struct(">I")
_ACK: Final = b"\x06"
#: How long a writer process waits for the installer to print a batch before it stops waiting.
_ACK_WAIT: Final = 10.0
#: The relays of this process: a forked child closes their sockets (``_forget_relays``).
_RELAYS: weakref.WeakSet[ConsoleRelay] = weakref.WeakSet()


def _level_colour(levelno: int) -> str:
    return next((sgr for floor, sgr in _LEVEL_COLOURS if levelno >= floor), "\x1b[2m")


class _Layout:
    """Where a line rendered with one format has its level name and process name.

    A line rendered in another process (``host="process"``) arrives as text;
    the format says where its fields are.  The format becomes a regular
    expression: literal text as it is, the level name one of the known names,
    every other field as short as it can be.  A line it does not match
    (or a format without the field) is left uncoloured there.
    """

    def __init__(self, fmt: str | None, json: bool) -> None:
        self.json = json
        self.pattern: re.Pattern[str] | None = None
        if json:
            self.pattern = re.compile(r'"level": "(?P<levelname>[^"]*)"')
            return
        names = sorted({*logging._nameToLevel}, key=len, reverse=True)  # 3.10: no public mapping
        level = "|".join(map(re.escape, names)) + r"|Level -?\d+"
        parts, seen, end = ["^"], set(), 0
        fmt = fmt or DEFAULT_FORMAT
        for field in re.finditer(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]|%%", fmt):
            parts.append(re.escape(fmt[end : field.start()]))
            end = field.end()
            name = field.group(1)
            if name is None:
                parts.append("%")
            elif name in ("levelname", "processName") and name not in seen:
                seen.add(name)
                # A process name has no blanks (MainProcess, SpawnPoolWorker-2,
                # LokyProcess-3): so the time before it cannot end inside it.
                body = level if name == "levelname" else r"[^\s\[\]]+"
                parts.append(rf" *(?P<{name}>{body}) *")
            else:
                parts.append(".*?")
        if seen:
            self.pattern = re.compile("".join(parts))

    def spans(self, line: str) -> dict[str, tuple[int, int]]:
        """Return where the first line of ``line`` has its level name and process name."""
        pattern = self.pattern
        found = None
        if pattern is not None:
            found = pattern.search(line) if self.json else pattern.match(line)
        if found is None:
            return {}
        return {k: found.span(k) for k, v in found.groupdict().items() if v is not None}


class ConsoleSink(LineSink, logging.StreamHandler):  # type: ignore[type-arg]
    """The console sink: each line coloured by level and process, written whole, bars left intact.

    Lines the writer loop's thread writes are kept until the loop flushes
    (once per batch): one bar redraw per batch, not per record.  Lines from
    any other thread are written at once.
    """

    def __init__(self, colour: bool | None = None, output: Any = None) -> None:
        """``colour``: None decides from this process's stderr; ``output``: a ``Terminal``."""
        logging.StreamHandler.__init__(self)
        self.colour = colour_wanted(sys.stderr) if colour is None else colour
        self.output: Any = output if output is not None else Terminal()
        self._kept: list[str] = []
        self._layout: _Layout | None = None

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - stdlib name
        """Set the formatter, and learn from its format where a line's fields are."""
        super().setFormatter(fmt)
        style = getattr(fmt, "_style", None)
        self._layout = _Layout(
            getattr(style, "_fmt", None), json=type(fmt).__name__ == "JsonFormatter"
        )

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as a line of this sink's format."""
        try:
            self._write(self.format(record), record.levelno)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, text: str) -> None:
        """Write a line rendered with this sink's formatter in another process."""
        self._write(text, None)

    def _write(self, text: str, levelno: int | None) -> None:
        if self.colour:
            text = self.paint(text, levelno)
        self.acquire()
        try:
            self._kept.append(text)
        finally:
            self.release()
        if threading.get_ident() != self.batch_thread:
            self.flush()

    def paint(self, text: str, levelno: int | None) -> str:
        """Colour the level name by level and the process name by process (first line only)."""
        layout = self._layout or _Layout(None, json=False)
        spans = layout.spans(text)
        level = spans.get("levelname")
        if levelno is None and level is not None:
            found = logging.getLevelName(text[level[0] : level[1]])
            levelno = found if isinstance(found, int) else None
        if levelno is None:
            return text
        colour = _level_colour(levelno)
        if level is None:  # the format names no level: the whole record in its colour
            return f"{colour}{text}{_RESET}"
        cuts = [(level, colour)]
        process = spans.get("processName")
        if process is not None:
            name = text[process[0] : process[1]]
            pick = _PROCESS_COLOURS[zlib.crc32(name.encode("utf-8", "replace")) % 6]
            cuts.append((process, pick))
        out, at = [], 0
        for (start, end), sgr in sorted(cuts):
            out += [text[at:start], sgr, text[start:end], _RESET]
            at = end
        out.append(text[at:])
        return "".join(out)

    def flush(self) -> None:
        """Write the kept lines in one batch; count them as landed."""
        self.acquire()
        try:
            kept, self._kept = self._kept, []
            if kept:
                self.output.write("\n".join(kept))
                self.landed += len(kept)
        finally:
            self.release()

    def close(self) -> None:
        """Write what is kept, then close."""
        with contextlib.suppress(Exception):
            self.flush()
        super().close()


class SocketOutput:
    """A writer process's console output: frames to the installer's ``ConsoleRelay``.

    Each batch is one frame; the writer then waits (at most ``_ACK_WAIT``)
    for the relay to say it printed it, so the writer's flush, and so
    ``Funnel.flush()`` and ``shutdown()``, mean "on the terminal" under both
    hosts, and a slow terminal slows the writer as a slow stderr would.  If
    the installer is gone (EPIPE, ECONNRESET) the lines go to this process's
    own standard error instead; if it stops answering, the writer stops
    waiting for it.
    """

    def __init__(self, fd: int) -> None:
        """Write to ``fd``, this process's end of the relay's socket pair."""
        self.sock: socket.socket | None = socket.socket(fileno=fd)
        self.sock.settimeout(_ACK_WAIT)
        self.acks = True

    def write(self, text: str) -> None:
        """Send ``text`` (whole lines) as one frame, and wait until it is printed."""
        data = text.encode("utf-8", "backslashreplace")
        sock = self.sock
        if sock is None:
            Terminal().write(text)
            return
        try:
            sock.sendall(_FRAME.pack(len(data)) + data)
        except OSError:  # gone (EPIPE), or not reading for _ACK_WAIT (a frame maybe cut)
            self.sock = None
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the relay sees the end, not a torn frame
            Terminal().write(text)
            return
        if self.acks:
            try:
                self.acks = sock.recv(1) == _ACK
            except OSError:  # slow (printed later) or gone: the writer does not wait again
                self.acks = False


class ConsoleRelay:
    """In the installer: a thread that prints what a writer process's console sink sends.

    ``start_process`` passes ``far_fd`` to the writer process and then calls
    ``started()``, which closes it here: the socket ends (EOF) when the
    writer process and its supervisor have both exited, and the thread ends
    after printing the last line.  A forked child of the installer closes its
    copies at once, so a dead installer's end breaks (EPIPE) instead of
    filling up with nobody reading.
    """

    def __init__(self) -> None:
        """Make the socket pair; the thread starts in ``started()``."""
        # Both ends close on exec: only the writer process, given far_fd, holds it.
        self._mine, self._far = socket.socketpair()
        self.far_fd = self._far.fileno()
        #: Decided here, for the terminal this process writes (see ``colour_wanted``).
        self.colour = colour_wanted(sys.stderr)
        self.terminal = Terminal()
        self._thread = threading.Thread(target=self._run, name="logfunnel-console", daemon=True)
        _RELAYS.add(self)

    def _forget(self) -> None:
        self._mine.close()
        self._far.close()

    def started(self) -> None:
        """Close our copy of the far end (the writer process holds it now) and start printing."""
        self._far.close()
        self._thread.start()

    def close(self) -> None:
        """Close both ends (the writer process did not start); the thread, if any, ends."""
        self._far.close()
        with contextlib.suppress(OSError):
            self._mine.shutdown(socket.SHUT_RDWR)
        if not self._thread.is_alive():
            self._mine.close()

    def _run(self) -> None:
        sock, buffer = self._mine, b""
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            buffer += data
            texts, at = [], 0
            while len(buffer) - at >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buffer, at)
                if len(buffer) - at < _FRAME.size + size:
                    break
                at += _FRAME.size
                texts.append(buffer[at : at + size].decode("utf-8", "replace"))
                at += size
            buffer = buffer[at:]
            if texts:
                with contextlib.suppress(Exception):  # a closed stderr must not end the relay
                    self.terminal.write("\n".join(texts))
                # Never blocks: a writer that stopped waiting no longer reads these.
                with contextlib.suppress(OSError):
                    sock.send(_ACK * len(texts), socket.MSG_DONTWAIT)
        sock.close()

    def join(self, timeout: float) -> bool:
        """Wait until every line the writer process sent is printed; True if it was in time."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()


def connect(sinks: list[logging.Handler] | None, relay: Any) -> None:
    """In a writer process: send the console sink's lines to the installer's relay.

    ``relay`` is what ``start_process`` put in the CONFIG frame: the
    descriptor of this process's end and the installer's colour decision.
    """
    if not isinstance(relay, dict):
        return
    for sink in sinks or ():
        if isinstance(sink, ConsoleSink):
            sink.colour = bool(relay.get("colour"))
            sink.output = SocketOutput(int(relay["fd"]))


def _forget_relays() -> None:
    for relay in list(_RELAYS):
        relay._forget()


os.register_at_fork(after_in_child=_forget_relays)
