"""The encoder: records and control messages to the bytes of their frames.

What a record undergoes on its way out of a process (``Encoder.record``), in
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

Who owns what: an ``Encoder`` belongs to one connection (the sending side's
``_connection.Connection``, or a writer's control channel) and is not
thread-safe; it holds the sites and threads it defined on that connection.
With ``frame_reader``, this is one of the two modules of the codec that import
msgpack.
"""

from __future__ import annotations

import logging

import msgpack

# The header is defined where frames are read and is a global of this module all the
# same: `HEADER.pack(...)` compiles to the same global load either way.
from logfunnel._core.frame_reader import BARE_LIMIT, HEADER
from logfunnel._core.options import field_limit
from logfunnel._core.plain import (
    BASE_LEN,
    as_str,
    coerce,
    cut,
    exception_text,
    get_message,
    record_extras,
    safe_repr,
    sanitize,
    valid_text,
)
from logfunnel._core.protocol import (
    AT_CREATED,
    AT_EXTRA,
    AT_LEVELNAME,
    AT_LEVELNO,
    AT_NAME,
    AT_RELATIVE,
    AT_SITE,
    AT_THREAD,
    CREATED_MAX,
    CREATED_MIN,
    DEFAULT_FRAME_LIMIT,
    FIELD_TYPES,
    HELLO,
    LINE,
    PROTOCOL_VERSION,
    RECORD,
    RECORD_SHAPES,
    RENDERED,
    SITE,
    SITE_FIELDS,
    SITE_TYPES,
    TABLE_SIZE,
    TABLE_TEXT_LIMIT,
    THREAD,
    THREAD_FIELDS,
    THREAD_TYPES,
    Tables,
    times_valid,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

#: The message of a record that does not fit the frame limit even when cut.
TOO_LARGE_MESSAGE: Final = "<record too large to send>"


def _coerce_fields(fields: list[Any], record: logging.LogRecord) -> list[Any]:
    """Convert the standard fields a filter (or makeLogRecord) left with odd values."""
    fields = [RECORD, *(coerce(v, t) for v, t in zip(fields[1:], FIELD_TYPES, strict=True))]
    if record.name is None:  # makeLogRecord({}): the root logger, as getLogger(None)
        fields[AT_NAME] = "root"
    if not CREATED_MIN <= fields[AT_CREATED] <= CREATED_MAX:
        fields[AT_CREATED] = 0.0
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
        self._field_limit = field_limit(frame_limit)
        # The four texts of a SITE, each at most this many characters (of up
        # to 4 UTF-8 bytes) plus a cut marker, fit the frame limits install() allows.
        self._table_text = max(16, min(TABLE_TEXT_LIMIT, frame_limit // 32))
        self._sites: dict[tuple[Any, ...], int] = {}
        self._threads: dict[tuple[Any, ...], int] = {}

    def reset(self) -> None:
        """Forget the sites and threads defined so far (a new connection knows none)."""
        self._sites.clear()
        self._threads.clear()

    def tables(self) -> Tables:
        """Return the sites and threads defined on this connection, as its writer holds them."""
        tables = Tables()
        for values, ident in self._sites.items():
            tables.sites[ident] = dict(zip(SITE_FIELDS, values, strict=True))
        for values, ident in self._threads.items():
            tables.threads[ident] = dict(zip(THREAD_FIELDS, values, strict=True))
        return tables

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
        r"""Return what carries a line of text the sender rendered itself.

        A bare line (its UTF-8 and a ``\n``: see ``frame_reader``) when the
        text is one non-empty line of valid Unicode without a NUL and this
        connection's frames leave their first byte 0; a LINE frame otherwise.
        """
        if (
            text
            and "\n" not in text
            and "\r" not in text
            and "\0" not in text
            and self._frame_limit < BARE_LIMIT
        ):
            try:
                return text.encode() + b"\n"
            except UnicodeEncodeError:  # lone surrogates: the frame sends them visible
                pass
        return self.line_frame(text)

    def line_frame(self, text: str) -> bytes:
        """Return a LINE frame for a line of text the sender rendered itself."""
        try:
            payload: bytes = self._packer.pack([LINE, text])
        except UnicodeEncodeError:  # lone surrogates: sent visible, as in records
            self._packer.reset()
            payload = self._packer.pack([LINE, sanitize(text)])
        return HEADER.pack(len(payload)) + payload

    def record(
        self, record: logging.LogRecord, line: str | None = None, message: str | None = None
    ) -> bytes:
        """Return the frames for ``record``, applying the conversions in this module's doc.

        That is one RECORD frame, preceded by a SITE or THREAD frame the first
        time this connection sends a record from that call site or thread.
        With ``line`` (the record rendered by this process, ``adopt_render``)
        a RENDERED frame: the same fields and the line.  It becomes a RECORD
        frame when any field had to be converted (the line shows the values
        before) or when the two do not fit the frame limit together.
        ``message``: ``record.getMessage()``, when the caller has it already.
        """
        if message is None:
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
            site, definitions = self._define(SITE, self._sites, key, SITE_TYPES)
        key = (record.thread, record.threadName, record.process, record.processName)
        try:
            thread = self._threads.get(key)
        except Exception:
            thread = None
        if thread is None:
            thread, definition = self._define(THREAD, self._threads, key, THREAD_TYPES)
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
        if tuple(map(type, fields)) not in RECORD_SHAPES or not times_valid(fields):
            fields = _coerce_fields(fields, record)
            line = None
        try:
            if line is not None:
                payload: bytes = self._packer.pack([RENDERED, *fields[1:], line])
            else:
                payload = self._packer.pack(fields)
        except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
            # Lone surrogates, or an int outside 64 bits: convert, re-encode and retry.
            self._packer.reset()
            fields = sanitize(_coerce_fields(fields, record))
            payload = self._packer.pack(fields)
            line = None
        if len(payload) > self._frame_limit:
            if line is not None:  # the message twice is too much: the record alone
                payload = self._packer.pack(fields)
            if len(payload) > self._frame_limit:
                payload = _shrink(self._packer, fields, self._frame_limit)
        return definitions + HEADER.pack(len(payload)) + payload

    def rendered(self, record: logging.LogRecord, line: str, message: str) -> bytes | None:
        """Return the RENDERED frame of a plain record, or None when ``record()`` must make it.

        The frame ``record(record, line, message)`` would make, for the common
        record: no extras, traceback or stack, a site and thread this
        connection defined, fields of the types the writer takes and texts
        within the field limit; each of those is checked by name here instead
        of by ``record()``'s general conversions (1.9 -> 1.15 us a record,
        best of 5 x 200,000; ``record()`` is 0.5 us of type checks alone).
        """
        attrs = record.__dict__
        if (
            type(record) is not logging.LogRecord  # a subclass's properties: read as record()
            or len(attrs) > BASE_LEN
            or type(message) is not str
            or type(line) is not str
            or len(message) > self._field_limit
        ):
            return None
        get = attrs.get
        try:
            site = self._sites.get(
                (get("pathname"), get("filename"), get("module"), get("lineno"), get("funcName"))
            )
            thread = self._threads.get(
                (get("thread"), get("threadName"), get("process"), get("processName"))
            )
        except Exception:  # an unhashable value: record() converts it
            return None
        name, levelno, levelname = get("name"), get("levelno"), get("levelname")
        created, msecs, relative = get("created"), get("msecs"), get("relativeCreated")
        task = get("taskName")
        if (
            site is None
            or thread is None
            or type(name) is not str
            or type(levelno) is not int
            or type(levelname) is not str
            or type(created) is not float
            or type(msecs) is not float
            or type(relative) is not float
            or (task is not None and type(task) is not str)
            or get("exc_text") is not None
            or get("stack_info") is not None
            or not CREATED_MIN <= created <= CREATED_MAX
            or msecs - msecs != 0.0  # inf or nan
            or relative - relative != 0.0
        ):
            return None
        try:
            payload: bytes = self._packer.pack(
                [RENDERED, name, levelno, levelname, message, created, msecs, relative,
                 site, thread, None, None, task, None, line]
            )
        except (UnicodeEncodeError, OverflowError):
            self._packer.reset()
            return None
        if len(payload) > self._frame_limit:
            return None
        return HEADER.pack(len(payload)) + payload

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


def _shrink(packer: msgpack.Packer, fields: list[Any], frame_limit: int) -> bytes:
    """Cut an over-long record until ``packer`` packs it within ``frame_limit`` bytes."""
    limit = max(64, frame_limit // 64)
    name, levelname = fields[AT_NAME], fields[AT_LEVELNAME]
    for index in range(AT_NAME, AT_EXTRA):
        if isinstance(fields[index], str):
            fields[index] = cut(fields[index], limit)
    if fields[AT_EXTRA] is not None:
        fields[AT_EXTRA] = {"logfunnel_extra_cut": safe_repr(fields[AT_EXTRA], limit)}
    payload: bytes = packer.pack(fields)
    if len(payload) > frame_limit:  # a tiny frame limit: keep level, name and times
        fields = [
            RECORD,
            cut(name, 100),
            fields[AT_LEVELNO],
            cut(levelname, 50),
            TOO_LARGE_MESSAGE,  # msg
            *fields[AT_CREATED : AT_RELATIVE + 1],  # created, msecs, relativeCreated
            fields[AT_SITE],
            fields[AT_THREAD],
            None,  # exc_text
            None,  # stack_info
            None,  # taskName
            None,  # extra
        ]
        payload = packer.pack(fields)
    return payload


def hello_fields(pid: int, process_name: str) -> list[Any]:
    """Return the fields of a HELLO frame (the name cut to 200 characters)."""
    return [HELLO, PROTOCOL_VERSION, pid, cut(as_str(process_name), 200)]
