"""Markdown tables for stats.md, report.md and the model card (pandas' to_markdown needs `tabulate`)."""

from __future__ import annotations

import pandas as pd


def markdown_table(frame: pd.DataFrame, floatfmt: str = "{:.3f}", index: bool = False) -> str:
    """A GitHub-flavoured markdown table; floats formatted with `floatfmt`, everything else with str()."""
    cells = (frame.reset_index() if index else frame).map(
        lambda v: floatfmt.format(v) if isinstance(v, float) else str(v)
    )
    rows = [list(map(str, cells.columns)), ["---"] * len(cells.columns), *cells.to_numpy().tolist()]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in rows)
