"""A process that joined F's writer: its handle, its own directory, and the watcher.

A process that joins gets a private directory of its own (``rundir``
layout): ``writer.sock`` is a symlink to the writer's socket, and ``levels``
is its own levels file, so its children take *its* logger levels, not those
of the unrelated process that happens to run the writer.

Takeover: a POSIX record lock belongs to the live process that took it (not
to its forked children, unlike ``flock``), so when F's writer's process exits
-- ``shutdown()``, a crash, SIGKILL -- the next ``install(file=F)`` gets the
lock and starts a writer on F, which appends to what is already there.  A
joined process's watcher thread (``_watch``) notices, takes F over itself or
follows who did, and points ``writer.sock`` at the new writer.

Who owns what: a joining process owns its private directory and its
``JoinedFunnel`` (``_state.funnel``), undone by its ``shutdown()`` or at exit
(``_leave_at_exit``); the watcher thread is the funnel's and stops with it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Final

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
from logfunnel._shared.claim import Claim, claim_or_find, lock_holder, registry_dir, warn

if TYPE_CHECKING:
    from logfunnel._running import Funnel
    from logfunnel._settings import Settings

# How often a joined process asks whether F's writer's process is still the one it follows.
_WATCH: Final = 0.2


class JoinedFunnel(_running.Funnel):
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


def join_writer(
    found: dict[str, Any], settings: Settings, path: str, key: str, sinks: str
) -> Funnel:
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
    funnel = JoinedFunnel(address, settings.host, options, owner=False)
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


def _watch(funnel: JoinedFunnel, settings: Settings, path: str, key: str, sinks: str) -> None:
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
        registry = registry_dir()
        holder = None
        if registry is not None:
            try:
                fd = os.open(os.path.join(registry, key) + ".lock", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                try:
                    holder = lock_holder(fd)
                finally:
                    os.close(fd)
        if holder == followed:
            continue
        try:
            got = claim_or_find(path, key)
        except Exception as exc:
            warn(f"could not take over the writer of {path}: {exc!r}")
            return
        if got is None:
            return
        if isinstance(got, Claim):
            _take_over(funnel, got, settings, path, sinks)
            return  # this process holds F now: nothing more to watch
        if got["sinks"] != sinks:
            warn(f"{path} is now written with other sink options: not following it")
            return
        followed = int(got["pid"])
        _point(funnel, str(got["address"]))


def _take_over(
    funnel: JoinedFunnel, claim: Claim, settings: Settings, path: str, sinks: str
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
            successor = claim.start(functools.partial(_running.start, settings), path, sinks)
        except Exception as exc:
            warn(f"could not take over the writer of {path}: {exc!r}")
            return
        funnel._successor = successor
        _point(funnel, successor.address)


def _point(funnel: JoinedFunnel, address: str) -> None:
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
    if isinstance(funnel, JoinedFunnel):
        funnel.shutdown()
