"""The exporters: sinks that send records to a log system elsewhere, each by a thread of its own.

``Settings.exporters()`` names them as plain values (they cross to a writer
process in its CONFIG frame); ``build`` makes the sinks where the writer loop
runs, so that each sender thread lives beside the loop it serves.  Each
exporter's module (and its dependencies: ``ssl``, ``opentelemetry-proto``) is
imported only by a funnel that exports there.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["build"]


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
