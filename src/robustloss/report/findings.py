"""The Findings that open an experiment report: each comparison the paper claims, tested on our records.

A claim (``claims:`` in the experiment file) says one column is more robust than another. For every row
where the paper prints both numbers, and for our per-sample worst case, the Findings give:

* our difference (better - than, in accuracy points) with 95% confidence intervals: over the test
  images, paired (both models are attacked on the same images, so the per-image differences are what
  varies), and over training seeds when the grid has several (a t interval on the per-seed differences);
* the paper's difference;
* a verdict: *reproduced* when the interval lies on the side of zero the paper's difference lies on
  (the claimed side where the paper prints no difference, as for the worst case), *contradicted* when
  it lies on the other side, and *not reproduced* when it contains zero. The seed interval decides
  when there are at least two seeds
  (it carries the training noise a single run cannot show); otherwise the image interval does;
* any gradient-masking diagnostic that warns on either model, since a difference measured with a
  weak attack says little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from robustloss.evaluate.metrics import WORST_CASE
from robustloss.evaluate.records import Evaluation
from robustloss.evaluate.worst_case import worst_case_robust

REPRODUCED, NOT_REPRODUCED, CONTRADICTED = "reproduced", "not reproduced", "contradicted"
Z95 = 1.959963984540054  # two-sided 95% normal quantile
PER_SAMPLE_METRICS = ("accuracy", "error_rate")  # rows with a per-image verdict (distances have none)


@dataclass
class Finding:
    claim: str
    section: str
    row: str
    param: float | None
    ours: float | None  # better - than, accuracy points (mean over seeds)
    samples_ci: tuple[float, float] | None
    seeds_ci: tuple[float, float] | None
    n: int  # paired test images per seed
    seeds: int
    paper: float | None  # the paper's better - than, accuracy points
    verdict: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """What the findings need of one stored run."""

    labels: dict[str, str]
    evaluation: Evaluation | None
    diagnostics: list[dict]


def compute_findings(runs: list, document: dict, columns_axis: str, sections_axis: str | None) -> list[Finding]:
    """Every claim of ``document['file']['claims']`` on every row it covers (runs: the report's RunViews)."""
    file = document["file"]
    published = document.get("published", [])
    views = [_Run(dict(r.labels), r.evaluation, list(r.diagnostics)) for r in runs]
    findings = []
    for claim in file.get("claims", []):
        statement = claim.get("text") or f"{claim['better']} is more robust than {claim['than']}"
        sections = list(dict.fromkeys(v.labels.get(sections_axis, "") if sections_axis else "" for v in views))
        for section in sections:
            if claim.get("sections") and section not in claim["sections"]:
                continue
            members = [v for v in views if not sections_axis or v.labels.get(sections_axis, "") == section]
            better = [v for v in members if v.labels.get(columns_axis) == claim["better"]]
            than = [v for v in members if v.labels.get(columns_axis) == claim["than"]]
            pairs = _pairs(better, than, columns_axis)
            if not pairs:
                continue
            paper = [p for p in published if p["section"] == section or (not sections_axis and not p["section"])]
            for row, param, metric in _claimed_rows(paper, claim, pairs):
                findings.append(_finding(statement, section, row, param, metric, pairs, paper, claim))
    return findings


def _pairs(better: list[_Run], than: list[_Run], columns_axis: str) -> list[tuple[_Run, _Run]]:
    """Runs of the two columns that differ only in the column (same seed and other axes), both evaluated."""
    def key(v: _Run) -> tuple:
        return tuple(sorted((k, str(x)) for k, x in v.labels.items() if k != columns_axis))

    others = {key(v): v for v in than}
    return [(b, others[key(b)]) for b in better if key(b) in others
            and b.evaluation is not None and others[key(b)].evaluation is not None]


def _claimed_rows(paper: list[dict], claim: dict, pairs) -> list[tuple[str, float | None, str]]:
    """(row, param, metric): the paper's rows printed for both columns, then our worst case per budget."""
    rows: list[tuple[str, float | None, str]] = []
    wanted = claim.get("rows")
    for p in paper:
        if p["method"] != claim["better"] or p["metric"] not in PER_SAMPLE_METRICS or p["row"] == "clean":
            continue
        if wanted and p["row"] not in wanted:
            continue
        if any(q["method"] == claim["than"] and q["row"] == p["row"] and _same(q["param"], p["param"])
               and q["metric"] == p["metric"] for q in paper):
            if not any(r[0] == p["row"] and _same(r[1], p["param"]) for r in rows):
                rows.append((p["row"], p["param"], p["metric"]))
    budgets = sorted({round(float(r.eps), 6) for b, _ in pairs for r in b.evaluation.records
                      if r.norm == "linf" and r.eps is not None and not r.name.startswith("diag-")})
    return rows + [(WORST_CASE, eps, "accuracy") for eps in budgets]


def _robust(evaluation: Evaluation, row: str, param: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-image robust, mask of images the row speaks for), or None when the run lacks the row."""
    if row == WORST_CASE:
        return worst_case_robust(evaluation, "linf", float(param)), np.ones(evaluation.n, dtype=bool)
    record = next((r for r in evaluation.records if r.name == row and _same(r.eps, param)), None)
    if record is None:
        return None
    return evaluation.robust(record), record.sampled


def _finding(statement: str, section: str, row: str, param, metric: str, pairs, paper: list[dict],
             claim: dict) -> Finding:
    means, variances, counts = [], [], []
    for b, t in pairs:
        got_b, got_t = _robust(b.evaluation, row, param), _robust(t.evaluation, row, param)
        if got_b is None or got_t is None or not np.array_equal(b.evaluation.index, t.evaluation.index):
            continue
        mask = got_b[1] & got_t[1]
        diff = 100.0 * (got_b[0][mask].astype(float) - got_t[0][mask].astype(float))
        if len(diff) == 0:
            continue
        means.append(float(diff.mean()))
        variances.append(float(diff.var(ddof=1)) if len(diff) > 1 else 0.0)
        counts.append(len(diff))
    paper_diff = _paper_difference(paper, claim, row, param, metric)
    warnings = sorted({w for b, t in pairs for v in (b, t) for w in _warnings(v, claim)})
    if not means:
        return Finding(statement, section, row, param, None, None, None, 0, 0, paper_diff, NOT_REPRODUCED, warnings)
    k = len(means)
    ours = float(np.mean(means))
    half = Z95 * math.sqrt(sum(v / n for v, n in zip(variances, counts))) / k  # the mean of k paired means
    samples_ci = (ours - half, ours + half)
    seeds_ci = None
    if k >= 2:
        half_seeds = float(stats.t.ppf(0.975, k - 1)) * float(np.std(means, ddof=1)) / math.sqrt(k)
        seeds_ci = (ours - half_seeds, ours + half_seeds)
    deciding = seeds_ci or samples_ci
    direction = -1.0 if paper_diff is not None and paper_diff < 0 else 1.0  # the side the paper's numbers take
    low, high = sorted((direction * deciding[0], direction * deciding[1]))
    verdict = REPRODUCED if low > 0 else CONTRADICTED if high < 0 else NOT_REPRODUCED
    return Finding(statement, section, row, param, ours, samples_ci, seeds_ci, int(np.mean(counts)), k,
                   paper_diff, verdict, warnings)


def _paper_difference(paper: list[dict], claim: dict, row: str, param, metric: str) -> float | None:
    def value(method: str) -> float | None:
        return next((float(p["value"]) for p in paper if p["method"] == method and p["row"] == row
                     and _same(p["param"], param) and p["metric"] == metric), None)

    a, b = value(claim["better"]), value(claim["than"])
    if a is None or b is None:
        return None
    return a - b if metric == "accuracy" else b - a  # an error rate falls as accuracy rises


def _warnings(run: _Run, claim: dict) -> list[str]:
    """'COLUMN #N: check' for each diagnostic that warns on the run (COLUMN: the claim's name for it)."""
    column = next((v for v in run.labels.values() if v in (claim["better"], claim["than"])), "run")
    return [f"{column} #{d.get('number')}: {d.get('check')}" for d in run.diagnostics
            if str(d.get("status", "")).lower() in ("warn", "fail")]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


# -- rendering ---------------------------------------------------------------------------------
def findings_markdown(findings: list[Finding]) -> str:
    """The Findings block: per claim a one-line tally, then one line per row, then the warnings."""
    if not findings:
        return ""
    lines = ["## Findings", ""]
    seeds = max(f.seeds for f in findings)
    lines.append("Differences are in accuracy points (the first model minus the second), with 95% confidence "
                 "intervals over the paired test images" + (f" and over {seeds} training seeds (which decide the "
                 "verdict)" if seeds >= 2 else "; with one training seed the seed-to-seed spread is unknown, so "
                 "the verdict speaks for this training run") + ". Rows marked *worst case* are ours: per image, any "
                 "L-inf attack of the report within the budget.")
    lines.append("")
    for statement in dict.fromkeys(f.claim for f in findings):
        rows = [f for f in findings if f.claim == statement]
        tally = {v: sum(f.verdict == v for f in rows) for v in (REPRODUCED, NOT_REPRODUCED, CONTRADICTED)}
        lines.append(f"**{statement}**: reproduced in {tally[REPRODUCED]} of {len(rows)} rows, not reproduced "
                     f"in {tally[NOT_REPRODUCED]}, contradicted in {tally[CONTRADICTED]}.")
        lines += ["", "| Section | Row | eps | Ours | 95% CI (images) | 95% CI (seeds) | Paper | Verdict | Diagnostics |",
                  "|---|---|---:|---:|---|---|---:|---|---|"]
        lines += [_markdown_row(f) for f in rows]
        lines.append("")
    warned = sorted({(f.section, w) for f in findings for w in f.warnings})
    if warned:
        lines.append("Diagnostics that warn, each named by the property that did NOT hold (details under "
                     "*Gradient-masking diagnostics*); a difference measured by an attack the model masks says little:")
        lines += [f"- {section + ': ' if section else ''}{w}" for section, w in warned] + [""]
    return "\n".join(lines) + "\n"


def _markdown_row(f: Finding) -> str:
    def signed(v: float | None) -> str:
        return "—" if v is None else f"{v:+.1f}"

    def interval(ci: tuple[float, float] | None) -> str:
        return "—" if ci is None else f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"

    param = "—" if f.param is None else f"{f.param:g}"
    row = f"*{f.row}*" if f.row == WORST_CASE else f.row
    diag = ", ".join(w.split(":")[0] for w in f.warnings)
    return (f"| {f.section or '—'} | {row} | {param} | {signed(f.ours)} | {interval(f.samples_ci)} | "
            f"{interval(f.seeds_ci)} | {signed(f.paper)} | {f.verdict} | {diag} |")
