"""Sinks the writer owns: the file sinks ``install()`` builds, and how they are built.

A sink is a ``logging.Handler``; one the writer can hand rendered lines to,
and flush once per batch, implements ``logfunnel._core.sink.LineSink``.

The file sink and its strategies: ``options`` (``FileOptions``, what they are
built from), ``build`` (``build_handlers``: every sink install() asks for),
``files`` (``FileSink``), ``rotating``
(``RotatingFileSink``), and the strategies it asks: ``rotation`` (when, and
which name), ``retention`` (what to delete), ``compress`` (gzip off the
writer's loop).  Each module says at its top who owns what.
"""
