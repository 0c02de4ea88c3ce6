"""The wire format: length-prefixed msgpack frames carrying allow-listed record fields.

A frame is a 4-byte big-endian payload length followed by that many bytes of
msgpack encoding one array whose first element is the frame kind.  msgpack
only ever builds plain values (str, bytes, int, float, bool, None, lists and
dicts of those): nothing received from a socket is unpickled or evaluated.

What a record undergoes on its way out of a process (``encode_record``), in
the order it happens -- the conversions ``QueueHandler.prepare`` documents,
and a few more:

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
   that raises becomes ``<unrepresentable T: ExcType>``).
5. Text longer than the field limit is cut and ends with a marker saying how
   many characters were cut; the frame as a whole never exceeds the frame limit.
6. Strings that are not valid Unicode (lone surrogates from ``surrogateescape``
   decoding) are re-encoded with ``backslashreplace``, so the bytes stay visible.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Final

import msgpack

PROTOCOL_VERSION: Final = 1

# Frame kinds: the first element of every frame's array.
HELLO: Final = 0  # [HELLO, version, pid, process name]: first frame on a connection
RECORD: Final = 1  # [RECORD, *RECORD_FIELDS]
DROPPED: Final = 2  # [DROPPED, count]: the sender dropped records under on_full="drop"
FLUSH: Final = 3  # [FLUSH, request id]: a barrier; the writer answers FLUSHED
FLUSHED: Final = 4  # [FLUSHED, request id]
SHUTDOWN: Final = 5  # [SHUTDOWN, request id]: only honoured on the owner's control channel
CONFIG: Final = 6  # [CONFIG, dict]: the sinks of a writer process, on its control channel
DUMP_STACKS: Final = 7  # [DUMP_STACKS, request id]: ask the writer to write every stack
STACKS: Final = 8  # [STACKS, pid, text]: a process's Python stacks, for `logfunnel stacks`
STATS: Final = 9  # [STATS] on the control channel; answered with [STATS, dict]

HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size

#: Default largest payload a writer accepts and a sender produces (bytes).
DEFAULT_FRAME_LIMIT: Final = 4 * 1024 * 1024

# The order of the fields after the kind in a RECORD frame.
RECORD_FIELDS: Final = (
    "name",
    "levelno",
    "levelname",
    "msg",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "process",
    "processName",
    "exc_text",
    "stack_info",
    "taskName",
    "extra",
)

# Every attribute a stock LogRecord has, plus those Formatter.format adds:
# anything else in record.__dict__ came through `extra=` (or a filter).
STANDARD_ATTRS: Final = frozenset(
    (*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName", "exc_info", "args")
)

_PLAIN_LEAVES: Final = (str, int, float, bool, bytes, type(None))
_MAX_DEPTH: Final = 8
_MAX_ITEMS: Final = 1000
_REPR_LIMIT: Final = 10_000
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


class FrameError(ValueError):
    """A peer sent bytes that are not a valid frame; its connection is dropped."""


def safe_repr(value: object, limit: int = _REPR_LIMIT) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, or a marker if ``repr`` raises."""
    try:
        text = repr(value)
    except Exception as exc:  # a __repr__ that raises must not stop the record
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"
    if not isinstance(text, str):  # pragma: no cover - repr() enforces str
        return f"<unrepresentable {type(value).__qualname__}>"
    return cut(text, limit)


