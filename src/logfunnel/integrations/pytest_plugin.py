"""The pytest plugin: ``caplog`` sees the records of a test's child processes.

Opt-in (``--logfunnel`` on the command line, or ``logfunnel = true`` in the
ini file): pytest loads this module in every run of an environment where
logfunnel is installed (entry point ``pytest11``), so without the option it
only declares the option and the ini key -- it imports nothing of logfunnel
and installs nothing, and a run's output is what it is without logfunnel.

Why it is needed (pytest #3037, #12116): ``caplog`` is a handler on the root
logger of the pytest process.  A record a test's child process logs never
reaches it -- a spawn or forkserver child, or a ``subprocess`` running Python,
has no such handler, and a forked child logs into its own copy of it.  With
the plugin, each pytest process that runs tests installs a funnel in adopt
mode at ``pytest_configure``: every child of that process joins it by itself
(the start-up hook, the at-fork hook), and the writer hands each child's
record to this process's logger tree as if it had been logged here, so the
caplog handler of the test running at the time gets it.

How a run is laid out::

    pytest                        one funnel (adopt mode), this process's tree
    pytest -n 2 (xdist)           controller: none (it runs no test);
                                  each worker (an execnet ``popen`` child): its own
    logfunnel run [--file F] -m pytest
                                  run's funnel is already installed in this process:
                                  used as it is (with --file its children's records
                                  go to F, not to caplog: the writer hands records
                                  to install()'s sinks or to the tree, not both)
    logfunnel run --file F -m pytest -n 2
                                  each worker joined run's funnel through the
                                  environment (execnet's ``popen`` passes it on), and
                                  installs its own for its tests' children: a
                                  ``FunnelHandler`` on its root also sends what its
                                  writer hands to its tree on to F

Timing: a child's record reaches the writer when the child's logging call
returns, and the tree a moment later, in the writer thread.  A test asserts
on ``caplog`` after ``funnel.flush()`` (the ``funnel`` fixture): a barrier
across every process.  The plugin also flushes at the end of each test phase
(setup, call, teardown), inside pytest's own capture of that phase, so a
child's record lands in the phase's "Captured log" report section and never in
the next test's ``caplog``.

Levels: ``caplog.set_level()`` and ``--log-level`` call ``Logger.setLevel``,
which the funnel writes to its levels file (``_core/levels``): a child started
afterwards logs at that level; a forked child has it anyway.

Teardown: the plugin's own funnel is shut down at ``pytest_unconfigure``
(``trylast``, after the other plugins' unconfigure, before pytest stops
capturing the descriptors, which is a ``config`` cleanup run after every
``pytest_unconfigure``).  The writer thread only reads its sockets and calls
the tree's handlers, so pytest's capture of file descriptors 1 and 2 does not
touch it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from logfunnel import Funnel, FunnelHandler

_FLUSH_TIMEOUT = 10.0  # seconds a phase waits for its children's records (a barrier, not a sleep)
_PLUGIN_NAME = "logfunnel-funnel"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare ``--logfunnel`` and the ``logfunnel`` ini key (the plugin is off without them)."""
    group = parser.getgroup("logfunnel", "logfunnel: child processes' records in caplog")
    group.addoption(
        "--logfunnel",
        action="store_true",
        default=None,
        help="install a logfunnel funnel for the run: caplog sees the records of child "
        "processes (spawn, forkserver, fork, subprocess); gives the `funnel` fixture",
    )
    parser.addini(
        "logfunnel",
        type="bool",
        default=False,
        help="as --logfunnel (true/false; `-o logfunnel=false` turns it off for one run)",
    )


