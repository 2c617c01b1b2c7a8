"""PNG plots and the self-contained HTML page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pytest

from robustloss.report.html import build_html, html_escape, inline_markdown, markdown_to_html
from robustloss.report.plots import (
    _accuracy_vs_eps_figure,
    _phase_changes,
    _training_curves_figure,
    plot_accuracy_vs_eps,
    plot_clean_vs_robust,
    plot_training_curves,
)
from robustloss.report.render import diagnostics_markdown, to_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CURVES = {
    "CE": {
        "PGD": [(0.2, 70.0, 2.0), (0.1, 90.0, 1.0), (0.3, 40.0, None)],
        "FGSM": [(0.1, 92.0, None), (0.3, 60.0, None)],
        "worst case": [(0.1, 85.0, None), (0.2, 60.0, None), (0.3, 30.0, None)],
    },
    "PC-LC": {
        "worst case": [(0.1, 93.0, 0.5), (0.2, 80.0, 1.0), (0.3, 60.0, 1.5)],
        "PGD": [(0.1, 95.0, 0.5), (0.2, 85.0, 1.0), (0.3, 70.0, 1.5)],
        "FGSM": [(0.1, 96.0, None), (0.3, 80.0, None)],
    },
}

POINTS = [
    {"method": "CE", "clean": 99.0, "robust": 40.0, "label": "PGD ε=0.3"},
    {"method": "PC-LC", "clean": 98.5, "robust": 70.0, "label": "PGD ε=0.3"},
    {"method": "CE", "clean": 99.0, "robust": 30.0, "label": "worst case ε=0.3"},
    {"method": "PC-LC", "clean": 98.5, "robust": 60.0, "label": "worst case ε=0.3"},
]


def _history(loss_offset: float, switch_at: int | None = 4) -> list[dict]:
    return [{"epoch": e, "train_loss": loss_offset + 1 / e, "train_acc": 0.5 + 0.04 * e, "test_acc": 0.48 + 0.04 * e,
             "phase": "ce" if switch_at is None or e < switch_at else "pc"} for e in range(1, 9)]


HISTORIES = {"CE seed 0": _history(0.0, None), "PC-LC seed 0": _history(-1.0), "PC-LC seed 1": _history(-0.9)}


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[0], image.shape[1]


def test_plots_write_pngs(tmp_path):
    open_before = plt.get_fignums()
    h, w = _check_png(plot_accuracy_vs_eps(CURVES, tmp_path / "a" / "acc.png", title="MNIST"))
    assert w > h  # three panels in a row
    _check_png(plot_clean_vs_robust(POINTS, tmp_path / "cvr.png", title="clean vs robust"))
    _check_png(plot_training_curves(HISTORIES, tmp_path / "train.png", title="training"))
    assert plt.get_fignums() == open_before  # every figure was closed


def test_accuracy_vs_eps_panels():
    fig = _accuracy_vs_eps_figure(CURVES)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == ["PGD", "FGSM", "worst case"]
        # Each ordinary panel: one solid line per method plus the worst case dashed in the method's colour.
        for ax in panels[:2]:
            dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
            solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
            assert len(dashed) == 2 and len(solid) == 2
            assert {matplotlib.colors.to_hex(ln.get_color()) for ln in dashed} == \
                {matplotlib.colors.to_hex(ln.get_color()) for ln in solid}
        assert not [ln for ln in panels[2].get_lines() if ln.get_linestyle() == "--"]
        assert all(ax.get_ylim() == (0, 100) for ax in panels)
        # Points are drawn in eps order whatever order they came in.
        pgd_ce = panels[0].get_lines()[0]
        assert list(pgd_ce.get_xdata()) == [0.1, 0.2, 0.3]
    finally:
        plt.close(fig)


def test_panel_count_grows_image_width(tmp_path):
    one = {m: {"PGD": c["PGD"]} for m, c in CURVES.items()}
    _, narrow = _check_png(plot_accuracy_vs_eps(one, tmp_path / "one.png"))
    _, wide = _check_png(plot_accuracy_vs_eps(CURVES, tmp_path / "three.png"))
    assert wide > 2 * narrow


def test_training_curves_phase_marks_and_log_scale():
    assert _phase_changes(HISTORIES) == [(3.5, "pc")]  # two runs switch at the same epoch: one mark
    fig = _training_curves_figure(HISTORIES)
    try:
        loss_ax, acc_ax = fig.axes
        assert loss_ax.get_yscale() == "linear"  # PC-LC losses are negative
        assert any(t.get_text().strip() == "pc" for t in loss_ax.texts)
        assert [ln for ln in acc_ax.get_lines() if ln.get_linestyle() == ":"]
    finally:
        plt.close(fig)
    fig = _training_curves_figure({"CE seed 0": _history(0.0, None)})
    try:
        assert fig.axes[0].get_yscale() == "log"
    finally:
        plt.close(fig)


@pytest.mark.parametrize("call", [
    lambda p: plot_accuracy_vs_eps({}, p),
    lambda p: plot_accuracy_vs_eps({"CE": {"PGD": []}}, p),
    lambda p: plot_clean_vs_robust([], p),
    lambda p: plot_clean_vs_robust([{"method": "CE", "clean": 99.0}], p),
    lambda p: plot_training_curves({}, p),
    lambda p: plot_training_curves({"CE": []}, p),
])
def test_plots_reject_empty_input(call, tmp_path):
    open_before = plt.get_fignums()
    with pytest.raises(ValueError):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert plt.get_fignums() == open_before


class _Collector(HTMLParser):
    """Collects tags and attributes; fails on unbalanced tags (void elements excepted)."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _page(table, tmp_path) -> tuple[str, _Collector]:
    png = plot_clean_vs_robust(POINTS, tmp_path / "cvr.png")
    table.sections[0].rows[1].row = "<script>alert('x')</script>"
    rows = [{"number": 1, "check": "gradient masking", "status": "warn", "detail": "FGSM > PGD"},
            {"number": 2, "check": "sanity", "status": "pass", "detail": "ok"}]
    blocks = [
        ("heading", "Results & <b>notes</b>"),
        ("paragraph", "See https://example.org for the paper."),
        ("table", table),
        ("diagnostics", ("CE seed 0", rows)),
        ("image", (png, "clean vs robust")),
        ("markdown", to_markdown(table) + "\n" + diagnostics_markdown(rows) + "\nText with **bold** and `a<b`.\n"),
        ("pre", "line 1\n  <indented>"),
    ]
    path = build_html("Report <1>", blocks, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    return text, parser


def test_html_page_self_contained(table, tmp_path):
    text, parser = _page(table, tmp_path)
    assert text.startswith("<!DOCTYPE html>")
    srcs = [v for tag, k, v in parser.attrs if k == "src"]
    assert srcs and all(v.startswith("data:image/png;base64,") for v in srcs)
    assert len(srcs[0]) > 5_000
    links = [v for _, k, v in parser.attrs if k in ("src", "href")]
    assert not [v for v in links if re.match(r"https?://", v or "")]
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", text)
    assert "<script" not in text and "<link" not in text
    assert "<style>" in text


def test_html_table_numbers_and_colours(table, tmp_path):
    text, _ = _page(table, tmp_path)
    assert '<td class="num">97.5 ± 0.3</td>' in text
    assert '<td class="num pos">+1.2</td>' in text
    assert '<td class="num neg">-3.4</td>' in text
    assert '<td class="num missing">—</td>' in text
    assert '<tr class="worst"><td><strong>worst case</strong></td>' in text
    assert '<th class="center" colspan="3">PC-LC</th>' in text
    assert "Δ = ours − paper" in text  # the colour legend
    assert '<tr class="warn">' in text and ">WARN<" in text


def test_html_escapes_text(table, tmp_path):
    text, parser = _page(table, tmp_path)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<h1>Report &lt;1&gt;</h1>" in text
    assert "<h2>Results &amp; &lt;b&gt;notes&lt;/b&gt;</h2>" in text
    assert "<pre>line 1\n  &lt;indented&gt;</pre>" in text
    assert "<code>a&lt;b</code>" in text and "<strong>bold</strong>" in text
    assert "<script>alert('x')</script>" in "".join(parser.text)  # shown as text, never as a tag


def test_html_rejects_unknown_block(tmp_path):
    with pytest.raises(ValueError, match="unknown block kind"):
        build_html("t", [("video", "x")], tmp_path / "r.html")
    with pytest.raises(TypeError):
        build_html("t", [("table", "not a table")], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_markdown_converter():
    md = ("# Top\n\nSome *text* over\ntwo lines.\n\n- one\n- **two**\n\n"
          "| a | b |\n|---|---:|\n| x\\|y | 1.0 |\n| z | |\n\n```\nx < y\n```\n")
    out = markdown_to_html(md)
    assert "<h2>Top</h2>" in out
    assert "<p>Some <em>text</em> over two lines.</p>" in out
    assert "<ul><li>one</li><li><strong>two</strong></li></ul>" in out
    assert '<thead><tr><th>a</th><th class="num">b</th></tr></thead>' in out
    assert '<tr><td>x&#124;y</td><td class="num">1.0</td></tr>' in out
    assert '<tr><td>z</td><td class="num"></td></tr>' in out
    assert "<pre><code>x &lt; y</code></pre>" in out
    assert inline_markdown("mean_l2 and median_l2") == "mean_l2 and median_l2"  # no italics inside words
    assert html_escape('"<&>') == "&quot;&lt;&amp;&gt;"


def test_missing_image_is_visible(tmp_path):
    path = build_html("t", [("image", (tmp_path / "nope.png", "lost plot"))], tmp_path / "r.html")
    assert "Image not found: nope.png" in path.read_text(encoding="utf-8")


def test_clean_vs_robust_zooms_to_the_data_and_keeps_close_labels_apart():
    from robustloss.report.plots import _clean_vs_robust_figure

    # Table 5's FMNIST worst cases: clean 85-89%, robust 0-7%, two points almost on top of each other
    points = [{"method": "CE+AT", "clean": 86.4, "robust": 0.0, "label": "worst case ε=0.3"},
              {"method": "GCE+AT", "clean": 87.2, "robust": 0.0, "label": "worst case ε=0.3"},
              {"method": "PC-LC+AT", "clean": 85.3, "robust": 4.3, "label": "worst case ε=0.3"},
              {"method": "PC-LC", "clean": 88.5, "robust": 6.9, "label": "worst case ε=0.3"}]
    ax = _clean_vs_robust_figure(points).axes[0]
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert 70 < x0 < 85.3 and 88.5 < x1 <= 100
    assert y0 == 0 and 6.9 < y1 < 20
    offsets = {t.get_text().split(",")[0]: t.xyann for t in ax.texts}
    assert offsets["CE+AT"][1] != offsets["GCE+AT"][1]  # stacked, not drawn over each other
