"""Sinks the writer owns: the file sinks ``install()`` builds, and how they are built.

A sink is a ``logging.Handler``; one the writer can hand rendered lines to,
and flush once per batch, implements ``logfunnel._core.sink.LineSink``.
"""
