"""Pre-attack sanity checks on real models: the CE-trained LeNet-5 and wrappers of it that break one
property each (probability outputs, logits scaled by 1e4, dropout that stays on, training mode,
images outside [0, 1])."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.evaluate.sanity import (
    MASKED_GRADIENT_SHARE,
    SATURATED_SHARE,
    LogProbabilities,
    as_logits,
    format_sanity,
    sanity_checks,
)

NAMES = ["input-range", "probability-outputs", "gradients", "saturated-logits", "stochastic", "training-mode"]
N = 256  # the checks' default sample; shares against the 5% limits need it
SMALL = 64  # enough for the checks that do not count shares (mode, input range, formatting)


class Softmax(nn.Module):
    """A model that returns probabilities, as many exported classifiers do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = 10

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(dim=1)


class Scaled(nn.Module):
    """Logits times a large constant: same predictions, saturated softmax (defensive-distillation-like)."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale


class AlwaysDropout(nn.Module):
    """Dropout on the input that stays on in eval mode (a randomised defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, p=0.1, training=True)


@pytest.fixture(scope="module")
def data(mnist5k) -> tuple[Tensor, Tensor]:
    return mnist5k.test.batch(slice(0, N))


def _by_name(checks):
    return {c.name: c for c in checks}


def test_every_check_passes_on_the_trained_lenet(trained_lenet, data):
    trained_lenet.zero_grad(set_to_none=True)  # the model is shared: another test may have left gradients
    before = torch.get_rng_state()
    checks = sanity_checks(trained_lenet, *data)
    assert [c.name for c in checks] == NAMES
    assert {c.name: c.status for c in checks} == dict.fromkeys(NAMES, "pass"), format_sanity(checks)
    assert all(c.meaning == "" and c.action == "" for c in checks)
    assert not trained_lenet.training
    assert all(p.grad is None for p in trained_lenet.parameters())  # input gradients only
    assert torch.equal(torch.get_rng_state(), before)
    assert as_logits(trained_lenet, checks) is trained_lenet


def test_probability_outputs_are_flagged_and_wrapped(trained_lenet, data):
    x, y = data
    probabilities = Softmax(trained_lenet).eval()
    checks = _by_name(sanity_checks(probabilities, x, y))
    check = checks["probability-outputs"]
    assert check.status == "warn" and check.numbers["rows_summing_to_1"] == N
    assert "log-probabilities" in check.action
    # the gradient/saturation checks measured what gets attacked, and the log view is healthy
    assert checks["gradients"].status == "pass" and "log-probabilities" in checks["gradients"].detail
    wrapped = as_logits(probabilities, list(checks.values()))
    assert isinstance(wrapped, LogProbabilities) and wrapped.num_classes == 10
    classifier = LogProbabilities(trained_lenet)  # the attributes the objectives read travel along, where present
    assert (classifier.num_classes, classifier.trained_with) == (trained_lenet.num_classes, trained_lenet.trained_with)
    assert not hasattr(LogProbabilities(nn.Identity()), "num_classes")
    assert _by_name(sanity_checks(wrapped, x, y))["probability-outputs"].status == "pass"


def test_log_probabilities_keep_the_argmax_and_restore_ce_gradients(trained_lenet, data):
    x, y = data
    wrapped = LogProbabilities(Softmax(trained_lenet)).eval()
    with torch.no_grad():
        assert torch.equal(wrapped(x).argmax(dim=1), trained_lenet(x).argmax(dim=1))
    grads = {}
    for name, model in (("log-probabilities", wrapped), ("logits", trained_lenet)):
        xg = x.clone().requires_grad_(True)
        (grads[name],) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    nonzero = grads["log-probabilities"].flatten(1).abs().amax(dim=1) > 0
    assert bool(nonzero.all())
    # log softmax(z) differs from z by a per-row constant, which CE ignores: the gradients are the logits' ones
    # up to float32 round-off of the softmax/log round trip
    torch.testing.assert_close(grads["log-probabilities"], grads["logits"], rtol=1e-3, atol=1e-6)


