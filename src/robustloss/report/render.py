"""Renderers for a ReportTable: Markdown, long-format CSV and LaTeX (booktabs).

Every renderer shows the same numbers with the same formatting rules, so the helpers that
decide how a cell reads (decimals, "mean ± std", signed differences, the label shown on a
row) live here and are shared with the HTML page.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from robustloss.checkpoint import name_the_file  # noqa: F401 (re-exported: report modules name failed writes)
from robustloss.evaluate.metrics import PERCENT_METRICS
from robustloss.report.table import Cell, ReportTable, TableRow, TableSection

MISSING = "—"  # shown wherever a value is absent (not run, or not published)

CSV_HEADER = ["section", "row", "param", "metric", "column", "ours_mean", "ours_std", "n_seeds", "paper", "diff"]


# ---------------------------------------------------------------------------------------------
# Shared formatting rules
# ---------------------------------------------------------------------------------------------


def decimals_for(metric: str) -> int:
    """Percentages read well with one decimal; distances (often < 1) need three."""
    return 1 if metric in PERCENT_METRICS else 3


def format_value(value: float | None, metric: str) -> str:
    return MISSING if value is None else f"{value:.{decimals_for(metric)}f}"


def format_ours(cell: Cell, metric: str, pm: str = "±") -> str:
    """Our mean, with the spread over seeds when there is more than one seed."""
    if cell.mean is None:
        return MISSING
    text = format_value(cell.mean, metric)
    if cell.n_seeds > 1 and cell.std is not None:
        text += f" {pm} {format_value(cell.std, metric)}"
    return text


def rounded_diff(cell: Cell, metric: str) -> float | None:
    """ours - paper rounded as displayed, so the colour of a cell always matches its text."""
    diff = cell.diff
    if diff is None:
        return None
    # "+ 0.0" turns a negative zero (e.g. -0.04 rounded) into +0.0 rather than "-0.0".
    return round(diff, decimals_for(metric)) + 0.0


def format_diff(cell: Cell, metric: str) -> str:
    diff = rounded_diff(cell, metric)
    return MISSING if diff is None else f"{diff:+.{decimals_for(metric)}f}"


def is_worst_case(label: str) -> bool:
    return label.strip().lower().replace("-", " ").startswith("worst case")


def row_label(row: TableRow) -> str:
    """The attack label, with the metric named when it is not plain accuracy."""
    return row.row if row.metric == "accuracy" else f"{row.row} ({row.metric})"


def labelled_rows(section: TableSection) -> list[tuple[str, TableRow]]:
    """(label to show, row) pairs; the label is blank on all but the first eps line of an attack,
    as in the papers' tables, so the eye groups the budgets of one attack together."""
    shown, previous = [], None
    for row in section.rows:
        key = (row.row, row.metric)
        shown.append(("" if key == previous else row_label(row), row))
        previous = key
    return shown


def cell_of(row: TableRow, column: str) -> Cell:
    # A method missing from a row reads as "not run" rather than breaking the layout.
    return row.cells.get(column) or Cell()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write through a temporary file in the same folder, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        name_the_file(err, path)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    # A bare pipe would split a table cell; newlines would end the table row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_header(columns: list[str], compare: bool = True) -> list[str]:
    header = ["Attack", "ε"]
    for column in columns:
        header += [f"{_md_escape(column)} ours", f"{_md_escape(column)} paper", "Δ"] if compare else [
            _md_escape(column)]
    # Numbers are right-aligned so decimal points line up.
    separator = "|---|---|" + "---:|" * ((3 if compare else 1) * len(columns))
    return [_md_row(header), separator]


def _md_section_table(section: TableSection, columns: list[str], compare: bool = True) -> list[str]:
    if not section.rows:
        return ["_No rows._"]
    lines = _md_header(columns, compare)
    for label, row in labelled_rows(section):
        shown = _md_escape(label)
        if shown and is_worst_case(row.row):
            shown = f"**{shown}**"
        cells = [shown, row.shown_param]
        for column in columns:
            cell = cell_of(row, column)
            cells += [format_ours(cell, row.metric)]
            if compare:
                cells += [format_value(cell.paper, row.metric), format_diff(cell, row.metric)]
        lines.append(_md_row(cells))
    return lines


def _md_bullets(notes: list[str]) -> list[str]:
    return [f"- {note}" for note in notes]


