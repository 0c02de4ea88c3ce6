"""Unit and property tests of making values plain (``_plain``): repr, ints, extras, messages, tracebacks."""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import threading
import tracemalloc
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from logfunnel._core import plain as _plain
from logfunnel.sinks.files import JsonFormatter
from test_wire_support import (
    CUT_MARKER,
    PROPERTY,
    _ReprRaises,
    any_values,
    extra_keys,
    format_both,
    has_surrogate,
    make_record,
    odd_keys,
    plain_values,
    roundtrip,
    strict_json,
)


def test_extras_plain_values_travel_as_they_are() -> None:
    """Plain extras (and lists, tuples and dicts of them) keep their value; tuples become lists."""
    extra = {
        "s": "text",
        "i": -(2**63),
        "u": 2**64 - 1,
        "f": 1.5,
        "nan": math.inf,
        "b": True,
        "n": None,
        "raw": b"\x00\x01\xff",
        "nested": {"list": [1, [2, [3]]], "tuple": (1, "two")},
    }
    decoded = roundtrip(make_record(extra=extra))
    for key, value in extra.items():
        if key != "nested":
            assert getattr(decoded, key) == value
    assert decoded.nested == {"list": [1, [2, [3]]], "tuple": [1, "two"]}


def test_extras_that_are_not_plain_travel_as_repr() -> None:
    """Locks, sockets, generators, recursive and too deep or too long structures become repr()."""
    lock = threading.Lock()
    recursive: list[Any] = [1]
    recursive.append(recursive)
    deep: list[Any] = []
    node = deep
    for _ in range(20):
        node.append([])
        node = node[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        extra = {
            "lock": lock,
            "sock": sock,
            "gen": (i for i in range(3)),
            "recursive": recursive,
            "deep": deep,
            "long": list(range(1001)),
            "big": 2**70,
            "keys": {1: "int key", (2, 3): "tuple key"},
            "subclass": type("MyDict", (dict,), {})(a=1),
        }
        decoded = roundtrip(make_record(extra=extra))
        assert decoded.lock == repr(lock)
        assert decoded.sock == repr(sock)
    assert decoded.gen.startswith("<generator object")
    node = decoded.recursive  # unrolled to the depth limit, then its repr
    for _ in range(7):
        assert node[0] == 1
        node = node[1]
    assert node == [1, repr(recursive)]
    assert isinstance(decoded.deep, list)
    assert "[[[" in json.dumps(decoded.deep)
    assert decoded.long == repr(list(range(1001)))
    assert decoded.big == str(2**70)
    assert decoded.keys == {"1": "int key", "(2, 3)": "tuple key"}
    assert decoded.subclass == "{'a': 1}"


def test_extra_whose_repr_raises_becomes_a_marker() -> None:
    """An extra whose __repr__ raises travels as <unrepresentable T: ExcType>."""

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    decoded = roundtrip(make_record(extra={"bad": Bad()}))
    assert decoded.bad == (
        "<unrepresentable test_extra_whose_repr_raises_becomes_a_marker.<locals>.Bad: RuntimeError>"
    )


@pytest.fixture
def int_digits_limit() -> Any:
    """Set str()'s limit on int digits to its default (4,300) for one test."""
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no limit on int digits")
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    yield
    sys.set_int_max_str_digits(saved)


@pytest.mark.usefixtures("int_digits_limit")
def test_ints_too_long_for_str_travel_as_their_digit_count() -> None:
    """An int str() refuses (over 4,300 digits) arrives as <int with N digits>, the record whole.

    As a value, in a list or dict, as a key, in a text field and in a repr (issue 9, item 7).
    """
    huge = 10**5000
    record = make_record(
        "huge %s",
        (huge,),
        extra={"x": huge, "neg": -huge, "inner": [1, {"k": huge}], "keyed": {huge: 1}},
    )
    record.name = huge  # type: ignore[assignment]  # a filter's doing
    decoded = roundtrip(record)
    assert decoded.x == "<int with 5,001 digits>"
    assert decoded.neg == "<negative int with 5,001 digits>"
    assert decoded.inner == [1, {"k": "<int with 5,001 digits>"}]
    assert decoded.keyed == {"<int with 5,001 digits>": 1}
    assert decoded.name == "<int with 5,001 digits>"
    assert decoded.msg.startswith("<unformattable message: ValueError")
    assert decoded.msg.endswith("args=(<int with 5,001 digits>,)")
    assert _plain.safe_repr({(1, huge): [huge]}) == (
        "{(1, <int with 5,001 digits>): [<int with 5,001 digits>]}"
    )
    assert _plain.int_text(10**4299) == str(10**4299)  # within the limit: its digits


def test_digit_count_of_a_long_int_is_exact() -> None:
    """The digit count is exact around every power of ten and two; past 2**18 bits, "about"."""
    if hasattr(sys, "set_int_max_str_digits"):
        saved = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)  # str() may convert them all, to check
    try:
        values = [10**n + d for n in range(4290, 4400) for d in (-1, 0, 1)]
        values += [2**b + d for b in range(14_000, 15_000) for d in (-1, 0)]
        values += [10**70_000 - 1, 10**70_000, 2**235_112]  # near a close call of the float
        for value in values:
            assert _plain._long_int(value) == f"<int with {len(str(value)):,} digits>"
            assert _plain._long_int(-value) == f"<negative int with {len(str(value)):,} digits>"
    finally:
        if hasattr(sys, "set_int_max_str_digits"):
            sys.set_int_max_str_digits(saved)
    assert _plain._long_int(10**1_000_000) == "<int with about 1,000,000 digits>"


