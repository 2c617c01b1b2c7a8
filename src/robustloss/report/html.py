"""One self-contained HTML page for an experiment report, readable offline.

Everything the page needs is inside it: CSS in a <style> block, images as base64 data URIs,
no scripts and no external URLs, so the file can be mailed or archived on its own. All text
is HTML-escaped (labels come from configs and could hold anything). A small Markdown
converter covers what our own Markdown renderers produce (headings, lists, pipe tables,
paragraphs, bold, italics, code), so no Markdown library is needed.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

from robustloss.report.render import (
    MISSING,
    cell_of,
    format_diff,
    format_ours,
    format_value,
    is_worst_case,
    labelled_rows,
    rounded_diff,
    write_text_atomic,
)
from robustloss.report.table import ReportTable, TableRow, TableSection

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.center, th.center { text-align: center; }
td.missing { color: #999; }
td.pos { color: #176f2c; background: #e6f4ea; }
td.neg { color: #a4161a; background: #fce8e6; }
tr.worst td { background: #fafafa; }
tr.warn td { background: #fff4ce; }
td.status-warn { font-weight: bold; color: #8a5300; }
p.legend, ul.notes, figcaption { font-size: .88em; color: #555; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f2f2f2; padding: 0 .2em; border-radius: 3px; }
p.missing-image { color: #a4161a; font-style: italic; }
"""

DIFF_LEGEND = (
    "Δ = ours − paper. Green: ours at or above the paper; red: below. For accuracies and for "
    "distortion metrics (mean/median L2, mean L∞: a larger distance needed to fool the model) "
    "higher means more robust; for error rates it means less robust."
)

MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".svg": "image/svg+xml", ".webp": "image/webp"}


def html_escape(text: object) -> str:
    """Escape text for element content and quoted attribute values alike."""
    return html.escape(str(text), quote=True)


def _element(tag: str, content: str, cls: str = "", **attrs: str) -> str:
    """<tag class=... attrs>content</tag>; content must already be HTML."""
    parts = [tag] + ([f'class="{cls}"'] if cls else [])
    parts += [f'{name}="{html_escape(value)}"' for name, value in attrs.items()]
    return f"<{' '.join(parts)}>{content}</{tag}>"


def _bullets(items: list[str], cls: str = "") -> str:
    return _element("ul", "".join(_element("li", html_escape(item)) for item in items), cls) if items else ""


# ---------------------------------------------------------------------------------------------
# ReportTable
# ---------------------------------------------------------------------------------------------


def _table_head(columns: list[str], compare: bool = True) -> str:
    if not compare:
        names = "".join(_element("th", html_escape(c), "num") for c in columns)
        return f"<thead><tr><th>Attack</th><th>ε</th>{names}</tr></thead>"
    top = '<th rowspan="2">Attack</th><th rowspan="2">ε</th>'
    top += "".join(_element("th", html_escape(c), "center", colspan="3") for c in columns)
    sub = "".join('<th class="num">ours</th><th class="num">paper</th><th class="num">Δ</th>' for _ in columns)
    return f"<thead><tr>{top}</tr><tr>{sub}</tr></thead>"


def _number_cell(text: str, extra: str = "") -> str:
    cls = "num missing" if text == MISSING else f"num {extra}".strip()
    return _element("td", html_escape(text), cls)


def _diff_class(row: TableRow, column: str) -> str:
    diff = rounded_diff(cell_of(row, column), row.metric)
    if diff is None:
        return ""
    return "pos" if diff >= 0 else "neg"


def _table_row(label: str, row: TableRow, columns: list[str], compare: bool = True) -> str:
    worst = is_worst_case(row.row)
    shown = html_escape(label)
    if shown and worst:
        shown = _element("strong", shown)
    cells = [_element("td", shown), _number_cell(row.shown_param)]
    for column in columns:
        cell = cell_of(row, column)
        cells.append(_number_cell(format_ours(cell, row.metric)))
        if compare:
            cells += [_number_cell(format_value(cell.paper, row.metric)),
                      _number_cell(format_diff(cell, row.metric), _diff_class(row, column))]
    return _element("tr", "".join(cells), "worst" if worst else "")


