"""One writer per file: unrelated processes calling ``install(file=F)`` share F's writer.

Two cron jobs, a CLI started twice, each Celery child calling ``install()`` in
``worker_process_init``: without this each starts a writer of its own on F,
and their rotations race (one renames F while the other still appends to the
old inode).  Instead the first ``install(file=F)`` claims F and the others join
its writer, exactly as that installer's own children do::

    install(file=F)            registry: $TMPDIR/logfunnel-files-<uid>/   (0700, ours, checked)
      -> lockf(<key>.lock)       <key> = sha256 of F's real path
         got it: start a writer, write <key>.json (address, options, pid), hold the lock
                 until shutdown() (or exit: the kernel drops a dead process's lock)
         held by pid P: read <key>.json, check it is P's and P's writer listens,
                 check the sink options are the same, join it

In the order ``install()`` goes through them: ``claim`` (the registry, F's
lock and the record its holder publishes; the process that takes F starts
its writer there) and ``joined`` (a process that joins F's writer, and its
watcher, which takes F over when the writer's process goes).

Who owns what: this module holds nothing; ``claim`` and ``joined`` each say
what they hold.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Final

from logfunnel import _running
from logfunnel._settings import fingerprint
from logfunnel._shared.claim import Claim, claim_or_find, key
from logfunnel._shared.joined import join_writer

if TYPE_CHECKING:
    from logfunnel._running import Funnel
    from logfunnel._settings import Settings

# Arguments that are each process's own, not the writer's: two processes may
# share F's writer with different values of these.
# ("host" is not one: a process that takes F over runs the same kind of writer, so the
# lines the others render for a process host stay welcome.)
_PER_PROCESS: Final = frozenset({"level", "on_full", "full_timeout", "fallback"})


def install(settings: Settings, arguments: dict[str, Any]) -> Funnel:
    """Start F's writer and claim F, or join the writer that has F; other sinks: start one."""
    if settings.file is None or settings.listen is not None:
        return _running.start(settings)
    path = os.path.realpath(os.fspath(settings.file))
    name = key(path)
    sinks = _sink_fingerprint(arguments)
    got = claim_or_find(path, name)
    if got is None:
        return _running.start(settings)
    if isinstance(got, Claim):
        return got.start(functools.partial(_running.start, settings), path, sinks)
    _check_sinks(got, path, sinks)
    return join_writer(got, settings, path, name, sinks)


def _check_sinks(found: dict[str, Any], path: str, sinks: str) -> None:
    if found["sinks"] != sinks:
        msg = (
            f"{path} is written by the funnel of process {found['pid']}, installed "
            f"with other sink options; call install(file=...) with the same file, "
            f"format and rotation options in every process that writes it, or use "
            f"another file"
        )
        raise ValueError(msg)


def _sink_fingerprint(arguments: dict[str, Any]) -> str:
    return fingerprint({k: v for k, v in arguments.items() if k not in _PER_PROCESS})