def test_safe_repr_never_raises() -> None:
    """A repr that raises, returns a lying str subclass, or a type whose name raises: a marker."""

    class NoName(type):
        def __getattribute__(cls, name: str) -> Any:
            if name == "__qualname__":
                raise RuntimeError("no name")
            return super().__getattribute__(name)

    class Nameless(metaclass=NoName):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Lying(str):
        __slots__ = ()

        def __len__(self) -> int:
            return 0

    class LyingRepr:
        def __repr__(self) -> str:
            return Lying("x" * 20_000)

    class Raises:
        def __repr__(self) -> str:
            raise ValueError("no repr")

    assert _plain.safe_repr(Nameless()) == "<unrepresentable object>"
    assert _plain.safe_repr(Raises()).startswith("<unrepresentable ")
    assert _plain.safe_repr(Raises()).endswith("Raises: ValueError>")
    assert CUT_MARKER.match(_plain.safe_repr(LyingRepr())) is not None
    assert _plain.plain({Nameless(): [Raises()]}) == {
        "<unrepresentable object>": [_plain.safe_repr(Raises())]
    }


@pytest.mark.usefixtures("int_digits_limit")
def test_json_formatter_writes_extras_json_cannot_hold_as_the_codec_sends_them() -> None:
    """In the installer's own JSON sink, odd keys and long ints give one line of strict JSON.

    What the sink shows is what a record from another process shows: the codec's plain form.
    """
    bad_key = _ReprRaises()
    extra = {
        "x_int": 10**5000,
        "x_tk": {(1, 2): "v"},
        "x_tkn": {"a": {((1, 2), (3,)): [{(4, 5): "w"}]}},
        "x_bk": {b"k": 1},
        "x_rk": {bad_key: 1},
        "x_nk": {math.nan: 1},
        "x_ik": {10**5000: 1},
        "x_raw": ("caf\udcc3",),
    }
    record = make_record("m" * 50_000, None, extra=extra)
    record.__dict__[(1, 2)] = "top"  # type: ignore[index]
    record.__dict__[bad_key] = "top-bad"  # type: ignore[index]
    obj = strict_json(JsonFormatter().format(record))
    assert obj["message"] == "m" * 50_000  # the record's own texts are not cut like extras
    extra = obj["extra"]  # schema v1: extras under "extra"
    assert extra["x_int"] == "<int with 5,001 digits>"
    assert extra["x_tk"] == {"(1, 2)": "v"}
    assert extra["x_tkn"] == {"a": {"((1, 2), (3,))": [{"(4, 5)": "w"}]}}
    assert extra["x_bk"] == {"b'k'": 1}
    assert extra["x_rk"] == {"<unrepresentable _ReprRaises: RuntimeError>": 1}
    assert extra["x_nk"] == {"nan": 1}
    assert extra["x_ik"] == {"<int with 5,001 digits>": 1}
    assert extra["x_raw"] == ["caf\\udcc3"]
    assert extra["(1, 2)"] == "top"
    assert extra["<unrepresentable _ReprRaises: RuntimeError>"] == "top-bad"
    decoded = roundtrip(record)  # the same record from another process: the same object
    assert strict_json(JsonFormatter().format(decoded)) == obj


