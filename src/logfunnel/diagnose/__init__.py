"""Diagnosis, off the record's path: nothing here runs while records flow.

Thread stacks of every process and the hang watchdog (``stacks``), ``repro``
and the article's programs (``seed_programs``), and ``demo``.
"""
