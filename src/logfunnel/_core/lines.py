"""Rendered lines read in runs: bare lines and LINE frames cut from the stream, none decoded.

A writer process with install()'s own sinks gets, from most processes, one
LINE frame (``[LINE, text]``) per record.  Decoding each with ``msgpack``,
dispatching it and writing it through ``write_line`` cost the writer ~2-3 µs
per record; the sink only needs the bytes, and a byte and line count for
rotation.  ``LineReader`` is the ``FrameReader`` of such a writer's
connections: it knows a LINE payload by its msgpack prefix (fixarray of 2,
fixint 13, a str header) and slices the UTF-8 text out of the buffer; the LINE
frames that follow one another in what one read brought become one run,
``(LINE_RUN, texts)``, in the place of those frames among the others, so the
order within a connection (a FLUSH after them, a RECORD before) is kept.
Anything else -- another kind, a LINE whose payload is not exactly that
shape -- is decoded by ``decode_payload`` as always, so its errors are the
same: a frame over the limit or one that does not decode still ends the
connection, and the frames before it in that read are discarded with it, as
``FrameReader`` does.

Bare lines (``frame_reader``: what senders send for most records since
protocol 3) need less still: the bare lines that follow one another up to the
next frame (a NUL byte starts one) or the last whole line of the read are
already the block a file sink writes, so they become one ``(LINE_BLOCK,
bytes)`` found with two C-level searches (``find`` of NUL, ``rfind`` of the
line end): no Python work per line at all.  A bare line holding a NUL, or
longer than the limit, is a ``FrameError``, as in ``FrameReader``.

What a run's or a block's text may hold is the dispatcher's to check
(``_dispatch``): it writes either as one block only when all of it is valid
UTF-8 without a stray line break, else each text as the LINE frame it came in.

Who owns what: a ``LineReader`` belongs to one connection (``_peers`` gives
one to each connection it accepts when the dispatcher takes runs) and holds
the bytes that do not yet form a whole frame; the texts of a run are copies,
owned by whoever gets the run.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from logfunnel._core.wire import (
    BARE_LIMIT,
    HEADER,
    HEADER_SIZE,
    FrameError,
    FrameReader,
    decode_payload,
)

#: The kind of a run of LINE frames: a str, never the int a frame's kind is.
LINE_RUN: Final = "line run"
#: The kind of a block of bare lines (bytes, each line ending in ``\n``).
LINE_BLOCK: Final = "line block"

# The msgpack bytes a LINE payload starts with: fixarray of 2, then fixint 13.
_ARRAY2: Final = 0x92
_LINE: Final = 0x0D
_LINE_PREFIX: Final = _ARRAY2 << 8 | _LINE
_LF: Final = 0x0A  # a bare line's end
# A frame's header, those two bytes, and a str8 header (0xD9, the text's length).
_STR8: Final = struct.Struct(">IHBB")


class LineReader(FrameReader):
    """A ``FrameReader`` that returns LINE frames in runs and bare lines in blocks."""

    __slots__ = ()

    def feed(self, data: bytes | memoryview) -> list[Any]:
        r"""Add received bytes; return every frame now complete, LINE frames in runs.

        A run is ``(LINE_RUN, texts)``: the UTF-8 bytes of each LINE's text, in
        order; a block is ``(LINE_BLOCK, data)``: bare lines as they came, each
        with its ``\n``.  Every other frame is its decoded array, as
        ``FrameReader.feed`` returns it; the errors are ``FrameReader.feed``'s.
        """
        buffer = self._buffer
        if not buffer and data and data[0] and data[-1] == _LF and self.limit < BARE_LIMIT:
            # A read of whole bare lines and nothing else (what a busy writer mostly
            # gets): the block is that read, copied once instead of twice (into the
            # buffer, out of it) and never searched for a frame: 3.3 -> 1.9 µs a feed
            # of one 64 KB line, 2.7 -> 1.8 µs of 500 short ones (in-process, best of 5).
            block = bytes(data)
            if b"\0" not in block and (
                len(block) <= self.limit or _long_line(block, 0, len(block), self.limit) < 0
            ):
                return [(LINE_BLOCK, block)]
            data = block  # a frame among them, or a line too long: the general way
        buffer += data
        frames: list[Any] = []
        texts: list[bytearray] = []
        offset = 0
        available = len(buffer)
        limit = self.limit
        bare = limit < BARE_LIMIT
        unpack, unpack_str8 = HEADER.unpack_from, _STR8.unpack_from
        try:
            while True:
                left = available - offset
                if bare and left and buffer[offset]:
                    # Bare lines, up to the next frame or the last whole line here.
                    nul = buffer.find(b"\0", offset)
                    stop = available if nul < 0 else nul
                    end = buffer.rfind(b"\n", offset, stop) + 1
                    if not end:  # as FrameReader.feed: too long first, then a NUL
                        if (nul if nul >= 0 else available) - offset > limit:
                            msg = f"line longer than the limit of {limit:,} bytes"
                            raise FrameError(msg)
                        if nul >= 0:
                            msg = "line holds a NUL byte"
                            raise FrameError(msg)
                        break
                    if end - offset > limit:
                        long_line = _long_line(buffer, offset, end, limit)
                        if long_line >= 0:  # the lines before it are used up, as FrameReader's
                            offset = long_line
                            msg = f"line longer than the limit of {limit:,} bytes"
                            raise FrameError(msg)
                    if texts:
                        frames.append((LINE_RUN, texts))
                        texts = []
                    with memoryview(buffer) as view:  # one copy, not a bytearray's and bytes'
                        frames.append((LINE_BLOCK, view[offset:end].tobytes()))
                    offset = end
                    continue
                if left >= _STR8.size:
                    # Most lines (32-255 bytes of UTF-8): header, array, kind and str8
                    # header in one unpack (0.47 -> 0.36 µs a line).
                    size, prefix, head, length = unpack_str8(buffer, offset)
                    if prefix == _LINE_PREFIX and head == 0xD9 and length + 4 == size <= limit:
                        end = offset + HEADER_SIZE + size
                        if end > available:
                            break
                        texts.append(buffer[offset + _STR8.size : end])
                        offset = end
                        continue
                elif left < HEADER_SIZE:
                    break
                (size,) = unpack(buffer, offset)
                if size > limit:
                    msg = f"frame of {size:,} bytes exceeds the limit of {limit:,}"
                    raise FrameError(msg)
                start = offset + HEADER_SIZE
                end = start + size
                if end > available:
                    break
                if size > 2 and buffer[start] == _ARRAY2 and buffer[start + 1] == _LINE:
                    # The str header: str8 (when _STR8 did not fit), fixstr, str16, str32.
                    # A length read past the frame is caught by `at + length == end`.
                    head = buffer[start + 2]
                    if head == 0xD9:
                        at, length = start + 4, buffer[start + 3] if size > 3 else -1
                    elif 0xA0 <= head <= 0xBF:
                        at, length = start + 3, head - 0xA0
                    elif head == 0xDA:
                        at = start + 5
                        length = int.from_bytes(buffer[start + 3 : at], "big")
                    elif head == 0xDB:
                        at = start + 7
                        length = int.from_bytes(buffer[start + 3 : at], "big")
                    else:
                        at, length = 0, -1
                    if at + length == end:  # exactly [LINE, text]: nothing after the text
                        texts.append(buffer[at:end])
                        offset = end
                        continue
                if texts:
                    frames.append((LINE_RUN, texts))
                    texts = []
                payload = memoryview(buffer)[start:end]
                try:
                    frames.append(decode_payload(payload))
                finally:
                    payload.release()  # see FrameReader.feed: the del below needs no export
                offset = end
        finally:
            if offset:
                del buffer[:offset]
        if texts:
            frames.append((LINE_RUN, texts))
        return frames


def _long_line(buffer: bytes | bytearray, start: int, end: int, limit: int) -> int:
    """Return where the first line of ``buffer[start:end]`` longer than ``limit`` starts, or -1.

    Only for a block longer than the limit (rare: one read is at most 256 KiB),
    so the common block costs no walk over its lines.
    """
    while start < end:
        at = buffer.find(b"\n", start, end)
        if at - start > limit:
            return start
        start = at + 1
    return -1


# -- what the dispatcher checks of a run or a block before writing it as one ---------------


def valid_utf8(data: bytes) -> bool:
    """Tell whether ``data`` is valid UTF-8 (no surrogates: what the decoder would keep)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def one_line_each(data: bytes, texts: list[bytearray], count: int) -> bool:
    """Tell whether ``data`` (``count`` texts joined by line ends) has no other line break.

    ``bytes.count`` of one byte walks it byte by byte (33 µs for 64 KB here),
    where ``in`` is a ``memchr`` (1 µs): long texts are searched one by one,
    short ones (the Python loop would cost more) in one count.
    """
    if len(data) > count * 1024:
        return not any(b"\n" in text or b"\r" in text for text in texts)
    return data.count(b"\n") == count and b"\r" not in data


def count_lines(data: bytes) -> int:
    r"""Count the ``\n`` of ``data`` the cheapest way for its first line's length.

    ``bytes.count`` of one byte walks it byte by byte (~0.8 ns a byte here:
    32 µs for 333 lines of 117 bytes); ``replace`` with an empty text finds
    each line end with ``memchr`` and copies the rest (7.5 µs), but costs a
    call per line (3-byte lines: 33 µs, no better) and a copy (4 lines of 64
    KB: 19.5 µs); a ``find`` per line is a ``memchr`` but a Python call
    (~0.1 µs: 6.4 µs for those 4 lines).  Best of 3 x 2,000 in-process.
    """
    first = data.find(b"\n", 0, 4096)
    if 0 <= first < 32:
        return data.count(b"\n")
    if first >= 0:
        return len(data) - len(data.replace(b"\n", b""))
    count, at, end = 0, data.find(b"\n"), len(data)
    while 0 <= at < end:
        count += 1
        at = data.find(b"\n", at + 1)
    return count
