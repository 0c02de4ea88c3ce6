"""The sinks install() asks for, built from ``FileOptions``: files, JSON lines, the console.

Above every sink module (``files``, ``rotating``, ``console``), so none of
them imports another's builder.  Who owns what: nothing is held here; the
handlers built belong to the caller (the installing ``Funnel``, or a writer
process).
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from logfunnel._core.formatters import DEFAULT_FORMAT, JsonFormatter, LineFormatter
from logfunnel.sinks.files import FileSink
from logfunnel.sinks.options import FileOptions
from logfunnel.sinks.rotating import RotatingFileSink

__all__ = ["DEFAULT_FORMAT", "build_handlers", "configure_writer_process"]


def build_handlers(options: FileOptions) -> list[logging.Handler]:
    """Build the handlers ``install(file=..., json=..., console=...)`` asks for.

    Raises ``ValueError`` or ``OSError`` with a message that says what to change.
    """
    handlers: list[logging.Handler] = []
    formatter: logging.Formatter
    if options.json:
        formatter = JsonFormatter()
    else:
        try:
            formatter = LineFormatter(options.fmt or DEFAULT_FORMAT, options.datefmt)
        except ValueError as exc:
            msg = f"fmt={options.fmt!r} is not a valid %-style format: {exc}"
            raise ValueError(msg) from None
    if options.file:
        path = os.path.abspath(options.file)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            msg = f"file={options.file!r}: directory {directory!r} does not exist; create it first"
            raise ValueError(msg)
        if not os.access(directory, os.W_OK):
            msg = f"file={options.file!r}: directory {directory!r} is not writable"
            raise ValueError(msg)
        file_handler: FileSink
        if options.rotates:
            file_handler = RotatingFileSink(path, options)
        else:  # errors: lone surrogates stay visible, never raise
            file_handler = FileSink(path, encoding="utf-8", errors="backslashreplace")
            file_handler.watch = options.watch
        handlers.append(file_handler)
    if options.console or not options.file:
        # Coloured, and written around the installer's progress bars (see its docstring);
        # imported only by a funnel that has a console.
        from logfunnel.sinks.console import ConsoleSink  # noqa: PLC0415

        handlers.append(ConsoleSink())
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers


def configure_writer_process(
    options: FileOptions, config: dict[str, Any] | None
) -> list[logging.Handler] | None:
    """Set up a writer process from ``install()``'s options; return its sinks, if it builds them.

    With ``config=`` (a ``logging.config.dictConfig`` dict) the writer
    process's logger tree is configured with it and the writer hands records
    to that tree (None is returned).  Otherwise the handlers
    ``build_handlers`` makes are returned, for ``Writer(sinks=...)``; they are
    put on no logger.
    """
    if config is None:
        return build_handlers(options)
    # Levels are applied where records are made (the installing process and
    # every child): the writer passes on all it gets unless the configuration
    # itself sets levels.
    logging.getLogger().setLevel(logging.NOTSET)
    logging.config.dictConfig(config)
    return None
