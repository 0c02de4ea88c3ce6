"""F's claim: the registry of this user's file writers, and the lock on F in it.

``install(file=F)`` (``logfunnel._shared``) asks ``claim_or_find`` for F: it
either takes F's lock (a ``Claim``: start F's writer and publish where it
listens) or finds the live process that holds it and the record it published
(``<key>.json``: address, options, pid).  The joined side's watcher asks the
same when F's writer's process goes (``logfunnel._shared.joined``).

Safety: the registry is a directory of this user's, mode 0700, checked with
``lstat`` (a directory, not a symlink, owned by us, no group or other bits)
before anything in it is read or written; another user can neither read
where our writer listens nor put a record there for us to join (and the
socket itself is in the funnel's own 0700 directory).  If the check fails the
registry is not used: ``install()`` starts a writer of its own, as before, and
says so once on standard error (``warn``).

Who owns what: a ``Claim`` (the lock's descriptor and the json file) belongs
to the process whose ``install()`` took it and is given back by its
``Funnel``'s undo (``Claim.release``); nothing else here holds anything.
Whether this process has said something already is ``_state.shared_file_warned``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from logfunnel._core import rundir as _rundir
from logfunnel._core import state as _state

if TYPE_CHECKING:
    from collections.abc import Callable

    from logfunnel._running import Funnel

REGISTRY_PREFIX: Final = "logfunnel-files-"
# How long a joining process waits for the lock holder to publish its writer
# (it takes the lock before it starts the writer: a few milliseconds).
_PUBLISH_WAIT: Final = 5.0
_POLL: Final = 0.005


def claim_or_find(path: str, key: str) -> Claim | dict[str, Any] | None:
    """Claim F, or return the record of the live writer that has it; None: no registry."""
    deadline = time.monotonic() + _PUBLISH_WAIT
    while True:
        if time.monotonic() >= deadline:
            warn(f"the writer of {path} did not answer; this process writes it itself")
            return None
        registry = registry_dir()
        if registry is None:
            return None
        base = os.path.join(registry, key)
        try:
            claim = Claim.take(base)
        except FileNotFoundError:
            continue  # the registry was removed by its last user just now: make it again
        except BaseException:
            remove_if_empty(registry)  # all or nothing: a failed install() leaves no registry
            raise
        if isinstance(claim, Claim):
            return claim
        if claim == "moved":
            continue  # locked a file its holder had just removed: take the new one
        found = published(base)
        if found is not None:
            return found
        time.sleep(_POLL)  # the holder is starting its writer: bounded by the deadline


def key(path: str) -> str:
    """Return F's name in the registry (``<key>.lock``, ``<key>.json``) for its real path."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:32]


def give_back(file: str, owner: int, address: str) -> None:
    """Remove F's entry from the registry if it is still the vanished ``owner``'s.

    For a writer process whose owner went without ``shutdown()`` (under
    ``logfunnel run``: ``_writer_process``): the owner took F's claim and would
    have given it back at shutdown; the kernel dropped its lock when it went,
    but its record and lock file stay.
    """
    registry = registry_dir()
    if registry is None:
        return
    base = os.path.join(registry, key(os.path.realpath(file)))

    def ours() -> bool:
        try:
            with open(base + ".json", encoding="utf-8") as stream:
                record = json.load(stream)
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and (record.get("pid"), record.get("address")) == (
            owner,
            address,
        )

    if ours():
        taken = Claim.take(base)
        if isinstance(taken, Claim):
            if ours():  # still: nobody claimed F between our look and our lock
                taken.release()
            else:
                os.close(taken.fd)
    remove_if_empty(registry)


def remove_if_empty(registry: str) -> None:
    with contextlib.suppress(OSError):  # not empty: someone else's claim is in it
        os.rmdir(registry)


def warn(message: str) -> None:
    """Say ``message`` on standard error, the first time only in this process."""
    if not _state.shared_file_warned:
        _state.shared_file_warned = True
        sys.stderr.write(f"logfunnel: {message}\n")


