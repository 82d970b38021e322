"""Plain-text tables for benchmark output (hand-written: a dozen lines, not worth a dependency)."""

from __future__ import annotations

from collections.abc import Sequence


def fmt(value: object, digits: int = 2) -> str:
    """Numbers with ``digits`` decimals, None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-Markdown table (also readable as plain text)."""
    cells = [[fmt(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)
