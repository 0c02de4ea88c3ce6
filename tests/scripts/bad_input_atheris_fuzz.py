"""atheris (libFuzzer) target for the writer's decoder: FrameReader, Tables, decode_record, the sinks.

Usage: ``python bad_input_atheris_fuzz.py [libFuzzer flags, e.g. -max_total_time=60]``

Each input is turned into a byte stream in one of four ways (chosen by its
first byte): the raw bytes; a correct length prefix followed by the bytes (so
that msgpack decoding is reached); what a new connection sends for one record
(a SITE, a THREAD and a RECORD frame) with some of its bytes overwritten; or
that RECORD frame alone (naming ids nothing defined) with some of its bytes
overwritten.  The stream is fed to a ``FrameReader`` in two parts, and its
frames handled as the writer does: SITE and THREAD frames into one ``Tables``,
RECORD frames to ``decode_record``.  Anything but a ``FrameError`` escaping
the reader, ``Tables.define`` or ``decode_record``, a table that grows past
``TABLE_SIZE``, or a decoded record that the stock formatters cannot format,
is a crash.
"""

from __future__ import annotations

import json
import logging
import struct
import sys

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from logfunnel._core import wire as _wire
    from logfunnel.sinks.files import JsonFormatter, LineFormatter

LIMIT = 65536
LINE = LineFormatter("%(asctime)s %(levelname)s %(name)s %(funcName)s: %(message)s")
JSON = JsonFormatter()
VALID = _wire.Encoder().record(
    logging.LogRecord("fuzz", logging.INFO, __file__, 1, "valid %s", ("x",), None, "f")
)


def _last_frame(data: bytes) -> bytes:
    """Return the last frame of a stream of whole frames."""
    offset = 0
    while True:
        (size,) = _wire.HEADER.unpack_from(data, offset)
        end = offset + _wire.HEADER_SIZE + size
        if end == len(data):
            return data[offset:]
        offset = end


#: The last frame of VALID: its RECORD, naming site 0 and thread 0 without defining them.
RECORD_ONLY = _last_frame(VALID)


def _overwrite(base: bytes, edits: bytes) -> bytes:
    """Return ``base`` with bytes after its first header overwritten: (position, value) pairs."""
    stream = bytearray(base)
    for index in range(0, len(edits) - 1, 2):
        position = _wire.HEADER_SIZE + edits[index] % (len(base) - _wire.HEADER_SIZE)
        stream[position] = edits[index + 1]
    return bytes(stream)


def stream_from(data: bytes) -> tuple[bytes, int]:
    """Return the byte stream an input stands for, and where to split it."""
    if not data:
        return b"", 0
    mode, rest = data[0] % 4, data[1:]
    split = data[0] // 4
    if mode == 0:
        return rest, split
    if mode == 1:
        return struct.pack(">I", len(rest)) + rest, split
    return _overwrite(VALID if mode == 2 else RECORD_ONLY, rest), split


def test_one_input(data: bytes) -> None:
    """Decode one input the way the writer does; raise on any unexpected outcome."""
    stream, split = stream_from(data)
    reader = _wire.FrameReader(LIMIT)
    try:
        frames = reader.feed(stream[:split]) + reader.feed(stream[split:])
    except _wire.FrameError:
        return
    if reader.pending > len(stream):
        msg = f"reader holds {reader.pending} bytes of a {len(stream)}-byte stream"
        raise AssertionError(msg)
    tables = _wire.Tables()
    for fields in frames:
        if type(fields) is not list or type(fields[0]) is not int:
            msg = f"frame {fields!r} is not an array starting with an int"
            raise AssertionError(msg)
        try:
            if fields[0] in (_wire.SITE, _wire.THREAD):
                tables.define(fields)
                if max(len(tables.sites), len(tables.threads)) > _wire.TABLE_SIZE:
                    msg = f"a table holds more than {_wire.TABLE_SIZE} entries"
                    raise AssertionError(msg)
                continue
            if fields[0] != _wire.RECORD:
                continue
            record = _wire.decode_record(fields, tables)
        except _wire.FrameError:
            continue
        LINE.format(record)
        line = JSON.format(record)
        if "\n" in line or not isinstance(json.loads(line), dict):
            msg = f"JSON sink line {line!r} is not one object on one line"
            raise AssertionError(msg)


def main() -> None:
    """Run libFuzzer on ``test_one_input`` with this process's arguments."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