def registry_dir() -> str | None:
    """Return this user's registry directory, made if missing, or None if it is not safe."""
    uid = os.geteuid()
    path = os.path.join(tempfile.gettempdir(), f"{REGISTRY_PREFIX}{uid}")
    for _ in range(2):  # its last user may remove it between our mkdir and lstat: once more
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        try:
            st = os.lstat(path)
            break
        except FileNotFoundError:
            continue
    else:
        return None
    import stat  # noqa: PLC0415 - the installer's needs only

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        warn(
            f"{path} is not a private directory of this user's (owner {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}): not sharing file writers through it"
        )
        return None
    return path


def lock_holder(fd: int) -> int | None:
    """Return the pid holding a write lock on ``fd``'s file (F_GETLK), None if unlocked."""
    # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    layout = "hhqqi"
    query = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    kind, _, _, _, pid = struct.unpack(layout, answer)
    return None if kind == fcntl.F_UNLCK else int(pid)


class Claim:
    """A claim on a file: the lock on ``<key>.lock`` and ``<key>.json``, held by its taker."""

    def __init__(self, base: str, fd: int) -> None:
        self.base = base
        self.fd = fd
        self.pid = os.getpid()

    @classmethod
    def take(cls, base: str) -> Claim | Literal["held", "moved"]:
        """Take the lock if no live process holds it: "held" if one does.

        A holder giving F back removes the lock file while it still holds the
        lock, so that nothing is left behind; a process that opened the file
        just before and locks it afterwards holds a lock on a removed file
        ("moved"), and must open the path again.
        """
        lock = base + ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return "held"
            raise
        try:
            opened, named = os.fstat(fd), os.stat(lock)
            same = (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return "moved"
        return cls(base, fd)

    def start(self, start: Callable[[], Funnel], path: str, sinks: str) -> Funnel:
        """Start F's writer (``start()``) and say where it listens; give the claim back on failure.

        ``start`` is ``_running.start`` for the installer's settings, passed in:
        the registry sits below the installer, and a writer process whose owner
        vanished uses it too (``give_back``).
        """
        try:
            funnel = start()
        except BaseException:
            self.release()
            raise
        record = {
            "file": path,
            "address": funnel.address,
            "options": funnel.options.to_env(),
            "pid": os.getpid(),
            "sinks": sinks,
            "host": funnel.host,
        }
        funnel._on_undo.append(self.release)  # from here on, shutdown() gives F back
        temporary = f"{self.base}.json.{os.getpid()}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(record).encode("utf-8"))
            finally:
                os.close(fd)
            os.replace(temporary, self.base + ".json")  # readers see no record or this one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            funnel._undo(timeout=5.0)  # all or nothing: the writer stops, F is given back
            raise
        return funnel

    def release(self) -> None:
        """Give F back (after the writer has stopped and closed it); in its taker only."""
        if self.fd < 0 or self.pid != os.getpid():
            return  # a forked child's copy: the lock was never this process's
        # The record and the lock file go while the lock is still held: nobody mistakes
        # the record for a new one, and a process that opened the lock file before it
        # went sees it has gone once it gets the lock ("moved" in take()).
        for name in (self.base + ".json", self.base + ".lock"):
            with contextlib.suppress(OSError):
                os.unlink(name)
        os.close(self.fd)  # closing drops this process's lock
        self.fd = -1
        remove_if_empty(os.path.dirname(self.base))


def published(base: str) -> dict[str, Any] | None:
    """Return the writer record of the live process holding ``base``'s lock, if it is up."""
    try:
        fd = os.open(base + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = lock_holder(fd)
    finally:
        os.close(fd)
    if holder is None:
        return None  # released meanwhile: try to take it again
    try:
        with open(base + ".json", encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None  # not published yet
    if not isinstance(record, dict) or record.get("pid") != holder:
        return None  # a previous holder's record: the new one is starting
    address = record.get("address")
    if not isinstance(address, str) or not address.startswith("unix:"):
        return None
    if _rundir.listening(address.removeprefix("unix:")) is not True:
        return None
    return record
