"""The record's path, and nothing else: self-contained, it imports nothing from outside ``_core``.

In the order a record travels (the data-flow diagram is in ``writer``):

* sending side: ``route`` (the program's ``Logger.callHandlers`` also delivers
  to the funnel) -> ``handler`` (this process's attachment) -> ``connection``
  (the socket, backpressure, fallback);
* codec, no pickle: ``plain`` (any value made plain) -> ``encoder`` (records to
  frames) -> ``frame_reader`` -> ``protocol`` (the frames and their decoding),
  all reached through ``wire``;
* writer: ``listeners`` + ``gate`` (accept, TLS, token) -> ``peers`` (read,
  cut into frames) -> ``dispatch`` + ``calls`` (to the sinks or the logger
  tree, found by ``names``, each call guarded) -> ``sink`` (the protocol sinks
  implement);
  ``writer`` is the loop that ties them;
* joining: ``hook`` and ``bootstrap`` (new interpreters), ``fork`` (forked
  children), ``levels`` (levels through a file), ``rundir`` (the private
  directory), ``options`` (what crosses into a child);
* ``state``: every piece of process-wide mutable state, and the one reset a
  forked child runs.
"""