def _section_html(section: TableSection, columns: list[str], compare: bool = True) -> str:
    parts = [_element("h4", html_escape(section.name))] if section.name else []
    if section.rows:
        body = "".join(_table_row(label, row, columns, compare) for label, row in labelled_rows(section))
        parts.append(_element("table", _table_head(columns, compare) + _element("tbody", body), "report"))
    else:
        parts.append(_element("p", "No rows.", "legend"))
    parts.append(_bullets(section.notes, "notes"))
    return "".join(parts)


def table_html(table: ReportTable) -> str:
    """A ReportTable in the same layout as its Markdown: one table per section, notes beneath. The
    title is the page's (its <h1>), so it is not repeated here."""
    parts = [_section_html(section, table.columns, table.has_published) for section in table.sections]
    parts.append(_bullets(table.notes, "notes"))
    if table.has_published:
        parts.append(_element("p", html_escape(DIFF_LEGEND), "legend"))
    return _element("section", "\n".join(p for p in parts if p), "report-table")


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


def diagnostics_html(run_label: str, rows: list[dict]) -> str:
    """The check list of one run; warnings highlighted so they are not skimmed over."""
    heading = _element("h3", html_escape(f"Diagnostics: {run_label}"))
    if not rows:
        return _element("section", heading + _element("p", "No diagnostics.", "legend"), "diagnostics")
    head = "<thead><tr><th class=\"num\">#</th><th>Check</th><th>Status</th><th>Detail</th></tr></thead>"
    body = []
    for r in rows:
        status = str(r.get("status", ""))
        warn = status.lower() == "warn"
        cells = (_element("td", html_escape(r.get("number", "")), "num")
                 + _element("td", html_escape(r.get("check", "")))
                 + _element("td", html_escape("WARN" if warn else status), "status-warn" if warn else "")
                 + _element("td", html_escape(r.get("detail", ""))))
        body.append(_element("tr", cells, "warn" if warn else ""))
    table = _element("table", head + _element("tbody", "".join(body)))
    return _element("section", heading + table, "diagnostics")


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def image_data_uri(path: str | Path) -> str:
    path = Path(path)
    mime = MIME_TYPES.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def image_html(path: str | Path, caption: str = "") -> str:
    path = Path(path)
    if not path.is_file():
        # Visible in the page rather than a silently missing figure (or an aborted report).
        return _element("p", html_escape(f"Image not found: {path.name} ({caption})"), "missing-image")
    img = f'<img src="{image_data_uri(path)}" alt="{html_escape(caption or path.name)}">'
    return _element("figure", img + (_element("figcaption", html_escape(caption)) if caption else ""))


# ---------------------------------------------------------------------------------------------
# A small Markdown converter
# ---------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_ORDERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_FENCE = re.compile(r"^\s*```")


