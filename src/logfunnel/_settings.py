"""``install()``'s arguments, checked whole before anything is started: ``Settings``.

Every check of an argument runs here, before anything else (the checks of
single options are ``_checks``'s), so a wrong configuration fails at
``install()`` with a message that says what to change, and nothing has been
created, opened or changed when it does.  Who owns what: a ``Settings`` is
immutable; ``install()`` builds one and hands it to the host it starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Literal

from logfunnel._checks import (
    DEFAULTS,
    check_connect,
    check_file,
    check_format,
    check_otlp,
    check_rotation,
    check_syslog,
    check_token,
    parse_listen,
    path_option,
)
from logfunnel._core.options import (
    ENV_TOKEN,
    Options,
    check_options,
    parse_level,
)
from logfunnel.sinks.options import FileOptions

Host = Literal["thread", "process"]



@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``install()`` was asked for, checked."""

    options: Options
    host: Host = "thread"
    file: str | None = None
    level: int | None = None
    fmt: str | None = None
    datefmt: str | None = None
    max_bytes: int = 0
    backups: int = 0
    #: Time rotation (``sinks.rotation.Schedule``): upper case, None: not by time.
    when: str | None = None
    interval: int = 1
    utc: bool = False
    #: Retention by age, in seconds (a ``timedelta`` given is converted).
    max_age: float | None = None
    compress: str | None = None
    watch: bool = False
    json: bool = False
    console: bool = False
    config: dict[str, Any] | None = None
    listen: tuple[str, int] | None = None
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: A collector's address (``tcp:HOST:PORT`` or ``tls:HOST:PORT``) this process sends
    #: to instead of starting a writer (``logfunnel serve`` on another host).
    connect: str | None = None
    #: The syslog exporter (``sinks.syslog``): its URL, facility, APP-NAME and CA file.
    syslog: str | None = None
    syslog_facility: str | int = "user"
    syslog_app_name: str | None = None
    syslog_ca: str | None = None
    #: The OTLP/HTTP exporter (``sinks.otlp``): the collector's endpoint, and the
    #: ``service.name`` it is given (the installing program's name).
    otlp: str | None = None
    otlp_service_name: str = "python"
    #: Identifies these arguments: a child calling install() with the same ones joins.
    fingerprint: str = ""

    @property
    def has_sinks(self) -> bool:
        """Tell whether install() builds the sinks itself (else: adopt this program's handlers)."""
        return bool(
            self.file or self.json or self.console or self.fmt or self.config is not None
            or self.exporting
        )

    @property
    def senders_render(self) -> bool:
        """Tell whether every process renders its plain records' lines for this funnel.

        When the writer's sinks are install()'s own (under either host), every
        process can render a plain record's line exactly as the writer would:
        the writer then only writes the text (``_core/framing.py``), and the
        formatting is spread over the processes that log instead of queueing
        in one.  Not with an exporter: it needs each record's fields (a writer
        refuses LINEs then: dispatch).
        """
        return self.has_sinks and self.config is None and not self.exporting

    @property
    def exporting(self) -> bool:
        """Tell whether a sink exports records elsewhere (it needs records, not lines)."""
        return self.syslog is not None or self.otlp is not None

    def exporters(self) -> dict[str, Any]:
        """Return the exporters as plain values (``sinks.exporters.build``)."""
        otlp = None
        if self.otlp is not None:
            otlp = {"url": self.otlp, "service_name": self.otlp_service_name}
        return {"syslog": self.syslog_options(), "otlp": otlp}

    def syslog_options(self) -> dict[str, Any] | None:
        """Return the syslog sink's options as plain values (``sinks.syslog.from_plain``)."""
        if self.syslog is None:
            return None
        return {
            "url": self.syslog, "facility": self.syslog_facility,
            "app_name": self.syslog_app_name, "ca_file": self.syslog_ca,
        }

    def file_options(self) -> FileOptions:
        """Return the typed options of the sinks install() builds (``sinks.build``)."""
        return FileOptions(
            file=self.file,
            fmt=self.fmt,
            datefmt=self.datefmt,
            json=self.json,
            console=self.console,
            max_bytes=self.max_bytes,
            when=self.when,
            interval=self.interval,
            utc=self.utc,
            backups=self.backups,
            max_age=self.max_age,
            compress=self.compress,
            watch=self.watch,
        )

    def spec(self) -> dict[str, Any]:
        """Return the writer's options as plain values (a writer process gets them in a frame).

        ``"sinks"`` is ``FileOptions.to_plain()``: the writer process makes the
        typed options again from it (``FileOptions.from_plain``).
        """
        return {
            "sinks": self.file_options().to_plain(),
            "config": self.config,
            "frame_limit": self.options.frame_limit,
            "token": self.token,
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
            "exporters": self.exporters(),
        }


