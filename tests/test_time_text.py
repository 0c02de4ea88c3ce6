"""``_core.time_text``: a program's ``Formatter`` time text, rendered once a second, to the byte.

Each test compares a formatter that has a ``TimeText`` with one of the same
configuration that has not, record by record.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest

from logfunnel._core.time_text import TimeText

FMT = "%(asctime)s %(levelname)s %(message)s"


def records(start: float, count: int, step: float) -> list[logging.LogRecord]:
    """Return ``count`` records created ``step`` seconds apart from ``start``."""
    made = []
    for i in range(count):
        one = logging.LogRecord("tt", logging.INFO, __file__, 1, f"m{i}", None, None)
        one.created = start + i * step
        one.msecs = int((one.created - int(one.created)) * 1000) + 0.0
        made.append(one)
    return made


def configured(setup: Callable[[logging.Formatter], None]) -> tuple[logging.Formatter, logging.Formatter]:
    """Return (plain, cached) formatters, both configured by ``setup``."""
    plain, cached = logging.Formatter(FMT), logging.Formatter(FMT)
    setup(plain)
    setup(cached)
    TimeText(cached)
    return plain, cached


def _datefmt(f: logging.Formatter) -> None:
    f.datefmt = "%Y-%m-%dT%H:%M:%S %Z %z"


def _gmtime(f: logging.Formatter) -> None:
    f.converter = time.gmtime


def _no_msecs(f: logging.Formatter) -> None:
    f.default_msec_format = None


def _own_formats(f: logging.Formatter) -> None:
    f.default_time_format, f.default_msec_format = "%H:%M:%S", "%s.%03d"


def _nothing(f: logging.Formatter) -> None:
    return


@pytest.mark.parametrize("setup", [_nothing, _datefmt, _gmtime, _no_msecs, _own_formats])
def test_the_text_is_the_stdlibs_to_the_byte(setup: Callable[[logging.Formatter], None]) -> None:
    """Across second boundaries, with every stdlib knob a formatter has: the same lines."""
    plain, cached = configured(setup)
    for one in records(1_700_000_000.5, 60, 0.137) + records(0.0, 5, 0.4):
        assert cached.format(one) == plain.format(one)


def test_a_time_before_1970_or_a_custom_converter_takes_the_stdlibs_own_code() -> None:
    """Negative times and converters other than localtime/gmtime are not cached."""
    calls = []

    def shifted(created: float | None) -> time.struct_time:
        calls.append(created)
        return time.gmtime((created or 0) + 3600)

    plain, cached = configured(lambda f: setattr(f, "converter", shifted))
    for one in records(1_700_000_000.0, 10, 0.1):
        assert cached.format(one) == plain.format(one)
    assert len(calls) == 20  # every record converted, by both
    plain, cached = configured(_nothing)
    for one in records(-5.5, 10, 0.4):
        assert cached.format(one) == plain.format(one)


@pytest.fixture
def zone() -> Iterator[None]:
    """Put the process's time zone back afterwards."""
    saved = os.environ.get("TZ")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("zone")
def test_a_time_zone_changed_within_the_second_is_seen_at_once() -> None:
    """``time.tzset()`` between two records of one second: the second shows the new zone."""
    plain, cached = configured(_datefmt)
    first, second = records(1_700_000_000.1, 2, 0.2)
    os.environ["TZ"] = "UTC"
    time.tzset()
    assert cached.format(first) == plain.format(first)
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    assert cached.format(second) == plain.format(second)
    assert "+0530" in cached.format(second)


def test_only_the_stdlibs_formattime_is_replaced_and_restore_gives_it_back() -> None:
    """A subclass's or an instance's own ``formatTime`` is the program's: left alone."""

    class Own(logging.Formatter):
        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: ARG002, N802
            return "own"

    on_instance = logging.Formatter(FMT)
    on_instance.formatTime = lambda record, datefmt=None: "mine"  # type: ignore[method-assign]  # noqa: ARG005
    assert not TimeText.fits(Own(FMT))
    assert not TimeText.fits(on_instance)
    assert not TimeText.fits(None)
    plain = logging.Formatter(FMT)
    assert TimeText.fits(plain)
    TimeText(plain)
    assert isinstance(vars(plain)["formatTime"], TimeText)
    vars(plain)["formatTime"].restore()
    assert "formatTime" not in vars(plain)
