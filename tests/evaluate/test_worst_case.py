"""Worst case over attacks, worst-case mode, resumable chunks, saved adversarial examples, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustloss.evaluate import AttackSpec, Evaluation, evaluate, worst_case_curves, worst_case_robust
from robustloss.evaluate.records import AttackRecord

QUIET = {"progress": False, "log": lambda _: None, "device": "cpu"}
PLAN = [AttackSpec("fgsm", [0.05, 0.1]), AttackSpec("pgd", [0.05, 0.1], {"steps": 10, "step_size": 0.02})]


def record(attack, eps, adv_pred, linf, norm="linf"):
    adv_pred = np.asarray(adv_pred)
    linf = np.asarray(linf, dtype=np.float32)
    return AttackRecord(attack, eps, {}, adv_pred=adv_pred, linf=linf, l2=linf * 10, queries=np.ones_like(adv_pred),
                        norm=norm)


def test_worst_case_by_hand():
    labels = np.array([0, 1, 2, 3])
    clean = np.array([0, 1, 2, 0])  # sample 3 is wrong from the start
    ev = Evaluation(np.arange(4), labels, clean, [
        record("fgsm", 0.1, [9, 1, 2, -1], [0.1, 0.1, 0.1, np.nan]),  # breaks sample 0 at 0.1
        record("pgd", 0.3, [0, 9, 2, -1], [0.3, 0.05, 0.3, np.nan]),  # breaks sample 1 with only 0.05
        record("cw", None, [0, 1, 9, -1], [0.5, 0.5, 0.5, np.nan], norm="l2"),  # another norm: not mixed in
    ])
    # at eps 0.1: sample 0 (fgsm) and sample 1 (pgd found it within 0.05 <= 0.1) are broken
    assert worst_case_robust(ev, "linf", 0.1).tolist() == [False, False, True, False]
    assert worst_case_robust(ev, "linf", 0.04).tolist() == [True, True, True, False]
    assert worst_case_curves(ev)["linf"] == [(0.1, 0.25), (0.3, 0.25)]
    # C&W ran unbounded: its L2 distances (5.0 here) place each success on the whole L2 curve
    assert worst_case_robust(ev, "l2", 4.9).tolist() == [True, True, True, False]
    assert worst_case_robust(ev, "l2", 5.0).tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def protocol(trained_lenet, mnist5k):
    return evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=300, seed=1, **QUIET)


def test_worst_case_mode_agrees_with_protocol_records_and_attacks_less(protocol, trained_lenet, mnist5k):
    worst = evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=300, seed=1, mode="worst-case", **QUIET)
    attacked = lambda ev: sum(int(r.attacked.sum()) for r in ev.records)  # noqa: E731
    assert attacked(worst) < attacked(protocol)
    for eps in (0.05, 0.1):
        full = worst_case_robust(protocol, "linf", eps).mean()
        lean = worst_case_robust(worst, "linf", eps).mean()
        assert lean <= full + 0.02  # same worst case up to attack randomness on different batches
        assert worst_case_robust(protocol, "linf", eps).mean() <= min(
            protocol.accuracy(r) for r in protocol.records if r.eps == eps)


def test_a_sample_broken_at_a_smaller_budget_is_not_attacked_at_a_larger_one(protocol, trained_lenet, mnist5k):
    """Worst-case mode: FGSM's success at eps 0.05 (distance <= 0.05) already breaks the sample at 0.1,
    so no attack spends work on it at 0.1. Protocol mode still attacks it, so each row stands alone."""
    worst = evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=300, seed=1, mode="worst-case", **QUIET)
    small, large = worst.find("fgsm", 0.05), worst.find("fgsm", 0.1)
    broken_small = worst.fooled(small)
    assert broken_small.sum() > 10
    assert not (large.attacked & broken_small).any()
    assert not (worst.find("pgd", 0.1).attacked & broken_small).any()
    assert (protocol.find("fgsm", 0.1).attacked & protocol.fooled(protocol.find("fgsm", 0.05))).sum() \
        == protocol.fooled(protocol.find("fgsm", 0.05)).sum()
    # the worst case itself is unchanged: the skipped samples count as broken at the larger budget
    assert not worst_case_robust(worst, "linf", 0.1)[broken_small].any()


def test_killed_evaluation_resumes_from_cached_chunks(trained_lenet, mnist5k, tmp_path):
    cache = tmp_path / "chunks"
    calls = {"n": 0}

    def stop_after_two(message):
        calls["n"] += 1
        if calls["n"] == 3:  # clean line, then two finished (attack, eps) cells
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(trained_lenet, mnist5k.test, PLAN, max_samples=300, seed=1, batch_size=100, cache_dir=cache,
                 progress=False, device="cpu", log=stop_after_two)
    finished = len(list(cache.glob("*.npz")))
    assert finished >= 2
    hook_calls = []
    handle = trained_lenet.register_forward_hook(lambda *a: hook_calls.append(1))
    try:
        evaluate(trained_lenet, mnist5k.test, [], max_samples=300, seed=1, batch_size=100, **QUIET)
        without_attacks = len(hook_calls)  # sanity checks, the stochasticity probe and the clean pass
        resumed = evaluate(trained_lenet, mnist5k.test, PLAN[:1], max_samples=300, seed=1, batch_size=100,
                           cache_dir=cache, **QUIET)
    finally:
        handle.remove()
    assert len(hook_calls) == 2 * without_attacks  # no attack pass at all: every FGSM chunk was cached
    straight = evaluate(trained_lenet, mnist5k.test, PLAN[:1], max_samples=300, seed=1, batch_size=100, **QUIET)
    for a, b in zip(resumed.records, straight.records):
        assert np.array_equal(a.adv_pred, b.adv_pred)
    assert len(list(cache.glob("*.npz"))) == finished  # nothing duplicated


def test_saved_adversarial_examples_reproduce_the_records(trained_lenet, mnist5k, tmp_path):
    ev = evaluate(trained_lenet, mnist5k.test, PLAN[1:], max_samples=200, seed=2, save_adversarial=tmp_path, **QUIET)
    saved = torch.load(tmp_path / "pgd_eps0.1.pt", weights_only=True)
    rec = ev.find("pgd", 0.1)
    assert set(saved["index"].tolist()) == set(np.flatnonzero(ev.fooled(rec)).tolist())
    with torch.no_grad():
        assert torch.equal(trained_lenet(saved["x_adv"]).argmax(1), saved["adv_pred"])
    clean = mnist5k.test.batch(saved["index"])[0]
    assert (saved["x_adv"] - clean).abs().max() <= 0.1 + 1e-5


def test_targeted_specs_get_seeded_wrong_class_targets(trained_lenet, mnist5k):
    spec = AttackSpec("pgd", [0.3], {"targeted": True, "steps": 20, "step_size": 0.03})
    a = evaluate(trained_lenet, mnist5k.test, [spec], max_samples=100, seed=3, **QUIET)
    b = evaluate(trained_lenet, mnist5k.test, [spec], max_samples=100, seed=3, **QUIET)
    ra, rb = a.records[0], b.records[0]
    attacked = ra.attacked
    assert np.array_equal(ra.target, rb.target)
    assert (ra.target[attacked] != a.labels[attacked]).all()
    assert (ra.adv_pred[attacked] == ra.target[attacked]).mean() > 0.5
    assert ra.params["targets"] == "random"


def test_presets_are_accepted_in_plans(trained_lenet, mnist5k):
    ev = evaluate(trained_lenet, mnist5k.test, [AttackSpec("pgd-pc", [0.1])], max_samples=50, **QUIET)
    rec = ev.records[0]
    assert rec.attack == "pgd" and rec.name == "pgd-pc" and rec.params["steps"] == 40


def test_a_transfer_attack_submits_the_same_images_to_every_target(trained_lenet, mnist5k, cnn3_substitute,
                                                                   tmp_path):
    """Its batches cover every sampled image, so they do not depend on the target; the second target
    is served from the memo, and its record is what crafting afresh gives."""
    from robustloss.attacks.transfer import TransferAttack
    from robustloss.evaluate import EvaluateConfig
    from robustloss.evaluate.engine import run_plan
    from robustloss.evaluate.records import NOT_ATTACKED

    split = mnist5k.test.subset(slice(0, 120))
    weak = create_weaker_copy(trained_lenet)
    plan = [AttackSpec("transfer", [0.15], {"substitute": str(cnn3_substitute), "method_params": {"steps": 5}})]
    config = EvaluateConfig(batch_size=50, seed=0)
    TransferAttack.memo.clear()
    run_plan(trained_lenet, split, plan, config, save_adversarial=tmp_path / "a", **QUIET)
    assert (TransferAttack.memo.hits, TransferAttack.memo.misses) == (0, 3)  # 120 images in batches of 50
    second = run_plan(weak, split, plan, config, save_adversarial=tmp_path / "b", **QUIET)
    assert (TransferAttack.memo.hits, TransferAttack.memo.misses) == (3, 3)
    TransferAttack.memo.clear()
    alone = run_plan(weak, split, plan, config, **QUIET)
    assert np.array_equal(second.records[0].adv_pred, alone.records[0].adv_pred)
    wrong = second.clean_pred != second.labels
    assert wrong.any() and (second.records[0].adv_pred[wrong] == NOT_ATTACKED).all()
    a, b = (torch.load(tmp_path / d / "transfer_eps0.15.pt") for d in ("a", "b"))
    shared = np.intersect1d(a["index"].numpy(), b["index"].numpy())
    assert len(shared) > 0
    rows_a = {int(i): k for k, i in enumerate(a["index"])}
    rows_b = {int(i): k for k, i in enumerate(b["index"])}
    for i in shared:
        assert torch.equal(a["x_adv"][rows_a[int(i)]], b["x_adv"][rows_b[int(i)]])


def create_weaker_copy(model):
    """The same network with noise on its weights: a different target with some clean errors."""
    import copy

    weak = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in weak.parameters():
            p.add_(0.15 * p.abs().mean() * torch.randn(p.shape, generator=generator))
    return weak.eval()
