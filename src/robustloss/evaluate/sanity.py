"""Sanity checks run on a sample of the data before a standard evaluation attacks a model.

``sanity_checks(model, x, y)`` looks at an arbitrary user ``nn.Module`` (images in [0, 1] -> logits)
for the properties that silently make robust-accuracy numbers wrong, and says for each what it
measured, what it means for the numbers and what the standard evaluation does about it. They are the
pre-attack counterpart of the post-hoc gradient-masking diagnostics (``robustloss.evaluate.diagnostics``,
Athalye, Carlini & Wagner 2018; Carlini et al. 2019), in the spirit of the checks AutoAttack
(Croce & Hein 2020) prints before it runs.

Checks, in the order returned (``name``: rule -> status):

* ``input-range``: every value of ``x`` is finite and in [0, 1] -> else ``fail``. Attacks clip to the
  [0, 1] image box and their budgets are stated in its units; normalised or NaN inputs cannot be
  evaluated honestly at all. Checked on all of ``x`` (a min/max is cheap); the model checks below
  then use only the valid rows of the sample, and are left out when none is valid.
* ``finite-outputs``: some output on the valid sample images is NaN or infinite -> ``fail``. Present only
  when it fails, and then it replaces the output checks below (they have nothing finite to measure);
  a passing evaluation keeps the list below. A diverged model (weights blown up to ~1e37 by a huge
  learning rate) computes NaN, and the arg-max of NaN logits would pass for a ~10 % accuracy.
* ``probability-outputs``: the outputs are probabilities, not logits -> ``warn``. Rule: rows that sum
  to 1 within ``PROBABILITY_SUM_ATOL`` with no negative entry make up >= ``PROBABILITY_ROW_SHARE`` of
  the sample, or every output lies in [0, 1] (sigmoid heads). ``as_logits`` then wraps the model in
  ``LogProbabilities``, and the gradient and saturation checks measure that wrapped model, since it
  is what gets attacked.
* ``gradients``: for each objective (resolved per model, ``resolve_objective``) the share of samples
  whose input gradient is all-zero or has a non-finite entry -> ``warn`` above
  ``MASKED_GRADIENT_SHARE`` for any objective (the limit of diagnostic 7).
* ``saturated-logits``: share of samples where the float32 softmax of the true class is exactly 1.0,
  or the gap between the two largest logits exceeds ``SATURATION_GAP`` -> ``warn`` above
  ``SATURATED_SHARE``. Why these two rules:
    - softmax(a)_y rounds to 1.0 in float32 once sum_{j!=y} exp(a_j - a_y) < 2^-24, i.e. a margin of
      about ln(2^24) = 16.6 or more. Then the CE loss is exactly 0, the true-class entry of its
      logit gradient (p_y - 1) is exactly 0, and APGD's loss-based step-size and checkpoint rules
      see a flat objective: only the exponentially small other entries exp(a_j - a_y) remain.
    - a top-2 gap of 50 puts those entries at exp(-50) ~ 2e-22 whatever the true class: three times
      the 16.6 at which float32 saturates, well beyond the gaps of ordinary training (the 3-epoch
      test LeNet-5 tops out at 15 on 256 MNIST test digits), the signature of scaled-up logits (temperature or
      distillation-like heads). Beyond a gap of ~87-103 those entries underflow to 0 (float32
      normal/subnormal limits) and the gradient itself vanishes, which the ``gradients`` check sees.
* ``stochastic``: two eval-mode forward passes on the same inputs differ
  (``robustloss.evaluate.stochastic.is_stochastic``, same tolerances) -> ``warn``.
* ``training-mode``: the model was handed over in training mode (``was_training``, default
  ``model.training``), or some submodule is in training mode -> ``warn``.

Conventions: everything runs on the model's device, in eval mode (as the attacks do) and float32
(autocast off, as attack verdicts are), inside a forked RNG: a stochastic model draws from the
global stream during the probes, but the stream is restored afterwards, so probing never shifts the
randomness of the evaluation that follows. Each module's training flag is restored exactly (mixed
modes included). Cost: two forward passes and one backward pass per objective on at most ``n``
samples (the first ``n``; the caller picks the sample), plus the two passes of ``is_stochastic``.
Input gradients are taken with ``torch.autograd.grad``, so parameters never receive ``.grad``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from robustloss.models.modes import kept_modes
from robustloss.attacks.objectives import Objective, get_objective, resolve_objective
from robustloss.precision import full_precision
from robustloss.evaluate.stochastic import SAME_OUTPUT_ATOL, SAME_OUTPUT_RTOL, is_stochastic

Status = Literal["pass", "warn", "fail"]

PROBABILITY_SUM_ATOL = 1e-3  # |row sum - 1| allowed for a probability row (float32 softmax is ~1e-7 off)
PROBABILITY_ROW_SHARE = 0.99  # share of such rows that marks the outputs as probabilities
MASKED_GRADIENT_SHARE = 0.05  # as diagnostic 7: more zero/non-finite input gradients than this is suspicious
SATURATION_GAP = 50.0  # top-2 logit gap beyond which CE is saturated (see the module docstring)
SATURATED_SHARE = 0.05  # more saturated samples than this weakens CE-based attacks noticeably


@dataclass
class SanityCheck:
    name: str  # "input-range", "finite-outputs", "probability-outputs", "gradients", "saturated-logits",
    #            "stochastic", "training-mode"
    status: Status  # fail = cannot evaluate honestly at all (input-range, finite-outputs)
    detail: str  # what was measured, with numbers
    meaning: str  # what it means for the robust-accuracy numbers ("" when pass)
    action: str  # what the standard evaluation does about it ("" when pass)
    numbers: dict = field(default_factory=dict)


class LogProbabilities(nn.Module):
    """A probability-output model seen as a logit model: forward returns log p.

    log p is a logit vector whose softmax is p (for rows that sum to 1), so CE, DLR and the margin
    objectives work on it as on ordinary logits and the arg-max is unchanged. Probabilities that are
    exactly 0 are clamped to the dtype's smallest normal number first, so log stays finite.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for attribute in ("num_classes", "trained_with"):  # read by the objectives and the evaluation
            if hasattr(model, attribute):
                setattr(self, attribute, getattr(model, attribute))

    def forward(self, x: Tensor) -> Tensor:
        p = self.model(x)
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def as_logits(model: nn.Module, checks: Sequence[SanityCheck]) -> nn.Module:
    """``LogProbabilities(model)`` when the probability-outputs check warned, else ``model`` itself."""
    flagged = any(c.name == "probability-outputs" and c.status == "warn" for c in checks)
    return LogProbabilities(model) if flagged else model


