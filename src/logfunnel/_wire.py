"""The wire format: length-prefixed msgpack frames carrying allow-listed record fields.

A frame is a 4-byte big-endian payload length followed by that many bytes of
msgpack encoding one array whose first element is the frame kind.  msgpack
only ever builds plain values (str, bytes, int, float, bool, None, lists and
dicts of those): nothing received from a socket is unpickled or evaluated.

A record travels as a RECORD frame holding what changes from call to call
(logger, level, message, times, traceback, extras) and two small ids: its call
site (path, file, module, line, function) and its thread (thread and process
ids and names).  The first record from a new site or thread is preceded, in the
same write, by a SITE or THREAD frame defining the id on this connection; the
writer keeps those definitions per connection (at most ``TABLE_SIZE`` of each).
Sending them once instead of with every record halves the encoding work on
both sides (``benchmarks/profile_hot_path.py``).

What a record undergoes on its way out of a process (``encode_record``), in
the order it happens -- the conversions ``QueueHandler.prepare`` documents,
and a few more (making a value plain, items 1, 2, 4, 6 and the cuts of 5, is
``_plain``'s; this module applies it):

1. ``record.getMessage()`` merges ``msg`` and ``args`` into one string.  If that
   raises (a ``%`` mismatch, a ``__str__`` that raises), the message becomes
   ``<unformattable message: ExcType: text> msg=... args=...`` built from safe
   reprs, so the record still lands and says what went wrong.
2. ``exc_info`` becomes ``exc_text`` via ``logging.Formatter.formatException``
   (chains, groups and notes included, as the traceback module renders them);
   the exception object itself never travels, so exceptions that cannot be
   pickled are no problem.  ``stack_info`` travels as text.
3. ``args``, ``msg`` (the template) and ``exc_info`` are dropped: the writer gets
   the formatted message as ``msg`` with ``args=None``.
4. Attributes added through ``extra=`` travel when they are plain
   (str, int, float, bool, None, bytes; lists, tuples and dicts of those, to a
   depth of 8 and 1,000 items); anything else travels as ``repr()`` (a ``repr``
   that raises becomes ``<unrepresentable T: ExcType>``).  A key that is not a
   string (a tuple, bytes, NaN, an object whose ``repr`` raises) travels as its
   safe repr, cut at 200 characters.  Strings and bytes longer than 10,000 are
   cut with a marker; ints outside 64 bits travel as their decimal text, or as
   ``<int with N digits>`` when ``str()`` refuses them (over
   ``sys.get_int_max_str_digits()`` digits, 4,300 by default), in a repr too.
   None of this can raise: a value that cannot be made plain never costs the
   record (``safe_repr`` ends in ``<unrepresentable object>``).  All the
   extras of one record together hold at most ``_plain.EXTRA_BUDGET`` values (a
   string counting one more per 64 characters); values past that budget become
   ``EXTRA_CUT_MARKER``, so a structure that shares one list many times over
   cannot make the sender allocate more than that.
5. Text longer than the field limit is cut and ends with a marker saying how
   many characters were cut (the texts of a site or thread at 512
   characters, or less under a small frame limit); the frame as a whole never
   exceeds the frame limit.
   A ``repr()`` is cut the same way; the ``repr`` of a built-in container
   (list, tuple, dict, set) is built within its limit and, when that is reached,
   ends with ``... [logfunnel: repr cut at N characters]``.
6. Strings that are not valid Unicode (lone surrogates from ``surrogateescape``
   decoding) are re-encoded with ``backslashreplace``, so the bytes stay visible.
7. A standard field that a filter (or ``logging.makeLogRecord``) left with a
   type the writer does not accept is converted: text fields to ``str`` (``None``
   stays ``None`` where the writer accepts it: ``funcName``, the thread and
   process fields, ``exc_text``, ``stack_info``, ``taskName``), number fields to
   ``int``/``float`` (or 0 when that is impossible).  If even the cut record
   does not fit the frame limit, a minimal record with the level, the logger
   name and ``<record too large to send>`` travels instead.

The writer's side (``FrameReader``, ``decode_payload``, ``decode_record``)
trusts nothing: a length prefix over the limit is refused before any of the
claimed payload is buffered, anything that is not a msgpack array starting
with an int kind raises ``FrameError`` (and only ``FrameError``), and a RECORD
frame must carry exactly the declared fields with the declared types, finite
times, ids its connection defined, and extras that are plain values under
string keys; SITE and THREAD frames must have exactly their declared types and
an id below ``TABLE_SIZE``.  Extras named like
a ``LogRecord`` attribute or method (``getMessage``, ``msg``, ...) are not set,
so a peer cannot make the sinks' formatting raise.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct

import msgpack

from logfunnel import _options
from logfunnel._plain import (
    BASE_LEN,
    EXTRA_CUT_MARKER,
    NONE,
    PLAIN_LEAVES,
    STANDARD_ATTRS,
    as_str,
    coerce,
    cut,
    exception_text,
    get_message,
    has_no_extras,
    int_text,
    plain,
    record_extras,
    safe_repr,
    sanitize,
    valid_text,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

# The codec as the rest of the package reaches it (`_wire.X`), wherever each name is defined.
__all__ = [
    "CONFIG", "DEFAULT_FRAME_LIMIT", "DROPPED", "DUMP_STACKS", "EXTRA_CUT_MARKER", "FLUSH",
    "FLUSHED", "HEADER", "HEADER_SIZE", "HELLO", "LEVELS", "LINE", "LOGRECORD_FIELDS",
    "PROTOCOL_VERSION", "RECORD", "RECORD_FIELDS", "SHUTDOWN", "SITE", "SITE_FIELDS", "STACKS",
    "STANDARD_ATTRS", "STATS", "TABLE_SIZE", "TABLE_TEXT_LIMIT", "THREAD", "THREAD_FIELDS",
    "TOO_LARGE_MESSAGE", "Encoder", "FrameError", "FrameReader", "Tables", "cut", "decode_payload",
    "decode_record", "exception_text", "get_message", "has_no_extras", "hello_fields", "int_text",
    "plain", "safe_repr", "sanitize",
]

PROTOCOL_VERSION: Final = 2

# Frame kinds: the first element of every frame's array.
HELLO: Final = 0  # [HELLO, version, pid, process name]: first frame on a connection
RECORD: Final = 1  # [RECORD, *RECORD_FIELDS]: site and thread are ids, see below
DROPPED: Final = 2  # [DROPPED, count]: the sender dropped records under on_full="drop"
FLUSH: Final = 3  # [FLUSH, request id]: a barrier; the writer answers FLUSHED
FLUSHED: Final = 4  # [FLUSHED, request id]
SHUTDOWN: Final = 5  # [SHUTDOWN, request id]: only honoured on the owner's control channel
CONFIG: Final = 6  # [CONFIG, dict]: the sinks of a writer process, on its control channel
DUMP_STACKS: Final = 7  # [DUMP_STACKS, request id]: ask the writer to write every stack
STACKS: Final = 8  # [STACKS, pid, text]: a process's Python stacks, for `logfunnel stacks`
STATS: Final = 9  # [STATS, request id] on the control channel; answered [STATS, id, dict]
LEVELS: Final = 10  # [LEVELS, request id]: ask for the installer's levels; [LEVELS, id, dict]
SITE: Final = 11  # [SITE, id, *SITE_FIELDS]: (re)defines a call site id of this connection
THREAD: Final = 12  # [THREAD, id, *THREAD_FIELDS]: (re)defines a thread id of this connection
LINE: Final = 13  # [LINE, text]: a record the sender rendered with the writer's formatter

HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size

#: Default largest payload a writer accepts and a sender produces (bytes).  Defined
#: with the options every joining process reads (which must not import this module,
#: nor msgpack, at start-up); kept here under its old name.
DEFAULT_FRAME_LIMIT: Final = _options.DEFAULT_FRAME_LIMIT

# The order of the fields after the kind in a RECORD frame.  ``site`` and
# ``thread`` are ids the same connection defined earlier with SITE and THREAD
# frames: what stays the same from one record to the next (where the call is,
# which thread and process made it) travels once, not with every record.
RECORD_FIELDS: Final = (
    "name",
    "levelno",
    "levelname",
    "msg",
    "created",
    "msecs",
    "relativeCreated",
    "site",
    "thread",
    "exc_text",
    "stack_info",
    "taskName",
    "extra",
)
# The fields after [SITE, id] and [THREAD, id].
SITE_FIELDS: Final = ("pathname", "filename", "module", "lineno", "funcName")
THREAD_FIELDS: Final = ("thread", "threadName", "process", "processName")
#: Every LogRecord attribute a record arrives with (besides extras).
LOGRECORD_FIELDS: Final = (
    *(f for f in RECORD_FIELDS if f not in ("site", "thread", "extra")),
    *SITE_FIELDS,
    *THREAD_FIELDS,
)
#: How many sites (and, separately, threads) a connection may have defined at
#: once.  A sender that needs more starts again from id 0, redefining ids as it
#: reuses them, so a writer never holds more than this many per connection.
TABLE_SIZE: Final = 1024
#: Longest text (characters, before the cut marker) of a SITE or THREAD field.  With
#: ``TABLE_SIZE`` this bounds what a writer keeps per connection (a few MB at worst).
TABLE_TEXT_LIMIT: Final = 512
# Room for cut()'s marker after a text cut at its limit.
_MARKER_ROOM: Final = 100


#: The message of a record that does not fit the frame limit even when cut.
TOO_LARGE_MESSAGE: Final = "<record too large to send>"


class FrameError(ValueError):
    """A peer sent bytes that are not a valid frame; its connection is dropped."""


# The range of `created` that every stock formatter can render (years 1 to 9999, with a
# day to spare for time zones): time.localtime and datetime raise outside it.
_CREATED_MIN: Final = -62_135_596_800.0 + 86_400
_CREATED_MAX: Final = 253_402_300_799.0 - 86_400

# Indexes (in a RECORD frame, kind at 0) of the fields the sender cuts or checks.
_MESSAGE: Final = 4
_CREATED: Final = 5
_MSECS: Final = 6
_RELATIVE: Final = 7
_EXC_TEXT: Final = 10
_STACK_INFO: Final = 11
_EXTRA: Final = 13

_FIELD_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    (str,),  # name
    (int,),  # levelno
    (str,),  # levelname
    (str,),  # msg
    (float, int),  # created
    (float, int),  # msecs
    (float, int),  # relativeCreated
    (int,),  # site: an id, always made by the encoder
    (int,),  # thread: an id, always made by the encoder
    (str, NONE),  # exc_text
    (str, NONE),  # stack_info
    (str, NONE),  # taskName
    (dict, NONE),  # extra
)
_SITE_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    (str,),  # pathname
    (str,),  # filename
    (str,),  # module
    (int,),  # lineno
    (str, NONE),  # funcName: LogRecord(..., func=None) leaves it None
)
_THREAD_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    (int, NONE),  # thread
    (str, NONE),  # threadName
    (int, NONE),  # process
    (str, NONE),  # processName
)

# Every valid combination of field types of a frame, kind included: checking a
# frame's types costs one tuple and one set lookup.
_RECORD_SHAPES: Final = frozenset(itertools.product((int,), *_FIELD_TYPES))
_SITE_SHAPES: Final = frozenset(itertools.product((int,), (int,), *_SITE_TYPES))
_THREAD_SHAPES: Final = frozenset(itertools.product((int,), (int,), *_THREAD_TYPES))


def _times_valid(fields: list[Any]) -> bool:
    """Return True if a RECORD's times can be rendered by every stock formatter."""
    return bool(
        _CREATED_MIN <= fields[_CREATED] <= _CREATED_MAX
        and math.isfinite(fields[_MSECS])
        and math.isfinite(fields[_RELATIVE])
    )