def cut(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with a marker that says how much was cut."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}... [logfunnel: {dropped:,} of {len(text):,} characters cut]"


def plain(value: Any, depth: int = 0) -> Any:
    """Convert an ``extra=`` value to something msgpack encodes, or its ``repr()``."""
    kind = type(value)
    if kind in _PLAIN_LEAVES:
        if kind is int and not _INT64_MIN <= value <= _UINT64_MAX:
            return str(value)
        if kind is str and len(value) > _REPR_LIMIT:
            return cut(value, _REPR_LIMIT)
        return value
    if depth < _MAX_DEPTH:
        if kind is list or kind is tuple:
            if len(value) <= _MAX_ITEMS:
                return [plain(item, depth + 1) for item in value]
        elif kind is dict and len(value) <= _MAX_ITEMS:
            return {
                (k if type(k) is str else safe_repr(k, 200)): plain(v, depth + 1)
                for k, v in value.items()
            }
    return safe_repr(value)


def get_message(record: logging.LogRecord) -> str:
    """Return ``record.getMessage()``, or a readable account of why it could not be formatted."""
    try:
        message = record.getMessage()
    except Exception as exc:
        return (
            f"<unformattable message: {type(exc).__name__}: {safe_repr(exc, 500)}> "
            f"msg={safe_repr(record.msg, 2000)} args={safe_repr(record.args, 2000)}"
        )
    if type(message) is not str:  # a str subclass whose __str__ returned one
        return safe_repr(message)
    return message


def exception_text(record: logging.LogRecord) -> str | None:
    """Return the record's traceback as text, formatting ``exc_info`` if needed."""
    if record.exc_text:
        return str(record.exc_text)
    if not record.exc_info:
        return None
    try:
        return logging.Formatter().formatException(record.exc_info)
    except Exception as exc:  # a traceback that cannot be rendered still tells its type
        return (
            f"<traceback could not be formatted: {type(exc).__name__}> "
            f"{safe_repr(record.exc_info[1], 2000)}"
        )


def _extras(record: logging.LogRecord) -> dict[str, Any] | None:
    extra = {k: plain(v) for k, v in record.__dict__.items() if k not in STANDARD_ATTRS}
    return extra or None


def _sanitize(value: Any) -> Any:
    """Re-encode every string so that msgpack's strict UTF-8 encoder accepts it."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    return value


# Attributes every LogRecord has, so `len(record.__dict__)` above this means `extra=`.
_BASE_LEN: Final = len(logging.makeLogRecord({}).__dict__)


class Encoder:
    """Encode records and control messages into frames; one per connection, not thread-safe."""

    __slots__ = ("_field_limit", "_frame_limit", "_packer")

    def __init__(self, frame_limit: int = DEFAULT_FRAME_LIMIT) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._frame_limit = frame_limit
        # Three text fields (message, traceback, stack) of at most 4 UTF-8 bytes
        # a character each must fit in one frame together with the rest.
        self._field_limit = max(256, frame_limit // 16)

    def frame(self, fields: list[Any]) -> bytes:
        """Return one frame (header and payload) for an already-plain array."""
        payload: bytes = self._packer.pack(fields)
        return HEADER.pack(len(payload)) + payload

    def record(self, record: logging.LogRecord) -> bytes:
        """Return a RECORD frame for ``record``, applying the conversions in this module's doc."""
        message = get_message(record)
        limit = self._field_limit
        if len(message) > limit:
            message = cut(message, limit)
        exc_text = exception_text(record)
        if exc_text is not None and len(exc_text) > limit:
            exc_text = cut(exc_text, limit)
        stack_info = record.stack_info
        if stack_info is not None:
            stack_info = cut(str(stack_info), limit)
        extra = _extras(record) if len(record.__dict__) > _BASE_LEN else None
        fields = [
            RECORD,
            record.name,
            record.levelno,
            record.levelname,
            message,
            record.pathname,
            record.filename,
            record.module,
            record.lineno,
            record.funcName,
            record.created,
            record.msecs,
            record.relativeCreated,
            record.thread,
            record.threadName,
            record.process,
            record.processName,
            exc_text,
            stack_info,
            getattr(record, "taskName", None),
            extra,
        ]
        try:
            payload: bytes = self._packer.pack(fields)
        except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
            # Lone surrogates, or a record whose standard fields were replaced
            # by a filter with odd values: make every field plain and retry.
            self._packer.reset()
            fields = _sanitize([fields[0], *(plain(v) for v in fields[1:])])
            payload = self._packer.pack(fields)
        if len(payload) > self._frame_limit:
            payload = self._shrink(fields)
        return HEADER.pack(len(payload)) + payload

    def _shrink(self, fields: list[Any]) -> bytes:
        """Cut an over-long record until its payload fits the frame limit."""
        limit = max(64, self._frame_limit // 64)
        for index in (4, 17, 18):  # message, exc_text, stack_info
            if isinstance(fields[index], str):
                fields[index] = cut(fields[index], limit)
        if fields[20] is not None:
            fields[20] = {"logfunnel_extra_cut": safe_repr(fields[20], limit)}
        payload: bytes = self._packer.pack(fields)
        if len(payload) > self._frame_limit:  # pathological names: keep level and a marker
            fields = [RECORD, "logfunnel", fields[2], fields[3], "<record too large to send>"]
            fields += [None] * (len(RECORD_FIELDS) + 1 - len(fields))
            payload = self._packer.pack(fields)
        return payload


def hello_fields(pid: int, process_name: str) -> list[Any]:
    """Return the fields of a HELLO frame."""
    return [HELLO, PROTOCOL_VERSION, pid, process_name]


class FrameReader:
    """Split a byte stream into frame payloads, refusing frames over the limit before reading them."""

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
                frames.append(decode_payload(view[offset + HEADER_SIZE : end]))
                offset = end
        finally:
            view.release()
            if offset:
                del buffer[:offset]
        return frames


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

_FIELD_TYPES: Final = (
    (str,),  # name
    (int,),  # levelno
    (str,),  # levelname
    (str,),  # msg
    (str,),  # pathname
    (str,),  # filename
    (str,),  # module
    (int,),  # lineno
    (str,),  # funcName
    (float, int),  # created
    (float, int),  # msecs
    (float, int),  # relativeCreated
    (int, type(None)),  # thread
    (str, type(None)),  # threadName
    (int, type(None)),  # process
    (str, type(None)),  # processName
    (str, type(None)),  # exc_text
    (str, type(None)),  # stack_info
    (str, type(None)),  # taskName
    (dict, type(None)),  # extra
)


def decode_record(fields: list[Any]) -> logging.LogRecord:
    """Rebuild a ``LogRecord`` from a RECORD frame's fields, checking every field's type.

    Equivalent to ``logging.makeLogRecord`` with the formatted message as
    ``msg`` and ``args=None``, but skips ``LogRecord.__init__`` (which would
    read the clock and thread of the writer only to have them overwritten).
    Extras are set first, so they can never replace a standard attribute.
    """
    if len(fields) != len(RECORD_FIELDS) + 1:
        msg = f"record frame has {len(fields) - 1} fields, expected {len(RECORD_FIELDS)}"
        raise FrameError(msg)
    for value, types, name in zip(fields[1:], _FIELD_TYPES, RECORD_FIELDS):
        if type(value) not in types:
            msg = f"record field {name} has type {type(value).__name__}"
            raise FrameError(msg)
    record: logging.LogRecord = _LOG_RECORD_NEW(logging.LogRecord)
    attrs = record.__dict__
    extra = fields[20]
    if extra:
        for key, value in extra.items():
            if key not in STANDARD_ATTRS:
                attrs[key] = value
    (
        _,
        attrs["name"],
        attrs["levelno"],
        attrs["levelname"],
        attrs["msg"],
        attrs["pathname"],
        attrs["filename"],
        attrs["module"],
        attrs["lineno"],
        attrs["funcName"],
        attrs["created"],
        attrs["msecs"],
        attrs["relativeCreated"],
        attrs["thread"],
        attrs["threadName"],
        attrs["process"],
        attrs["processName"],
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
