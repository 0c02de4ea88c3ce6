"""The terminal: the installing process's standard error, written around live progress bars.

A progress bar is drawn by the installing process (``tqdm``, ``rich``) with
carriage returns and cursor moves; text written to the same terminal by
anyone else lands in the middle of the bar (``2%|▊ ... 6.26it/s]SpawnPoolWorker-2
RID=...``).  So ``Terminal`` writes each batch of lines through the bar library
when it has a live display: tqdm's ``external_write_mode`` (clears the bars,
writes, redraws them) or the live rich ``Console``'s ``print`` (prints above
the ``Live``).  Both are found lazily in ``sys.modules``: tqdm and rich are
never imported here.  The console sink (``console``) writes its batches here,
in the installing process under both hosts.

Colour follows CPython 3.13's ``_colorize.can_colorize`` (``colour_wanted``):
``NO_COLOR`` (set and not empty: no colour, https://no-color.org), else
``FORCE_COLOR`` (set and not empty: colour, https://force-color.org), else not
for ``TERM=dumb``, else when standard error is a TTY.  The installing process
decides, for both hosts (its standard error is the one that matters).

Who owns what: nothing here holds state; a ``Terminal`` is its console sink's
or its relay's, and writes to whatever ``sys.stderr`` is at each call.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final

__all__ = ["Terminal", "colour_wanted"]

#: How long the terminal waits for tqdm's lock before writing without it: a
#: program thread that holds it while it waits for logging must not hang us.
_LOCK_WAIT: Final = 1.0


def colour_wanted(stream: Any, environ: Any = None) -> bool:
    """Tell whether to colour text for ``stream`` (NO_COLOR, FORCE_COLOR, TERM, isatty)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class Terminal:
    """Writes batches of whole lines to this process's standard error, around live progress bars."""

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines, no final newline) above any live tqdm or rich display."""
        stream = sys.stderr
        if stream is None:  # pythonw, or closed by the program: nowhere to write
            return
        console = _live_rich_console()
        if console is not None:
            from rich.text import Text  # noqa: PLC0415 - rich is imported already (live)

            # soft_wrap: rich must not cut a record into lines of its own; the
            # terminal wraps it, above the live display rich redraws.
            console.print(Text.from_ansi(text), soft_wrap=True)
            return
        tqdm = _tqdm_with_bars()
        if tqdm is not None:
            # tqdm.write, with a bounded wait for the lock: clear the bars, write, redraw.
            # tqdm's TqdmDefaultWriteLock.acquire returns None whatever happened, so
            # its parts (a multiprocessing and a threading RLock) are taken one by one.
            lock = tqdm.get_lock()
            parts = list(getattr(lock, "locks", [lock]))
            held = []
            try:
                for part in parts:
                    if not part.acquire(timeout=_LOCK_WAIT):
                        break
                    held.append(part)
                if len(held) == len(parts):
                    with tqdm.external_write_mode(file=stream, nolock=True):
                        stream.write(text + "\n")
                        stream.flush()
                    return
            finally:
                for part in reversed(held):
                    part.release()
        stream.write(text + "\n")
        stream.flush()


def _tqdm_with_bars() -> Any:
    """Return tqdm's class if tqdm is imported and has a live bar, else None."""
    module = sys.modules.get("tqdm")
    cls = getattr(module, "tqdm", None) if module is not None else None
    try:
        return cls if cls is not None and len(cls._instances) else None
    except (AttributeError, TypeError):
        return None


def _live_rich_console() -> Any:
    """Return the rich ``Console`` showing a ``Live`` (a ``Progress``), if there is one.

    A ``Live`` that redirects standard error (the default) has put a
    ``FileProxy`` there that knows its console; otherwise rich's global
    console (``rich.get_console()``, not created here if nobody made it).
    """
    rich = sys.modules.get("rich")
    if rich is None:
        return None
    candidates = [getattr(s, "_FileProxy__console", None) for s in (sys.stderr, sys.stdout)]
    candidates.append(getattr(rich, "_console", None))
    for console in candidates:
        # _live_stack: rich >= 14 (nested Live); _live: older releases.
        if console is not None and (
            getattr(console, "_live_stack", None) or getattr(console, "_live", None)
        ):
            return console
    return None