def sanity_checks(model: nn.Module, x: Tensor, y: Tensor, *, objectives: Sequence[str] = ("ce", "dlr"),
                  n: int = 256, was_training: bool | None = None) -> list[SanityCheck]:
    """Run every check on the first ``n`` samples of ``(x, y)`` (the input range on all of ``x``).

    ``was_training`` is the model's mode as the caller found it, before any ``model.eval()`` of its
    own; None reads ``model.training`` now.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"sanity_checks: needs as many labels as images (> 0), got {len(x)} and {len(y)}")
    if n < 1:
        raise ValueError(f"sanity_checks: n must be >= 1, got {n}")
    input_check, valid = _input_range(x, n)
    mode_check = _training_mode(model, was_training)
    device = _model_device(model, x.device)
    xs, ys = x[:n][valid].to(device), y[:n][valid].to(device)
    if len(xs) == 0:  # nothing valid to feed the model: only the checks that need no outputs
        return [input_check, mode_check]
    with _probing(model, device):
        with torch.no_grad():
            outputs = model(xs).float()
        finite_check = _finite_outputs(outputs)
        if finite_check is not None:  # the checks below measure outputs; NaN/inf ones have nothing to measure
            return [input_check, finite_check, mode_check]
        probability_check = _probability_outputs(outputs)
        attacked = LogProbabilities(model) if probability_check.status == "warn" else model
        on = " (on log-probabilities, as attacked)" if attacked is not model else ""
        logits, gradient_check = _gradients(attacked, xs, ys, objectives, on)
        saturation_check = _saturation(logits, ys, on)
        stochastic_check = _stochastic(model, xs)
    return [input_check, probability_check, gradient_check, saturation_check, stochastic_check, mode_check]


@contextlib.contextmanager
def _probing(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, float32, a forked RNG; every module's training flag restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with kept_modes(model):
        model.eval()
        with torch.random.fork_rng(devices=devices), full_precision(device):
            yield


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return fallback


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / max(total, 1):.1f}%)"


def _input_range(x: Tensor, n: int) -> tuple[SanityCheck, Tensor]:
    """The check over all of ``x``, and which of the first ``n`` rows are valid images."""
    action = "normalise inside the model; attacks work on [0, 1] images"
    sample = x[:n]
    if not x.is_floating_point():
        check = SanityCheck("input-range", "fail", f"images are {x.dtype}, not floating point in [0, 1]",
                            "attack budgets and the [0, 1] box are meaningless for these inputs", action,
                            {"dtype": str(x.dtype)})
        return check, torch.zeros(len(sample), dtype=torch.bool, device=x.device)
    finite = torch.isfinite(x)
    nonfinite = int((~finite).sum())
    low = float(x.masked_fill(~finite, math.inf).min()) if nonfinite < x.numel() else math.nan
    high = float(x.masked_fill(~finite, -math.inf).max()) if nonfinite < x.numel() else math.nan
    outside = int(((x < 0) | (x > 1)).sum())
    flat = sample.flatten(1)
    valid = (torch.isfinite(flat) & (flat >= 0) & (flat <= 1)).all(dim=1)
    numbers = {"min": low, "max": high, "outside": outside, "nonfinite": nonfinite, "values": x.numel()}
    detail = f"values in [{low:.4g}, {high:.4g}]; {outside} outside [0, 1], {nonfinite} non-finite"
    if outside == 0 and nonfinite == 0:
        return SanityCheck("input-range", "pass", detail, "", "", numbers), valid
    detail += f"; the model checks use the {int(valid.sum())} valid images of the first {len(sample)}"
    meaning = ("the attacks clip to the [0, 1] box and state budgets in its units: normalised or out-of-range "
               "inputs give perturbations of the wrong size, non-finite ones give no result at all")
    return SanityCheck("input-range", "fail", detail, meaning, action, numbers), valid


def _finite_outputs(outputs: Tensor) -> SanityCheck | None:
    """The ``finite-outputs`` failure, or None when every output is finite."""
    bad_rows = ~torch.isfinite(outputs).flatten(1).all(dim=1)
    if not bool(bad_rows.any()):
        return None
    count, rows = int(bad_rows.sum()), len(outputs)
    numbers = {"rows": rows, "nonfinite_rows": count, "first": int(bad_rows.nonzero()[0])}
    detail = (f"the model's outputs hold NaN or infinite values on {_share(count, rows)} of the valid sample "
              f"images (the first is image {numbers['first']})")
    meaning = ("the arg-max of NaN logits is arbitrary and attacks get no usable loss or gradient from them: "
               "any accuracy computed from these outputs would be noise")
    action = ("evaluation refused; the model has diverged or is broken: retrain it (e.g. with a lower learning "
              "rate) or check its weights and forward pass")
    return SanityCheck("finite-outputs", "fail", detail, meaning, action, numbers)


def _probability_outputs(outputs: Tensor) -> SanityCheck:
    rows = len(outputs)
    summing = ((outputs.sum(dim=1) - 1).abs() <= PROBABILITY_SUM_ATOL) & (outputs >= 0).all(dim=1)
    in_unit = bool(((outputs >= 0) & (outputs <= 1)).all())
    share = float(summing.float().mean())
    numbers = {"rows": rows, "rows_summing_to_1": int(summing.sum()), "all_in_0_1": in_unit,
               "min": float(outputs.min()), "max": float(outputs.max())}
    detail = (f"rows summing to 1 (within {PROBABILITY_SUM_ATOL:g}, none negative): "
              f"{_share(int(summing.sum()), rows)}; outputs in [{numbers['min']:.4g}, {numbers['max']:.4g}]")
    if share < PROBABILITY_ROW_SHARE and not in_unit:
        return SanityCheck("probability-outputs", "pass", detail, "", "", numbers)
    meaning = ("attacks and CE treat outputs as logits; the softmax of probabilities in [0, 1] is nearly uniform, "
               "so CE and its gradients are weak and robust accuracy is inflated")
    action = "the outputs are attacked as log-probabilities (log p is a logit vector whose softmax is p)"
    return SanityCheck("probability-outputs", "warn", detail, meaning, action, numbers)


def _gradients(model: nn.Module, x: Tensor, y: Tensor, objectives: Sequence[str], on: str
               ) -> tuple[Tensor, SanityCheck]:
    """The logits (detached) and the check: per objective, samples with zero or non-finite input gradient."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        per_objective: dict[str, dict] = {}
        for requested in objectives:
            name = resolve_objective(requested, model)
            if name not in per_objective:
                per_objective[name] = _masked_gradients(get_objective(name), logits, x, y)
    rows = len(y)
    parts, flagged = [], []
    for name, counts in per_objective.items():
        if "skipped" in counts:
            parts.append(f"{name}: not applicable ({counts['skipped']})")
            continue
        masked = counts["zero"] + counts["nonfinite"]
        parts.append(f"{name}: {_share(masked, rows)} all-zero or non-finite ({counts['nonfinite']} non-finite)")
        if counts["share"] > MASKED_GRADIENT_SHARE:
            flagged.append(name)
    detail = "input gradients" + on + ": " + "; ".join(parts)
    numbers = {"rows": rows, "limit": MASKED_GRADIENT_SHARE, "objectives": per_objective}
    if not flagged:
        return logits.detach(), SanityCheck("gradients", "pass", detail, "", "", numbers)
    meaning = (f"gradient attacks using {', '.join(flagged)} cannot move the samples without a usable gradient; "
               "robust accuracy from those attacks is an upper bound")
    action = "Square (gradient-free) and the scale-invariant DLR/margin objectives are in the ensemble"
    return logits.detach(), SanityCheck("gradients", "warn", detail, meaning, action, numbers)


