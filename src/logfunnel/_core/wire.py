"""The codec's names, for the rest of the package: frames to and from bytes.

The format -- frame kinds, the fields of each frame, the limits, what the writer
checks -- is described and defined in ``protocol``; making a value plain is
``plain``'s; the frame header and the frame reader are ``frame_reader``'s; the
encoder (records and control messages to frames, and what a record undergoes
on its way out of a process) is ``encoder``'s.  All are re-exported here (one
definition, imported), so the rest of the package and its tests reach the
whole codec as ``_wire``.
"""

from __future__ import annotations

from logfunnel._core.encoder import TOO_LARGE_MESSAGE, Encoder, hello_fields
from logfunnel._core.frame_reader import (
    BARE_LIMIT,
    HEADER,
    HEADER_SIZE,
    FrameReader,
    decode_payload,
)
from logfunnel._core.plain import (
    EXTRA_CUT_MARKER,
    STANDARD_ATTRS,
    cut,
    exception_text,
    get_message,
    has_no_extras,
    int_text,
    plain,
    safe_repr,
    sanitize,
)
from logfunnel._core.protocol import (
    CONFIG,
    DEFAULT_FRAME_LIMIT,
    DROPPED,
    DUMP_STACKS,
    FLUSH,
    FLUSHED,
    HELLO,
    LEAVING,
    LEVELS,
    LINE,
    LOGRECORD_FIELDS,
    PROTOCOL_VERSION,
    RECORD,
    RECORD_FIELDS,
    RENDERED,
    SHUTDOWN,
    SITE,
    SITE_FIELDS,
    STACKS,
    STATS,
    TABLE_SIZE,
    TABLE_TEXT_LIMIT,
    THREAD,
    THREAD_FIELDS,
    FrameError,
    Tables,
    decode_record,
)

# The codec as the rest of the package reaches it (`_wire.X`), wherever each name is defined.
__all__ = [
    "BARE_LIMIT", "CONFIG", "DEFAULT_FRAME_LIMIT", "DROPPED", "DUMP_STACKS", "EXTRA_CUT_MARKER",
    "FLUSH", "FLUSHED", "HEADER", "HEADER_SIZE", "HELLO", "LEAVING", "LEVELS", "LINE",
    "LOGRECORD_FIELDS", "PROTOCOL_VERSION", "RECORD", "RECORD_FIELDS", "RENDERED", "SHUTDOWN",
    "SITE", "SITE_FIELDS", "STACKS", "STANDARD_ATTRS", "STATS", "TABLE_SIZE", "TABLE_TEXT_LIMIT",
    "THREAD", "THREAD_FIELDS",
    "TOO_LARGE_MESSAGE", "Encoder", "FrameError", "FrameReader", "Tables", "cut", "decode_payload",
    "decode_record", "exception_text", "get_message", "has_no_extras", "hello_fields", "int_text",
    "plain", "safe_repr", "sanitize",
]
