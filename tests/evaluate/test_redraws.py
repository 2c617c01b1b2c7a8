"""Evaluating a stochastic model: the engine detects it, seeds its randomness per batch (records are
reproducible and resumable) and repeats every final prediction K times; the report shows the spread."""

from __future__ import annotations

import numpy as np
import pytest

from robustloss.defenses import apply_defense
from robustloss.evaluate import evaluate
from robustloss.evaluate.config import AttackSpec
from robustloss.evaluate.records import NOT_ATTACKED, AttackRecord, Evaluation
from robustloss.experiments.store import ResultsStore
from robustloss.report.draws import draws_markdown, draws_rows

PLAN = [AttackSpec("pgd", [0.15], {"steps": 5, "step_size": 0.05})]
QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}


@pytest.fixture(scope="module")
def defended(trained_lenet):
    return apply_defense(trained_lenet, "random-resize-pad")


@pytest.fixture(scope="module")
def random_eval(defended, mnist5k):
    return evaluate(defended, mnist5k.test, PLAN, max_samples=120, batch_size=50, seed=3, redraws=6, **QUIET)


def _same(a: Evaluation, b: Evaluation) -> None:
    np.testing.assert_array_equal(a.clean_pred, b.clean_pred)
    np.testing.assert_array_equal(a.clean_redraw_pred, b.clean_redraw_pred)
    for ra, rb in zip(a.records, b.records, strict=True):
        np.testing.assert_array_equal(ra.adv_pred, rb.adv_pred)
        np.testing.assert_array_equal(ra.redraw_pred, rb.redraw_pred)
        np.testing.assert_array_equal(ra.linf, rb.linf)


def test_a_random_model_is_detected_and_redrawn(random_eval):
    assert random_eval.meta["stochastic"] is True and random_eval.meta["redraws"] == 6
    assert random_eval.clean_redraw_pred.shape == (6, 120)
    record = random_eval.records[0]
    assert record.redraw_pred.shape == (6, 120)
    assert (record.redraw_pred[:, ~record.attacked] == NOT_ATTACKED).all()
    assert (record.redraw_pred[:, record.attacked] >= 0).all()
    # the draws really differ: a randomised model's verdict on some images changes between draws
    assert (record.redraw_pred[:, record.attacked] != record.redraw_pred[0, record.attacked]).any()
    spread = random_eval.accuracy_over_draws(record)
    assert spread.draws == 6 and spread.std > 0 and min(spread.per_draw) <= spread.mean <= max(spread.per_draw)


def test_a_deterministic_model_is_not_redrawn(trained_lenet, mnist5k):
    ev = evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=50, redraws=6, **QUIET)
    assert ev.meta["stochastic"] is False and "redraws" not in ev.meta
    assert ev.clean_redraw_pred is None and ev.records[0].redraw_pred is None
    assert ev.accuracy_over_draws() is None


def test_random_model_records_are_identical_under_a_fixed_seed_and_after_a_resume(defended, mnist5k, random_eval,
                                                                                   tmp_path):
    again = evaluate(defended, mnist5k.test, PLAN, max_samples=120, batch_size=50, seed=3, redraws=6, **QUIET)
    _same(random_eval, again)
    cache = tmp_path / "chunks"
    evaluate(defended, mnist5k.test, PLAN, max_samples=120, batch_size=50, seed=3, redraws=6, cache_dir=cache, **QUIET)
    assert len(list(cache.glob("*.npz"))) == 3
    next(iter(sorted(cache.glob("*.npz")))).unlink()  # as if killed before the first batch was saved
    _same(random_eval, evaluate(defended, mnist5k.test, PLAN, max_samples=120, batch_size=50, seed=3, redraws=6,
                                cache_dir=cache, **QUIET))
    other_seed = evaluate(defended, mnist5k.test, PLAN, max_samples=120, batch_size=50, seed=4, redraws=6, **QUIET)
    assert not np.array_equal(other_seed.clean_redraw_pred, random_eval.clean_redraw_pred)


def test_redraws_survive_the_npz_file_and_the_store(random_eval, tmp_path):
    _same(random_eval, Evaluation.load(random_eval.save(tmp_path / "records.npz")))
    store = ResultsStore(tmp_path / "results.sqlite")
    run_id = store.upsert_run(hash="abcd1234", experiment="e", name="r", config={})
    store.save_evaluation(run_id, random_eval)
    _same(random_eval, store.load_evaluation(run_id))
    store.close()


