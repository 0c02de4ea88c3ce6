"""In-process tests of the RFC 5424 formatter (``logfunnel.sinks.rfc5424``): no socket, no daemon.

Each test names the RFC section whose rule it checks.  The daemons' own
reading of these messages is checked in tests/test_syslog_daemons.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys

import pytest

from logfunnel.sinks import rfc5424
from logfunnel.sinks.rfc5424 import BOM, SD_ID, Rfc5424

_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
)


def _record(msg: str = "hello", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"msg": msg, "levelno": level, "levelname": logging.getLevelName(level), "name": "app.db"}
    )
    record.__dict__.update(extra)
    return record


def _split(message: bytes) -> tuple[re.Match[bytes], bytes, bytes]:
    """Return the header match, the STRUCTURED-DATA and the MSG (BOM included) of ``message``."""
    head = _HEADER.match(message)
    assert head is not None, message
    rest = message[head.end() :]
    if rest.startswith(b"-"):
        sd, msg = b"-", rest[2:]
    else:
        end = _sd_end(rest)
        sd, msg = rest[:end], rest[end + 1 :]
    return head, sd, msg


def _sd_end(data: bytes) -> int:
    """Return where the SD-ELEMENTs end: the first ``]`` outside a quoted, escaped value."""
    quoted = escaped = False
    for i, byte in enumerate(data):
        ch = chr(byte)
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "]" and not quoted and (i + 1 == len(data) or data[i + 1 : i + 2] != b"["):
            return i + 1
    raise AssertionError(f"unterminated STRUCTURED-DATA: {data!r}")


def test_header_fields_pri_version_timestamp() -> None:
    """§6.2: PRI = facility*8 + severity, VERSION 1, TIMESTAMP with µs and offset."""
    formatter = Rfc5424(facility=rfc5424.FACILITIES["local3"], app_name="my app", hostname="h1")
    record = _record(level=logging.ERROR)
    record.process = 4242
    head, sd, msg = _split(formatter.encode(record))
    assert int(head["pri"]) == 19 * 8 + 3
    ts = head["ts"].decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d", ts), ts
    assert dt.datetime.fromisoformat(ts).timestamp() == pytest.approx(record.created, abs=1e-5)
    assert head["host"] == b"h1"
    assert head["app"] == b"my_app"  # §6.2.5: PRINTUSASCII, a space would end the field
    assert head["procid"] == b"4242"
    assert head["msgid"] == b"app.db"
    assert sd == b"-"
    assert msg == BOM + b"hello"


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.CRITICAL + 10, 2),
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (25, 5),
        (logging.INFO, 6),
        (15, 7),
        (logging.DEBUG, 7),
        (logging.NOTSET, 7),
    ],
)
def test_level_to_severity(level: int, severity: int) -> None:
    """§6.2.1 table 2, the mapping docs/export.md documents."""
    assert rfc5424.severity(level) == severity
    head, _, _ = _split(Rfc5424(hostname="h").encode(_record(level=level)))
    assert int(head["pri"]) == 1 * 8 + severity  # facility user (1) by default


def test_msgid_is_the_logger_name_sanitised_and_cut() -> None:
    """§6.2.7: MSGID is 1*32 PRINTUSASCII."""
    record = _record()
    record.name = "ünïcode logger.with spaces." + "x" * 40
    head, _, _ = _split(Rfc5424(hostname="h").encode(record))
    msgid = head["msgid"]
    assert len(msgid) == 32
    assert all(33 <= b <= 126 for b in msgid)
    assert msgid.startswith(b"_n_code_logger.with_spaces.")
    record.name = ""
    head, _, _ = _split(Rfc5424(hostname="h").encode(record))
    assert head["msgid"] == b"-"  # §6: NILVALUE for an empty field


def test_structured_data_escapes_quote_backslash_bracket() -> None:
    r"""§6.3.3: inside PARAM-VALUE, '"', '\' and ']' are escaped with a backslash."""
    record = _record(path='C:\\dir]"x"', plain="é ok")
    _, sd, _ = _split(Rfc5424(hostname="h").encode(record))
    text = sd.decode("utf-8")
    assert text == f'[{SD_ID} path="C:\\\\dir\\]\\"x\\"" plain="é ok"]'


