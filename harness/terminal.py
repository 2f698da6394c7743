"""Printing rich tables to a terminal or a pipe, one row a line (`harness list`, `harness data list`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(table: Table, out: Console, droppable: tuple = ()) -> None:
    """Print a table with every row on one line. Piped or redirected (not a terminal), at its full
    width: nothing wrapped or cut, for grep and a reader at any width. At a terminal too narrow for it,
    the `droppable` columns (headers, least needed first) are left out until it fits, then the widest
    cells are cut with an ellipsis; cells wrapped over lines made every row five lines high."""
    if not out.is_terminal:
        Console(file=out.file, width=10_000, color_system=None).print(table)
        return
    columns = list(table.columns)
    widths = {c.header: max(cell_width(c.header), *map(cell_width, c.cells)) for c in columns}

    def room():  # the width the cells may take: rich draws 3 characters per column and 1 more
        return out.width - 3 * len(columns) - 1
    for header in droppable:
        if sum(widths[c.header] for c in columns) <= room():
            break
        columns = [c for c in columns if c.header != header]
    while sum(widths[c.header] for c in columns) > room():  # cut the widest, keeping 12 characters
        widest = max(columns, key=lambda c: widths[c.header])
        if widths[widest.header] <= 12:
            break
        widths[widest.header] -= 1
    cut = Table(title=table.title, caption=table.caption)
    for c in columns:
        cut.add_column(c.header, justify=c.justify, no_wrap=True, overflow="ellipsis", width=widths[c.header])
    for row in zip(*(c.cells for c in columns)):
        cut.add_row(*row)
    out.print(cut)


def cell_width(cell) -> int:
    """The width a table cell (console markup, or a rich Text) takes on the screen."""
    from rich.text import Text
    return (cell if isinstance(cell, Text) else Text.from_markup(str(cell))).cell_len
