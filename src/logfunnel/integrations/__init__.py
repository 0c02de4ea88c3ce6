"""Integrations: logfunnel where users run it (pytest, Celery, Dask, ...).

Each integration is a module of its own that imports its engine (``pytest``,
``celery``, ...) lazily or only when the engine itself loads it, so that
installing logfunnel costs nothing to a program that does not use the engine.
The dependency points one way: an integration uses ``logfunnel`` and its core;
the core (``logfunnel._core``) and ``install()`` never import an integration.
"""
