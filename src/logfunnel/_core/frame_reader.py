r"""Bytes to frames: the frame header, and the reader that cuts a stream into decoded arrays.

Every frame is a 4-byte big-endian payload length (``HEADER``) and a msgpack
array whose first item is its kind (``_protocol``).  A frame's first byte is
therefore 0 while the limit is under ``BARE_LIMIT`` (16 MiB); that leaves every
other first byte for a *bare line*: a line a sender rendered itself, sent as
its UTF-8 bytes and a ``\n``, holding no ``\n``, ``\r`` or NUL
(``wire.Encoder.line``).  It means what a LINE frame with that text means, at
no encoding cost on either side, and a run of them is already the bytes a file
sink writes (``lines``).  ``FrameReader.feed`` takes what a connection
received, in any split, and returns the arrays of the frames now complete; a
frame over the limit is refused before its payload is read, and a payload that
does not decode to such an array (or holds a msgpack extension type) is a
``FrameError``: the connection cannot be trusted after it.
The encoder (``wire``) makes frames with the same ``HEADER``; ``lines`` slices
LINE frames out of a read without decoding each.

Who owns what: a ``FrameReader`` belongs to one connection on the reading
side and holds the bytes that do not yet form a whole frame; nothing else
here holds state.
"""

from __future__ import annotations

import struct

import msgpack

from logfunnel._core.protocol import DEFAULT_FRAME_LIMIT, LINE, FrameError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

# The frame header: the payload's length.  Used as a module global (here and in
# ``wire``), never as ``module.HEADER``: that would be an attribute load more per frame.
HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size
#: Frame limits below this leave a frame's first byte 0, so bare lines can be told
#: apart; with a larger ``frame_limit`` senders frame every line and readers take
#: every first byte as a header's.
BARE_LIMIT: Final = 1 << 24


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

    def feed(self, data: bytes | memoryview) -> list[Any]:
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
        bare = self.limit < BARE_LIMIT
        try:
            while offset < available:
                if bare and buffer[offset]:
                    end = bare_line_end(buffer, offset, self.limit)
                    if end < 0:
                        break
                    text = buffer[offset : end - 1].decode("utf-8", "replace")
                    frames.append([LINE, text])
                    offset = end
                    continue
                if available - offset < HEADER_SIZE:
                    break
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


def bare_line_end(buffer: bytearray, offset: int, limit: int) -> int:
    r"""Return the end (after its ``\n``) of the bare line at ``offset``, or -1: not all here.

    Raises ``FrameError`` if a NUL comes before the line's end (no sender makes
    one: the stream is not logfunnel's), or if more than ``limit`` bytes come
    before either.
    """
    window = offset + limit + 1
    end = buffer.find(b"\n", offset, window)
    if buffer.find(b"\0", offset, window if end < 0 else end) >= 0:
        msg = "line holds a NUL byte"
        raise FrameError(msg)
    if end < 0:
        if len(buffer) - offset > limit:
            msg = f"line longer than the limit of {limit:,} bytes"
            raise FrameError(msg)
        return -1
    return end + 1


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
