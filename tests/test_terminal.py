"""The terminal the console sink writes: whether to colour it (NO_COLOR, FORCE_COLOR, TERM).

Writing above live tqdm and rich bars is tested in a real terminal by
``test_console.py``.
"""

from __future__ import annotations

from logfunnel.sinks import terminal


def test_colour_rules() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), object()
    assert terminal.colour_wanted(tty, {})
    assert not terminal.colour_wanted(pipe, {})
    assert not terminal.colour_wanted(tty, {"NO_COLOR": "1"})
    assert terminal.colour_wanted(tty, {"NO_COLOR": ""})
    assert terminal.colour_wanted(pipe, {"FORCE_COLOR": "0"})  # any non-empty value forces
    assert not terminal.colour_wanted(pipe, {"FORCE_COLOR": ""})
    assert not terminal.colour_wanted(tty, {"TERM": "dumb"})
    assert terminal.colour_wanted(tty, {"TERM": "dumb", "FORCE_COLOR": "1"})
    assert not terminal.colour_wanted(None, {})
