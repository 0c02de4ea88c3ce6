"""Log a mixed run into a real JSON sink, for checking every line against the schema.

Usage: ``json_schema_mix.py OUT_PATH HOST``

Installs a funnel with ``json=True`` (``HOST`` is ``thread`` or ``process``) and
logs every case of ``run_cases`` from this process (the installer, origin
``main``), a forked child (``fork``) and a spawned child (``spawn``), each
record tagged ``[JS-origin-case]``: plain records, exceptions, ``stack_info``,
a record inside an asyncio task, extras named like the schema's fields, and
bad inputs (NaN and infinities, lone surrogates, huge values, non-string
keys, objects whose ``repr`` raises).  Prints ``done`` once shut down.
"""

# The tag is joined into each template on purpose: it must survive a failed %-format.
# ruff: noqa: G003

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import sys
from typing import Any

import logfunnel

if hasattr(sys, "set_int_max_str_digits"):  # str() refuses ints over 4,300 digits
    sys.set_int_max_str_digits(4300)

log = logging.getLogger("js.mix")

#: Extras named like the schema's fields (and ``logging`` lets through): they must
#: land under ``extra``, never beside or over the schema's own keys.
COLLIDING: dict[str, Any] = {
    name: f"extra-{name}"
    for name in (
        "v",
        "time",
        "level",
        "logger",
        "host",
        "task",
        "exc",
        "stack",
        "extra",
        "context",
        "line",
        "function",
        "process_name",
        "thread_name",
    )
}


class ReprRaises:
    """An object whose ``repr`` (and so ``str``) raises."""

    def __repr__(self) -> str:
        """Raise."""
        raise RuntimeError("no repr")


class OddKeys(logging.Filter):
    """Break the records that ask for it: keys JSON has no form for, standard fields of odd types."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add odd keys (``extra={"odd": True}``), or give standard fields odd values."""
        if record.__dict__.get("odd"):
            record.__dict__[(1, 2)] = "tuple key"  # type: ignore[index]
            record.__dict__[ReprRaises()] = "repr-raising key"  # type: ignore[index]
        if record.__dict__.get("oddfields"):
            record.lineno = "twelve"  # type: ignore[assignment]
            record.process = 10**30
            record.levelname = None  # type: ignore[assignment]
            record.funcName = ReprRaises()  # type: ignore[assignment]
        return True


def run_cases(origin: str) -> None:
    """Log every case once, tagged with ``origin``."""
    tag = f"[JS-{origin}-"
    log.info(tag + "plain] %s %d", "args", 3)
    try:
        1 / 0  # noqa: B018 - the exception is the point
    except ZeroDivisionError:
        log.exception(tag + "exc] boom")
    log.warning(tag + "stack] here", stack_info=True)
    log.info(tag + "collide] extras named like the schema", extra=COLLIDING)
    log.info(tag + "nan] non-finite", extra={"x_nan": math.nan, "x_inf": [math.inf, -math.inf]})
    log.info(tag + "surrogate] \udcff", extra={"x_raw": "caf\udcc3", "k\ud800": 1})
    log.info(tag + "huge] " + "m" * 400_000, extra={"x_big": "x" * 50_000, "x_int": 10**5000})
    log.info(tag + "oddkeys] keys", extra={"odd": True, "x_tk": {(1, 2): "v", b"k": 1}})
    log.info(tag + "repr] %s", ReprRaises(), extra={"x_bad": ReprRaises()})
    log.info(tag + "oddfields] standard fields a filter broke", extra={"oddfields": True})

    async def in_task() -> None:
        log.info(tag + "task] inside a task")

    async def main() -> None:
        await asyncio.create_task(in_task(), name="js-task")

    asyncio.run(main())
    log.info(tag + "after] done")


def child_main(origin: str) -> None:
    """Run the cases in a child, through the funnel it joined."""
    log.addFilter(OddKeys())
    run_cases(origin)


def main() -> None:
    """Install, log from this process and both children, shut down."""
    out, host = sys.argv[1:3]
    funnel = logfunnel.install(file=out, json=True, level="INFO", host=host)  # type: ignore[arg-type]
    log.addFilter(OddKeys())
    run_cases("main")
    for method in ("fork", "spawn"):
        context: Any = multiprocessing.get_context(method)
        child = context.Process(
            target=child_main, args=(method,), name=f"js-{method}"
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0, (method, child.exitcode)
    assert funnel.flush(timeout=60)
    assert funnel.shutdown()
    print("done")


if __name__ == "__main__":
    main()
