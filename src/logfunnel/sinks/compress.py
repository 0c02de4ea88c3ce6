"""Compression of rotated files, off the writer's loop: a worker thread of the writer.

Who owns what: a rotating file sink with ``compress="gzip"`` owns one
``Compressor``; the writer's thread submits rotated files to it and never waits
for it (except a size-only chain's shift, see ``rotation.ChainNaming``).  The
worker thread, started on the first job in the process that writes (so a
writer process's supervisor never has it, and a forked child never inherits
a running one), owns the files it was given until it is done with them.

Crash safety (``gzip_file``): the data goes to ``NAME.gz.tmp``, which is
fsynced and then renamed to ``NAME.gz`` with ``os.replace`` (atomic), and only
then is ``NAME`` unlinked.  A crash at any point leaves the plain file, or a
complete ``.gz`` (perhaps beside the plain file), never a truncated ``.gz``
alone.  At start the sink ``recover``s: a ``.gz.tmp`` is removed, a plain file
beside its ``.gz`` is removed, a plain rotated file without one is compressed.
loguru #837 (logging blocked while compressing) is why none of this runs on
the writer's loop.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from collections.abc import Callable

from logfunnel.sinks.rotation import Rotated

__all__ = ["Compressor", "gzip_file", "recover"]

_CHUNK = 1 << 20
#: gzip(1)'s default level: about 3x faster than zlib's 9 for a few per cent.
_LEVEL = 6


def gzip_file(path: str, *, fsync: bool = True) -> str:
    """Compress ``path`` to ``path.gz`` safely (``.gz.tmp``, fsync, replace); unlink ``path``.

    The ``.gz`` keeps the plain file's modification time, in its header and
    on disk, so retention by age and ``gzip -l`` see when it was written.
    """
    import gzip  # noqa: PLC0415 - only a compressing writer needs it

    tmp, final = path + ".gz.tmp", path + ".gz"
    stat = os.stat(path)
    with open(path, "rb") as source, open(tmp, "wb") as raw:
        with gzip.GzipFile(
            filename=os.path.basename(path), mode="wb", fileobj=raw,
            compresslevel=_LEVEL, mtime=int(stat.st_mtime),
        ) as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)  # zlib lets go of the GIL while it deflates
        raw.flush()
        if fsync:
            os.fsync(raw.fileno())
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(tmp, final)
    os.unlink(path)
    return final


def recover(rotated: list[Rotated]) -> list[str]:
    """Finish what a crash left; return the plain paths that still need compressing."""
    todo: list[str] = []
    for entry in rotated:
        if entry.tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path + ".gz.tmp")
        if entry.plain and entry.gz:  # replaced, not yet unlinked: the .gz is whole
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        elif entry.plain:
            todo.append(entry.path)
    return todo


def _lower_priority() -> None:
    # setpriority(2), NOTES: on Linux PRIO_PROCESS with a thread id sets the
    # nice value of that thread only, so compressing yields the CPU to the loop.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


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
        _lower_priority()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left
                self._current = path = self._queue.popleft()
            try:
                gzip_file(path)
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