def _coerce_fields(fields: list[Any], record: logging.LogRecord) -> list[Any]:
    """Convert the standard fields a filter (or makeLogRecord) left with odd values."""
    fields = [RECORD, *(coerce(v, t) for v, t in zip(fields[1:], _FIELD_TYPES, strict=True))]
    if record.name is None:  # makeLogRecord({}): the root logger, as getLogger(None)
        fields[1] = "root"
    if not _CREATED_MIN <= fields[_CREATED] <= _CREATED_MAX:
        fields[_CREATED] = 0.0
    return fields


class Encoder:
    """Encode records and control messages into frames; one per connection, not thread-safe.

    The encoder remembers which sites and threads it has defined on its
    connection; call ``reset()`` whenever a new connection starts.
    """

    __slots__ = ("_field_limit", "_frame_limit", "_packer", "_sites", "_table_text", "_threads")

    def __init__(self, frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._frame_limit = frame_limit
        # Three text fields (message, traceback, stack) of at most 4 UTF-8 bytes
        # a character each must fit in one frame together with the rest.
        self._field_limit = max(256, frame_limit // 16)
        # The four texts of a SITE, each at most this many characters (of up
        # to 4 UTF-8 bytes) plus a cut marker, fit the frame limits install() allows.
        self._table_text = max(16, min(TABLE_TEXT_LIMIT, frame_limit // 32))
        self._sites: dict[tuple[Any, ...], int] = {}
        self._threads: dict[tuple[Any, ...], int] = {}

    def reset(self) -> None:
        """Forget the sites and threads defined so far (a new connection knows none)."""
        self._sites.clear()
        self._threads.clear()

    def frame(self, fields: list[Any]) -> bytes:
        """Return one frame (header and payload) for an already-plain array.

        Strings that are not valid Unicode are backslash-escaped, as in records.
        """
        try:
            payload: bytes = self._packer.pack(fields)
        except UnicodeEncodeError:
            self._packer.reset()
            payload = self._packer.pack(sanitize(fields))
        return HEADER.pack(len(payload)) + payload

    def line(self, text: str) -> bytes:
        """Return a LINE frame for a line of text the sender rendered itself."""
        try:
            payload: bytes = self._packer.pack([LINE, text])
        except UnicodeEncodeError:  # lone surrogates: sent visible, as in records
            self._packer.reset()
            payload = self._packer.pack([LINE, sanitize(text)])
        return HEADER.pack(len(payload)) + payload

    def record(self, record: logging.LogRecord) -> bytes:
        """Return the frames for ``record``, applying the conversions in this module's doc.

        That is one RECORD frame, preceded by a SITE or THREAD frame the first
        time this connection sends a record from that call site or thread.
        """
        message = get_message(record)
        limit = self._field_limit
        if len(message) > limit:
            message = cut(message, limit)
        exc_text = exception_text(record)
        if exc_text is not None and len(exc_text) > limit:
            exc_text = cut(exc_text, limit)
        stack_info = record.stack_info
        if stack_info is not None:
            stack_info = cut(as_str(stack_info), limit)
        extra = record_extras(record) if len(record.__dict__) > BASE_LEN else None
        definitions = b""
        key: tuple[Any, ...] = (
            record.pathname,
            record.filename,
            record.module,
            record.lineno,
            record.funcName,
        )
        try:
            site = self._sites.get(key)
        except Exception:  # a filter left an unhashable value (or one whose hash raises)
            site = None
        if site is None:
            site, definitions = self._define(SITE, self._sites, key, _SITE_TYPES)
        key = (record.thread, record.threadName, record.process, record.processName)
        try:
            thread = self._threads.get(key)
        except Exception:
            thread = None
        if thread is None:
            thread, definition = self._define(THREAD, self._threads, key, _THREAD_TYPES)
            definitions += definition
        fields: list[Any] = [
            RECORD,
            record.name,
            record.levelno,
            record.levelname,
            message,
            record.created,
            record.msecs,
            record.relativeCreated,
            site,
            thread,
            exc_text,
            stack_info,
            getattr(record, "taskName", None),
            extra,
        ]
        if tuple(map(type, fields)) not in _RECORD_SHAPES or not _times_valid(fields):
            fields = _coerce_fields(fields, record)
        try:
            payload: bytes = self._packer.pack(fields)
        except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
            # Lone surrogates, or an int outside 64 bits: convert, re-encode and retry.
            self._packer.reset()
            fields = sanitize(_coerce_fields(fields, record))
            payload = self._packer.pack(fields)
        if len(payload) > self._frame_limit:
            payload = self._shrink(fields)
        return definitions + HEADER.pack(len(payload)) + payload

    def _define(
        self,
        kind: int,
        table: dict[tuple[Any, ...], int],
        key: tuple[Any, ...],
        types: tuple[tuple[type, ...], ...],
    ) -> tuple[int, bytes]:
        """Return the id of a site or thread, and the frame defining it if it is new."""
        limit = self._table_text
        values = [coerce(v, t) for v, t in zip(key, types, strict=True)]
        # Escaped first, then cut: what travels is at most `limit` characters
        # and a marker, which is what the writer accepts.
        values = [cut(valid_text(v), limit) if type(v) is str else v for v in values]
        clean = tuple(values)
        ident = table.get(clean)
        if ident is not None:  # `key` had odd values that convert to a known entry
            return ident, b""
        if len(table) >= TABLE_SIZE:
            table.clear()  # start again from id 0; the writer overwrites as ids come
        ident = table[clean] = len(table)
        return ident, self.frame([kind, ident, *values])

    def _shrink(self, fields: list[Any]) -> bytes:
        """Cut an over-long record until its payload fits the frame limit."""
        limit = max(64, self._frame_limit // 64)
        name, levelname = fields[1], fields[3]
        for index in range(1, _EXTRA):
            if isinstance(fields[index], str):
                fields[index] = cut(fields[index], limit)
        if fields[_EXTRA] is not None:
            fields[_EXTRA] = {"logfunnel_extra_cut": safe_repr(fields[_EXTRA], limit)}
        payload: bytes = self._packer.pack(fields)
        if len(payload) > self._frame_limit:  # a tiny frame limit: keep level, name and times
            fields = [
                RECORD,
                cut(name, 100),
                fields[2],
                cut(levelname, 50),
                TOO_LARGE_MESSAGE,
                *fields[_CREATED : _RELATIVE + 1],
                fields[8],
                fields[9],
                None,
                None,
                None,
                None,
            ]
            payload = self._packer.pack(fields)
        return payload


def hello_fields(pid: int, process_name: str) -> list[Any]:
    """Return the fields of a HELLO frame (the name cut to 200 characters)."""
    return [HELLO, PROTOCOL_VERSION, pid, cut(as_str(process_name), 200)]


class FrameReader:
    """Split a byte stream into frame payloads, refusing frames over the limit unread."""

    __slots__ = ("_buffer", "limit")

    def __init__(self, limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self._buffer = bytearray()
        self.limit = limit

    @property
    def pending(self) -> int:
        """Return how many received bytes do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        """Add received bytes; return the decoded arrays of every frame now complete.

        Raises ``FrameError`` for a frame longer than the limit (before any of
        its payload is buffered beyond what already arrived) or one that does
        not decode to an array; the connection cannot be trusted after that.
        """
        buffer = self._buffer
        buffer += data
        frames: list[Any] = []
        offset = 0
        available = len(buffer)
        view = memoryview(buffer)
        try:
            while available - offset >= HEADER_SIZE:
                (size,) = HEADER.unpack_from(buffer, offset)
                if size > self.limit:
                    msg = f"frame of {size:,} bytes exceeds the limit of {self.limit:,}"
                    raise FrameError(msg)
                end = offset + HEADER_SIZE + size
                if end > available:
                    break
                payload = view[offset + HEADER_SIZE : end]
                try:
                    frames.append(decode_payload(payload))
                finally:
                    # Released explicitly: a FrameError's traceback keeps the
                    # slice alive, and a live export makes the `del` below
                    # raise BufferError instead of the FrameError.
                    payload.release()
                offset = end
        finally:
            view.release()
            if offset:
                del buffer[:offset]
        return frames


def _refuse_ext(code: int, _data: bytes) -> Any:
    """Refuse msgpack extension types: a frame holds plain values only."""
    msg = f"extension type {code}"
    raise ValueError(msg)


def decode_payload(payload: bytes | memoryview) -> Any:
    """Decode one payload into its array, raising ``FrameError`` if it is not one."""
    try:
        fields = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            unicode_errors="replace",
            max_bin_len=len(payload),
            max_str_len=len(payload),
            ext_hook=_refuse_ext,
        )
    except Exception as exc:
        msg = f"undecodable frame: {type(exc).__name__}: {exc}"
        raise FrameError(msg) from None
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        msg = "frame is not an array starting with a kind"
        raise FrameError(msg)
    return fields


_LOG_RECORD_NEW = logging.LogRecord.__new__
# Python 3.12 added LogRecord.taskName; formats that name it need it present.
_HAS_TASK_NAME: Final = "taskName" in logging.makeLogRecord({}).__dict__


def _plain_value(value: Any, depth: int = 0) -> bool:
    """Return True if a decoded extra is made of plain values under string keys only."""
    kind = type(value)
    if kind in PLAIN_LEAVES:
        return True
    if depth > 64:
        return False
    if kind is list:
        return all(_plain_value(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _plain_value(v, depth + 1) for k, v in value.items())
    return False


# Names an extra must not take on the writer's side: every standard attribute, and
# every attribute of the LogRecord class (an instance attribute named getMessage
# would make every formatter raise).
_RESERVED: Final = STANDARD_ATTRS | frozenset(dir(logging.LogRecord))


class Tables:
    """The sites and threads one connection defined: what its RECORD frames refer to.

    One per connection on the writer's side.  Each table holds at most
    ``TABLE_SIZE`` entries, each a dict of ``LogRecord`` attributes ready to
    be copied into a record.
    """

    __slots__ = ("sites", "threads")

    def __init__(self) -> None:
        self.sites: dict[int, dict[str, Any]] = {}
        self.threads: dict[int, dict[str, Any]] = {}

    def define(self, fields: list[Any]) -> None:
        """Store a SITE or THREAD frame's entry; raise ``FrameError`` if it is malformed."""
        shape = tuple(map(type, fields))
        names: tuple[str, ...]
        if fields[0] == SITE and shape in _SITE_SHAPES:
            table, names = self.sites, SITE_FIELDS
        elif fields[0] == THREAD and shape in _THREAD_SHAPES:
            table, names = self.threads, THREAD_FIELDS
        else:
            msg = f"malformed definition frame of kind {fields[0]} ({len(fields)} fields)"
            raise FrameError(msg)
        ident = fields[1]
        if not 0 <= ident < TABLE_SIZE:
            msg = f"definition id {ident} outside 0..{TABLE_SIZE - 1}"
            raise FrameError(msg)
        if any(type(v) is str and len(v) > TABLE_TEXT_LIMIT + _MARKER_ROOM for v in fields):
            msg = f"definition text longer than {TABLE_TEXT_LIMIT:,} characters"
            raise FrameError(msg)
        table[ident] = dict(zip(names, fields[2:], strict=True))


def decode_record(fields: list[Any], tables: Tables) -> logging.LogRecord:
    """Rebuild a ``LogRecord`` from a RECORD frame's fields, checking every field's type.

    Equivalent to ``logging.makeLogRecord`` with the formatted message as
    ``msg`` and ``args=None``, but skips ``LogRecord.__init__`` (which would
    read the clock and thread of the writer only to have them overwritten).
    The site and thread fields are looked up in ``tables``, the definitions
    the same connection sent earlier.  Extras are set first, so they can
    never replace a standard attribute, and extras named like a ``LogRecord``
    attribute or method are left out.  Raises ``FrameError`` for a field of
    the wrong type, an undefined site or thread, a time that is not finite
    (or a ``created`` no formatter can render), or an extra that is not a
    plain value.
    """
    # One set lookup checks every field's type (the hot path); the loop below
    # only runs to say which field is wrong.
    if tuple(map(type, fields)) not in _RECORD_SHAPES:
        if len(fields) != len(RECORD_FIELDS) + 1:
            msg = f"record frame has {len(fields) - 1} fields, expected {len(RECORD_FIELDS)}"
            raise FrameError(msg)
        for value, types, name in zip(fields[1:], _FIELD_TYPES, RECORD_FIELDS, strict=True):
            if type(value) not in types:
                msg = f"record field {name} has type {type(value).__name__}"
                raise FrameError(msg)
    if not _times_valid(fields):
        msg = (
            f"record times out of range: created={fields[_CREATED]!r} msecs={fields[_MSECS]!r}"
        )
        raise FrameError(msg)
    site = tables.sites.get(fields[8])
    thread = tables.threads.get(fields[9])
    if site is None or thread is None:
        msg = f"record refers to an undefined site ({fields[8]}) or thread ({fields[9]})"
        raise FrameError(msg)
    record: logging.LogRecord = _LOG_RECORD_NEW(logging.LogRecord)
    attrs = record.__dict__
    extra = fields[_EXTRA]
    if extra:
        if not _plain_value(extra):
            msg = "record extras are not plain values under string keys"
            raise FrameError(msg)
        for key, value in extra.items():
            if key not in _RESERVED:
                attrs[key] = value
    attrs.update(site)
    attrs.update(thread)
    (
        _,
        attrs["name"],
        attrs["levelno"],
        attrs["levelname"],
        attrs["msg"],
        attrs["created"],
        attrs["msecs"],
        attrs["relativeCreated"],
        _,
        _,
        attrs["exc_text"],
        attrs["stack_info"],
        task_name,
        _,
    ) = fields
    attrs["args"] = None
    attrs["exc_info"] = None
    if task_name is not None or _HAS_TASK_NAME:
        attrs["taskName"] = task_name
    return record