def check(arguments: dict[str, Any]) -> Settings:
    """Return the ``Settings`` for ``install()``'s keyword arguments, or raise ``ValueError``."""
    a = arguments
    options = Options(
        frame_limit=a["frame_limit"],
        on_full=a["on_full"],
        full_timeout=a["full_timeout"],
        fallback=path_option(a["fallback"], "fallback"),
    )
    check_options(options)
    file = path_option(a["file"], "file")
    if file is not None:
        check_file(file)
    level = parse_level(a["level"]) if a["level"] is not None else None
    for name in ("json", "console"):
        if not isinstance(a[name], bool):
            raise ValueError(f"{name}={a[name]!r}: give True or False")  # noqa: TRY004
    fmt, datefmt = a["fmt"], a["datefmt"]
    if a["json"] and (fmt is not None or datefmt is not None):
        raise ValueError(
            "fmt=/datefmt= format text lines, and json=True writes JSON objects: give one or the "
            "other"
        )
    check_format(fmt, datefmt)
    max_bytes, backups = a["max_bytes"], a["backups"]
    for name, value in (("max_bytes", max_bytes), ("backups", backups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            what = "a size in bytes >= 0 (0: never rotate)" if name == "max_bytes" else (
                "a number of rotated files to keep, >= 0"
            )
            raise ValueError(f"{name}={value!r}: give {what}")
    rotation = check_rotation(a, file)
    config = a["config"]
    if config is not None and not isinstance(config, dict):
        raise ValueError(
            f"config must be a logging.config.dictConfig dict, not {type(config).__name__}"
        )
    if config is not None and (file or a["json"] or fmt or a["console"]):
        raise ValueError("give either config= or file=/fmt=/json=/console=, not both")
    listen = parse_listen(a["listen"])
    token, tls_cert, tls_key = a["token"], path_option(a["tls_cert"], "tls_cert"), path_option(
        a["tls_key"], "tls_key"
    )
    connect = check_connect(a)
    if connect is not None:
        token = token if token is not None else os.environ.get(ENV_TOKEN)
        if token is None:
            raise ValueError(
                f"connect={a['connect']!r} needs the collector's token: give token= "
                "(or set LOGFUNNEL_TOKEN); `logfunnel serve` reads it from --token-file"
            )
    elif listen is None:
        for name, value in (("token", token), ("tls_cert", tls_cert), ("tls_key", tls_key)):
            if value is not None:
                raise ValueError(
                    f"{name}= is for the TCP listener: give listen='tcp:HOST:PORT' too, or "
                    f"leave {name}= out"
                )
    if token is not None:
        check_token(token)
    if tls_key is not None and tls_cert is None:
        raise ValueError("tls_key= needs tls_cert=: the key goes with a certificate chain")
    syslog = check_syslog(a, config)
    otlp = check_otlp(a.get("otlp"))
    host: Host = a["host"] or "thread"
    if host not in ("thread", "process"):
        raise ValueError(f"host={host!r}: use 'thread' (writer in this process) or 'process'")
    settings = Settings(
        options=options,
        host=host,
        file=file,
        level=level,
        fmt=fmt,
        datefmt=datefmt,
        max_bytes=max_bytes,
        backups=backups,
        **rotation,
        json=a["json"],
        console=a["console"],
        config=config,
        listen=listen,
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        connect=connect,
        **syslog,
        **otlp,
        fingerprint=fingerprint(a),
    )
    if a["host"] is None and settings.has_sinks and config is None:
        # install() builds the sinks from plain values: the writer gets an interpreter
        # of its own, so this program keeps its threads and its GIL to itself (README,
        # Design: "Which host by default").
        settings = dataclasses.replace(settings, host="process")
    if host == "process" and not settings.has_sinks:
        raise ValueError(
            "host='process' runs the writer in a fresh interpreter, which cannot use this "
            "program's handlers: pass file=, json=, console= or config= to say what it "
            "writes, or use host='thread'"
        )
    return settings


def fingerprint(arguments: dict[str, Any]) -> str:
    """Return a short digest of ``install()``'s arguments (the same ones give the same)."""
    text = repr(sorted((k, _stable(k, v)) for k, v in arguments.items()))
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]


_PATHS = frozenset({"file", "fallback", "tls_cert", "tls_key", "syslog_ca"})


def _stable(name: str, value: Any) -> Any:
    if name in _PATHS and isinstance(value, (str, os.PathLike)):
        return os.path.abspath(os.fspath(value))
    return value


def defaults_fingerprint() -> str:
    """Return the fingerprint of ``install()`` with every argument left at its default."""
    return fingerprint(DEFAULTS)


