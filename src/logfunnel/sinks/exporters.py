"""The exporters: sinks that send records to a log system elsewhere, each by a thread of its own.

``Settings.exporters()`` names them as plain values (they cross to a writer
process in its CONFIG frame); ``build`` makes the sinks where the writer loop
runs, so that each sender thread lives beside the loop it serves.  Each
exporter's module (and its dependencies: ``ssl``, ``opentelemetry-proto``) is
imported only by a funnel that exports there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["build", "wait_sent"]


def wait_sent(
    ready: threading.Condition,
    sender: threading.Thread,
    pending: Callable[[], bool],
    timeout: float,
) -> bool:
    """Wait up to ``timeout`` s until ``pending()`` is false; True then, False if not in time.

    Called with ``ready`` (the exporter's condition) not held; ``pending`` reads
    the exporter's queue under it.  Never called by the writer loop (it must not
    wait for a collector): by ``close()`` and by tests.
    """
    deadline = time.monotonic() + timeout
    with ready:
        ready.notify_all()  # a sender gathering a batch sends it now
        while pending():
            left = deadline - time.monotonic()
            if left <= 0 or not sender.is_alive():
                return False
            ready.wait(min(left, 0.1))  # woken by the sender after each batch
    return True


def build(exporters: dict[str, Any] | None) -> list[logging.Handler]:
    """Return the exporter sinks ``exporters`` (``Settings.exporters()``) describes."""
    sinks: list[logging.Handler] = []
    if not exporters:
        return sinks
    if exporters.get("syslog") is not None:
        from logfunnel.sinks import syslog  # noqa: PLC0415

        sinks += syslog.from_plain(exporters["syslog"])
    if exporters.get("otlp") is not None:
        from logfunnel.sinks import otlp  # noqa: PLC0415

        sinks += otlp.from_plain(exporters["otlp"])
    return sinks
