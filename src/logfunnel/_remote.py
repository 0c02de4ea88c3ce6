"""Sending to a collector on another host: ``install(connect=...)`` and ``LOGFUNNEL_CONNECT``.

A process that connects starts no writer.  It attaches to the collector's TCP
address exactly as a child attaches to its installer's Unix socket -- its own
connection, the token proven before a byte is decoded, the fallback while the
collector is away, a reconnect once a second -- and publishes the address and
the token in its environment, so that its children (spawned, forked, any
Python subprocess) send there too.  The collector (``logfunnel serve``, or any
``install(listen=...)``) owns the sinks, so every record is delivered.

Who owns what: the ``Funnel`` this returns belongs to the process that called
``install()``; it owns only what it published (the environment, the route)
and puts it back at ``shutdown()``, after a barrier at the collector.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from logfunnel._core import fork as _fork
from logfunnel._core import handler as _handler
from logfunnel._core import route as _route
from logfunnel._core.options import (
    ENV_ADDRESS,
    ENV_CONNECT,
    ENV_INSTALLER,
    ENV_OPTIONS,
    ENV_TOKEN,
)
from logfunnel._running import Funnel

if TYPE_CHECKING:
    from logfunnel._settings import Settings

_ENV_KEYS = (ENV_ADDRESS, ENV_OPTIONS, ENV_TOKEN, ENV_INSTALLER, ENV_CONNECT)


def connect(settings: Settings) -> Funnel:
    """Attach this process (and, through the environment, its children) to a collector."""
    # Both checked by _settings.check().
    assert settings.connect is not None
    assert settings.token is not None
    options = settings.options.replace(every_record=True)  # the collector's sinks take all
    funnel = Funnel(settings.connect, "thread", options, owner=True)
    funnel.remote = True
    funnel.token = settings.token
    funnel._fingerprint = settings.fingerprint
    funnel._saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    os.environ[ENV_ADDRESS] = settings.connect
    os.environ[ENV_OPTIONS] = options.to_env()
    os.environ[ENV_TOKEN] = settings.token
    os.environ[ENV_INSTALLER] = f"{os.getpid()}:{settings.fingerprint}"
    os.environ.pop(ENV_CONNECT, None)  # LOGFUNNEL_ADDRESS says it now, for children too
    _handler.attach(settings.connect, options)
    _route.enable(_handler.send, every_record=True)
    funnel._routed = True
    _fork.register()
    return funnel