def _masked_gradients(objective: Objective, logits: Tensor, x: Tensor, y: Tensor) -> dict:
    try:
        gain = objective(logits, y, False)
    except ValueError as error:  # e.g. DLR on fewer than 3 classes
        return {"skipped": str(error)}
    (grad,) = torch.autograd.grad(gain.sum(), x, retain_graph=True)
    flat = grad.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    zero = finite & (flat.abs().amax(dim=1) == 0)
    nonfinite = int((~finite).sum())
    return {"zero": int(zero.sum()), "nonfinite": nonfinite, "share": (int(zero.sum()) + nonfinite) / len(y)}


def _saturation(logits: Tensor, y: Tensor, on: str) -> SanityCheck:
    rows = len(y)
    true_is_one = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1) == 1.0
    if logits.shape[1] >= 2:
        top2 = logits.topk(2, dim=1).values
        gap = top2[:, 0] - top2[:, 1]
    else:
        gap = torch.zeros(rows, device=logits.device)
    wide = gap > SATURATION_GAP
    saturated = int((true_is_one | wide).sum())
    numbers = {"rows": rows, "true_class_softmax_is_1": int(true_is_one.sum()), "gap_over_threshold": int(wide.sum()),
               "saturated": saturated, "gap_threshold": SATURATION_GAP, "max_gap": float(gap.max()),
               "limit": SATURATED_SHARE}
    detail = (f"logits{on}: float32 softmax of the true class exactly 1.0 on {_share(int(true_is_one.sum()), rows)}, "
              f"top-2 gap > {SATURATION_GAP:g} on {_share(int(wide.sum()), rows)} (either: {_share(saturated, rows)}); "
              f"largest gap {numbers['max_gap']:.4g}. A gap above ln(2^24) = 16.6 already rounds the softmax to 1.0; "
              f"{SATURATION_GAP:g} leaves other-class gradient entries of exp(-{SATURATION_GAP:g}) ~ 2e-22")
    if saturated / rows <= SATURATED_SHARE:
        return SanityCheck("saturated-logits", "pass", detail, "", "", numbers)
    meaning = ("the CE loss is flat (exactly 0 in float32) and its gradient exponentially small or zero on these "
               "samples: CE-based attacks stall there and overstate robustness")
    action = "the DLR and margin objectives are scale-invariant and do not saturate; APGD-T and FAB-T use them"
    return SanityCheck("saturated-logits", "warn", detail, meaning, action, numbers)


