"""Log a mix of records from forked pool workers into a funnel, then print its stats.

Usage: lines_mix.py HOST OUT_PATH line|json [MAX_BYTES]

HOST ``writer`` is a thread host whose senders do not render: the writer formats
every record itself, the reference the rendered lines are compared with.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import sys

import logfunnel

# No time, pid or process name (the pool hands tasks out in any order): the same
# records give the same lines in any run.
FMT = "%(name)s|%(levelname)s|%(module)s|%(funcName)s|%(lineno)d|%(message)s"


def work(n: int) -> int:
    """Log records of every kind: plain, multi-line, extras, traceback, stack, odd text."""
    log = logging.getLogger(f"w.{n}")
    log.info("plain %d %s", n, "é ☃")
    log.warning("two\nlines\r\nand a third %d", n)
    log.info("extra %d", n, extra={"job": n, "tags": ["a", "b"]})
    try:
        1 / 0  # noqa: B018 - the exception is the point
    except ZeroDivisionError:
        log.exception("boom %d", n)
    log.debug("surrogate \udcff %d", n)
    log.info("long %d %s", n, "x" * 300_000)
    log.info("bad format %d %d", n)  # noqa: PLE1206 - one argument short: degraded, still a line
    for i in range(200):
        log.info("burst %d %d", n, i)
    return n


def main() -> None:
    """Install with the given host and sink, run the pool, print the writer's stats."""
    host, out, kind = sys.argv[1:4]
    if host == "writer":
        # The one decision that makes senders render, turned off: every record
        # then travels as a record and the writer formats it (the transport and
        # the writer are untouched).
        from logfunnel import _settings  # noqa: PLC0415

        _settings.Settings.senders_render = property(lambda _self: False)  # type: ignore[method-assign,assignment]
        host = "thread"
    sink: dict[str, object] = {"json": True} if kind == "json" else {"fmt": FMT}
    if len(sys.argv) > 4:
        sink.update(max_bytes=int(sys.argv[4]), backups=50)
    funnel = logfunnel.install(file=out, level="DEBUG", host=host, **sink)  # type: ignore[arg-type]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert sorted(pool.map(work, range(6))) == list(range(6))
    assert funnel.flush(timeout=60)
    stats = dataclasses.asdict(funnel.stats())
    funnel.shutdown()
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
