"""Retention: which rotated files a rotating file sink deletes, by count and by age.

Who owns what: a ``Retention`` is an immutable policy; ``apply`` is called by
the rotating sink on the writer's side (after each rotation, at start, and by
the compressor's thread after it finished a file), under the sink's retention
lock so two of them never race.  It deletes only files the sink's ``Naming``
matches strictly (``rotation.list_rotated``): anything else in the directory,
however alike its name, is left alone.  A file the compressor is still working
on is never deleted (it would come back as a ``.gz`` when the work ends); it is
counted, and considered again at the next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Collection

from logfunnel.sinks.rotation import Naming, Rotated, list_rotated

__all__ = ["Retention", "apply"]


@dataclasses.dataclass(frozen=True)
class Retention:
    """Keep at most ``backups`` rotated files (0: any number), none older than ``max_age`` s."""

    backups: int = 0
    max_age: float | None = None

    def expired(self, rotated: list[Rotated], now: float) -> list[Rotated]:
        """Return those of ``rotated`` (oldest first) this policy deletes.

        A plain file and its ``.gz`` count as one.  Age is the newest
        modification time of its files (a ``.gz`` gets its plain file's).
        """
        doomed: dict[str, Rotated] = {}
        if self.backups > 0 and len(rotated) > self.backups:
            for old in rotated[: len(rotated) - self.backups]:
                doomed[old.path] = old
        if self.max_age is not None:
            for old in rotated:
                if now - old.mtime > self.max_age:
                    doomed[old.path] = old
        return [r for r in rotated if r.path in doomed]


_LOCK = threading.Lock()


def apply(
    policy: Retention, naming: Naming, now: float, busy: Collection[str] = ()
) -> list[str]:
    """Delete what ``policy`` expires of ``naming``'s rotated files; return the paths deleted.

    ``busy``: plain paths the compressor holds, kept until it is done with them.
    """
    if policy.backups <= 0 and policy.max_age is None:
        return []
    deleted: list[str] = []
    with _LOCK:
        for old in policy.expired(list_rotated(naming), now):
            if old.path in busy:
                continue
            for ext in ("", ".gz", ".gz.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old.path + ext)
                    deleted.append(old.path + ext)
    return deleted
