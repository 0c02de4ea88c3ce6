"""The funnel's private directory: its names, its creation, and removing the ones left behind.

Layout (made by ``create()`` in the installing process, mode 0700, so only
this user can reach anything in it)::

    $TMPDIR/logfunnel-XXXXXXXX/     (``/tmp/...`` when TMPDIR is too long for a socket path)
        writer.sock                 the writer's listening Unix socket
        levels                      the installer's logger levels, appended on change (``_levels``)
        stacks/<pid>.txt            each attached process's ``faulthandler`` dump (``_stacks``)

Who owns what: the installing process creates the directory and removes it in
``Funnel.shutdown()``; a later ``install()`` of the same user removes those
whose installer was killed (``remove_leftovers``).  Every attached process
owns its own stack file.  This module is imported by every joining
interpreter (``register_stacks``, ``levels_path``), so what only the
installer needs is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os

from logfunnel._core import state as _state

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import socket
    from typing import Final

FUNNEL_DIR_PREFIX: Final = "logfunnel-"
FALLBACK_BASE: Final = "/tmp"  # noqa: S108 - a private mkdtemp directory, never a fixed name
SOCKET_NAME: Final = "writer.sock"
STACKS_NAME: Final = "stacks"
LEVELS_NAME: Final = "levels"
# What a funnel directory may hold; "levels.json" is what releases before 0.2 wrote.
_OURS: Final = frozenset(
    {SOCKET_NAME, STACKS_NAME, LEVELS_NAME, LEVELS_NAME + ".new", "levels.json"}
)
# sockaddr_un.sun_path holds 108 bytes on Linux, including the final NUL.
_MAX_SOCKET_PATH: Final = 107
# Leftover funnel directories (see remove_leftovers): only a directory untouched
# for this long can be one (a funnel being set up right now is younger), and one
# install() examines at most this many of them, picked at random among at most
# _LEFTOVER_SCAN names, so a crowd of directories it must keep cannot starve the rest.
_LEFTOVER_GRACE: Final = 60.0
_LEFTOVER_LIMIT: Final = 100
_LEFTOVER_SCAN: Final = 1000
# The names tempfile.mkdtemp(prefix="logfunnel-") makes: 8 characters of
# tempfile._RandomNameSequence; "logfunnel-repro-..." and the like never match.
_FUNNEL_DIR_SUFFIX: Final = r"[a-z0-9_]{8}\Z"


def directory_of(address: str | None) -> str | None:
    """Return the private directory of a Unix-socket funnel address (None for TCP)."""
    if not address or not address.startswith("unix:"):
        return None
    return os.path.dirname(address.removeprefix("unix:"))


def stacks_directory(address: str | None) -> str | None:
    """Return the directory of per-process stack files for a Unix-socket funnel."""
    directory = directory_of(address)
    return os.path.join(directory, STACKS_NAME) if directory is not None else None


def levels_path(address: str | None) -> str | None:
    """Return the installer's levels file for a Unix-socket funnel."""
    directory = directory_of(address)
    return os.path.join(directory, LEVELS_NAME) if directory is not None else None


# -- stack files (read by ``logfunnel stacks``, see _stacks) ------------------------------

def register_stacks(address: str | None) -> bool:
    """Make this process dump its stacks into its own file on ``SIGUSR2``; True if done.

    ``faulthandler`` writes from its C signal handler without taking any lock or
    the GIL, so even a process stuck forever in a lock acquisition answers.  A
    process whose program already handles ``SIGUSR2`` is left alone.
    """
    # _signal, the built-in module under signal.py: the latter's enums cost a
    # joining process ~0.4 ms for two numbers.
    import _signal  # type: ignore[import-not-found]  # noqa: PLC0415
    import faulthandler  # noqa: PLC0415 - a built-in module, but only joining processes need it
    import threading  # noqa: PLC0415

    directory = stacks_directory(address)
    if directory is None or threading.current_thread() is not threading.main_thread():
        return False
    current = _signal.getsignal(_signal.SIGUSR2)
    # An inherited faulthandler registration shows as SIG_DFL too; a Python
    # handler of the program's own does not, and then SIGUSR2 is not ours.
    if current not in (_signal.SIG_DFL, None):
        return False
    try:
        stream = open(os.path.join(directory, f"{os.getpid()}.txt"), "ab")  # noqa: SIM115
        faulthandler.register(_signal.SIGUSR2, file=stream, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError):
        return False
    previous, _state.stack_file = _state.stack_file, stream
    if previous is not None:  # a parent's file, inherited through fork
        with contextlib.suppress(OSError):
            previous.close()
    return True


