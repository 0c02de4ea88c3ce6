"""Log every kind of bad input through a real funnel, from this process and its children.

Usage: ``python bad_input_child.py OUT_LOG SINK HOST REPORT_JSON [BIG_ORIGINS]``

``SINK`` is ``text`` or ``json``; ``HOST`` is ``thread`` or ``process``.  The
script installs a funnel writing ``OUT_LOG``, then logs each case of
``CASES`` from this process (origin ``main``), from a forked child (``fork``)
and from a spawned child (``spawn``), each record tagged ``[BI-origin-case]``,
then a sentinel ``[BI-origin-after]``.  A 1 GiB message is logged by the
origins named in ``BIG_ORIGINS`` (comma-separated, default ``fork,spawn``);
each of those also logs ``[BI-origin-rss] <peak RSS in KiB>`` after it.

A logging call that raises is caught, counted and written to standard error
as ``BI-RAISED [tag]`` with its traceback; ``REPORT_JSON`` gets what the test
needs besides the log: which cases ran, child exit codes, ``shutdown()``'s
result and how many calls raised.
"""

# The tag is joined into each template on purpose: it must survive a failed %-format.
# ruff: noqa: G003

from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

TEXT_FORMAT = "%(levelname)s %(processName)s %(name)s: %(message)s"
TEN_MB = 10 * 1024 * 1024
ONE_GB = 1024 * 1024 * 1024
# 5,001 digits: str() refuses it under the default limit of 4,300 digits, which
# this script sets itself, so the environment cannot lift it (PYTHONINTMAXSTRDIGITS).
HUGE_INT = 10**5000
if hasattr(sys, "set_int_max_str_digits"):  # Python 3.10.7 and later
    sys.set_int_max_str_digits(4300)

log = logging.getLogger("bad.input")


class StrRaises:
    """An object whose __str__ raises."""

    def __str__(self) -> str:
        """Raise."""
        raise RuntimeError("__str__ refuses")


class ReprRaises:
    """An object whose __repr__ (and so __str__) raises."""

    def __repr__(self) -> str:
        """Raise."""
        raise RuntimeError("__repr__ refuses")


class StrHuge:
    """An object whose __str__ returns 20 MB."""

    def __str__(self) -> str:
        """Return 20 MB of text."""
        return "s" * (20 * 1024 * 1024)


class ReprHuge:
    """An object whose __repr__ returns 20 MB."""

    def __repr__(self) -> str:
        """Return 20 MB of text."""
        return "r" * (20 * 1024 * 1024)


class UnpicklableError(Exception):
    """An exception holding a lock and a socket: pickle refuses it."""

    def __init__(self, text: str) -> None:
        """Keep objects that cannot be pickled."""
        super().__init__(text)
        self.lock = threading.Lock()
        self.generator = (i for i in range(3))


class StrRaisingError(Exception):
    """An exception whose __str__ raises."""

    def __str__(self) -> str:
        """Raise."""
        raise RuntimeError("exception __str__ refuses")


def _recursive() -> tuple[list[Any], dict[str, Any]]:
    items: list[Any] = [1]
    items.append(items)
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    return items, mapping


def _raise(exc: BaseException) -> None:
    raise exc


def _log_exception(tag: str, make: Callable[[], None]) -> None:
    try:
        make()
    except BaseException:
        log.exception(tag + " exception logged")


def _chain() -> None:
    try:
        try:
            _raise(KeyError("the root cause"))
        except KeyError as exc:
            raise ValueError("the direct cause") from exc
    except ValueError:
        raise RuntimeError("the outer error")  # noqa: B904 - an implicit chain on purpose


def _group() -> None:
    if sys.version_info < (3, 11):
        _raise(RuntimeError("no ExceptionGroup before 3.11"))
    inner = ValueError("first inside the group")
    inner.add_note("a note on the first")  # type: ignore[attr-defined, unused-ignore]
    group = ExceptionGroup("a group", [inner, TypeError("second inside the group")])  # type: ignore[name-defined, unused-ignore] # noqa: F821
    group.add_note("a note on the group")
    raise group


def _notes() -> None:
    exc = ValueError("annotated")
    if sys.version_info >= (3, 11):
        exc.add_note("first note\nspanning two lines")
        exc.add_note("second note")
    raise exc


