r"""The wire format, and decoding and checking its frames into records.

A frame is a 4-byte big-endian payload length followed by that many bytes of
msgpack encoding one array whose first element is the frame kind (the
constants below, each with its layout).  Between frames a stream may carry
bare lines (protocol 3): a rendered line's UTF-8 bytes and a ``\n``, meaning
``[LINE, text]``, told apart from a frame by a first byte other than 0
(``frame_reader``).  Since protocol 4 a local process's HELLO carries the read
end of a pipe (SCM_RIGHTS), and its frames and lines after the HELLO travel
over that pipe instead of the socket (``pipe``).  msgpack only ever builds plain values
(str, bytes, int, float, bool, None, lists and dicts of those): nothing
received from a socket is unpickled or evaluated.

A record travels as a RECORD frame holding what changes from call to call
(logger, level, message, times, traceback, extras) and two small ids: its call
site (path, file, module, line, function) and its thread (thread and process
ids and names).  The first record from a new site or thread is preceded, in the
same write, by a SITE or THREAD frame defining the id on this connection; the
writer keeps those definitions per connection (at most ``TABLE_SIZE`` of each).
Sending them once instead of with every record halves the encoding work on
both sides (``benchmarks/profile_hot_path.py``).  What a record becomes on its
way into a RECORD frame is listed in ``_wire``'s docstring.

The writer's side (``_wire.FrameReader`` and ``_wire.decode_payload`` for the
bytes, then ``Tables.define`` and ``decode_record`` here) trusts nothing: a
length prefix over the limit is refused before any of the claimed payload is
buffered, anything that is not a msgpack array starting with an int kind
raises ``FrameError`` (and only ``FrameError``), and a RECORD frame must carry
exactly the declared fields with the declared types, finite times, ids its
connection defined, and extras that are plain values under string keys; SITE
and THREAD frames must have exactly their declared types and an id below
``TABLE_SIZE``.  Extras named like a ``LogRecord`` attribute or method
(``getMessage``, ``msg``, ...) are not set, so a peer cannot make the sinks'
formatting raise.

Who owns what: the constants are the protocol, shared by both ends.  A
``Tables`` belongs to one connection on the writer's side and is only touched
by the writer thread that reads that connection.  Nothing here needs msgpack:
frames arrive here already decoded into arrays.
"""

from __future__ import annotations

import itertools
import logging
import math

from logfunnel._core import options as _options
from logfunnel._core.plain import MARKER_ROOM, NONE, PLAIN_LEAVES, STANDARD_ATTRS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

PROTOCOL_VERSION: Final = 6

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
# [LEAVING, request id], on a local process's socket as it exits (protocol 5): the
# writer reads that process's pipe, writes it to the sinks, and answers FLUSHED.
LEAVING: Final = 14
# [RENDERED, *RECORD_FIELDS, text] (protocol 6): a record and its line, rendered by the
# sender with the stock formatter of the installer's own handlers (adopt mode,
# ``adopt_render``); the writer writes the text, or handles the record if its tree
# no longer takes that line.
RENDERED: Final = 15

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
# Where each of RECORD_FIELDS sits in a RECORD frame's array (the kind is at 0).
# Unpacked from a range, so a field added above without its name here fails at import.
(
    AT_NAME,
    AT_LEVELNO,
    AT_LEVELNAME,
    AT_MESSAGE,
    AT_CREATED,
    AT_MSECS,
    AT_RELATIVE,
    AT_SITE,
    AT_THREAD,
    AT_EXC_TEXT,
    AT_STACK_INFO,
    AT_TASK_NAME,
    AT_EXTRA,
) = range(1, len(RECORD_FIELDS) + 1)
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

# The range of `created` that every stock formatter can render (years 1 to 9999, with a
# day to spare for time zones): time.localtime and datetime raise outside it.
CREATED_MIN: Final = -62_135_596_800.0 + 86_400
CREATED_MAX: Final = 253_402_300_799.0 - 86_400

# The types each field may have, in the order of RECORD_FIELDS, SITE_FIELDS, THREAD_FIELDS.
FIELD_TYPES: Final[tuple[tuple[type, ...], ...]] = (
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
SITE_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    (str,),  # pathname
    (str,),  # filename
    (str,),  # module
    (int,),  # lineno
    (str, NONE),  # funcName: LogRecord(..., func=None) leaves it None
)
THREAD_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    (int, NONE),  # thread
    (str, NONE),  # threadName
    (int, NONE),  # process
    (str, NONE),  # processName
)

# Every valid combination of field types of a frame, kind included: checking a
# frame's types costs one tuple and one set lookup.
RECORD_SHAPES: Final = frozenset(itertools.product((int,), *FIELD_TYPES))
_SITE_SHAPES: Final = frozenset(itertools.product((int,), (int,), *SITE_TYPES))
_THREAD_SHAPES: Final = frozenset(itertools.product((int,), (int,), *THREAD_TYPES))


class FrameError(ValueError):
    """A peer sent bytes that are not a valid frame; its connection is dropped."""


def times_valid(fields: list[Any]) -> bool:
    """Return True if a RECORD's times can be rendered by every stock formatter."""
    return bool(
        CREATED_MIN <= fields[AT_CREATED] <= CREATED_MAX
        and math.isfinite(fields[AT_MSECS])
        and math.isfinite(fields[AT_RELATIVE])
    )


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
        if any(type(v) is str and len(v) > TABLE_TEXT_LIMIT + MARKER_ROOM for v in fields):
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
    if tuple(map(type, fields)) not in RECORD_SHAPES:
        if len(fields) != len(RECORD_FIELDS) + 1:
            msg = f"record frame has {len(fields) - 1} fields, expected {len(RECORD_FIELDS)}"
            raise FrameError(msg)
        for value, types, name in zip(fields[1:], FIELD_TYPES, RECORD_FIELDS, strict=True):
            if type(value) not in types:
                msg = f"record field {name} has type {type(value).__name__}"
                raise FrameError(msg)
    if not times_valid(fields):
        msg = (
            "record times out of range: "
            f"created={fields[AT_CREATED]!r} msecs={fields[AT_MSECS]!r}"
        )
        raise FrameError(msg)
    site = tables.sites.get(fields[AT_SITE])
    thread = tables.threads.get(fields[AT_THREAD])
    if site is None or thread is None:
        msg = (
            f"record refers to an undefined site ({fields[AT_SITE]}) "
            f"or thread ({fields[AT_THREAD]})"
        )
        raise FrameError(msg)
    record: logging.LogRecord = _LOG_RECORD_NEW(logging.LogRecord)
    attrs = record.__dict__
    extra = fields[AT_EXTRA]
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
        _,  # site
        _,  # thread
        attrs["exc_text"],
        attrs["stack_info"],
        task_name,
        _,  # extra
    ) = fields
    attrs["args"] = None
    attrs["exc_info"] = None
    if task_name is not None or _HAS_TASK_NAME:
        attrs["taskName"] = task_name
    return record
