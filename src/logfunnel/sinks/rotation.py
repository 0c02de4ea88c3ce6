"""Rotation strategies: when a file sink's file rotates, and what the rotated files are named.

Who owns what: a ``Schedule`` (time rotation) and a ``Naming`` are immutable
strategy objects; the rotating file sink (``files.RotatingFileSink``) holds one
of each and asks them, on the writer's thread, "is it time?" and "what name?".
Nothing here opens, writes or deletes a file: ``Naming.rotate`` renames the
live file once (and, for the size-only chain, shifts the chain), and lists
what this sink made, matched strictly, for retention (``retention``) and the
compressor (``compress``).

Time periods are aligned to the clock (local time unless ``utc``), not counted
from when the writer started: the period a record falls in is a function of
the time alone.  So a writer that restarts finds the current file's period
from the file's modification time (its last record), rotates it at once if that
period is over, and otherwise rotates it when the period ends: the
next rollover never depends on the start time (concurrent-log-handler #81,
"rollover never starts" for programs restarted more often than the interval)
and a name never comes from a missing time (concurrent-log-handler #79,
backups named "1969-12-31").  Calendar arithmetic goes through
``time.mktime``/``time.localtime`` with ``tm_isdst=-1``, the C library's DST
rules (what the stdlib's ``TimedRotatingFileHandler`` relies on): a day is a
calendar day of 23, 24 or 25 hours, midnight is local midnight.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import math
import os
import re
import time
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["WHENS", "ChainNaming", "Naming", "Rotated", "Schedule", "TimeNaming"]

#: The ``when=`` values, as the stdlib's ``TimedRotatingFileHandler`` spells them (upper case).
WHENS: Final = ("S", "M", "H", "D", "MIDNIGHT", *(f"W{d}" for d in range(7)))
_UNIT: Final = {"S": 1, "M": 60, "H": 3600}
_DAY: Final = 86400
# The stdlib's suffixes (TimedRotatingFileHandler.__init__), so its users know the names.
_SUFFIX: Final = {
    "S": "%Y-%m-%d_%H-%M-%S",
    "M": "%Y-%m-%d_%H-%M",
    "H": "%Y-%m-%d_%H",
    "D": "%Y-%m-%d",
}
_SUFFIX_RE: Final = {
    "S": r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}",
    "M": r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}",
    "H": r"\d{4}-\d{2}-\d{2}_\d{2}",
    "D": r"\d{4}-\d{2}-\d{2}",
}


def longest_interval(when: str) -> int | None:
    """Return the largest ``interval`` a ``when`` of seconds, minutes or hours allows (a day)."""
    unit = _UNIT.get(when)
    return None if unit is None else _DAY // unit


class Schedule:
    """Time rotation: which period a time falls in, when it ends, and its name's suffix.

    ``S``, ``M``, ``H``: periods of ``interval`` units counted from midnight
    (the last one of a day may be shorter, when ``interval`` does not divide
    the day); ``D`` and ``MIDNIGHT``: ``interval`` calendar days from midnight,
    counted from 0001-01-01 so that restarts keep them; ``W0``-``W6``
    (Monday is 0): ``interval`` weeks from that weekday's midnight.  ``now``
    is the clock (``time.time``; tests pass their own).
    """

    def __init__(
        self, when: str, interval: int = 1, *, utc: bool = False,
        now: Callable[[], float] = time.time,
    ) -> None:
        """Make the schedule; ``when`` is one of ``WHENS`` (checked by ``_settings``)."""
        self.when = when.upper()
        if self.when not in WHENS:
            raise ValueError(f"when={when!r}: use one of {', '.join(WHENS)}")
        self.interval = interval
        self.utc = utc
        self.now = now
        kind = self.when if self.when in _UNIT else "D"
        self.suffix_format: str = _SUFFIX[kind]
        self.suffix_pattern: str = _SUFFIX_RE[kind]

    # -- calendar helpers (local time unless utc) ----------------------------------------

    def _date(self, t: float) -> dt.date:
        tm = time.gmtime(t) if self.utc else time.localtime(t)
        return dt.date(tm.tm_year, tm.tm_mon, tm.tm_mday)

    def _midnight(self, day: dt.date) -> float:
        fields = (day.year, day.month, day.day, 0, 0, 0, 0, 0, -1)
        # tm_isdst=-1: the C library decides whether DST is in force at that midnight.
        return float(calendar.timegm(fields) if self.utc else time.mktime(fields))

    def period(self, t: float) -> tuple[float, float]:
        """Return the start and the end of the period ``t`` falls in (``start <= t < end``)."""
        day = self._date(t)
        if self.when in _UNIT:
            size = self.interval * _UNIT[self.when]
            day_start = self._midnight(day)
            day_end = self._midnight(day + dt.timedelta(days=1))
            # Elapsed seconds since midnight: on a DST day the wall clock of a
            # period start may repeat (fall back); Naming then adds ".1".
            start = day_start + math.floor((t - day_start) / size) * size
            return start, min(start + size, day_end)
        ordinal = day.toordinal()
        if self.when.startswith("W"):
            weekday = int(self.when[1])
            # date(1, 1, 1) is a Monday: ordinal 1 + weekday is the first such day.
            back = (ordinal - 1 - weekday) % 7
            first = ordinal - back
            weeks = (first - 1 - weekday) // 7
            first -= (weeks % self.interval) * 7
            length = 7 * self.interval
        else:
            first = ordinal - (ordinal - 1) % self.interval
            length = self.interval
        start_day = dt.date.fromordinal(first)
        end_day = dt.date.fromordinal(first + length)
        return self._midnight(start_day), self._midnight(end_day)

    def suffix(self, t: float) -> str:
        """Return the suffix of the rotated file of the period ``t`` falls in (its start's time)."""
        start, _ = self.period(t)
        tm = time.gmtime(start) if self.utc else time.localtime(start)
        return time.strftime(self.suffix_format, tm)


@dataclasses.dataclass
class Rotated:
    """One rotated file this sink made: its name without ``.gz``, and what exists of it."""

    #: The path as rotated (``app.log.2026-12-01.1``): the plain file's name.
    path: str
    #: Sorts oldest first.
    key: tuple[str, int]
    plain: bool = False
    gz: bool = False
    tmp: bool = False
    #: Modification time of the newest of its files (retention by age reads it).
    mtime: float = 0.0


class Naming(Protocol):
    """How a rotating sink names what it rotates, and which files in its directory are its own."""

    base: str

    def match(self, name: str) -> tuple[str, int] | None:
        """Return the sort key of ``name`` (a plain rotated name) if this sink made it."""
        ...

    def target(self, period_start: float | None) -> str:
        """Rename the live file for a rotation; return the path it now has."""
        ...


def list_rotated(naming: Naming) -> list[Rotated]:
    """Return the rotated files of ``naming``'s base, oldest first, ``.gz`` and ``.gz.tmp`` too."""
    directory, prefix = os.path.split(naming.base)
    found: dict[str, Rotated] = {}
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix + "."):
            continue
        stem, kind = name, "plain"
        if name.endswith(".gz.tmp"):
            stem, kind = name[: -len(".gz.tmp")], "tmp"
        elif name.endswith(".gz"):
            stem, kind = name[: -len(".gz")], "gz"
        key = naming.match(stem)
        if key is None:
            continue
        path = os.path.join(directory, stem)
        rotated = found.setdefault(stem, Rotated(path, key))
        setattr(rotated, kind, True)
        try:
            rotated.mtime = max(rotated.mtime, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            continue
    return sorted(found.values(), key=lambda r: r.key)


def _taken(path: str) -> bool:
    return any(os.path.lexists(path + ext) for ext in ("", ".gz", ".gz.tmp"))


class TimeNaming:
    """``app.log.2026-12-01``, then ``app.log.2026-12-01.1``, ``.2`` within one period.

    A name is never reused: the first of ``SUFFIX``, ``SUFFIX.1``, ... of which
    no plain, ``.gz`` or ``.gz.tmp`` file exists is taken (CPython gh-88352:
    ``TimedRotatingFileHandler`` removes an existing file of the name it
    wants).  Oldest first in name order: the bare suffix, then ``.1``, ``.2``.
    """

    def __init__(self, base: str, schedule: Schedule) -> None:
        """Name the rotations of ``base`` (an absolute path) by ``schedule``'s suffix."""
        self.base = base
        self.schedule = schedule
        prefix = re.escape(os.path.basename(base))
        self._re = re.compile(rf"{prefix}\.({schedule.suffix_pattern})(?:\.([1-9]\d{{0,8}}))?")

    def match(self, name: str) -> tuple[str, int] | None:
        """Return (suffix, index) for a name this sink makes, else None."""
        found = self._re.fullmatch(name)
        if found is None:
            return None
        try:  # strictly: a real date and time, as strftime writes them
            time.strptime(found.group(1), self.schedule.suffix_format)
        except ValueError:
            return None
        return found.group(1), int(found.group(2) or 0)

    def target(self, period_start: float | None) -> str:
        """Rename the live file to the first free name of its period; return that name."""
        start = self.schedule.now() if period_start is None else period_start
        stem = f"{self.base}.{self.schedule.suffix(start)}"
        path, index = stem, 0
        while _taken(path):
            index += 1
            path = f"{stem}.{index}"
        # Only this sink writes here (the writer owns it): nothing can take
        # the name between the check and the rename.
        os.rename(self.base, path)
        return path


class ChainNaming:
    """Size-only rotation as ``RotatingFileHandler`` names it: ``app.log.1`` is the newest.

    A rotation shifts ``app.log.N`` (and ``.N.gz``) to ``N+1``, newest last so
    nothing is overwritten, then renames the live file to ``app.log.1``.  The
    compressor must be idle meanwhile (``files.RotatingFileSink`` waits for it):
    it would otherwise finish a file under a name that has moved on.
    """

    def __init__(self, base: str) -> None:
        """Name the rotations of ``base`` (an absolute path)."""
        self.base = base
        self._re = re.compile(rf"{re.escape(os.path.basename(base))}\.([1-9]\d{{0,8}})")

    def match(self, name: str) -> tuple[str, int] | None:
        """Return a key that sorts the highest index (the oldest) first, else None."""
        found = self._re.fullmatch(name)
        return None if found is None else ("", -int(found.group(1)))

    def target(self, period_start: float | None) -> str:  # noqa: ARG002 - the Naming protocol
        """Shift the chain by one, rename the live file to ``.1``; return that name."""
        for rotated in list_rotated(self):  # oldest (highest index) first
            index = -rotated.key[1]
            for ext in ("", ".gz"):
                if os.path.lexists(rotated.path + ext):
                    os.rename(rotated.path + ext, f"{self.base}.{index + 1}{ext}")
            if rotated.tmp:  # an unfinished compression: its plain file is still there
                os.unlink(rotated.path + ".gz.tmp")
        path = f"{self.base}.1"
        os.rename(self.base, path)
        return path