def test_bad_redraws_are_refused(trained_lenet, mnist5k):
    with pytest.raises(ValueError, match="redraws"):
        evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=10, redraws=-1, **QUIET)


def test_spread_and_report_rows_match_a_hand_computation():
    labels = np.array([0, 1, 2, 3])
    clean_pred = np.array([0, 1, 2, 0])  # sample 3 is clean-wrong: never attacked, wrong in every draw
    redraw = np.array([[0, 1, 2, NOT_ATTACKED], [0, 0, 2, NOT_ATTACKED], [1, 0, 2, NOT_ATTACKED]])
    record = AttackRecord(attack="pgd", eps=0.1, params={}, adv_pred=np.array([0, 1, 0, NOT_ATTACKED]),
                          linf=np.zeros(4, np.float32), l2=np.zeros(4, np.float32), queries=np.zeros(4, np.int64),
                          redraw_pred=redraw)
    ev = Evaluation(index=np.arange(4), labels=labels, clean_pred=clean_pred, records=[record],
                    clean_redraw_pred=np.array([[0, 1, 2, 3], [0, 1, 0, 0], [0, 1, 2, 0]]))
    clean = ev.accuracy_over_draws()
    assert clean.per_draw == (1.0, 0.5, 0.75) and clean.mean == pytest.approx(0.75)
    assert clean.std == pytest.approx(0.25)  # sample standard deviation of 1, 0.5, 0.75
    spread = ev.accuracy_over_draws(record)
    assert spread.per_draw == (0.75, 0.5, 0.25)  # robust: clean-correct and correct in that draw
    rows = draws_rows(ev)
    assert [r["attack"] for r in rows] == ["clean", "pgd"]
    assert rows[1]["one_draw"] == pytest.approx(50.0) and rows[1]["mean"] == pytest.approx(50.0)
    assert rows[1]["min"] == pytest.approx(25.0) and rows[1]["max"] == pytest.approx(75.0)
    text = draws_markdown([("Random", ev), ("SCE", Evaluation(index=np.arange(1), labels=labels[:1],
                                                              clean_pred=clean_pred[:1]))])
    assert "### Random (3 draws)" in text and "| pgd | 0.1 | 50.0 | 50.0 ± 25.0 | 25.0 – 75.0 |" in text
    assert "SCE" not in text  # deterministic models have no redraws and no block
    assert draws_markdown([("SCE", None)]) == ""


def test_diagnostic_9_quotes_how_much_a_verdict_depends_on_the_draw(random_eval):
    from robustloss.evaluate.diagnostics import diagnose

    check = next(d for d in diagnose(random_eval) if d.number == 9)
    record = random_eval.records[0]
    gap = abs(random_eval.accuracy(record) - random_eval.accuracy_over_draws(record).mean)
    assert check.status == "warn" and "6 redraws" in check.detail
    assert check.numbers["max_redraw_gap"] == pytest.approx(gap)


def test_attacks_on_a_random_model_return_their_final_iterate(defended, mnist5k, random_eval):
    """Early stopping judged on one random draw keeps weak iterates; on a random model the engine
    turns it off unless the plan sets it, and the result is a much stronger attack."""
    assert random_eval.records[0].params["early_stop"] is False
    early = evaluate(defended, mnist5k.test, [AttackSpec("pgd", [0.15], {"steps": 5, "step_size": 0.05,
                                                                         "early_stop": True})],
                     max_samples=120, batch_size=50, seed=3, redraws=6, **QUIET)
    assert "early_stop" not in early.records[0].params  # the attack's default, kept as asked
    final, stopped = (ev.accuracy_over_draws(ev.records[0]).mean for ev in (random_eval, early))
    assert final < stopped - 0.05, (final, stopped)


def test_probes_inherit_the_plans_eot():
    from robustloss.evaluate.probes import probe_plan

    plain = probe_plan([AttackSpec("pgd", [0.1], {"steps": 5})])
    assert all("eot" not in p.params for p in plain)
    with_eot = probe_plan([AttackSpec("pgd", [0.1], {"steps": 5, "eot": 4}), AttackSpec("fgsm", [0.1])])
    assert {p.params["eot"] for p in with_eot} == {4} and len(with_eot) == len(plain) - 1