def to_markdown(table: ReportTable, *, title: bool = True) -> str:
    """The table per section with its notes; ``title=False`` when the document already opened with it."""
    lines = [f"## {table.title}", ""] if title else []
    for section in table.sections:
        if section.name:
            lines += [f"### {section.name}", ""]
        lines += _md_section_table(section, table.columns, table.has_published) + [""]
        if section.notes:
            lines += _md_bullets(section.notes) + [""]
    if table.notes:
        lines += _md_bullets(table.notes) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def diagnostics_markdown(rows: list[dict]) -> str:
    """A check list (number, check, status, detail) as a Markdown table; warnings in bold."""
    if not rows:
        return "_No diagnostics._\n"
    lines = [_md_row(["#", "Check", "Status", "Detail"]), "|---:|---|---|---|"]
    for r in rows:
        status = str(r.get("status", ""))
        shown_status = "**WARN**" if status.lower() == "warn" else _md_escape(status)
        lines.append(_md_row([_md_escape(r.get("number", "")), _md_escape(r.get("check", "")), shown_status,
                              _md_escape(r.get("detail", ""))]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CSV (long format: one line per section x row x column, easy to load into pandas)
# ---------------------------------------------------------------------------------------------


def _csv_number(value: float | None) -> str | float:
    return "" if value is None else value


def csv_lines(table: ReportTable) -> list[list]:
    lines = []
    for section in table.sections:
        for row in section.rows:
            for column in table.columns:
                cell = cell_of(row, column)
                lines.append([section.name, row.row, _csv_number(row.param), row.metric, column,
                              _csv_number(cell.mean), _csv_number(cell.std), cell.n_seeds,
                              _csv_number(cell.paper), _csv_number(cell.diff)])
    return lines


def to_csv(table: ReportTable, path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_lines(table))
    return write_text_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# LaTeX (booktabs)
# ---------------------------------------------------------------------------------------------

_LATEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
    "ε": r"$\epsilon$", "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "×": r"$\times$",
    "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$", "·": r"$\cdot$",
    "−": "-", "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    """Escape one character at a time so an escape is never itself escaped again."""
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))


def _latex_number(value: float | None, metric: str) -> str:
    return "---" if value is None else format_value(value, metric)


def _latex_ours(cell: Cell, metric: str) -> str:
    return "---" if cell.mean is None else format_ours(cell, metric, pm=r"$\pm$")


def _latex_diff(cell: Cell, metric: str) -> str:
    text = format_diff(cell, metric)
    # Math mode gives a proper minus sign rather than a hyphen.
    return "---" if text == MISSING else f"${text}$"


def _latex_header(columns: list[str], compare: bool = True) -> list[str]:
    if not compare:
        return [rf"Attack & $\epsilon$ & {' & '.join(latex_escape(c) for c in columns)} \\"]
    spans = " & ".join(rf"\multicolumn{{3}}{{c}}{{{latex_escape(c)}}}" for c in columns)
    rules = "".join(rf"\cmidrule(lr){{{3 + 3 * i}-{5 + 3 * i}}}" for i in range(len(columns)))
    names = " & ".join(r"ours & paper & $\Delta$" for _ in columns)
    return [rf" & & {spans} \\", rules, rf"Attack & $\epsilon$ & {names} \\"]


def _latex_section(section: TableSection, columns: list[str], width: int, compare: bool = True) -> list[str]:
    lines = []
    if section.name:
        lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(section.name)}}}}} \\")
    for label, row in labelled_rows(section):
        shown = latex_escape(label)
        if shown and is_worst_case(row.row):
            shown = rf"\textbf{{{shown}}}"
        cells = [shown, latex_escape(row.shown_param)]
        for column in columns:
            cell = cell_of(row, column)
            cells += [_latex_ours(cell, row.metric)]
            if compare:
                cells += [_latex_number(cell.paper, row.metric), _latex_diff(cell, row.metric)]
        lines.append(" & ".join(cells) + r" \\")
    for note in section.notes:
        lines.append(rf"\multicolumn{{{width}}}{{l}}{{\footnotesize {latex_escape(note)}}} \\")
    return lines


def to_latex(table: ReportTable) -> str:
    """A complete `table` float; needs \\usepackage{booktabs} in the preamble."""
    compare = table.has_published
    per_column = 3 if compare else 1
    width = 2 + per_column * len(table.columns)
    lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             r"\begin{tabular}{ll" + "r" * per_column * len(table.columns) + "}", r"\toprule"]
    lines += _latex_header(table.columns, compare)
    for section in table.sections:
        lines.append(r"\midrule")
        lines += _latex_section(section, table.columns, width, compare)
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        # Notes sit under the tabular, small, one per line.
        lines.append(r"\par\smallskip\footnotesize")
        lines += [latex_escape(note) + r"\par" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
