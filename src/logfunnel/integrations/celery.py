"""Celery: a worker's main process and every pool child log into one funnel.

``setup(app, file=...)`` in the module that defines the app is the one line to
add.  It only connects to Celery's ``worker_init`` signal: a process that
imports the app to *send* tasks (a web server, a script) installs nothing.
The worker's main process installs the funnel when the worker starts, before
the prefork pool forks its children, so every child -- the first ones, and
those ``--max-tasks-per-child`` or ``--autoscale`` start later -- inherits it
through the at-fork hook and delivers every record, with no per-child call.

Why it holds where hand-wiring breaks: Celery takes over the root logger of
the main process and of each child (``worker_hijack_root_logger``, on by
default) and removes the handlers it finds there.  A funnel is not a handler
(``_core/route.py``), so nothing Celery does to the root takes it away, and
Celery's own handlers keep working as without logfunnel.

Owns nothing beyond one signal receiver per app, held strongly (Celery's
signals keep weak references by default, and a receiver made in a function
would be collected before the worker starts).
"""

from __future__ import annotations

from typing import Any

__all__ = ["setup"]

_connected: dict[int, Any] = {}


def setup(app: Any, **install_options: Any) -> None:
    """Install a funnel in ``app``'s worker when it starts; ``install_options`` go to install().

    Call it once, where the app is defined (``app = Celery(...)``).  An
    option install() does not take fails here, in every process that imports
    the app; the values are checked by install() in the worker, where the
    file's directory must exist (a process that only sends tasks may run on
    a host without it).  Calling it again for the same app replaces the options.
    """
    import inspect  # noqa: PLC0415

    from celery import signals  # noqa: PLC0415 - only programs that use Celery import it

    from logfunnel._funnel import install  # noqa: PLC0415

    inspect.signature(install).bind(**install_options)  # TypeError naming the wrong option
    previous = _connected.pop(id(app), None)
    if previous is not None:
        signals.worker_init.disconnect(previous)

    def install_in_worker(sender: Any = None, **_: Any) -> None:
        # worker_init is sent for every app's worker in this process: ours only.
        if sender is not None and getattr(sender, "app", app) is not app:
            return
        import logfunnel  # noqa: PLC0415

        if logfunnel.current() is None:
            logfunnel.install(**install_options)

    signals.worker_init.connect(install_in_worker, weak=False)
    _connected[id(app)] = install_in_worker