def test_param_names_sanitised_and_cut() -> None:
    """§6.3.3: SD-NAME is 1*32 PRINTUSASCII except '=', SP, ']' and '"'."""
    record = _record()
    record.__dict__.update({'a=b c]"d': 1, "k" * 40: 2, "ключ": 3})
    _, sd, _ = _split(Rfc5424(hostname="h").encode(record))
    names = re.findall(rb' ([^ =]+)="', sd)
    assert names == [b"a_b_c__d", b"k" * 32, b"____"]


def test_extras_values_parseable() -> None:
    """Containers are JSON, numbers and booleans as JSON would write them."""
    record = _record(n=3, f=1.5, b=True, none=None, d={"x": [1, "two"]})
    _, sd, _ = _split(Rfc5424(hostname="h").encode(record))
    assert sd.decode() == (
        f'[{SD_ID} n="3" f="1.5" b="true" none="null" d="{{\\"x\\": [1, \\"two\\"\\]}}"]'
    )


def _raise_boom() -> None:
    raise ValueError("boom")


def test_msg_is_utf8_with_bom_multiline_and_traceback() -> None:
    """§6.4: MSG-UTF8 = BOM UTF-8-STRING; line breaks kept, the traceback follows."""
    record = _record("first ünï 日本\nsecond line")
    try:
        _raise_boom()
    except ValueError:
        record.exc_info = sys.exc_info()
    _, _, msg = _split(Rfc5424(hostname="h").encode(record))
    assert msg.startswith(BOM)
    text = msg[len(BOM) :].decode("utf-8")
    assert text.startswith("first ünï 日本\nsecond line\nTraceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: boom")


def test_lone_surrogates_never_make_invalid_utf8() -> None:
    """§6.4: MSG after a BOM must be valid UTF-8, whatever the record held."""
    record = _record("bad \udcff here", key="v\udcfe")
    message = Rfc5424(hostname="h").encode(record)
    message.decode("utf-8")  # raises if not valid
    assert b"\\udcff" in message
    assert b"\\udcfe" in message


def test_long_message_cut_to_the_limit_with_a_marker_on_a_character_boundary() -> None:
    """A message over the transport's limit is cut, marked, and stays valid UTF-8."""
    formatter = Rfc5424(hostname="h", limit=300)
    message = formatter.encode(_record("é" * 1000, key="v"))
    assert len(message) <= 300
    assert message.endswith(rfc5424.CUT_MARKER.encode())
    message.decode("utf-8")
    _, sd, _ = _split(message)
    assert sd == f'[{SD_ID} key="v"]'.encode()
    short = formatter.encode(_record("short"))
    assert not short.endswith(rfc5424.CUT_MARKER.encode())


def test_extras_too_long_for_the_limit_leave_the_message() -> None:
    """If the STRUCTURED-DATA alone overflows, it goes (NILVALUE) and the message is kept."""
    message = Rfc5424(hostname="h", limit=200).encode(_record("the message", big="x" * 500))
    assert len(message) <= 200
    _, sd, msg = _split(message)
    assert sd == b"-"
    assert msg.startswith(BOM + b"the message")


def test_octet_counting_frames_count_bytes_not_characters() -> None:
    """RFC 6587 §3.4.1 / RFC 5425 §4.3: MSG-LEN is the octet count of SYSLOG-MSG."""
    body = Rfc5424(hostname="h").encode(_record("日本\nline"))
    framed = rfc5424.octet_counted(body)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(body)
    assert rest == body


def test_context_dict_attribute_is_not_a_param() -> None:
    """logfunnel.context() fields are extras of their own; the dict holding them is not one."""
    record = _record(job="j1", logfunnel_context={"job": "j1"})
    _, sd, _ = _split(Rfc5424(hostname="h").encode(record))
    assert sd == f'[{SD_ID} job="j1"]'.encode()