def _cases(big: bool) -> list[tuple[str, Callable[[str], None]]]:
    """Return (case name, function logging that case with a tag) pairs."""
    items, mapping = _recursive()
    cases: list[tuple[str, Callable[[str], None]]] = [
        ("arg_lock", lambda t: log.info(t + " lock %s", threading.Lock())),
        ("arg_recursive", lambda t: log.info(t + " %s %r", items, mapping)),
        ("arg_generator", lambda t: log.info(t + " %s", (i for i in range(3)))),
        ("extra_lock", lambda t: log.info(t, extra={"x_lock": threading.Lock()})),
        ("extra_socket", _extra_socket),
        ("extra_generator", lambda t: log.info(t, extra={"x_gen": (i for i in range(3))})),
        ("extra_recursive", lambda t: log.info(t, extra={"x_list": items, "x_dict": mapping})),
        ("extra_repr_raises", lambda t: log.info(t, extra={"x_bad": ReprRaises()})),
        ("extra_repr_huge", lambda t: log.info(t, extra={"x_huge": ReprHuge()})),
        ("extra_invalid_utf8", lambda t: log.info(t, extra={"x_raw": _invalid_utf8()})),
        ("extra_invalid_utf8_tuple", lambda t: log.info(t, extra={"x_rawt": (_invalid_utf8(),)})),
        # Extras that cannot be made plain as they are: ints too long for str(),
        # keys JSON and msgpack have no form for (issue 9, item 7).
        ("extra_int_huge", lambda t: log.info(t, extra={"x_int": HUGE_INT})),
        ("extra_int_huge_negative", lambda t: log.info(t, extra={"x_neg": -HUGE_INT})),
        ("extra_int_huge_nested", lambda t: log.info(t, extra={"x_ints": [1, {"k": HUGE_INT}]})),
        ("extra_key_tuple_top", lambda t: log.info(t, extra={(1, 2): "v"})),  # type: ignore[dict-item]
        ("extra_key_tuple", lambda t: log.info(t, extra={"x_tk": {(1, 2): "v"}})),
        ("extra_key_tuple_nested", lambda t: log.info(t, extra={"x_tkn": _nested_tuple_keys()})),
        ("extra_key_bytes", lambda t: log.info(t, extra={"x_bk": {b"k": 1}})),
        ("extra_key_repr_raises", lambda t: log.info(t, extra={"x_rk": {ReprRaises(): 1}})),
        ("extra_key_repr_raises_top", lambda t: log.info(t, extra={ReprRaises(): 1})),  # type: ignore[dict-item]
        ("extra_key_nan", lambda t: log.info(t, extra={"x_nk": {float("nan"): 1}})),
        ("extra_key_int_huge", lambda t: log.info(t, extra={"x_ik": {HUGE_INT: 1}})),
        ("arg_int_huge", lambda t: log.info(t + " %s", HUGE_INT)),
        ("str_raises", lambda t: log.info(t + " %s", StrRaises())),
        ("repr_raises", lambda t: log.info(t + " %r", ReprRaises())),
        ("str_huge", lambda t: log.info(t + " %s", StrHuge())),
        ("msg_10mb", lambda t: log.info(t + " " + "x" * TEN_MB)),
        ("invalid_utf8", lambda t: log.info(t + " %s end", _invalid_utf8())),
        ("lone_surrogate", lambda t: log.info(t + " \ud800 and \udfff end")),
        ("nul", lambda t: log.info(t + " before\x00after")),
        ("newlines", lambda t: log.info(t + " line1\nline2\r\nline3\rline4\n")),
        ("exc_unpicklable", lambda t: _log_exception(t, lambda: _raise(UnpicklableError("u")))),
        ("exc_str_raises", lambda t: _log_exception(t, lambda: _raise(StrRaisingError()))),
        ("exc_chain", lambda t: _log_exception(t, _chain)),
        ("exc_group", lambda t: _log_exception(t, _group)),
        ("exc_notes", lambda t: _log_exception(t, _notes)),
        ("stack_info", lambda t: log.info(t + " with its stack", stack_info=True)),
        ("pct_too_few", lambda t: log.info(t + " %s %s", 1)),
        ("pct_too_many", lambda t: log.info(t + " %s", 1, 2)),
        ("pct_wrong_type", lambda t: log.info(t + " %d", "not a number")),
        ("pct_bad_directive", lambda t: log.info(t + " %y", 1)),
    ]
    if big:
        cases.append(("msg_1gb", _one_gigabyte))
    return cases


def _nested_tuple_keys() -> dict[str, Any]:
    return {"a": {((1, 2), (3,)): [{(4, 5): "w"}]}}


def _invalid_utf8() -> str:
    return b"caf\xc3\xa9 \xff\xfe\xc3".decode("utf-8", "surrogateescape")


def _extra_socket(tag: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        log.info(tag, extra={"x_sock": sock})


def _one_gigabyte(tag: str) -> None:
    text = (tag + " ").ljust(ONE_GB, "g")  # one allocation of 1 GiB
    log.info(text)
    del text


def run_cases(origin: str, big: bool) -> int:
    """Log every case tagged for ``origin``; return how many logging calls raised."""
    raised = 0
    for case, call in _cases(big):
        tag = f"[BI-{origin}-{case}]"
        try:
            call(tag)
        except BaseException:
            raised += 1
            print(f"BI-RAISED {tag}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    if big:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        log.info("[BI-%s-rss] %d", origin, peak_kib)
    log.info("[BI-%s-after] logging went on", origin)
    return raised


def child_main(origin: str, big: bool) -> None:
    """Run the cases in a multiprocessing child; exit with the number of calls that raised."""
    sys.exit(min(run_cases(origin, big), 100))


def main() -> int:
    """Install, log from three origins, shut down, write the report."""
    import logfunnel  # noqa: PLC0415 - imported here so spawn children import it via the hook

    out_log, sink, host, report_path = sys.argv[1:5]
    big_origins = set((sys.argv[5] if len(sys.argv) > 5 else "fork,spawn").split(","))
    if sink == "json":
        funnel = logfunnel.install(file=out_log, level="DEBUG", json=True, host=host)  # type: ignore[arg-type]
    else:
        funnel = logfunnel.install(file=out_log, level="DEBUG", fmt=TEXT_FORMAT, host=host)  # type: ignore[arg-type]
    report: dict[str, Any] = {"cases": [name for name, _ in _cases(big=True)], "exitcodes": {}}
    report["raised_main"] = run_cases("main", "main" in big_origins)
    for method in ("fork", "spawn"):
        context = (
            multiprocessing.get_context("fork")
            if method == "fork"
            else multiprocessing.get_context("spawn")
        )
        process = context.Process(
            target=child_main, args=(method, method in big_origins), name=f"bad-input-{method}"
        )
        process.start()
        process.join(90)
        if process.is_alive():
            process.kill()
            process.join()
            report["exitcodes"][method] = "timeout"
        else:
            report["exitcodes"][method] = process.exitcode
    report["shutdown"] = funnel.shutdown()
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
