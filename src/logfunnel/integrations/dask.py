"""Dask: every worker, wherever it runs, sends its records into the client's funnel.

``attach(client)`` registers a ``WorkerPlugin`` with the scheduler.  Each
worker runs its ``setup`` when it starts or, for those already running, at
once -- the workers of a ``LocalCluster``, those ``scale()`` adds later, and
``dask worker`` processes started separately (on other hosts) alike.  The
plugin joins the worker process to the funnel over TCP, proving the token
(``install(listen=..., token=...)`` on the client's side), and gives it the
client's logger levels, so a task's ``logger.info`` is not dropped by a
worker's default root level of WARNING.

Compared with ``Client.forward_logging()``: that sends records through the
scheduler, batched, as pickled task events, and only for loggers whose level
the task set itself; the funnel gets every record that passed the level the
client set, on one direct connection per worker process, in the kernel
before the logging call returns, so a worker killed right after loses none of
its returned records.

The plugin holds plain data only (it is cloudpickled to the scheduler and
every worker): the funnel's TCP address, its token, its options and levels.
A worker that already sends to this funnel -- a ``LocalCluster`` worker
started after ``install()``, which joined through the environment -- is left
as it is.  Registering again replaces the plugin (it has a fixed name).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["FunnelPlugin", "attach"]


class FunnelPlugin(WorkerPlugin):
    """Join a Dask worker's process to a funnel over TCP (see the module doc)."""

    name = "logfunnel"

    def __init__(
        self,
        tcp_address: str,
        token: str,
        options: str,
        levels: dict[str, int],
        *,
        local_address: str | None = None,
        tls_ca: str | None = None,
    ) -> None:
        """Carry what a worker needs to join: plain values only."""
        self.tcp_address = tcp_address
        self.token = token
        self.options = options
        self.levels = levels
        self.local_address = local_address
        self.tls_ca = tls_ca

    def setup(self, worker: Any = None) -> None:  # noqa: ARG002 - the plugin API's signature
        """In the worker's process: join the funnel, unless it already sends there."""
        from logfunnel._core import bootstrap, handler  # noqa: PLC0415
        from logfunnel._core import options as _options  # noqa: PLC0415

        if handler.attached_address() in (self.tcp_address, self.local_address):
            return
        os.environ[_options.ENV_ADDRESS] = self.tcp_address
        os.environ[_options.ENV_OPTIONS] = self.options
        os.environ[_options.ENV_TOKEN] = self.token
        if self.tls_ca is not None:
            os.environ[_options.ENV_TLS_CA] = self.tls_ca
        os.environ.pop(_options.ENV_INSTALLER, None)  # not a child of the installer
        for name, level in self.levels.items():
            logging.getLogger(name or None).setLevel(level)
        if not bootstrap.join_from_environment():
            msg = f"this Dask worker could not join the funnel at {self.tcp_address}"
            raise RuntimeError(msg)


def attach(client: Any) -> FunnelPlugin:
    """Make every worker of ``client``'s cluster, now and later, send into this process's funnel.

    Needs a funnel installed in this process with a TCP listener:
    ``logfunnel.install(file=..., listen="tcp:0.0.0.0:0")`` (a token is made
    if none is given; TLS with ``tls_cert=``/``tls_key=``, workers verifying it
    against ``LOGFUNNEL_TLS_CA``).  Returns the plugin it registered.
    """
    import logfunnel  # noqa: PLC0415
    from logfunnel._core import levels as _levels  # noqa: PLC0415
    from logfunnel._core import rundir as _rundir  # noqa: PLC0415

    funnel = logfunnel.current()
    if funnel is None or not funnel.owner:
        msg = "attach(client) needs a funnel of this process: call logfunnel.install() first"
        raise RuntimeError(msg)
    if funnel.remote_address is None or funnel.token is None:
        msg = (
            "attach(client) needs a funnel that Dask workers can reach over TCP: "
            'install(..., listen="tcp:HOST:PORT") with a host the workers can connect to'
        )
        raise ValueError(msg)
    path = _rundir.levels_path(funnel.address)
    levels = (_levels.read(path) if path else None) or {}
    levels = {name: level for name, level in levels.items() if name != _levels.DISABLE}
    levels[""] = logging.root.level  # install(level=) sets it before the file follows changes
    plugin = FunnelPlugin(
        funnel.remote_address,
        funnel.token,
        funnel.options.to_env(),
        levels,
        local_address=funnel.address,
        tls_ca=os.environ.get("LOGFUNNEL_TLS_CA"),
    )
    register = getattr(client, "register_plugin", None) or client.register_worker_plugin
    register(plugin)
    return plugin
