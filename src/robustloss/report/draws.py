"""The report section for stochastic models: each accuracy over the K redraws of its predictions.

The main table shows one forward pass per image, as the papers do. Behind a randomised defence that
pass is one draw of a random variable; this section puts the mean and spread over the engine's
redraws (``Evaluation.accuracy_over_draws``) next to it, so a reader sees how far the headline
number would move on another draw.
"""

from __future__ import annotations

from robustloss.evaluate.records import DrawSpread, Evaluation

HEADING = "Stochastic models: accuracy over redraws"
EXPLANATION = (
    "These models are random (two forward passes on the same image differ). 'one draw' is the main "
    "table's number: one forward pass per image. The next columns re-classify the same clean and "
    "adversarial images K more times: mean ± standard deviation over the K draws, then the lowest "
    "and highest draw. A large gap between an attack's one-draw number and its mean means the verdict "
    "depends on the draw; attacks with EOT (eot=k) average the randomness while crafting."
)


def draws_rows(evaluation: Evaluation) -> list[dict]:
    """One row per accuracy with redraws (clean first): name, eps, one draw, and the spread (in %)."""
    rows = []
    clean = evaluation.accuracy_over_draws()
    if clean is not None:
        rows.append(_row("clean", None, evaluation.clean_accuracy, clean))
    for record in evaluation.records:
        spread = evaluation.accuracy_over_draws(record)
        if spread is not None:
            rows.append(_row(record.name, record.eps, evaluation.accuracy(record), spread))
    return rows


def _row(name: str, eps: float | None, single: float, spread: DrawSpread) -> dict:
    return {"attack": name, "eps": eps, "draws": spread.draws, "one_draw": 100 * single,
            "mean": 100 * spread.mean, "std": 100 * spread.std,
            "min": 100 * min(spread.per_draw), "max": 100 * max(spread.per_draw)}


def _blocks_markdown(labelled: list[tuple[str, Evaluation]]) -> str:
    """Explanation and one table per (label, evaluation) that has redraws; '' when none has any."""
    blocks = [(label, draws_rows(ev)) for label, ev in labelled if ev is not None]
    blocks = [(label, rows) for label, rows in blocks if rows]
    if not blocks:
        return ""
    text = f"{EXPLANATION}\n"
    for label, rows in blocks:
        text += f"\n### {label} ({rows[0]['draws']} draws)\n\n"
        text += "| attack | eps | one draw | mean ± std over draws | min – max |\n|---|---|---:|---:|---:|\n"
        for r in rows:
            eps = "-" if r["eps"] is None else f"{r['eps']:g}"
            text += (f"| {r['attack']} | {eps} | {r['one_draw']:.1f} | {r['mean']:.1f} ± {r['std']:.1f} "
                     f"| {r['min']:.1f} – {r['max']:.1f} |\n")
    return text


def draws_markdown(labelled: list[tuple[str, Evaluation]]) -> str:
    """The section in Markdown (heading included); '' when no evaluation has redraws."""
    body = _blocks_markdown(labelled)
    return f"\n## {HEADING}\n\n{body}" if body else ""


def draws_html_blocks(labelled: list[tuple[str, Evaluation]]) -> list[tuple[str, object]]:
    body = _blocks_markdown(labelled)
    return [("heading", HEADING), ("markdown", body.strip())] if body else []
