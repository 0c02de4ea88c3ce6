"""What ``logfunnel.context()`` costs a logging call, with no block active and inside one.

Usage: ``python benchmarks/context_cost.py [--calls N] [--repeat R]``

Three measurements in nanoseconds per call, each case the best of R rounds of N
calls, the cases interleaved within each round (a shared machine's noise then
hits them alike):

1. ``CURRENT.get()`` alone: what the route adds to every record when no block
   is active (one C call and a comparison);
2. ``logger.info()`` through the route to a handler that does nothing, with the
   stdlib's ``callHandlers``, through the route outside any block, and inside
   ``context(job=..., shard=...)``: the cost of attaching two fields;
3. ``logger.info()`` into a real funnel (``install(file=...)``), thread and
   process hosts, outside and inside a block: inside, records carry the fields
   as extras, so with ``host="process"`` they travel as records instead of as
   lines the process rendered itself.

Prints one line per measurement; docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import timeit

import logfunnel
from logfunnel._core import context as _context
from logfunnel._core import route as _route


class _Nothing(logging.Handler):
    """A handler that takes every record and does nothing with it."""

    def emit(self, record: logging.LogRecord) -> None:
        """Do nothing."""


def _ignore(record: logging.LogRecord) -> None:
    """Deliver nowhere: the route's own cost, without a funnel's."""


def _per_call(stmt: object, calls: int) -> float:
    """Return the time per call of ``stmt`` over ``calls`` calls, in nanoseconds."""
    return timeit.timeit(stmt, number=calls) / calls * 1e9  # type: ignore[arg-type]


def _best(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Return each case's best round: the cases were interleaved, so noise hits all alike."""
    return {case: min(r[case] for r in rounds) for case in rounds[0]}


def _route_costs(calls: int, repeat: int) -> None:
    logger = logging.getLogger("bench.context")
    logger.propagate = False
    logger.addHandler(_Nothing())
    logger.setLevel(logging.INFO)
    record = logging.makeLogRecord({})
    fields: dict[str, str | int | float | bool | None] = {"job": "nightly", "shard": 3}

    def info() -> None:
        logger.info("record %d", 1)

    def attach() -> None:
        record.__dict__.clear()
        _context.attach(record, fields)

    rounds = []
    for _ in range(repeat):
        got = {"get": _per_call(_context.CURRENT.get, calls)}
        got["attach"] = _per_call(attach, calls)
        # Not _route.disable(): once a block was entered, the route stays in place.
        logging.Logger.callHandlers = _route._stdlib_call_handlers  # type: ignore[method-assign]
        got["stdlib"] = _per_call(info, calls)
        _route.enable(_ignore, every_record=True)
        got["route"] = _per_call(info, calls)
        with logfunnel.context(job="nightly", shard=3):
            got["context"] = _per_call(info, calls)
        rounds.append(got)
    _route.disable()
    best = _best(rounds)
    print(f"CURRENT.get() alone (the route's check outside any block): {best['get']:.0f} ns")
    print(f"attach() of 2 fields to a record: {best['attach']:.0f} ns")
    print(f"logger.info to a no-op handler, stdlib callHandlers: {best['stdlib']:.0f} ns")
    print(f"logger.info to a no-op handler, route, no context: {best['route']:.0f} ns")
    print(f"logger.info to a no-op handler, route, context(2 fields): {best['context']:.0f} ns")


def _funnel_costs(host: str, calls: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.log")
        funnel = logfunnel.install(file=path, host=host)  # type: ignore[arg-type]
        logger = logging.getLogger("bench.funnel")
        logger.setLevel(logging.INFO)

        def info() -> None:
            logger.info("record %d", 1)

        rounds = []
        try:
            for _ in range(repeat):
                got = {"outside": _per_call(info, calls)}
                funnel.flush(timeout=60)
                with logfunnel.context(job="nightly", shard=3):
                    got["inside"] = _per_call(info, calls)
                funnel.flush(timeout=60)
                rounds.append(got)
        finally:
            funnel.shutdown()
        best = _best(rounds)
        print(f"install(file=, host={host!r}): no context {best['outside']:.0f} ns, "
              f"context(2 fields) {best['inside']:.0f} ns per logging call")


def main() -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    _route_costs(args.calls, args.repeat)
    for host in ("thread", "process"):
        _funnel_costs(host, args.calls // 2, args.repeat)


if __name__ == "__main__":
    main()