def test_huge_repr_of_an_extra_is_cut_with_a_marker() -> None:
    """An extra whose repr is 5 MB arrives cut to 10,000 characters, saying how much was cut."""

    class Huge:
        def __repr__(self) -> str:
            return "r" * 5_000_000

    decoded = roundtrip(make_record(extra={"huge": Huge()}))
    match = CUT_MARKER.match(decoded.huge)
    assert match is not None
    assert match.group(1) == "r" * 10_000
    assert match.group(2) == f"{5_000_000 - 10_000:,}"


def test_shared_references_in_extras_cost_bounded_memory() -> None:
    """A list that shares one big list a million times encodes within the budget, not its size."""
    inner = [0] * 1000
    fan = [[inner] * 1000] * 1000  # a billion items through shared references
    big_strings = ["x" * 1_000_000] * 1001  # a repr of a gigabyte
    tracemalloc.start()
    try:
        fanned = roundtrip(make_record(extra={"fan": fan}))
        strings = roundtrip(make_record(extra={"strings": big_strings}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
    assert _plain.EXTRA_CUT_MARKER in json.dumps(fanned.fan)
    assert strings.strings.startswith("['xxxxx")
    assert strings.strings.endswith("... [logfunnel: repr cut at 10,000 characters]")


def test_unformattable_message_says_what_went_wrong() -> None:
    """A %-mismatch or a __str__ that raises gives a message naming the error, msg and args."""

    class StrRaises:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    mismatch = roundtrip(make_record("tag-a %s %s", (1,)))
    assert mismatch.msg.startswith("<unformattable message: TypeError: ")
    assert "msg='tag-a %s %s' args=(1,)" in mismatch.msg
    wrong_type = roundtrip(make_record("tag-b %d", ("x",)))
    assert wrong_type.msg.startswith("<unformattable message: TypeError")
    raising = roundtrip(make_record("tag-c %s", (StrRaises(),)))
    assert raising.msg.startswith("<unformattable message: RuntimeError: RuntimeError('no str')>")
    assert "tag-c" in raising.msg


def test_unformattable_huge_message_stays_bounded() -> None:
    """The account of an unformattable 50 MB template repr()s at most 2,000 characters of it.

    ``%`` itself allocates a buffer the size of the template before it fails;
    a whole ``repr`` of 50 MB of NULs would take 200 MB more.
    """
    template = "tag %s %s " + "\x00" * 50_000_000
    tracemalloc.start()
    try:
        decoded = roundtrip(make_record(template, (1,)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(template) * 1.5
    assert decoded.msg.startswith("<unformattable message: TypeError")
    assert "characters cut]" in decoded.msg
    assert len(decoded.msg) < 10_000


def test_invalid_unicode_is_backslash_escaped_everywhere() -> None:
    """Lone surrogates in the message, traceback, stack and extras arrive backslash-escaped."""
    bad = b"caf\xc3\xa9 \xff\xfe end".decode("utf-8", "surrogateescape")
    record = make_record(bad + " %s", ("\ud800",), stack_info=bad, extra={"e": bad, bad: 1})
    record.exc_text = bad
    decoded = roundtrip(record)
    assert decoded.msg == "café \\udcff\\udcfe end \\ud800"
    assert decoded.stack_info == "café \\udcff\\udcfe end"
    assert decoded.exc_text == "café \\udcff\\udcfe end"
    assert decoded.e == "café \\udcff\\udcfe end"
    assert decoded.__dict__["café \\udcff\\udcfe end"] == 1


def test_exception_chains_groups_notes_and_unpicklable_exceptions() -> None:
    """Chained, grouped, annotated and unpicklable exceptions travel as traceback text."""

    class UnpicklableError(Exception):
        def __init__(self) -> None:
            super().__init__("cannot pickle me")
            self.lock = threading.Lock()

    try:
        try:
            raise UnpicklableError  # noqa: TRY301
        except UnpicklableError as exc:
            if sys.version_info >= (3, 11):
                exc.add_note("a note on the cause")
            raise KeyError("outer") from exc
    except KeyError:
        exc_info = sys.exc_info()
    decoded = roundtrip(make_record("chained", None, exc_info=exc_info))
    assert "cannot pickle me" in decoded.exc_text
    assert "The above exception was the direct cause" in decoded.exc_text
    assert "KeyError: 'outer'" in decoded.exc_text
    if sys.version_info >= (3, 11):
        assert "a note on the cause" in decoded.exc_text
        group = ExceptionGroup("many", [ValueError("one"), TypeError("two")])  # noqa: F821
        grouped = roundtrip(make_record("grouped", None, exc_info=(ExceptionGroup, group, None)))  # noqa: F821
        assert "ExceptionGroup: many (2 sub-exceptions)" in grouped.exc_text
        assert "ValueError: one" in grouped.exc_text


def test_exception_whose_str_raises_is_still_rendered() -> None:
    """An exception whose __str__ raises still gives a traceback naming its type."""

    class BadStrError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        raise BadStrError  # noqa: TRY301
    except BadStrError:
        exc_info = sys.exc_info()
    decoded = roundtrip(make_record("bad str", None, exc_info=exc_info))
    assert "BadStrError" in decoded.exc_text


# -- property tests of making values plain ----------------------------------------------


@PROPERTY
@given(extra=st.dictionaries(extra_keys, plain_values, max_size=5))
def test_plain_extras_round_trip_exactly(extra: dict[str, Any]) -> None:
    """Any plain extra (valid Unicode, within the size limits) arrives with the same value."""
    assume(all(not has_surrogate(v) and not has_surrogate(k) for k, v in extra.items()))
    decoded = roundtrip(make_record(extra=extra))
    for key, value in extra.items():
        assert decoded.__dict__[key] == value


@PROPERTY
@given(extra=st.dictionaries(odd_keys | extra_keys, any_values, max_size=4))
def test_extras_under_any_keys_give_one_record_and_strict_json(extra: dict[Any, Any]) -> None:
    """Extras under keys of any type, holding anything: the record arrives, the JSON sink is strict.

    Both where the record is logged (the installer's own JSON sink) and after the wire.
    """
    record = make_record("odd keys", None)
    record.__dict__.update(extra)  # what Logger.makeRecord does with extra=
    decoded = roundtrip(record)
    format_both(decoded)
    assert decoded.msg == "odd keys"
    assert strict_json(JsonFormatter().format(record))["message"] == "odd keys"
    assert strict_json(JsonFormatter().format(decoded))["message"] == "odd keys"


repr_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
    | st.sets(st.integers(), max_size=4)
    | st.frozensets(st.text(max_size=3), max_size=4),
    max_leaves=25,
)


@PROPERTY
@given(value=repr_values)
def test_bounded_repr_equals_repr_when_within_the_limit(value: Any) -> None:
    """For built-in containers whose repr fits the limit, safe_repr is exactly repr."""
    assert _plain.safe_repr(value, 10**6) == repr(value)


@PROPERTY
@given(value=repr_values, limit=st.integers(min_value=1, max_value=200))
@example(value="abcdef", limit=2)
@example(value=b"abcdef", limit=2)
@example(value=["abcdef", 1, 2, 3], limit=5)
@example(value=["xxx'"], limit=3)  # the whole is double-quoted, the head would not be
@example(value=[b"xxx'"], limit=4)
@example(value=[bytearray(b"xxx'")], limit=14)
def test_bounded_repr_is_a_prefix_of_repr_with_a_marker(value: Any, limit: int) -> None:
    """A repr over the limit is its first characters followed by a marker saying it was cut."""
    text = _plain.safe_repr(value, limit)
    full = repr(value)
    if isinstance(value, (str, bytes)):  # the repr of the first `limit` characters (bytes)
        if len(value) <= limit:
            assert text == _plain.cut(full, limit)
        else:
            unit = "characters" if isinstance(value, str) else "bytes"
            tail = f"... [logfunnel: {len(value) - limit:,} of {len(value):,} {unit} cut]"
            assert text == repr(value[:limit]) + tail
        return
    if len(full) <= limit:
        assert text == full
        return
    marker = re.search(r"\.\.\. \[logfunnel: .*cut.*\]$", text)
    assert marker is not None, text
    head = text[: marker.start()]
    assert len(head) <= limit
    assert full.startswith(head)

