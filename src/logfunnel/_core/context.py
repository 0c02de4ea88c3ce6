"""Context that travels: fields every record logged inside a ``context()`` block carries.

``with logfunnel.context(job="nightly", shard=3): ...`` adds ``job`` and
``shard`` to every record logged inside, in this process and in the processes
started inside the block.  structlog users ask for exactly this (structlog
#297, #425: context bound in a parent does not reach its worker processes);
no peer does it, because a record's context has to cross the process boundary
with the process, not with the record.

How the fields get onto records is ``fields``'s: they live in its
``ContextVar`` (``CURRENT``), which this module sets and the route reads once
per record, and ``fields.attach`` puts them on each.  This module imports the
route (in ``_use``, the first block), the route never this module.

How the fields reach processes started inside a block:

* fork: the forking thread's context is copied into the child with the rest;
* multiprocessing spawn and forkserver (pools and ``ProcessPoolExecutor``
  too): ``multiprocessing.spawn.get_preparation_data``, which both start
  methods call in the thread that starts the process, adds one entry whose
  unpickling in the child enters the starting thread's fields
  (``_Entering``) -- exact even when threads are in different blocks, and a
  forkserver started before the block does not matter;
* every other interpreter (``subprocess``, ``os.exec*``, loky workers):
  ``LOGFUNNEL_CONTEXT`` in the environment, which a block keeps up to date
  while it is active and ``bootstrap`` reads when the process joins.  The
  environment is one per process: with threads in different blocks at once, a
  subprocess gets the fields of the block most recently entered or left.

For tasks handed to a pool created outside the block, ``carry(fn)`` captures
the fields as plain data in a picklable callable that re-enters them around
the call in the worker.

Who owns what: ``CURRENT`` is per thread and task (contextvars); the
environment variable belongs to the process, written only by ``_publish``.
This module is imported by every process that joins a funnel (``bootstrap``
enters the fields of ``LOGFUNNEL_CONTEXT``), so it imports only ``os``,
``sys``, ``math``, ``contextvars`` and ``fields`` at start-up: no ``json``, no
``typing``, not even ``logging`` (see ``_reserved``).  Its two flags
(``_patched``, ``carried_in``) are process-wide state kept here rather than in
``_state``: a forked child keeps both as they are (the patch is in its copy of
multiprocessing too); ``fields.in_use`` likewise.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys

from logfunnel._core import fields as _fields
from logfunnel._core import options as _options

# Defined in ``fields`` (the route's side); re-exported where ``logfunnel.context`` lives,
# for the code that reads a record's context fields (the sinks, tests and benchmarks).
from logfunnel._core.fields import CONTEXT_ATTR as CONTEXT_ATTR  # noqa: PLC0414 - re-export
from logfunnel._core.fields import CURRENT as CURRENT  # noqa: PLC0414 - re-export
from logfunnel._core.fields import attach as attach  # noqa: PLC0414 - re-export

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final, TypeVar

    from typing_extensions import Self

    from logfunnel._core.fields import Fields

    F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable that carries the fields into exec'd interpreters.
ENV_CONTEXT: Final = "LOGFUNNEL_CONTEXT"
#: The key of multiprocessing's preparation data that carries them into spawn
#: and forkserver children.
_PREP_KEY: Final = "logfunnel_context"
#: Longest text value a context field may have (every record carries it).
MAX_TEXT: Final = 1000

_SCALARS: Final = (str, int, float, bool, type(None))
_INT_MIN: Final = -(2**63)  # the ints msgpack encodes, as _plain.INT64_MIN and UINT64_MAX
_INT_MAX: Final = 2**64 - 1
_reserved_names: list[frozenset[str]] = []


def _reserved() -> frozenset[str]:
    """Return the names a field cannot take, computed on first use.

    A LogRecord attribute would never be set (a record keeps what it has),
    and the writer drops extras named like one.  Not at import: this module
    must not import ``logging`` (through ``_plain``) while it is being
    imported, because the start-up hook joins when ``logging`` is first
    imported, and joining imports ``bootstrap``, which needs this module -- a
    spawn child can import this module first (``_enter_carried``).
    """
    if not _reserved_names:
        import logging  # noqa: PLC0415 - see above

        from logfunnel._core.plain import STANDARD_ATTRS  # noqa: PLC0415

        names = STANDARD_ATTRS | frozenset(dir(logging.LogRecord)) | {CONTEXT_ATTR}
        _reserved_names.append(names)
    return _reserved_names[0]


def check(fields: dict[str, Any]) -> None:
    """Raise ``TypeError`` or ``ValueError`` saying what to change if ``fields`` cannot travel."""
    reserved = _reserved()
    for key, value in fields.items():
        if type(key) is not str or not key.isidentifier():
            msg = f"context field name {key!r}: use a Python identifier, e.g. job or shard_id"
            raise ValueError(msg)
        if key in reserved:
            msg = (
                f"context field {key!r} is a LogRecord attribute (or logfunnel's own): "
                f"choose another name, e.g. {key}_ or ctx_{key}"
            )
            raise ValueError(msg)
        kind = type(value)
        if kind not in _SCALARS:
            msg = (
                f"context field {key}={_short_repr(value)}: values must be str, int, float, "
                f"bool or None (they travel to other processes as plain data); "
                f"got a {kind.__name__}: pass str(value) or a number"
            )
            raise TypeError(msg)
        if kind is float and not math.isfinite(value):
            msg = f"context field {key}={value!r}: JSON has no form for it; pass a finite number"
            raise ValueError(msg)
        if kind is int and not _INT_MIN <= value <= _INT_MAX:
            msg = f"context field {key!r}: an int outside 64 bits; pass str(value)"
            raise ValueError(msg)
        if kind is str and len(value) > MAX_TEXT:
            msg = (
                f"context field {key!r} is {len(value):,} characters long: every record "
                f"carries it, keep it under {MAX_TEXT:,}"
            )
            raise ValueError(msg)


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


class context:  # noqa: N801 - used like a function: `with logfunnel.context(job=...)`
    """Add fields to every record logged inside: ``with context(job="nightly", shard=3): ...``.

    Nestable (inner values win, leaving a block restores the outer ones);
    each thread and asyncio task has its own.  Also a decorator: ``@context(job="x")``
    enters the fields around every call of the function (coroutine functions
    too).  Values must be str, int, float, bool or None; anything else is
    refused here, with a message.  Processes started inside the block
    inherit the fields (see the module doc); ``carry`` takes them along to
    pool tasks.
    """

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: str | float | bool | None) -> None:
        """Check the fields; they are entered by ``with`` or around a decorated call."""
        check(fields)
        self._fields = fields
        # One token per active ``with`` of this object (it may be nested in itself).
        self._tokens: list[contextvars.Token[Fields | None]] = []

    def __enter__(self) -> Self:
        """Enter the fields, merged over the current ones."""
        self._tokens.append(_enter(self._fields))
        return self

    def __exit__(self, *exc: object) -> None:
        """Restore the fields as they were before ``__enter__``."""
        _leave(self._tokens.pop())

    def __call__(self, func: F) -> F:
        """Decorate ``func``: every call runs inside these fields."""
        import functools  # noqa: PLC0415 - decorating is rare; joining must stay cheap
        import inspect  # noqa: PLC0415

        fields = self._fields
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _enter(fields)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _leave(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _enter(fields)
            try:
                return func(*args, **kwargs)
            finally:
                _leave(token)

        return run  # type: ignore[return-value]

    def __repr__(self) -> str:
        """Show the fields."""
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"logfunnel.context({inner})"


def current() -> Fields:
    """Return a copy of the fields active here (empty outside any block)."""
    fields = CURRENT.get()
    return dict(fields) if fields else {}


def _enter(fields: Fields) -> contextvars.Token[Fields | None]:
    outer = CURRENT.get()
    merged = {**outer, **fields} if outer else dict(fields)
    token = CURRENT.set(merged or None)
    _publish(merged)
    if not _fields.in_use:
        _use()
    if not _patched:
        _patch_multiprocessing()
    return token


def _use() -> None:
    """Make sure the route runs in this process, funnel or not (first block only)."""
    _fields.in_use = True
    # Not at the top: the route imports logging, which this module must not at start-up
    # (see ``_reserved``).  The route imports ``fields``, never this module.
    from logfunnel._core import route as _route  # noqa: PLC0415

    _route.keep_for_context()


def _leave(token: contextvars.Token[Fields | None]) -> None:
    CURRENT.reset(token)
    _publish(CURRENT.get())


# -- travelling ---------------------------------------------------------------------


class carry:  # noqa: N801 - used like a function: `pool.submit(logfunnel.carry(fn), x)`
    """``fn`` with the fields active where ``carry(fn)`` is called, picklable for any pool.

    ``pool.submit(logfunnel.carry(work), item)``, ``pool.map(logfunnel.carry(work),
    items)``, ``delayed(logfunnel.carry(work))(item)`` with joblib: the fields
    are captured now, as plain data, and entered around each call in the
    worker (replacing whatever the worker has meanwhile), then left.
    Picklable whenever ``fn`` is (a module-level function).

    Captured from the calling thread's blocks; in a thread that is in none,
    from the block most recently entered or left in this process (what a
    ``subprocess`` started now gets, ``LOGFUNNEL_CONTEXT``).  That second rule
    is joblib's: ``Parallel`` evaluates the first items of the generator in
    the calling thread and the rest in the thread that collects results
    (``pre_dispatch``, auto-batching), whose context is empty, so
    ``delayed(carry(work))(i) for i in items`` lost the fields of every
    task dispatched from there.
    """

    __slots__ = ("fields", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        """Capture the fields active here (or, in no block here, the process's) for ``fn``."""
        self.fn = fn
        self.fields: Fields | None = current() or _published()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` inside the captured fields."""
        token = CURRENT.set(self.fields)
        _publish(self.fields)
        if not _fields.in_use and self.fields:
            _use()
        try:
            return self.fn(*args, **kwargs)
        finally:
            _leave(token)

    def __getstate__(self) -> tuple[Callable[..., Any], Fields | None]:
        """Pickle as the function and plain data."""
        return self.fn, self.fields

    def __setstate__(self, state: tuple[Callable[..., Any], Fields | None]) -> None:
        """Unpickle, checking the fields as ``context()`` does."""
        fn, fields = state
        if fields:
            check(fields)
        self.fn, self.fields = fn, fields

    def __repr__(self) -> str:
        """Show the function and the fields."""
        return f"logfunnel.carry({self.fn!r}, fields={self.fields!r})"


def _published() -> Fields | None:
    """Return the fields ``_publish`` last put in the environment (or the parent did)."""
    text = os.environ.get(ENV_CONTEXT)
    return decode(text) if text else None


def _publish(fields: Fields | None) -> None:
    """Keep ``LOGFUNNEL_CONTEXT`` equal to ``fields`` (only when it changes: putenv is global)."""
    text = encode(fields) if fields else None
    if os.environ.get(ENV_CONTEXT) != text:
        if text is None:
            os.environ.pop(ENV_CONTEXT, None)
        else:
            os.environ[ENV_CONTEXT] = text


#: True once multiprocessing's preparation data carries the fields (or it never can).
_patched = False
#: True once this process's fields were set by its starter's preparation data:
#: the environment (the starter's process-wide view) is then not read at join.
carried_in = False


def _patch_multiprocessing() -> None:
    """Make spawn and forkserver children enter the starting thread's fields.

    Done on the first block of a process that has imported ``multiprocessing``
    (a program that imports it inside the block gets the environment's
    fields, which are the same unless threads are in different blocks).
    """
    global _patched  # noqa: PLW0603 - once per process
    if "multiprocessing" not in sys.modules:
        return
    _patched = True
    try:
        from multiprocessing import spawn  # noqa: PLC0415
    except ImportError:  # pragma: no cover - an interpreter without multiprocessing
        return
    original = spawn.get_preparation_data
    if getattr(original, "__logfunnel__", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        fields = CURRENT.get()
        # Without fields here, only to override another thread's in the environment.
        if fields is not None or ENV_CONTEXT in os.environ:
            data[_PREP_KEY] = _Entering(fields)
        return data

    get_preparation_data.__doc__ = original.__doc__
    get_preparation_data.__wrapped__ = original  # type: ignore[attr-defined]
    get_preparation_data.__logfunnel__ = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


class _Entering:
    """In multiprocessing's preparation data: unpickled in the child, it enters the fields.

    ``spawn.prepare()`` ignores keys it does not know; unpickling the data,
    before the child's main module is imported, is what runs ``_enter_carried``.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Fields | None) -> None:
        self.fields = fields

    def __reduce__(self) -> tuple[Callable[..., None], tuple[str]]:
        return _enter_carried, (encode(self.fields) if self.fields else "",)


def _enter_carried(text: str) -> None:
    """In a spawn or forkserver child: take the starting thread's fields as this process's."""
    global carried_in  # noqa: PLW0603 - set once, at start-up
    fields = decode(text) if text else None
    CURRENT.set(fields)
    _publish(fields)
    carried_in = True
    if fields and not _fields.in_use:
        _use()


def join_from_environment() -> None:
    """At join (``bootstrap``): enter the fields of ``LOGFUNNEL_CONTEXT``, unless carried in."""
    text = os.environ.get(ENV_CONTEXT)
    if text and not carried_in and CURRENT.get() is None:
        fields = decode(text)
        if fields:
            CURRENT.set(fields)


# -- the environment's form ---------------------------------------------------------
# LOGFUNNEL_OPTIONS's (``options.encode_env``), for the same reason: json costs ~1 ms
# to import in a joining process.

def encode(fields: Fields) -> str:
    """Return ``fields`` as ``LOGFUNNEL_CONTEXT`` carries them."""
    return _options.encode_env(dict(fields))


def decode(text: str) -> Fields | None:
    """Parse ``LOGFUNNEL_CONTEXT``; None if it is malformed (a process must still start)."""
    try:
        values = _options.decode_env(text)
    except ValueError:
        return None
    reserved = _reserved()
    for name, value in values.items():
        if not name.isidentifier() or name in reserved or isinstance(value, dict):
            return None
    return values or None
