"""Each check of one ``install()`` option: a message that says what to change, or its value.

``_settings.check()`` calls these before anything is created, opened or
changed; they read the file system and the environment, and change nothing.
Split from ``_settings`` by size: ``Settings`` and the order of the checks are
there, the checks themselves here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

from logfunnel._core.formatters import DEFAULT_FORMAT
from logfunnel._core.options import DEFAULT_FRAME_LIMIT
from logfunnel.sinks import rotation as _rotation

# Attributes a format may name: those of every LogRecord, and what Formatter adds.
_RECORD_ATTRS = frozenset(
    {*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName"}
)


#: install()'s arguments at their defaults (``_settings.defaults_fingerprint``, and the
#: checks of options that go with another).
DEFAULTS: dict[str, Any] = {
    "file": None,
    "level": None,
    "fmt": None,
    "datefmt": None,
    "max_bytes": 0,
    "backups": 0,
    "when": None,
    "interval": 1,
    "utc": False,
    "max_age": None,
    "compress": None,
    "watch": False,
    "json": False,
    "console": False,
    "config": None,
    "host": None,
    "on_full": "block",
    "full_timeout": 0.1,
    "fallback": None,
    "frame_limit": DEFAULT_FRAME_LIMIT,
    "listen": None,
    "token": None,
    "tls_cert": None,
    "tls_key": None,
    "connect": None,
    "syslog": None,
    "syslog_facility": "user",
    "syslog_app_name": None,
    "syslog_ca": None,
    "otlp": None,
}


#: What a process that connects to a collector leaves to it.
_CONNECT_EXCLUDES = ("file", "json", "console", "fmt", "config", "listen", "host", "syslog", "otlp")


def check_connect(a: dict[str, Any]) -> str | None:
    """Check ``connect=``; return the address as the sending side names it (``tcp:HOST:PORT``)."""
    url = a.get("connect")
    if url is None:
        return None
    kind, _, where = str(url).partition(":")
    where = where.removeprefix("//")
    host, _, port = where.rpartition(":")
    if kind not in ("tcp", "tls") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"connect={url!r}: give tcp://HOST:PORT or tls://HOST:PORT, the address "
            "`logfunnel serve --listen` printed"
        )
    given = [
        name
        for name in _CONNECT_EXCLUDES
        if a.get(name)
    ]
    if given:
        raise ValueError(
            f"connect= sends this process's records to a collector, which owns the sinks: "
            f"leave out {', '.join(f'{name}=' for name in given)} (give them to `logfunnel "
            "serve`), or leave out connect= to start a writer here"
        )
    return f"{kind}:{host}:{port}"


def check_otlp(url: Any) -> dict[str, Any]:
    """Check ``otlp=`` (and that its one dependency is installed); return the Settings fields."""
    if url is None:
        return {}
    from logfunnel.sinks import otlp as _otlp  # noqa: PLC0415
    from logfunnel.sinks import syslog as _syslog  # noqa: PLC0415

    _otlp.parse_endpoint(url)
    try:
        import opentelemetry.proto.collector.logs.v1.logs_service_pb2  # noqa: F401, PLC0415
    except ImportError:
        msg = "otlp= needs opentelemetry-proto: pip install 'logfunnel[otlp]'"
        raise ValueError(msg) from None
    return {"otlp": url, "otlp_service_name": _syslog.program_name()}


def check_syslog(a: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``syslog=`` and its options; return them, the APP-NAME resolved here."""
    url, facility, app_name = a["syslog"], a["syslog_facility"], a["syslog_app_name"]
    ca = path_option(a["syslog_ca"], "syslog_ca")
    if url is None:
        for name in ("syslog_facility", "syslog_app_name", "syslog_ca"):
            if a[name] != DEFAULTS[name]:
                raise ValueError(f"{name}= is for the syslog exporter: give syslog=URL too")
        return {}
    # Imported by a funnel that exports only (as the console sink is).
    from logfunnel.sinks import rfc5424 as _rfc5424  # noqa: PLC0415
    from logfunnel.sinks import syslog as _syslog  # noqa: PLC0415

    _syslog.parse_url(url)
    if isinstance(facility, bool) or (
        facility not in _rfc5424.FACILITIES and facility not in range(24)
    ):
        raise ValueError(
            f"syslog_facility={facility!r}: give a name ({', '.join(_rfc5424.FACILITIES)}) "
            f"or a code 0-23 (RFC 5424 §6.2.1)"
        )
    if app_name is not None and (not isinstance(app_name, str) or not app_name):
        raise ValueError(f"syslog_app_name={app_name!r}: give a non-empty str")
    if ca is not None and not url.startswith("tls://"):
        raise ValueError("syslog_ca= verifies a TLS collector: give syslog='tls://HOST:PORT'")
    if ca is not None and not os.path.isfile(ca):
        raise ValueError(f"syslog_ca={ca!r}: no such file (give a PEM file of CA certificates)")
    if config is not None:
        raise ValueError(
            "give either config= or syslog=: with config=, add a handler of class "
            "logfunnel.sinks.syslog.SyslogSink (url=...) to the dictConfig"
        )
    return {
        "syslog": url, "syslog_facility": facility,
        "syslog_app_name": app_name or _syslog.program_name(), "syslog_ca": ca,
    }