def unregister_stacks() -> None:
    """Undo ``register_stacks`` in this process (``Funnel.shutdown()``)."""
    stream, _state.stack_file = _state.stack_file, None
    if stream is None:
        return
    import _signal  # noqa: PLC0415
    import faulthandler  # noqa: PLC0415

    faulthandler.unregister(_signal.SIGUSR2)
    with contextlib.suppress(OSError):
        stream.close()


def alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers kill(0) but dumps nothing.
    fields = proc_stat(pid)
    return fields is None or fields[0] != "Z"


def proc_stat(pid: int | str) -> list[str] | None:
    """Return the fields of ``/proc/PID/stat`` after the command name, or None if unreadable.

    ``fields[0]`` is the state (``Z`` a zombie, ``X`` dead), ``fields[1]`` the
    parent's pid, ``fields[2]`` the process group.  The command name is cut at
    the last ``)``: it may itself hold spaces and parentheses.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def has_live_process(stacks: str) -> bool:
    """Return True if a live process has a stack file in ``stacks`` (a pid can be reused)."""
    return any(
        name.endswith(".txt") and name[:-4].isdigit() and alive(int(name[:-4]))
        for name in os.listdir(stacks)
    )


def listening(path: str, timeout: float = 1.0) -> bool | None:
    """Say whether a writer accepts connections on the Unix socket ``path``.

    True if a connection was made (and closed at once); False if certainly
    nobody listens: the connection was refused (a socket file left by a dead
    process) or there is no such file; None if it cannot be told (a full
    backlog, with ``timeout=0``: never waits; a timeout; no permission).
    """
    import socket  # noqa: PLC0415 - the installer's and the command's needs only

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return None
    return True


def funnel_bases() -> list[str]:
    """Return the directories ``install()`` makes funnel directories in, TMPDIR's first."""
    import tempfile  # noqa: PLC0415 - the installer's and the command's needs only

    return list(dict.fromkeys([tempfile.gettempdir(), FALLBACK_BASE]))


# -- the installer's side ----------------------------------------------------------------


def create() -> tuple[socket.socket, str, str]:
    """Create the private directory and the listening socket in it: (listener, dir, address)."""
    import shutil  # noqa: PLC0415 - the installer's needs only
    import socket  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    remove_leftovers()
    # mkdtemp makes the directory 0700: only this user can reach the socket in it.
    private_dir = tempfile.mkdtemp(prefix=FUNNEL_DIR_PREFIX)
    path = os.path.join(private_dir, SOCKET_NAME)
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:  # a long TMPDIR: use /tmp instead
        os.rmdir(private_dir)
        private_dir = tempfile.mkdtemp(prefix=FUNNEL_DIR_PREFIX, dir=FALLBACK_BASE)
        path = os.path.join(private_dir, SOCKET_NAME)
    try:
        # Inside the try: without a descriptor left for the socket, the directory goes too.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except BaseException:
        remove(private_dir)
        raise
    try:
        os.mkdir(os.path.join(private_dir, STACKS_NAME), 0o700)
        listener.bind(path)
        listener.listen(socket.SOMAXCONN)
    except BaseException:
        listener.close()
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    return listener, private_dir, f"unix:{path}"


