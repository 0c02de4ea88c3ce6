"""How a new interpreter joins a funnel: the start-up hook and ``worker_init``.

``install()`` publishes the writer's address in ``LOGFUNNEL_ADDRESS``.  Every
interpreter started while it is set (multiprocessing's spawn and forkserver
children, ``subprocess`` Python children, joblib/loky workers) inherits it,
and ``logfunnel-hook.pth``, which ``site`` runs at start-up, calls
``join_from_environment()``: the process takes the installing process's
logger levels and sends every record that reaches its root logger to the
writer.  Forked children need none of this: they inherit the attachment and
``_fork`` renews it.
"""

from __future__ import annotations

import logging
import os
import sys

from logfunnel import _fork, _handler, _stacks
from logfunnel._options import ENV_ADDRESS, ENV_LEVELS, ENV_OPTIONS, Options, apply_levels


def join_from_environment() -> bool:
    """Attach this process to the funnel named in the environment; return True if attached.

    Called by the start-up hook, so it must never raise: a problem is reported
    on standard error in one line and the interpreter starts as usual.
    """
    address = os.environ.get(ENV_ADDRESS)
    if not address:
        return False
    try:
        if _handler.attached_address() != address:
            _handler.attach(address, Options.from_env(os.environ.get(ENV_OPTIONS)))
            apply_levels(os.environ.get(ENV_LEVELS))
        root = logging.getLogger()
        if not any(isinstance(h, _handler.FunnelHandler) for h in root.handlers):
            root.addHandler(_handler.FunnelHandler(stand_in_for=root))
        _fork.register()
        _stacks.register(address)
    except Exception as exc:  # a start-up hook must never stop an interpreter
        print(f"logfunnel: could not join the funnel at {address}: {exc!r}", file=sys.stderr)
        return False
    return True


def worker_init() -> None:
    """Attach this process to the parent's funnel; for ``Pool(initializer=worker_init)``.

    Never required -- children attach by themselves -- but harmless, and it
    makes the wiring explicit.  Raises ``RuntimeError`` if there is no funnel
    to join (``install()`` was not called before the pool was created).
    """
    if _handler.attached_address() is None and not join_from_environment():
        funnel_owner = sys.modules.get("logfunnel._install")
        if funnel_owner is not None and funnel_owner.current() is not None:
            return  # the installing process itself
        msg = "no funnel to join: call logfunnel.install() before creating the pool"
        raise RuntimeError(msg)
