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

Takeover: a POSIX record lock belongs to the live process that took it (not
to its forked children, unlike ``flock``), so when F's writer's process exits
-- ``shutdown()``, a crash, SIGKILL -- the next ``install(file=F)`` gets the
lock and starts a writer on F, which appends to what is already there.

Safety: the registry is a directory of this user's, mode 0700, checked with
``lstat`` (a directory, not a symlink, owned by us, no group or other bits)
before anything in it is read or written; another user can neither read
where our writer listens nor put a record there for us to join (and the
socket itself is in the funnel's own 0700 directory).  If the check fails the
registry is not used: ``install()`` starts a writer of its own, as before, and
says so once on standard error.

A process that joins gets a private directory of its own (``rundir``
layout): ``writer.sock`` is a symlink to the writer's socket, and ``levels``
is its own levels file, so its children take *its* logger levels, not those
of the unrelated process that happens to run the writer.

Who owns what: the claim (the lock's descriptor and the json file) belongs to
the process whose ``install()`` took it and is given back by its ``Funnel``'s
undo; a joining process owns its private directory, removed by its
``shutdown()`` or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from logfunnel import _running
from logfunnel._core import fork as _fork
from logfunnel._core import handler as _handler
from logfunnel._core import levels as _levels
from logfunnel._core import route as _route
from logfunnel._core import rundir as _rundir
from logfunnel._core import state as _state
from logfunnel._core.options import (
    ENV_ADDRESS,
    ENV_INSTALLER,
    ENV_OPTIONS,
    ENV_TOKEN,
    Options,
)
from logfunnel._settings import Settings, fingerprint

if TYPE_CHECKING:
    from logfunnel._running import Funnel

REGISTRY_PREFIX: Final = "logfunnel-files-"
# Arguments that are each process's own, not the writer's: two processes may
# share F's writer with different values of these.
# ("host" is not one: a process that takes F over runs the same kind of writer, so the
# lines the others render for a process host stay welcome.)
_PER_PROCESS: Final = frozenset({"level", "on_full", "full_timeout", "fallback"})
# How long a joining process waits for the lock holder to publish its writer
# (it takes the lock before it starts the writer: a few milliseconds).
_PUBLISH_WAIT: Final = 5.0
_POLL: Final = 0.005
# How often a joined process asks whether F's writer's process is still the one it follows.
_WATCH: Final = 0.2
_warned = False


def install(settings: Settings, arguments: dict[str, Any]) -> Funnel:
    """Start F's writer and claim F, or join the writer that has F; other sinks: start one."""
    if settings.file is None or settings.listen is not None:
        return _running.start(settings)
    path = os.path.realpath(os.fspath(settings.file))
    key = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]
    sinks = _sink_fingerprint(arguments)
    got = _claim_or_find(path, key)
    if got is None:
        return _running.start(settings)
    if isinstance(got, _Claim):
        return got.start(settings, path, sinks)
    _check_sinks(got, path, sinks)
    return _join(got, settings, path, key, sinks)


def _claim_or_find(path: str, key: str) -> _Claim | dict[str, Any] | None:
    """Claim F, or return the record of the live writer that has it; None: no registry."""
    deadline = time.monotonic() + _PUBLISH_WAIT
    while True:
        if time.monotonic() >= deadline:
            _warn(f"the writer of {path} did not answer; this process writes it itself")
            return None
        registry = _registry()
        if registry is None:
            return None
        base = os.path.join(registry, key)
        try:
            claim = _Claim.take(base)
        except FileNotFoundError:
            continue  # the registry was removed by its last user just now: make it again
        except BaseException:
            _remove_if_empty(registry)  # all or nothing: a failed install() leaves no registry
            raise
        if isinstance(claim, _Claim):
            return claim
        if claim == "moved":
            continue  # locked a file its holder had just removed: take the new one
        found = _published(base)
        if found is not None:
            return found
        time.sleep(_POLL)  # the holder is starting its writer: bounded by the deadline


def _check_sinks(found: dict[str, Any], path: str, sinks: str) -> None:
    if found["sinks"] != sinks:
        msg = (
            f"{path} is written by the funnel of process {found['pid']}, installed "
            f"with other sink options; call install(file=...) with the same file, "
            f"format and rotation options in every process that writes it, or use "
            f"another file"
        )
        raise ValueError(msg)


def _remove_if_empty(registry: str) -> None:
    with contextlib.suppress(OSError):  # not empty: someone else's claim is in it
        os.rmdir(registry)


def _sink_fingerprint(arguments: dict[str, Any]) -> str:
    return fingerprint({k: v for k, v in arguments.items() if k not in _PER_PROCESS})


def _warn(message: str) -> None:
    global _warned  # noqa: PLW0603 - said once per process
    if not _warned:
        _warned = True
        sys.stderr.write(f"logfunnel: {message}\n")


def _registry() -> str | None:
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
        _warn(
            f"{path} is not a private directory of this user's (owner {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}): not sharing file writers through it"
        )
        return None
    return path


def _lock_holder(fd: int) -> int | None:
    """Return the pid holding a write lock on ``fd``'s file (F_GETLK), None if unlocked."""
    # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    layout = "hhqqi"
    query = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    kind, _, _, _, pid = struct.unpack(layout, answer)
    return None if kind == fcntl.F_UNLCK else int(pid)


class _Claim:
    """A claim on a file: the lock on ``<key>.lock`` and ``<key>.json``, held by its taker."""

    def __init__(self, base: str, fd: int) -> None:
        self.base = base
        self.fd = fd
        self.pid = os.getpid()

    @classmethod
    def take(cls, base: str) -> _Claim | Literal["held", "moved"]:
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

    def start(self, settings: Settings, path: str, sinks: str) -> Funnel:
        """Start F's writer and say where it listens; give the claim back on failure."""
        try:
            funnel = _running.start(settings)
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
        _remove_if_empty(os.path.dirname(self.base))


def _published(base: str) -> dict[str, Any] | None:
    """Return the writer record of the live process holding ``base``'s lock, if it is up."""
    try:
        fd = os.open(base + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = _lock_holder(fd)
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


class _JoinedFunnel(_running.Funnel):
    """A handle to F's writer in a process that joined it: ``shutdown()`` undoes the joining.

    If F's writer's process goes, the watcher thread (``_watch``) takes F over
    (``_successor``: the writer this process then runs) or follows the process
    that did; either way ``writer.sock`` in this process's directory is made to
    point at the new writer, so this process and its children send there.
    """

    _joiner_pid = -1
    _successor: _running.Funnel | None = None
    #: Counts the watcher's moves to a new writer; ``moved`` is notified at each.
    _moves = 0
    moved = threading.Condition()
    #: Set by shutdown(): the watcher stops.
    stopping = threading.Event()
    _followed_pid = -1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record logged before is written (by whichever writer has F).

        If F's writer has just gone, wait (within ``timeout``) for the watcher
        to take F over or follow who did, then flush there.
        """
        deadline = time.monotonic() + timeout
        moves = self._moves
        successor = self._successor
        if successor is not None and self._joiner_pid == os.getpid():
            return successor.flush(timeout)
        if super().flush(timeout):
            return True
        with self.moved:
            self.moved.wait_for(
                lambda: self._moves != moves or self._closed,
                timeout=max(0.0, deadline - time.monotonic()),
            )
        if self._moves == moves or self._closed:
            return False
        return self.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Wait until this process's records are written, then stop sending to F's writer."""
        if self._closed or self._joiner_pid != os.getpid():
            return True
        self.stopping.set()
        # A takeover under way (the watcher holds the install lock) finishes first.
        locked = _state.install_lock.acquire(timeout=timeout)
        successor = self._successor
        if locked:
            _state.install_lock.release()
        # A successor is the writer this process took F over with: it drains and stops.
        drained = successor.shutdown(timeout) if successor is not None else self.flush(timeout)
        return self._undo(timeout) and drained

    def after_fork_in_child(self) -> None:
        """In a forked child: let go of a successor writer's descriptors too."""
        if self._successor is not None:
            self._successor.after_fork_in_child()
            self._successor = None
        super().after_fork_in_child()


def _join(found: dict[str, Any], settings: Settings, path: str, key: str, sinks: str) -> Funnel:
    """Send this process's records, and its children's, to the writer ``found`` describes."""
    import shutil  # noqa: PLC0415

    writer_socket = str(found["address"]).removeprefix("unix:")
    # How the writer wants records (every one; rendered or not) is the writer's; how this
    # process sends them (backpressure, fallback, frame limit) stays its own.
    writers = Options.from_env(str(found["options"]))
    options = settings.options.replace(every_record=writers.every_record, render=writers.render)
    options_text = options.to_env()
    private_dir = tempfile.mkdtemp(prefix=_rundir.FUNNEL_DIR_PREFIX)
    try:
        own_socket = os.path.join(private_dir, _rundir.SOCKET_NAME)
        os.symlink(writer_socket, own_socket)
        os.mkdir(os.path.join(private_dir, _rundir.STACKS_NAME), 0o700)
    except BaseException:
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    address = f"unix:{own_socket}"
    funnel = _JoinedFunnel(address, settings.host, options, owner=False)
    funnel.moved = threading.Condition()
    funnel.stopping = threading.Event()
    funnel._followed_pid = int(found["pid"])
    funnel._joiner_pid = os.getpid()
    funnel._fingerprint = settings.fingerprint
    funnel._private_dir = private_dir
    try:
        root = logging.getLogger()
        if settings.level is not None:
            funnel._root_level = (root.level, settings.level)
            root.setLevel(settings.level)
        levels = _rundir.levels_path(address)
        assert levels is not None  # a Unix-socket address
        funnel._levels = _levels.LevelFile(levels)
        funnel._levels.follow()
        funnel._saved_env = {key: os.environ.get(key) for key in _running._ENV_KEYS}
        os.environ[ENV_ADDRESS] = address
        os.environ[ENV_OPTIONS] = options_text
        os.environ[ENV_INSTALLER] = f"{os.getpid()}:{settings.fingerprint}"
        os.environ.pop(ENV_TOKEN, None)
        _fork.register()
        _handler.attach(address, options)
        _route.enable(_handler.send, every_record=True)
        funnel._routed = True
        funnel._stacks_registered = _rundir.register_stacks(address)
    except BaseException:
        funnel._undo(timeout=5.0)
        raise
    _state.funnel = funnel
    watcher = threading.Thread(
        target=_watch, args=(funnel, settings, path, key, sinks), name="logfunnel-file-watch",
        daemon=True,
    )
    watcher.start()
    return funnel


def _watch(funnel: _JoinedFunnel, settings: Settings, path: str, key: str, sinks: str) -> None:
    """Notice when F's writer's process goes, then take F over or follow who did.

    It asks who holds F's lock (``F_GETLK``) every ``_WATCH`` seconds.  Waiting
    in ``lockf()`` instead would miss a change: when the holder dies, another
    waiter can take the write lock before this one's read lock is granted, and
    this one would then wait for the new holder's end, following a dead writer.
    """
    followed = funnel._followed_pid
    while not funnel.stopping.wait(_WATCH):
        if funnel._closed or funnel._joiner_pid != os.getpid():
            return
        registry = _registry()
        holder = None
        if registry is not None:
            try:
                fd = os.open(os.path.join(registry, key) + ".lock", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                try:
                    holder = _lock_holder(fd)
                finally:
                    os.close(fd)
        if holder == followed:
            continue
        try:
            got = _claim_or_find(path, key)
        except Exception as exc:
            _warn(f"could not take over the writer of {path}: {exc!r}")
            return
        if got is None:
            return
        if isinstance(got, _Claim):
            _take_over(funnel, got, settings, path, sinks)
            return  # this process holds F now: nothing more to watch
        if got["sinks"] != sinks:
            _warn(f"{path} is now written with other sink options: not following it")
            return
        followed = int(got["pid"])
        _point(funnel, str(got["address"]))


def _take_over(
    funnel: _JoinedFunnel, claim: _Claim, settings: Settings, path: str, sinks: str
) -> None:
    """Run F's writer in this process, and send this process's records and children's to it."""
    with _state.install_lock:
        if funnel.stopping.is_set() or funnel._closed:  # shutdown() came first
            claim.release()
            return
        if funnel._levels is not None:  # the successor follows the levels from now on
            funnel._levels.close()
            funnel._levels = None
        try:
            successor = claim.start(settings, path, sinks)
        except Exception as exc:
            _warn(f"could not take over the writer of {path}: {exc!r}")
            return
        funnel._successor = successor
        _point(funnel, successor.address)


def _point(funnel: _JoinedFunnel, address: str) -> None:
    """Make ``writer.sock`` in this process's directory lead to the writer at ``address``."""
    own = funnel.address.removeprefix("unix:")
    temporary = own + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(address.removeprefix("unix:"), temporary)
    os.replace(temporary, own)  # a process connecting now reaches the old target or the new
    # A new connection, made on first use, to where the link now leads (the old one is
    # to the dead writer); children reconnect through the link by themselves.
    if _handler.attached_address() == funnel.address:
        _handler.attach(funnel.address, funnel.options)
    with funnel.moved:
        funnel._moves += 1
        funnel.moved.notify_all()


@atexit.register
def _leave_at_exit() -> None:
    """Remove a joined process's private directory at exit (its records are in the kernel)."""
    funnel = _state.funnel
    if isinstance(funnel, _JoinedFunnel):
        funnel.shutdown()
