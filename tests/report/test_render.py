"""Markdown, CSV and LaTeX renderings of a hand-built ReportTable."""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from robustloss.report.render import (
    diagnostics_markdown,
    format_diff,
    latex_escape,
    to_csv,
    to_latex,
    to_markdown,
)
from robustloss.report.table import Cell


def _table_lines(markdown: str) -> list[list[str]]:
    """Body rows of every Markdown table, as lists of cell strings."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---") and not line.startswith("| Attack"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_markdown_cells(table):
    md = to_markdown(table)
    rows = _table_lines(md)
    assert md.startswith("## Table 2: accuracy under attack (%)\n")
    assert "### MNIST" in md and "### CIFAR-10" in md
    assert "| Attack | ε | CE ours | CE paper | Δ | PC-LC ours | PC-LC paper | Δ |" in md
    clean, pgd1, pgd2, cw, worst, fgsm = rows
    assert clean == ["clean", "-", "99.1", "99.2", "-0.1", "99.0", "—", "—"]
    assert pgd1 == ["PGD", "0.1", "97.5 ± 0.3", "96.3", "+1.2", "95.0 ± 0.2", "98.4", "-3.4"]
    # Label only on the first eps line of an attack; a tiny negative diff reads +0.0, not -0.0.
    assert pgd2 == ["", "0.2", "80.0 ± 1.0", "80.0", "+0.0", "—", "90.0", "—"]
    # Distortion metrics: 3 decimals and the metric named on the label.
    assert cw == ["C&W (mean_l2)", "-", "1.235 ± 0.010", "1.500", "-0.265", "—", "—", "—"]
    assert worst[0] == "**worst case**"
    assert fgsm[:5] == ["FGSM", "0.03", "30.0", "28.0", "+2.0"]


def test_markdown_notes_and_single_seed(table):
    md = to_markdown(table)
    assert "- demo scale: 5k training images" in md
    assert md.rstrip().endswith("- ε in [0, 1] pixel scale")
    # The section note comes right after its own section, before the next one.
    assert md.index("demo scale") < md.index("### CIFAR-10")
    # One seed: no "±" even when a std is given.
    table.sections[1].rows[0].cells["CE"] = Cell(30.0, 5.0, 1, 28.0)
    assert "| FGSM | 0.03 | 30.0 | 28.0 |" in to_markdown(table)


def test_markdown_label_repeats_for_new_metric_and_escapes_pipes(table):
    section = table.sections[0]
    section.rows[3].row = "PGD"  # same attack, other metric: a new group, so the label shows
    section.rows[0].row = "a|b"
    md = to_markdown(table)
    assert "| PGD (mean_l2) | - |" in md
    assert "| a\\|b | - |" in md


def test_markdown_without_section_name(table):
    table.sections[1].name = ""
    md = to_markdown(table)
    assert "### \n" not in md and md.count("### ") == 1


def test_format_diff_signs():
    assert format_diff(Cell(97.5, None, 1, 96.3), "accuracy") == "+1.2"
    assert format_diff(Cell(95.0, None, 1, 98.4), "accuracy") == "-3.4"
    assert format_diff(Cell(1.0, None, 1, 1.25), "median_l2") == "-0.250"
    assert format_diff(Cell(None, None, 0, 1.0), "accuracy") == "—"


def test_csv_long_format(table, tmp_path):
    path = to_csv(table, tmp_path / "sub" / "table.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 2  # six table rows x two methods
    assert list(rows[0]) == ["section", "row", "param", "metric", "column", "ours_mean", "ours_std", "n_seeds",
                             "paper", "diff"]
    pgd = next(r for r in rows if r["row"] == "PGD" and r["param"] == "0.1" and r["column"] == "CE")
    assert (pgd["section"], float(pgd["ours_mean"]), float(pgd["ours_std"])) == ("MNIST", 97.5, 0.3)
    assert pgd["n_seeds"] == "3"
    assert float(pgd["diff"]) == pytest.approx(1.2)
    not_run = next(r for r in rows if r["row"] == "PGD" and r["param"] == "0.2" and r["column"] == "PC-LC")
    assert (not_run["ours_mean"], not_run["diff"], not_run["paper"]) == ("", "", "90.0")
    assert next(r for r in rows if r["row"] == "C&W")["metric"] == "mean_l2"
    assert not list(tmp_path.glob("sub/*.tmp"))  # the temporary file was renamed away


def test_latex_structure(table):
    tex = to_latex(table)
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{table}", r"\end{table}",
                   r"\multicolumn{3}{c}{CE}", r"\multicolumn{3}{c}{PC-LC}", r"\multicolumn{8}{l}{\textit{MNIST}}",
                   r"C\&W (mean\_l2)", r"97.5 $\pm$ 0.3", r"\textbf{worst case}", r"$+1.2$", r"$-3.4$",
                   r"\caption{Table 2: accuracy under attack (\%)}", r"$\epsilon$ in [0, 1] pixel scale"):
        assert needle in tex, needle
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert "—" not in tex and "±" not in tex and "ε" not in tex  # all turned into LaTeX
    # Every table line has as many cells as the column spec says.
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and r"\multicolumn" not in ln]
    assert body and all(ln.count(" & ") == 7 for ln in body)


def test_latex_escape_specials():
    assert latex_escape("a&b%c_d#e$f{g}") == r"a\&b\%c\_d\#e\$f\{g\}"
    assert latex_escape("\\") == r"\textbackslash{}"
    assert latex_escape("ε ± — Δ") == r"$\epsilon$ $\pm$ --- $\Delta$"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(table, tmp_path):
    document = ("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n"
                "\\begin{document}\n" + to_latex(table) + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(document, encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-2000:]


def test_diagnostics_markdown():
    md = diagnostics_markdown([
        {"number": 1, "check": "gradient masking", "status": "warn", "detail": "FGSM beats PGD | at eps 0.3"},
        {"number": 2, "check": "accuracy falls with eps", "status": "pass", "detail": "monotone"},
        {"number": 3, "check": "transfer", "status": "n/a", "detail": ""},
    ])
    lines = md.splitlines()
    assert lines[0] == "| # | Check | Status | Detail |"
    assert lines[2] == "| 1 | gradient masking | **WARN** | FGSM beats PGD \\| at eps 0.3 |"
    assert lines[3] == "| 2 | accuracy falls with eps | pass | monotone |"
    assert "| 3 | transfer | n/a |" in lines[4]
    assert diagnostics_markdown([]).strip() == "_No diagnostics._"


def test_a_table_without_published_numbers_shows_only_our_columns():
    from robustloss.report.html import table_html
    from robustloss.report.render import to_latex, to_markdown
    from robustloss.report.table import Cell, ReportTable, TableRow, TableSection

    row = TableRow(row="PGD", param=0.1, metric="accuracy",
                   cells={"CE": Cell(mean=54.4), "CE+PGD-AT": Cell(mean=92.8)})
    table = ReportTable("AT recipes", ["CE", "CE+PGD-AT"], [TableSection("", [row])])
    assert not table.has_published
    markdown = to_markdown(table)
    assert "| Attack | ε | CE | CE+PGD-AT |" in markdown and "paper" not in markdown and "Δ" not in markdown
    assert "54.4 | 92.8 |" in markdown
    latex = to_latex(table)
    assert "tabular}{llrr}" in latex and "paper" not in latex
    page = table_html(table)
    assert "paper" not in page and "Δ" not in page
    row.cells["CE"] = Cell(mean=54.4, paper=49.0)
    assert table.has_published and "CE paper" in to_markdown(table)