def inline_markdown(text: str) -> str:
    """Escape text, then turn `code`, **bold**, *italic* and _italic_ into tags."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]+`)", text)):
        if i % 2:  # odd pieces are the code spans captured by the split
            out.append(_element("code", html_escape(part[1:-1])))
            continue
        s = html_escape(part)
        # Backslash escapes (\| in table cells, \* ...) become entities so the rules below skip them.
        s = re.sub(r"\\([\\`*_|#\[\]\-])", lambda m: f"&#{ord(m.group(1))};", s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])", r"<em>\1</em>", s)
        s = re.sub(r"(?<!\w)_(?![\s_])(.+?)(?<![\s_])_(?!\w)", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    line = line.strip().removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    # Split on pipes that are not escaped; the escapes are resolved by inline_markdown.
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]


def _alignment(spec: str) -> str:
    spec = spec.strip()
    if spec.startswith(":") and spec.endswith(":"):
        return "center"
    return "num" if spec.endswith(":") else ""


def _is_table_start(lines: list[str], i: int) -> bool:
    return ("|" in lines[i] and i + 1 < len(lines) and "-" in lines[i + 1]
            and bool(_TABLE_SEPARATOR.match(lines[i + 1])) and "|" in lines[i + 1])


def _md_table(lines: list[str]) -> str:
    header, aligns = _split_row(lines[0]), [_alignment(s) for s in _split_row(lines[1])]
    width = len(header)
    aligns = (aligns + [""] * width)[:width]

    def row(cells: list[str], tag: str) -> str:
        cells = (cells + [""] * width)[:width]
        return _element("tr", "".join(_element(tag, inline_markdown(c), a) for c, a in zip(cells, aligns)))

    head = _element("thead", row(header, "th"))
    body = _element("tbody", "".join(row(_split_row(line), "td") for line in lines[2:]))
    return _element("table", head + body)


def _take_while(lines: list[str], i: int, keep: Callable[[str], bool]) -> tuple[list[str], int]:
    taken = []
    while i < len(lines) and keep(lines[i]):
        taken.append(lines[i])
        i += 1
    return taken, i


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return bool(not line.strip() or _HEADING.match(line) or _BULLET.match(line) or _ORDERED.match(line)
                or _FENCE.match(line) or _RULE.match(line) or _is_table_start(lines, i))


def _md_block(lines: list[str], i: int) -> tuple[str, int]:
    """The HTML of the block starting at line i, and the index of the line after it."""
    line = lines[i]
    if _FENCE.match(line):
        code, j = _take_while(lines, i + 1, lambda s: not _FENCE.match(s))
        return _element("pre", _element("code", html_escape("\n".join(code)))), j + 1
    if m := _HEADING.match(line):
        # The page title is the only <h1>; a Markdown "#" becomes a section heading.
        level = max(2, len(m.group(1)))
        return _element(f"h{level}", inline_markdown(m.group(2))), i + 1
    if _is_table_start(lines, i):
        rows, j = _take_while(lines, i + 2, lambda s: "|" in s and bool(s.strip()))
        return _md_table(lines[i:i + 2] + rows), j
    if _RULE.match(line):
        return "<hr>", i + 1
    for pattern, tag in ((_BULLET, "ul"), (_ORDERED, "ol")):
        if pattern.match(line):
            items, j = _take_while(lines, i, lambda s, p=pattern: bool(p.match(s)))
            lis = "".join(_element("li", inline_markdown(pattern.match(s).group(1))) for s in items)
            return _element(tag, lis), j
    j = i + 1
    while j < len(lines) and not _starts_block(lines, j):
        j += 1
    text = " ".join(s.strip() for s in lines[i:j])
    return _element("p", inline_markdown(text)), j


def markdown_to_html(text: str) -> str:
    lines, parts, i = text.splitlines(), [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block, i = _md_block(lines, i)
        parts.append(block)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def _diagnostics_block(content: object) -> str:
    run_label, rows = content  # type: ignore[misc]
    return diagnostics_html(str(run_label), list(rows))


def _image_block(content: object) -> str:
    path, caption = content  # type: ignore[misc]
    return image_html(path, str(caption))


def _table_block(content: object) -> str:
    if not isinstance(content, ReportTable):
        raise TypeError(f"a 'table' block needs a ReportTable, got {type(content).__name__}")
    return table_html(content)


BLOCK_RENDERERS: dict[str, Callable[[object], str]] = {
    "heading": lambda text: _element("h2", html_escape(text)),
    "paragraph": lambda text: _element("p", html_escape(text)),
    "table": _table_block,
    "diagnostics": _diagnostics_block,
    "image": _image_block,
    "markdown": lambda text: markdown_to_html(str(text)),
    "pre": lambda text: _element("pre", html_escape(text)),
}


def render_block(block: tuple[str, object]) -> str:
    try:
        kind, content = block
    except (TypeError, ValueError):
        raise ValueError(f"a block must be a (kind, content) pair, got {block!r}") from None
    if kind not in BLOCK_RENDERERS:
        raise ValueError(f"unknown block kind {kind!r}; expected one of {', '.join(BLOCK_RENDERERS)}")
    return BLOCK_RENDERERS[kind](content)


def html_page(title: str, blocks: list[tuple[str, object]]) -> str:
    body = "\n".join(render_block(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html_escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html_escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def build_html(title: str, blocks: list[tuple[str, object]], path: str | Path) -> Path:
    """Render the blocks into one self-contained page at path (written atomically)."""
    return write_text_atomic(path, html_page(title, blocks))
