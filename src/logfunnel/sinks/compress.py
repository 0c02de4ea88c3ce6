"""Compression of rotated files, off the writer's loop: a worker thread of the writer.

Who owns what: a rotating file sink with ``compress="gzip"`` owns one
``Compressor``; the writer's thread submits rotated files to it and never waits
for it (except a size-only chain's shift, see ``rotation.ChainNaming``).  The
worker thread, started on the first job in the process that writes (so a
writer process's supervisor never has it, and a forked child never inherits
a running one), owns the files it was given until it is done with them.  It
does the deflating in a child process it starts (this file run as a script,
``python -I -S``, at nice 10) and waits for it: loguru #837 (logging blocked
while compressing) is why none of this runs on the writer's loop, and a
thread alone was not enough: in a thread host a gzip thread shares the GIL
with the program's logging calls (``benchmarks/rotation.py`` measured their
p99 at 9x during a 100 MB gzip; with the child process it stays within 2x).

Crash safety (``gzip_file``): the data goes to ``NAME.gz.tmp``, which is
fsynced and then renamed to ``NAME.gz`` with ``os.replace`` (atomic), and only
then is ``NAME`` unlinked, all under an exclusive ``flock`` of ``NAME``.  A
crash at any point leaves the plain file, or a complete ``.gz`` (perhaps beside
the plain file), never a truncated ``.gz`` alone.  At start the sink
``recover``s: a ``.gz.tmp`` is removed, a plain file beside its ``.gz`` is
removed, a plain rotated file without one is compressed -- except a file whose
``flock`` is held: a compressor left running by a writer that died is still
at work on it, and finishes it.

Nothing here imports logfunnel at run time, so the child needs no ``sys.path``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Callable

    from logfunnel.sinks.rotation import Rotated

__all__ = ["Compressor", "gzip_file", "recover"]

_CHUNK = 1 << 20
#: gzip(1)'s default level: about 3x faster than zlib's 9 for a few per cent.
_LEVEL = 6


def gzip_file(path: str, *, fsync: bool = True) -> str | None:
    """Compress ``path`` to ``path.gz`` safely (``.gz.tmp``, fsync, replace); unlink ``path``.

    Holds an exclusive ``flock`` of ``path`` throughout; if another process
    compressed it meanwhile (``path`` is gone, or is another file, once the
    lock is ours), does nothing and returns None.  The ``.gz`` keeps the plain
    file's modification time, in its header and on disk, so retention by age
    and ``gzip -l`` see when it was written.
    """
    tmp, final = path + ".gz.tmp", path + ".gz"
    with open(path, "rb") as source:
        fcntl.flock(source.fileno(), fcntl.LOCK_EX)
        stat = os.fstat(source.fileno())
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return None
        if (now.st_dev, now.st_ino) != (stat.st_dev, stat.st_ino):
            return None
        _deflate(source, tmp, stat, fsync=fsync)
        os.replace(tmp, final)
        os.unlink(path)
    return final


def _deflate(source: BinaryIO, tmp: str, stat: os.stat_result, *, fsync: bool) -> None:
    import gzip  # noqa: PLC0415 - only a compressing process needs it

    with open(tmp, "wb") as raw:
        with gzip.GzipFile(
            filename=os.path.basename(tmp[: -len(".gz.tmp")]), mode="wb", fileobj=raw,
            compresslevel=_LEVEL, mtime=int(stat.st_mtime),
        ) as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
        raw.flush()
        if fsync:
            os.fsync(raw.fileno())
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _locked(path: str) -> bool:
    """Tell whether another process holds ``path``'s ``flock`` (a compressor still at work)."""
    try:
        with open(path, "rb") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except FileNotFoundError:
        return False
    return False


def recover(rotated: list[Rotated]) -> list[str]:
    """Finish what a crash left; return the plain paths that still need compressing.

    A plain file whose ``flock`` another process holds is left as it is: a
    compressor started by a writer that died is still at it.
    """
    todo: list[str] = []
    for entry in rotated:
        if entry.plain and _locked(entry.path):
            continue
        if entry.tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path + ".gz.tmp")
        if entry.plain and entry.gz:  # replaced, not yet unlinked: the .gz is whole
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        elif entry.plain:
            todo.append(entry.path)
    return todo


def compress_in_child(path: str) -> None:
    """Run ``gzip_file(path)`` in a child process (this file as a script); wait for it.

    ``-I -S``: no environment, user site or ``.pth`` files (so the child never
    joins a funnel); at nice 10, so the writer and the program come first.
    Raises ``OSError`` with the child's message if it failed.
    """
    done = subprocess.run(
        [sys.executable, "-I", "-S", __file__, path],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OSError(why[-1] if why else f"the compressor exited with {done.returncode}")


class Compressor:
    """A queue of rotated files and the one worker thread that gzips them, oldest first."""

    def __init__(self, done: Callable[[], None] | None = None) -> None:
        """``done`` runs on the worker after each file (the sink applies retention there)."""
        self._done = done
        self._cond = threading.Condition()
        self._queue: collections.deque[str] = collections.deque()
        self._current: str | None = None
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._closed = False
        #: Files that could not be compressed (left plain), for tests and reports.
        self.failed = 0

    def busy(self) -> set[str]:
        """Return the plain paths queued or being compressed (retention keeps them)."""
        with self._cond:
            return {*self._queue, *([self._current] if self._current else [])}

    def submit(self, path: str) -> None:
        """Queue ``path`` for compression; start the worker if this process has none."""
        with self._cond:
            if self._closed:
                return
            self._queue.append(path)
            if self._thread is None or self._pid != os.getpid():
                # A forked copy of this object has no worker: start one here.
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._work, name="logfunnel-compress", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or in progress; True if so within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and self._current is None, timeout
            )

    def close(self, timeout: float | None = None) -> bool:
        """Compress what is queued, then stop the worker; True if it finished in time.

        Whatever is not done by then stays plain, and is compressed at the
        next start (``recover``).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left
                self._current = path = self._queue.popleft()
            try:
                compress_in_child(path)
            except FileNotFoundError:
                pass  # deleted meanwhile (by retention or by hand): nothing to do
            except Exception as exc:  # a full disk: the plain file stays, whole
                self.failed += 1
                print(
                    f"logfunnel: cannot compress {path} ({type(exc).__name__}: {exc}); "
                    f"it stays uncompressed",
                    file=sys.stderr,
                )
                with contextlib.suppress(OSError):
                    os.unlink(path + ".gz.tmp")
            try:
                # Still busy meanwhile: wait_idle() (a size chain's shift) waits for it too.
                if self._done is not None:
                    self._done()
            except Exception as exc:
                print(f"logfunnel: retention after compressing failed: {exc}", file=sys.stderr)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()


if __name__ == "__main__":  # the child compress_in_child starts
    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile: nothing to do
        gzip_file(sys.argv[1])  # None: another compressor did it
