"""atheris (libFuzzer) target for the writer's decoder: FrameReader, decode_record, the sinks.

Usage: ``python bad_input_atheris_fuzz.py [libFuzzer flags, e.g. -max_total_time=60]``

Each input is turned into a byte stream in one of three ways (chosen by its
first byte): the raw bytes; a correct length prefix followed by the bytes (so
that msgpack decoding is reached); or a valid RECORD frame with some of its
bytes overwritten.  The stream is fed to a ``FrameReader`` in two parts.
Anything but a ``FrameError`` escaping the reader or ``decode_record``, or a
decoded record that the stock formatters cannot format, is a crash.
"""

from __future__ import annotations

import json
import logging
import struct
import sys

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from logfunnel import _wire
    from logfunnel._sinks import JsonFormatter, LineFormatter

LIMIT = 65536
LINE = LineFormatter("%(asctime)s %(levelname)s %(name)s %(funcName)s: %(message)s")
JSON = JsonFormatter()
VALID = _wire.Encoder().record(
    logging.LogRecord("fuzz", logging.INFO, __file__, 1, "valid %s", ("x",), None, "f")
)


def stream_from(data: bytes) -> tuple[bytes, int]:
    """Return the byte stream an input stands for, and where to split it."""
    if not data:
        return b"", 0
    mode, rest = data[0] % 3, data[1:]
    split = data[0] // 3
    if mode == 0:
        return rest, split
    if mode == 1:
        return struct.pack(">I", len(rest)) + rest, split
    stream = bytearray(VALID)
    for index in range(0, len(rest) - 1, 2):
        stream[_wire.HEADER_SIZE + rest[index] % (len(VALID) - _wire.HEADER_SIZE)] = rest[index + 1]
    return bytes(stream), split


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
    for fields in frames:
        if type(fields) is not list or type(fields[0]) is not int:
            msg = f"frame {fields!r} is not an array starting with an int"
            raise AssertionError(msg)
        if fields[0] != _wire.RECORD:
            continue
        try:
            record = _wire.decode_record(fields)
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
