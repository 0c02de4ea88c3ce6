"""A benchmark's own section of a page: ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``.

Each benchmark script that is not ``run.py`` writes its results between its own
markers, so that it can rewrite them without touching the rest of the page
(``run.py`` keeps every such section when it rewrites docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """Return the begin and end markers of section ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write(out: Path | str, section: str) -> None:
    """Put ``section`` (which starts and ends with its markers) into the page at ``out``.

    An older copy between the same markers is replaced in place; a page without
    them gets the section at its end.
    """
    begin, end = section.split("\n", 1)[0], section.rstrip("\n").rsplit("\n", 1)[-1]
    path = Path(out)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + section.rstrip("\n") + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8")