def _stochastic(model: nn.Module, x: Tensor) -> SanityCheck:
    differ = is_stochastic(model, x)
    numbers = {"rows": len(x), "stochastic": differ, "rtol": SAME_OUTPUT_RTOL, "atol": SAME_OUTPUT_ATOL}
    verb = "differ" if differ else "agree"
    detail = (f"two eval-mode forward passes on the same {len(x)} inputs {verb} "
              f"(rtol {SAME_OUTPUT_RTOL:g}, atol {SAME_OUTPUT_ATOL:g})")
    if not differ:
        return SanityCheck("stochastic", "pass", detail, "", "", numbers)
    meaning = ("gradient attacks follow the noise of single draws and a single forward pass gives a random "
               "accuracy: both overstate robustness (Athalye et al. 2018)")
    action = 'the "rand" version (APGD-CE and APGD-DLR with EOT = 20) runs, and predictions are redrawn'
    return SanityCheck("stochastic", "warn", detail, meaning, action, numbers)


def _training_mode(model: nn.Module, was_training: bool | None) -> SanityCheck:
    found = model.training if was_training is None else bool(was_training)
    training = [m for m in model.modules() if m.training]
    kinds = sorted({type(m).__name__ for m in training
                    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))})
    numbers = {"was_training": found, "modules_in_training_mode": len(training), "modules": len(list(model.modules())),
               "mode_dependent": kinds}
    detail = (f"handed over in {'training' if found else 'eval'} mode; "
              f"{len(training)} of {numbers['modules']} modules in training mode now"
              + (f" (mode-dependent: {', '.join(kinds)})" if kinds else ""))
    if not found and not training:
        return SanityCheck("training-mode", "pass", detail, "", "", numbers)
    meaning = ("batch norm in training mode normalises with each batch's statistics (outputs depend on which images "
               "share the batch) and dropout draws new masks: accuracy would depend on batching and randomness")
    action = "the evaluation runs the model in eval mode and restores the mode afterwards"
    return SanityCheck("training-mode", "warn", detail, meaning, action, numbers)


def format_sanity(checks: Sequence[SanityCheck]) -> str:
    """A Markdown table: check, status, detail, meaning, action."""
    marks = {"pass": "pass", "warn": "**WARN**", "fail": "**FAIL**"}
    lines = ["| check | status | detail | meaning | action |", "|---|---|---|---|---|"]
    for c in checks:
        cells = [c.name, marks[c.status], c.detail, c.meaning, c.action]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