def remove(private_dir: str) -> None:
    """Remove a funnel's directory, even when no file descriptor is left to do it with.

    ``shutil.rmtree`` opens the directories it walks; an ``install()`` failing
    because the process ran out of descriptors must still take its directory
    back, so what a funnel puts there is also removed by name.
    """
    import shutil  # noqa: PLC0415 - the installer's needs only

    shutil.rmtree(private_dir, ignore_errors=True)
    if not os.path.lexists(private_dir):
        return
    stacks = os.path.join(private_dir, STACKS_NAME)
    for path in (
        os.path.join(stacks, f"{os.getpid()}.txt"),
        *(os.path.join(private_dir, name) for name in _OURS if name != STACKS_NAME),
    ):
        with contextlib.suppress(OSError):
            os.unlink(path)
    for path in (stacks, private_dir):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def remove_leftovers() -> list[str]:
    """Remove this user's funnel directories whose installer is certainly dead; return them.

    ``shutdown()`` removes a funnel's directory, but an installer killed with
    SIGKILL or SIGTERM (or leaving through ``os._exit``) never runs it.  A
    directory is removed only if it is one ``install()`` made (named like
    ``mkdtemp`` names it, directly in one of ``funnel_bases()``; a real
    directory, not a symlink, of this user, mode 0700, holding nothing but
    what a funnel puts there), has not changed for ``_LEFTOVER_GRACE``
    seconds, no live process has a stack file in it, and nothing listens on
    its socket (refused, or no socket at all).  Never raises: another process
    cleaning up at the same time is normal.
    """
    import itertools  # noqa: PLC0415 - the installer's needs only
    import random  # noqa: PLC0415
    import re  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import time  # noqa: PLC0415

    removed: list[str] = []
    pattern = re.compile(re.escape(FUNNEL_DIR_PREFIX) + _FUNNEL_DIR_SUFFIX)
    try:
        uid, now, budget = os.geteuid(), time.time(), _LEFTOVER_LIMIT
        for base in funnel_bases():
            try:
                with os.scandir(base) as entries:
                    matching = (e.name for e in entries if pattern.match(e.name))
                    names = list(itertools.islice(matching, _LEFTOVER_SCAN))
            except OSError:
                continue
            # A random pick (not a secret) spreads the work over installs.
            for name in random.sample(names, min(len(names), budget)):
                budget -= 1
                path = os.path.join(base, name)
                if _is_leftover(path, uid, now):
                    shutil.rmtree(path, ignore_errors=True)  # symlink-safe; races are fine
                    removed.append(path)
            if budget <= 0:
                break
    except Exception:  # noqa: S110 - a cleanup must never make install() fail
        pass
    return removed


def _is_leftover(path: str, uid: int, now: float) -> bool:
    """Tell whether ``path`` is a funnel directory whose installer is certainly dead."""
    import stat  # noqa: PLC0415 - the installer's needs only

    try:
        info = os.lstat(path)  # never follows a symlink
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != uid
            or stat.S_IMODE(info.st_mode) != 0o700
        ):
            return False
        if now - info.st_mtime <= _LEFTOVER_GRACE:
            return False  # maybe a funnel being set up right now
        entries = set(os.listdir(path))
        if not entries <= _OURS:
            return False  # something else lives there: not ours to judge
        if STACKS_NAME in entries:
            stacks = os.path.join(path, STACKS_NAME)
            if not stat.S_ISDIR(os.lstat(stacks).st_mode) or has_live_process(stacks):
                return False  # a live funnel's processes (checked first: no probe for them)
        if SOCKET_NAME not in entries:
            return True  # the installer died before it could listen
        sock = os.path.join(path, SOCKET_NAME)
        if not stat.S_ISSOCK(os.lstat(sock).st_mode):
            return False
        return listening(sock, timeout=0.0) is False
    except OSError:  # gone meanwhile (another cleaner), unreadable: leave it
        return False
