r"""RFC 5424 syslog messages made from ``LogRecord``s, and the framing of each transport.

Pure functions and one immutable ``Rfc5424`` per sink: no socket, no thread,
so ``tests/test_rfc5424.py`` checks every rule in-process.  Who owns what: a
``syslog.SyslogSink`` holds one ``Rfc5424`` and calls ``encode`` in the thread
that hands it a record (the writer loop's, or an installing program's thread
under the handler's lock); nothing here is mutable after construction.

The message (RFC 5424 §6)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [logfunnel@32473 k="v" ...] BOM MSG

* PRI = facility * 8 + severity (§6.2.1); the severity comes from the
  record's level (``severity``, and the table in docs/export.md).
* TIMESTAMP: local time with microseconds and its UTC offset (§6.2.3).
* HOSTNAME, APP-NAME, PROCID, MSGID: PRINTUSASCII (33..126) of at most 255,
  48, 128 and 32 octets, ``-`` when empty (§6.2.4-6.2.7).  PROCID is the pid
  of the process that logged (``record.process``), MSGID its logger name.
* STRUCTURED-DATA: the record's ``extra=`` attributes as one SD-ELEMENT whose
  SD-ID is ``logfunnel@32473`` (§6.3.2: a private name needs ``@`` and an
  enterprise number; 32473 is the one RFC 5612 reserves for documentation).
  Param names are cut to 32 PRINTUSASCII octets without ``=``, space, ``]``
  and ``"`` (§6.3.3); values are UTF-8 with ``"``, ``\`` and ``]`` escaped
  by a backslash (§6.3.3).  Containers are written as JSON.
* MSG: the formatted message, then the traceback and stack, as UTF-8 after a
  BOM (§6.4: MSG-UTF8).  Line breaks stay: octet counting (RFC 6587 §3.4.1)
  and one datagram per message (RFC 5426) keep a multi-line message one.

Framing: ``octet_counted`` (TCP, RFC 6587 §3.4.1; TLS, RFC 5425 §4.3) puts
``MSG-LEN SP`` before each message; UDP sends the message as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import socket
from typing import Any, Final

from logfunnel._core import plain as _plain
from logfunnel._core.context import CONTEXT_ATTR

__all__ = [
    "FACILITIES",
    "SD_ID",
    "Rfc5424",
    "escape_param_value",
    "octet_counted",
    "param_name",
    "printusascii",
    "severity",
]

#: The SD-ID of the element that carries a record's extras (RFC 5424 §6.3.2, §7.2.2).
SD_ID: Final = "logfunnel@32473"
#: The UTF-8 byte order mark that opens an MSG-UTF8 (RFC 5424 §6.4).
BOM: Final = b"\xef\xbb\xbf"
#: RFC 5424 §6.2.1, table 1: the facility codes, by the names syslog.conf uses.
FACILITIES: Final = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
#: What a message that was cut to fit ends with (ASCII, so it is never cut itself).
CUT_MARKER: Final = " [logfunnel: cut to fit]"
_NIL: Final = "-"
_HOSTNAME_MAX: Final = 255
_APP_NAME_MAX: Final = 48
_PROCID_MAX: Final = 128
_MSGID_MAX: Final = 32
_SD_NAME_MAX: Final = 32
_NOT_IN_SD_NAME: Final = frozenset('= ]"')


def severity(levelno: int) -> int:
    """Return the RFC 5424 severity (§6.2.1, table 2) of a ``logging`` level number.

    CRITICAL and above: 2 (critical); ERROR: 3 (error); WARNING: 4
    (warning); between INFO and WARNING (a custom NOTICE): 5 (notice); INFO: 6
    (informational); below INFO: 7 (debug).  0 (emergency) and 1 (alert) are
    never used: they speak for a whole system, not one program's record.
    """
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5
    if levelno == logging.INFO:
        return 6
    return 7


def printusascii(text: str, limit: int) -> str:
    """Return ``text`` as PRINTUSASCII (%d33-126) of at most ``limit`` octets, or ``-``.

    Each other character becomes ``_`` (RFC 5424 §6: header fields are
    PRINTUSASCII; a space would end the field).
    """
    if not (text.isascii() and text.isprintable() and " " not in text):
        text = "".join(c if "!" <= c <= "~" else "_" for c in text)
    return text[:limit] or _NIL


def param_name(name: str) -> str:
    """Return ``name`` as an SD-NAME (RFC 5424 §6.3.3): PRINTUSASCII but ``= ]"``, <= 32."""
    text = "".join("_" if c in _NOT_IN_SD_NAME or not "!" <= c <= "~" else c for c in name)
    return text[:_SD_NAME_MAX] or "_"


def escape_param_value(value: str) -> str:
    r"""Escape ``"``, ``\`` and ``]`` with a backslash, as RFC 5424 §6.3.3 requires."""
    if '"' in value or "\\" in value or "]" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return value