def check_rotation(a: dict[str, Any], file: str | None) -> dict[str, Any]:
    """Check the rotation, retention, compression and watch options; return them normalised."""
    max_bytes, backups = a["max_bytes"], a["backups"]
    when, interval, utc, max_age = a["when"], a["interval"], a["utc"], a["max_age"]
    compress, watch = a["compress"], a["watch"]
    if when is not None:
        if not isinstance(when, str) or when.upper() not in _rotation.WHENS:
            raise ValueError(
                f"when={when!r}: give one of 'S', 'M', 'H' (seconds, minutes, hours), 'D' or "
                f"'midnight' (days), 'W0'-'W6' (weeks from Monday..Sunday), or leave it out"
            )
        when = when.upper()
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval={interval!r}: give a whole number of `when` units, >= 1")
    if when is None and interval != 1:
        raise ValueError(f"interval={interval} needs when=: it counts units of `when`")
    longest = _rotation.longest_interval(when) if when is not None else None
    if longest is not None and interval > longest:
        raise ValueError(
            f"interval={interval} with when={a['when']!r} is longer than a day (periods are "
            f"counted from midnight): give interval <= {longest}, or when='D' with interval= days"
        )
    for name, value in (("utc", utc), ("watch", watch)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: give True or False")  # noqa: TRY004
    if utc and when is None:
        raise ValueError("utc=True needs when=: it says which clock the periods follow")
    if max_age is not None:
        if isinstance(max_age, dt.timedelta):
            max_age = max_age.total_seconds()
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not (
            0 < max_age < float("inf")
        ):
            raise ValueError(
                f"max_age={a['max_age']!r}: give seconds > 0 or a datetime.timedelta, or None "
                f"to keep rotated files of any age"
            )
        max_age = float(max_age)
    if compress is not None and compress != "gzip":
        raise ValueError(
            f"compress={compress!r}: give 'gzip', or None to leave rotated files plain"
        )
    rotates = bool(max_bytes) or when is not None
    for name, value in (("backups", backups), ("max_age", max_age), ("compress", compress)):
        if value and not rotates:
            raise ValueError(
                f"{name}={a[name]!r} needs max_bytes= or when=: it applies to rotated files, "
                f"and without either the file never rotates"
            )
    if rotates and file is None:
        what = "max_bytes" if max_bytes else "when"
        raise ValueError(f"{what} needs file=: only a file sink rotates")
    if watch and file is None:
        raise ValueError("watch=True needs file=: it reopens that file when it is moved")
    if watch and rotates:
        raise ValueError(
            "watch=True is for a file something else rotates (logrotate), and max_bytes=/when= "
            "make logfunnel rotate it itself: give one or the other"
        )
    return {
        "when": when, "interval": interval, "utc": utc, "max_age": max_age,
        "compress": compress, "watch": watch,
    }


def path_option(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    raise ValueError(f"{name}={value!r}: give a path (a non-empty str or os.PathLike)")


def check_file(file: str) -> None:
    path = os.path.abspath(file)
    if os.path.isdir(path):
        raise ValueError(f"file={file!r} is a directory: give the path of a file in it")
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(f"file={file!r}: directory {directory!r} does not exist; create it first")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"file={file!r}: this user cannot write there")


def check_format(fmt: Any, datefmt: Any) -> None:
    """Format a sample record with ``fmt`` and ``datefmt``; raise ``ValueError`` if that fails."""
    if fmt is not None and not isinstance(fmt, str):
        raise ValueError(f"fmt={fmt!r}: give a %-style format string, e.g. {DEFAULT_FORMAT!r}")
    if datefmt is not None:
        if not isinstance(datefmt, str):
            raise ValueError(f"datefmt={datefmt!r}: give a time.strftime format, e.g. '%H:%M:%S'")
        try:
            time.strftime(datefmt)
        except ValueError as exc:
            raise ValueError(f"datefmt={datefmt!r} is not a time.strftime format: {exc}") from None
    if fmt is None:
        return
    try:
        formatter = logging.Formatter(fmt, datefmt, validate=True)
    except ValueError as exc:
        raise ValueError(f"fmt={fmt!r} is not a valid %-style format: {exc}") from None
    sample = logging.makeLogRecord({"msg": "sample", "levelno": logging.INFO, "levelname": "INFO"})
    sample.taskName = None
    try:
        formatter.format(sample)
    except KeyError as exc:
        known = ", ".join(sorted(a for a in _RECORD_ATTRS if not a.startswith("_")))
        raise ValueError(
            f"fmt={fmt!r} names %({exc.args[0]})s, which a LogRecord does not have ({known}); "
            f"for a field your filters or extra= add, use config= with a formatter that has "
            f"defaults="
        ) from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc.__context__, KeyError):
            # A field records may carry (logfunnel.context(), extra=): the sinks'
            # LineFormatter writes "-" where a record lacks it (issue 11, item 7).
            return
        raise ValueError(f"fmt={fmt!r} cannot format a record: {exc}") from None


def parse_listen(listen: Any) -> tuple[str, int] | None:
    """Check ``listen=`` and return its host and port."""
    if listen is None:
        return None
    kind, _, where = str(listen).partition(":")
    host, _, port = where.rpartition(":")
    if kind != "tcp" or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"listen={listen!r}: give tcp:HOST:PORT, e.g. tcp:0.0.0.0:9020 (port 0: any free)"
        )
    return host.strip("[]"), int(port)


def check_token(token: Any) -> None:
    if not isinstance(token, str) or len(token) < 16:
        raise ValueError(
            "token= must be a string of at least 16 characters (or None for a random one)"
        )
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "token= holds characters that UTF-8 cannot encode (lone surrogates): give plain text"
        ) from None
