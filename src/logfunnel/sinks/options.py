"""``FileOptions``: the typed options of the sinks ``install()`` builds.

Who owns what: ``_settings.Settings.file_options()`` makes one from checked
``install()`` arguments (every check lives in ``_settings``); a writer process
gets it as plain values in its CONFIG frame (``to_plain``) and makes it again
(``from_plain``, which only re-checks types: the values were checked where
they were given).  Immutable; ``build.build_handlers`` reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["FileOptions"]


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """What the file, JSON and console sinks are built from."""

    file: str | None = None
    fmt: str | None = None
    datefmt: str | None = None
    json: bool = False
    console: bool = False
    #: Rotate at this size (0: not by size).
    max_bytes: int = 0
    #: Rotate by time: one of ``rotation.WHENS`` (None: not by time).
    when: str | None = None
    interval: int = 1
    utc: bool = False
    #: Rotated files to keep (0: any number).
    backups: int = 0
    #: Delete rotated files older than this many seconds (None: any age).
    max_age: float | None = None
    #: ``"gzip"``: compress rotated files in a worker thread (None: leave them plain).
    compress: str | None = None
    #: Reopen the file when something else moved or removed it (logrotate).
    watch: bool = False

    @property
    def rotates(self) -> bool:
        """Tell whether the file sink is a rotating one (``max_bytes`` or ``when`` given)."""
        return bool(self.file) and (self.when is not None or self.max_bytes > 0)

    @property
    def size_limit(self) -> int:
        """Return the size the file rotates at (0: never by size).

        With size-only rotation and nothing kept (``backups=0``, no
        ``max_age``), never: as ``RotatingFileHandler`` with ``backupCount=0``.
        """
        if self.when is None and not self.backups and self.max_age is None:
            return 0
        return self.max_bytes

    def to_plain(self) -> dict[str, object]:
        """Return the options as plain values (what crosses to a writer process)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_plain(cls, values: Mapping[str, object]) -> FileOptions:
        """Make the options again from ``to_plain``'s values; raise ``ValueError`` if mistyped."""
        kwargs: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name not in values:
                continue
            value = values[field.name]
            want = _TYPES[field.name]
            if isinstance(value, int) and not isinstance(value, bool) and float in want:
                value = float(value)
            if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
                msg = f"sink option {field.name}={value!r}: not a {field.type}"
                raise ValueError(msg)
            kwargs[field.name] = value
        return cls(**kwargs)  # type: ignore[arg-type]


_NONE = type(None)
_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str, _NONE),
    "fmt": (str, _NONE),
    "datefmt": (str, _NONE),
    "json": (bool,),
    "console": (bool,),
    "max_bytes": (int,),
    "when": (str, _NONE),
    "interval": (int,),
    "utc": (bool,),
    "backups": (int,),
    "max_age": (float, _NONE),
    "compress": (str, _NONE),
    "watch": (bool,),
}
