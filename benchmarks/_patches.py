"""What-if patches: candidate src/ changes, applied at run time to measure them end to end.

Nothing here is part of logfunnel.  ``_one.py --patch NAME[,NAME]`` applies these in
the parent of a ``logfunnel-thread`` run after ``install()`` (forked workers inherit
them), so the gain of a proposed change can be measured before anyone edits src/.
Each patch mirrors a recommendation in the benchmark report:

* ``sndbuf``: each worker's socket gets a 4 MiB send buffer (``SO_SNDBUF``).

The ``batchflush`` and ``asctime`` patches are gone since src does both (the file
sinks flush once per batch, ``LineFormatter`` caches the time per second).  (A
``decode`` patch, a fast path of ``decode_record`` for a common record, is
gone: since protocol 2 the real ``decode_record`` checks the types with one set
lookup and copies the site and thread fields with ``dict.update``, and it is
faster than that fast path adapted to the new layout.)
"""

from __future__ import annotations

import socket

from logfunnel._core import dial as _dial


def sndbuf() -> None:
    original = _dial.connect

    def connect(address: str, timeout: float = 5.0) -> socket.socket:
        sock = original(address, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        return sock

    _dial.connect = connect


PATCHES = {"sndbuf": sndbuf}


def apply(names: str) -> None:
    for name in filter(None, names.split(",")):
        PATCHES[name]()
