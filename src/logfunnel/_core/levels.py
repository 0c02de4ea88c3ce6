r"""Logger levels: from the installing process to every child, through a file, never a round trip.

A level decides whether a record exists at all (``Logger.isEnabledFor`` runs
before any handler), so a child must have the installing process's levels
before its program logs: a spawn child that kept the default WARNING would
silently lose every INFO record the installer asked for.

::

    installer                                    any joining process
      Logger.setLevel / logging.disable            at join (logging imported):
        -> append "LEVEL NAME\n" to <dir>/levels     read the file, apply (last line wins)
           (O(1); rewritten whole when it has      forked from a joined process that is
            grown to 4x what it holds)              not the installer (a forkserver's child):
                                                     read it again, apply only to loggers
                                                     that process did not set itself

Who owns what: the installing process owns the file and the ``LevelFile``
writing it (its ``setLevel`` wrapper checks the pid, so a forked child never
appends).  Each joining process owns what it applied (``state.levels_applied``), to tell
its own settings from the installer's.  Nothing travels in the environment,
so it stays small whatever the number of loggers.
"""

from __future__ import annotations

import logging
import os

from logfunnel._core import state as _state

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final

_DISABLE: Final = "D"  # a line "D LEVEL" is logging.disable(LEVEL)
#: The key ``read()`` gives ``logging.disable``'s level under.
DISABLE: Final = _DISABLE
# Rewrite the file whole when it is this many times longer than what it holds.
_GROWTH: Final = 4
_MIN_REWRITE: Final = 64 * 1024


def _line(name: str, level: int) -> str:
    return f"{level} {name}\n"


def _loggers_with_levels() -> dict[str, int]:
    # loggerDict also holds PlaceHolder objects for names no one asked for yet.
    levels = {"": logging.root.level}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level:
            levels[name] = logger.level
    return levels


class LevelFile:
    """The installer's side: keep ``path`` holding every logger's level, appending on change."""

    def __init__(self, path: str) -> None:
        """Write the current levels to ``path`` and start following changes."""
        self.path = path
        self._pid = os.getpid()
        self._fd = -1
        self._size = 0
        self._disable = logging.root.manager.disable
        self._rewrite()
        self._original_set_level: Callable[[logging.Logger, int | str], None] | None = None

    def _rewrite(self) -> None:
        """Write the whole snapshot to a new file and move it into place (readers see either)."""
        text = "".join(_line(n, lv) for n, lv in _loggers_with_levels().items() if _plain(n))
        text += f"{_DISABLE} {logging.root.manager.disable}\n"
        data = text.encode("utf-8", "backslashreplace")
        temporary = self.path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self._held = len(data)

    def append(self, name: str, level: int) -> None:
        """Record that logger ``name`` now has ``level`` (``name`` "" is the root)."""
        if self._fd < 0 or os.getpid() != self._pid or not _plain(name):
            return
        data = _line(name, level).encode("utf-8", "backslashreplace")
        try:
            # One write(2) on an O_APPEND descriptor: a reader sees the line whole or not at all.
            os.write(self._fd, data)
        except OSError:
            return
        self._size += len(data)
        if self._size > max(_MIN_REWRITE, _GROWTH * self._held):
            try:
                self._rewrite()
            except OSError:
                return

    def follow(self) -> None:
        """Append every later ``setLevel`` and ``logging.disable`` of this process."""
        original = logging.Logger.setLevel
        self._original_set_level = original
        level_file = self

        def set_level(logger: logging.Logger, level: int | str) -> None:
            original(logger, level)
            level_file.append("" if logger is logging.root else logger.name, logger.level)

        set_level.__doc__ = original.__doc__
        set_level.__wrapped__ = original  # type: ignore[attr-defined]
        logging.Logger.setLevel = set_level  # type: ignore[method-assign,assignment]
        # logging.disable() ends with manager._clear_cache(), as setLevel does; an
        # instance attribute on the one manager wraps it without touching the class.
        manager = logging.root.manager
        clear_cache = manager._clear_cache  # type: ignore[attr-defined]

        def clear_cache_and_note() -> None:
            clear_cache()
            if manager.disable != level_file._disable:
                level_file._disable = manager.disable
                level_file.append_disable(manager.disable)

        vars(manager)["_clear_cache"] = clear_cache_and_note

    def append_disable(self, level: int) -> None:
        """Record ``logging.disable(level)``."""
        if self._fd >= 0 and os.getpid() == self._pid:
            try:
                os.write(self._fd, f"{_DISABLE} {level}\n".encode("ascii"))
            except OSError:
                return
            self._size += 8

    def close(self) -> None:
        """Stop following changes (the file goes with the private directory)."""
        if self._original_set_level is not None:
            logging.Logger.setLevel = self._original_set_level  # type: ignore[method-assign,assignment]
            self._original_set_level = None
        vars(logging.root.manager).pop("_clear_cache", None)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _plain(name: str) -> bool:
    """Tell whether a logger name fits on a line of the file (a name with a line break does not)."""
    return "\n" not in name and "\r" not in name


# -- the joining side ---------------------------------------------------------------------

def read(path: str) -> dict[str, int] | None:
    """Return the levels in the file at ``path``, or None if it cannot be read."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    levels: dict[str, int] = {}
    text = data.decode("utf-8", "replace")
    # A line without its newline is being appended right now: not yet there.
    for line in text.split("\n")[:-1]:
        number, _, name = line.partition(" ")
        try:
            levels[name if number != _DISABLE else _DISABLE] = int(
                number if number != _DISABLE else name
            )
        except ValueError:
            continue
    return levels


def join(path: str | None) -> None:
    """Take the installer's levels (at start-up, before the program logs)."""
    levels = read(path) if path else None
    if levels is None:
        return
    for name, level in levels.items():
        if name != _DISABLE:
            logging.getLogger(name or None).setLevel(level)
    _set_disable(levels.get(_DISABLE, 0))
    _state.levels_applied = levels


def refresh_after_fork(path: str | None) -> None:
    """In a child forked by a joined process: take the installer's changes since it joined.

    A forkserver started long ago, or a child that runs a pool of its own,
    has the installer's levels as of its start; its children should have them
    as of theirs.  A level the forking process set itself is its own
    configuration, and is kept.
    """
    applied = _state.levels_applied
    if applied is None or not path:
        return  # not joined through the environment: forked from the installer, or alone
    levels = read(path)
    if levels is None:
        return
    manager = logging.root.manager
    for name in {*levels, *applied} - {_DISABLE}:
        logger = logging.root if not name else manager.loggerDict.get(name)
        if not isinstance(logger, logging.Logger):
            if name not in levels:
                continue
            logger = logging.getLogger(name)
        if logger.level == applied.get(name, logging.NOTSET):  # not set by this process
            logger.setLevel(levels.get(name, logging.NOTSET))
    if manager.disable == applied.get(_DISABLE, 0):
        _set_disable(levels.get(_DISABLE, 0))
    _state.levels_applied = levels


def _set_disable(level: int) -> None:
    if level != logging.root.manager.disable:
        logging.disable(level)