def _value_text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=_plain.safe_repr)
        except (TypeError, ValueError, RecursionError):
            return _plain.safe_repr(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value) if value is None or isinstance(value, bool) else str(value)
    return _plain.as_str(value)


def structured_data(record: logging.LogRecord) -> str:
    """Return the STRUCTURED-DATA of ``record``: its extras as one SD-ELEMENT, or ``-``."""
    extras = _plain.record_extras(record)
    if not extras:
        return _NIL
    params = [
        f'{param_name(key)}="{escape_param_value(_plain.valid_text(_value_text(value)))}"'
        for key, value in extras.items()
        if key != CONTEXT_ATTR  # logfunnel.context()'s dict: its fields are extras already
    ]
    return f"[{SD_ID} {' '.join(params)}]" if params else _NIL


def message_text(record: logging.LogRecord) -> str:
    """Return what MSG holds: the message, then the traceback and the stack, if any."""
    text = _plain.get_message(record)
    exc = _plain.exception_text(record)
    if exc:
        text = f"{text}\n{exc}"
    stack = record.__dict__.get("stack_info")
    if stack:
        text = f"{text}\n{_plain.as_str(stack)}"
    return _plain.valid_text(text)


def timestamp(created: float) -> str:
    """Return ``created`` as an RFC 5424 TIMESTAMP (§6.2.3): local time, µs, and offset."""
    global _second_cache  # noqa: PLW0603 - one tuple, replaced whole: threads never see a torn pair
    try:
        second = math.floor(created)
        micro = round((created - second) * 1e6)
        if micro >= 1_000_000:  # rounding reached the next second
            second, micro = second + 1, micro - 1_000_000
        cached_second, date, offset = _second_cache
        if cached_second != second:
            when = dt.datetime.fromtimestamp(second).astimezone()
            text = when.isoformat(timespec="seconds")
            date, offset = text[:19], text[19:]  # offset: "+HH:MM" (isoformat never says Z)
            _second_cache = (second, date, offset)
    except (OverflowError, OSError, ValueError, TypeError):
        return _NIL
    return f"{date}.{micro:06d}{offset}"


# (second, its local date and time, its UTC offset): a second's text is made once.
_second_cache: tuple[int, str, str] = (-1, "", "")


def octet_counted(message: bytes) -> bytes:
    """Frame a message for a stream: ``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 §3.4.1, RFC 5425 §4.3)."""
    return b"%d %b" % (len(message), message)


def cut_utf8(data: bytes, limit: int) -> bytes:
    """Return at most ``limit`` bytes of UTF-8 ``data``, never ending inside a character."""
    if len(data) <= limit:
        return data
    # Valid UTF-8 cut anywhere loses at most the one character it cut into.
    return data[: max(0, limit)].decode("utf-8", "ignore").encode("utf-8")


class Rfc5424:
    """Make the RFC 5424 message of a record: one per sink, immutable."""

    __slots__ = ("_head", "facility", "limit")

    def __init__(
        self,
        *,
        facility: int = FACILITIES["user"],
        app_name: str = "python",
        hostname: str | None = None,
        limit: int = 65536,
    ) -> None:
        """``limit``: the most octets a message may have (longer MSGs are cut, with a marker)."""
        self.facility = facility
        self.limit = limit
        host = printusascii(hostname if hostname is not None else socket.gethostname(), 255)
        # What every message of this sink shares after the TIMESTAMP.
        self._head = f"{host} {printusascii(app_name, _APP_NAME_MAX)}"

    def encode(self, record: logging.LogRecord) -> bytes:
        """Return ``record`` as one RFC 5424 message (UTF-8), cut to ``limit`` octets."""
        attrs = record.__dict__
        pri = self.facility * 8 + severity(record.levelno)
        process = attrs.get("process")
        procid = printusascii(str(process), _PROCID_MAX) if process is not None else _NIL
        msgid = printusascii(_plain.as_str(attrs.get("name") or ""), _MSGID_MAX)
        sd = structured_data(record)
        head = f"<{pri}>1 {timestamp(record.created)} {self._head} {procid} {msgid} ".encode(
            "ascii"
        )
        sd_bytes = sd.encode("utf-8")
        msg = message_text(record).encode("utf-8")
        size = len(head) + len(sd_bytes) + 1 + len(BOM) + len(msg)
        if size > self.limit:
            room = self.limit - len(head) - len(sd_bytes) - 1 - len(BOM) - len(CUT_MARKER)
            if room < 0:  # the extras alone do not fit: the message goes without them
                sd_bytes = b"-"
                room = self.limit - len(head) - 2 - len(BOM) - len(CUT_MARKER)
            msg = cut_utf8(msg, max(0, room)) + CUT_MARKER.encode("ascii")
        return b"".join((head, sd_bytes, b" ", BOM, msg))
