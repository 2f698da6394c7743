"""Tables as the harness writes them: a Table of Cells (numbers in display units with their stderr,
or text; bold and footnote marks) and its renderers, markdown, LaTeX (a booktabs fragment) and CSV.
The paper's layouts (harness.results.tables) and the study's report build Tables and write them
through these renderers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass
class Cell:
    """One cell: a number in display units (with stderr), or text; bold and a footnote mark."""
    value: float | None = None
    stderr: float | None = None
    text: str | None = None
    bold: bool = False
    mark: str = ""
    signed: bool = False  # a delta: always show the sign
    digits: int = 2
    suffix: str = ""  # a footnote mark that does not keep the cell from being bold (e.g. § for --limit)
    limit: int | frozenset | None = None  # its --limit (an Avg: its cells'); bold compares like with like
    count: bool = False  # a size (parameters, tokens): shown as 341M, written whole in CSV
    percent: bool = False  # a fraction shown x100: CSV drops the multiplication's float noise (_csv_number)


@dataclass
class Table:
    title: str
    header: list[str]
    latex_header: list[str]
    groups: list[tuple[str, list[list[Cell]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def text_cell(text: str) -> Cell:
    return Cell(text=text)


def number_text(cell: Cell, pm: str = " ± ") -> str:
    if cell.text is not None:
        return cell.text
    if cell.value is None:
        return ""
    if cell.count:
        return human(cell.value)
    if isinstance(cell.value, float) and math.isnan(cell.value):
        return "nan"
    text = f"{cell.value:+.{cell.digits}f}" if cell.signed else f"{cell.value:.{cell.digits}f}"
    if cell.stderr is not None and not (isinstance(cell.stderr, float) and math.isnan(cell.stderr)):
        text += f"{pm}{cell.stderr:.{cell.digits}f}"
    return text


SCIENTIFIC_ABOVE = 1e6  # where a command's own printout turns to e-notation (1.15e+09 ± 8.51e+09)


def readable_numbers(table: Table, above: float = SCIENTIFIC_ABOVE) -> Table:
    """The table with its numbers of magnitude `above` or more (value or stderr; sizes aside, which
    `human` shortens) in scientific notation, for what `harness run` and `harness eval` print: an
    untrained model's perplexity of 1147066370.04 ± 8513897337.86 is unreadable. The tables of `harness
    tables`, and so the committed ones, keep their fixed decimals."""
    def readable(cell: Cell) -> Cell:
        big = [x for x in (cell.value, cell.stderr) if isinstance(x, (int, float)) and math.isfinite(x)]
        if cell.text is not None or cell.count or not any(abs(x) >= above for x in big):
            return cell
        sign = "+" if cell.signed else ""
        text = f"{cell.value:{sign}.2e}"
        if cell.stderr is not None and not math.isnan(cell.stderr):
            text += f" ± {cell.stderr:.2e}"
        return replace(cell, text=text)
    groups = [(label, [[readable(c) for c in row] for row in rows]) for label, rows in table.groups]
    return replace(table, groups=groups)


# ---------------------------------------------------------------- renderers

def to_markdown(table: Table) -> str:
    width = len(table.header)
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * width]
    for label, rows in table.groups:
        if label:
            lines.append(f"| *{label}* |" + " |" * (width - 1))
        for row in rows:
            cells = []
            for c in row:
                text = number_text(c).replace("|", "\\|")
                if c.bold and text:
                    text = f"**{text}**"
                cells.append(text + c.mark + c.suffix)
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"{note}  " for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
                  "↓": r"$\downarrow$", "↑": r"$\uparrow$", "·": r"$\cdot$", "§": r"\textsuperscript{\S}",
                  "¶": r"\textsuperscript{\P}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A tabular fragment (booktabs rules) for \\input inside a table environment; notes as comments
    below it would be lost, so they go into a final multicolumn row."""
    width = len(table.header)
    spec = "l" + "r" * (width - 1)
    out = [f"% {latex_escape(table.title)}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(table.latex_header) + r" \\", r"\midrule"]
    for i, (label, rows) in enumerate(table.groups):
        if label:
            if i:
                out.append(r"\midrule")
            out.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{latex_escape(label)}}}}} \\\\")
        for row in rows:
            cells = []
            for c in row:
                text = latex_escape(number_text(c, pm=" ± "))
                if c.bold and text:
                    text = f"\\textbf{{{text}}}"
                cells.append(text + latex_escape(c.mark + c.suffix))
            out.append(" & ".join(cells) + r" \\")
    out.append(r"\bottomrule")
    for note in table.notes:  # wrapped at the text width rather than widening the table
        out.append(f"\\multicolumn{{{width}}}{{p{{0.95\\linewidth}}}}{{\\footnotesize {latex_escape(note)}}} \\\\")
    out.append(r"\end{tabular}")
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: one line per table row, a `group` column, numbers unformatted (_csv_number),
    stderr in a column of its own beside each value column that has any, and likewise the --limit a
    value was scored under (the § of the other formats: without it a quick check on a few examples
    reads as a full evaluation); no bold, marks or notes."""
    import csv
    import io

    def any_cell(j: int, has) -> bool:
        return any(len(r) > j and has(r[j]) for _, rows in table.groups for r in rows)
    has_stderr = [any_cell(j, lambda c: c.stderr is not None) for j in range(len(table.header))]
    has_limit = [any_cell(j, lambda c: c.limit is not None) for j in range(len(table.header))]
    header = ["group"]
    for j, h in enumerate(table.header):
        header += [h] + ([f"{h} stderr"] if has_stderr[j] else []) + ([f"{h} limit"] if has_limit[j] else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for label, rows in table.groups:
        for row in rows:
            line = [label]
            for j, c in enumerate(row):
                line.append(c.text if c.text is not None else _csv_number(c, c.value))
                if has_stderr[j]:
                    line.append(_csv_number(c, c.stderr))
                if has_limit[j]:
                    line.append(_csv_limit(c.limit))
            writer.writerow(line)
    return buf.getvalue()


def _csv_limit(limit: int | frozenset | None) -> str:
    """A cell's --limit for CSV: empty for a full evaluation; an average over cells of several
    limits gives them all, `full` first, separated by `;`."""
    if limit is None:
        return ""
    if isinstance(limit, frozenset):
        return ";".join("full" if n is None else str(n) for n in sorted(limit, key=sort_key))
    return str(limit)


def _csv_number(cell: Cell, value: float | None) -> str:
    """A number as a program reads it: a size whole (341000000, not 341M); a percentage or a
    difference to 12 significant digits, as x100 and subtraction leave float noise (0.29 * 100 is
    28.999999999999996, 21.05 - 41.08 is -20.029999999999998) far below any measurement's
    precision; anything else exactly as stored."""
    if value is None:
        return ""
    if cell.count:
        return str(int(value))
    return repr(float(f"{value:.12g}" if cell.percent or cell.signed else value))


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


def render(table: Table, fmt: str) -> str:
    return RENDERERS[fmt](table)


def human(n: float | None) -> str:
    """341M, 1.3B, 15B: the paper's way of writing sizes."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            q = n / div
            return f"{q:.1f}{unit}" if q < 10 and round(q, 1) != round(q) else f"{q:.0f}{unit}"
    return f"{n:.0f}"


def sort_key(value) -> tuple:
    """A key that orders None, then numbers by value, then anything else by its text."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0.0, str(value))
