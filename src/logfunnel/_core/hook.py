"""The start-up hook's first step: join the funnel when ``logging`` is first imported.

``logfunnel-hook.pth`` runs this in every interpreter that starts while
``LOGFUNNEL_ADDRESS`` is set (spawn and forkserver children, ``subprocess``
Python children, joblib/loky workers).  Joining at start-up would cost every
such interpreter the import of ``logging`` and of our modules, even one that
never logs.  A record can only be made once ``logging`` is imported, so we wait
for that: a finder first in ``sys.meta_path`` notices the import of
``logging``, lets the usual finders find it, and joins right after the module
has run, before the importing code gets it back.  An interpreter that never
imports ``logging`` pays for one string comparison per import.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any


def arm() -> None:
    """Join now if ``logging`` is already imported, else when it is."""
    if "logging" in sys.modules:
        _join()
    elif not any(isinstance(f, _LoggingImportWatch) for f in sys.meta_path):
        sys.meta_path.insert(0, _LoggingImportWatch())


def _join() -> None:
    try:
        from logfunnel._core import bootstrap as _bootstrap  # noqa: PLC0415 - the point: only once logging is in

        _bootstrap.join_from_environment()
    except Exception as exc:  # a start-up hook must never stop an interpreter
        sys.stderr.write(f"logfunnel: could not join the funnel: {exc!r}\n")


class _LoggingImportWatch:
    """A meta-path finder that finds nothing, but wraps the loader of ``logging``."""

    def find_spec(
        self, name: str, path: Any = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Return the spec of ``logging`` with a loader that joins after it has run."""
        if name != "logging":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once is enough
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = (
                find_spec(name, path, target) if find_spec is not None else None
            )
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _JoinAfter(spec.loader)  # type: ignore[assignment]
                return spec
        return None


class _JoinAfter:
    """The real loader of ``logging``, joining the funnel once the module has run."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        """Create the module as the real loader would."""
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Run the module with the real loader, then join the funnel."""
        # Put the real loader back first: inspect, importlib.resources and
        # pkgutil read it from the module and must never see this wrapper.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _join()

    def __getattr__(self, name: str) -> Any:
        """Answer for the real loader (``get_source``, ``get_resource_reader``, ...)."""
        return getattr(self._loader, name)