def test_scaled_logits_saturate_ce_but_not_dlr(trained_lenet, data):
    checks = _by_name(sanity_checks(Scaled(trained_lenet, 1e4).eval(), *data))
    saturation = checks["saturated-logits"]
    assert saturation.status == "warn" and saturation.numbers["saturated"] / N > SATURATED_SHARE
    gradients = checks["gradients"]
    per_objective = gradients.numbers["objectives"]
    assert gradients.status == "warn"
    assert per_objective["ce"]["share"] > MASKED_GRADIENT_SHARE
    assert per_objective["dlr"]["share"] <= MASKED_GRADIENT_SHARE
    assert "ce" in gradients.meaning and "dlr" not in gradients.meaning
    assert checks["probability-outputs"].status == "pass"


def test_dropout_that_stays_on_is_flagged_stochastic(trained_lenet, data):
    model = nn.Sequential(AlwaysDropout(), trained_lenet).eval()
    before = torch.get_rng_state()
    checks = _by_name(sanity_checks(model, *data))
    assert checks["stochastic"].status == "warn" and "EOT = 20" in checks["stochastic"].action
    assert torch.equal(torch.get_rng_state(), before)  # the probes drew from a forked stream
    assert checks["training-mode"].status == "pass"


def test_training_mode_is_flagged_and_restored(trained_lenet, data):
    model = copy.deepcopy(trained_lenet).train()
    checks = _by_name(sanity_checks(model, *data, n=SMALL))
    assert checks["training-mode"].status == "warn" and checks["training-mode"].numbers["was_training"] is True
    assert all(m.training for m in model.modules())
    # the caller already switched to eval mode but reports what it found
    model.eval()
    assert _by_name(sanity_checks(model, *data, n=SMALL, was_training=True))["training-mode"].status == "warn"
    assert not any(m.training for m in model.modules())
    # a mixed-mode model (one submodule left training) is flagged and kept exactly as it was
    child = next(iter(model.children()))
    child.train()
    modes = [m.training for m in model.modules()]
    assert _by_name(sanity_checks(model, *data, n=SMALL))["training-mode"].status == "warn"
    assert [m.training for m in model.modules()] == modes


def test_images_outside_the_unit_box_fail(trained_lenet, data):
    x, y = data
    bad = x.clone()
    bad[3, 0, 5, 5] = 1.5
    checks = _by_name(sanity_checks(trained_lenet, bad, y, n=SMALL))
    check = checks["input-range"]
    assert check.status == "fail" and check.numbers["max"] == 1.5 and "1.5" in check.detail
    assert "normalise inside the model" in check.action
    assert checks["gradients"].numbers["rows"] == SMALL - 1  # the model checks skip the invalid image
    bad[7, 0, 1, 1] = float("nan")
    assert _by_name(sanity_checks(trained_lenet, bad, y, n=SMALL))["input-range"].numbers["nonfinite"] == 1
    normalised = (x - 0.1307) / 0.3081  # no row is a valid image: only the checks that need no outputs
    assert [c.name for c in sanity_checks(trained_lenet, normalised, y, n=SMALL)] == ["input-range", "training-mode"]


def test_format_sanity_is_one_markdown_row_per_check(trained_lenet, data):
    checks = sanity_checks(Scaled(trained_lenet, 1e4).eval(), *data, n=SMALL)
    checks[0].detail = "a | b"
    table = format_sanity(checks).splitlines()
    assert table[0] == "| check | status | detail | meaning | action |" and len(table) == 2 + len(checks)
    assert "a \\| b" in table[2] and "**WARN**" in format_sanity(checks)
    assert all(len(re.split(r"(?<!\\)\|", row)) == 7 for row in table[2:])  # 5 cells between unescaped pipes


def test_mismatched_inputs_are_rejected(trained_lenet, data):
    x, y = data
    with pytest.raises(ValueError):
        sanity_checks(trained_lenet, x, y[:-1])
    with pytest.raises(ValueError):
        sanity_checks(trained_lenet, x, y, n=0)