def _enabled(config: pytest.Config) -> bool:
    option = config.getoption("logfunnel")
    return bool(option) if option is not None else bool(config.getini("logfunnel"))


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Tell whether this process hands tests to xdist workers and runs none itself."""
    if hasattr(config, "workerinput"):  # an xdist worker: it runs tests
        return False
    return getattr(config.option, "dist", "no") != "no"


def pytest_report_header(config: pytest.Config) -> str | None:
    """Under xdist, say where the funnels are (a worker's header is not shown)."""
    if _enabled(config) and _is_xdist_controller(config):
        return "logfunnel: one funnel per xdist worker, for the children of its tests"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Install the funnel for this run, if asked for and if this process runs tests."""
    if not _enabled(config) or _is_xdist_controller(config):
        return
    config.pluginmanager.register(_FunnelPlugin.start(), _PLUGIN_NAME)


class _FunnelPlugin:
    """The run's funnel, the ``funnel`` fixture, and the flush at the end of each phase."""

    def __init__(self, funnel: Funnel, *, owned: bool, chain: FunnelHandler | None) -> None:
        self.funnel = funnel
        self.owned = owned  # installed here: shut down at unconfigure
        self.chain = chain

    @classmethod
    def start(cls) -> _FunnelPlugin:
        """Install a funnel in adopt mode, or use the one already installed in this process."""
        import logging  # noqa: PLC0415 - only when the plugin is on

        import logfunnel  # noqa: PLC0415
        from logfunnel._core import handler as _handler  # noqa: PLC0415
        from logfunnel._core.options import ENV_OPTIONS, every_record_from_env  # noqa: PLC0415

        existing = logfunnel.current()
        if existing is not None and existing.owner:
            # `logfunnel run -m pytest`, or a conftest that installed at import:
            # that funnel serves the run, and its owner shuts it down.
            return cls(existing, owned=False, chain=None)
        # An xdist worker under `logfunnel run --file F` joined that funnel
        # through the environment (execnet's popen gateway passes it on) and
        # sends every record there: its own records still do after install(),
        # which keeps this attachment.  Its children's records come to the
        # funnel installed here, whose writer hands them to this tree; a
        # FunnelHandler on the root sends them on to F as well.
        import os  # noqa: PLC0415

        upstream = _handler.attached_address() is not None and every_record_from_env(
            os.environ.get(ENV_OPTIONS)
        )
        funnel = logfunnel.install()
        chain = None
        if upstream:
            chain = logfunnel.FunnelHandler()
            logging.getLogger().addHandler(chain)
        return cls(funnel, owned=True, chain=chain)

    # Function scope: pytest 9 deprecates session-scoped fixtures that are methods,
    # and a module-level fixture would be there even with the plugin off.
    @pytest.fixture(name="funnel")
    def funnel_fixture(self) -> Funnel:
        """Return the run's ``Funnel``: call ``funnel.flush()`` before asserting on ``caplog``.

        ``flush()`` returns True once every record any process logged before
        the call has been handed to this process's handlers (``caplog``'s too).
        """
        return self.funnel

    def pytest_report_header(self) -> str:
        """Say that the run's child processes log into caplog, and through which funnel."""
        mode = "adopt mode: child processes' records reach caplog"
        if getattr(self.funnel.options, "every_record", False):
            # install()'s own sinks (`logfunnel run --file F`): the writer hands
            # records to them, not to this tree as well.
            mode = "installed before pytest with its own sinks: child processes' records go "
            mode += "there, not to caplog"
        elif not self.owned:
            mode = "installed before pytest, adopt mode: child processes' records reach caplog"
        return f"logfunnel: {self.funnel.address} ({mode})"

    def _phase(self) -> Generator[None, None, None]:
        try:
            yield
        except RuntimeError as exc:
            self._explain(exc)
            raise
        finally:
            # Inside pytest's capture of this phase (this wrapper is the innermost:
            # trylast): a child's records reach this phase's caplog and report.
            self.funnel.flush(_FLUSH_TIMEOUT)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_setup(self) -> Generator[None, None, None]:
        """Run the setup phase, then wait for the records its children logged."""
        yield from self._phase()

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self) -> Generator[None, None, None]:
        """Run the test, then wait for the records its children logged."""
        yield from self._phase()

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self) -> Generator[None, None, None]:
        """Run the teardown phase, then wait for the records its children logged."""
        yield from self._phase()

    def _explain(self, exc: RuntimeError) -> None:
        """Say why a test's own ``install()`` raised: the plugin holds this process's funnel."""
        from logfunnel import _funnel  # noqa: PLC0415

        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None or tb.tb_frame.f_code is not _funnel.install.__code__:
            return
        note = (
            "logfunnel's pytest plugin (--logfunnel, or `logfunnel = true` in the ini file) "
            "installed this process's funnel for the whole run: use the `funnel` fixture "
            "rather than install(), or run this test without the plugin (-o logfunnel=false)"
        )
        if sys.version_info >= (3, 11):
            exc.add_note(note)
        else:  # no notes before 3.11: say it in the message
            exc.args = (f"{exc.args[0] if exc.args else ''}\n{note}", *exc.args[1:])

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        """Shut the funnel down if the plugin installed it: write what is left, undo install()."""
        if self.chain is not None:
            import logging  # noqa: PLC0415

            logging.getLogger().removeHandler(self.chain)
        if self.owned:
            self.funnel.shutdown()
