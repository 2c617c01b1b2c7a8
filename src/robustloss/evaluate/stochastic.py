"""Helpers for stochastic models (randomised defences, dropout left on, noise layers).

A stochastic model makes two numbers unreliable unless handled: gradient attacks that follow one
random draw per step (use ``eot=`` on the gradient attacks, Athalye et al. 2018), and accuracies read
from a single forward pass (``prediction_spread`` shows how much they move between draws).

``robustloss.evaluate.evaluate`` calls ``is_stochastic`` on every model it evaluates, stores the answer
in ``meta["stochastic"]`` and, for a random model, repeats every final prediction (``redraws``).
``record_stochasticity(evaluation, model, x)`` does the first part for an ``Evaluation`` built some other
way; diagnostic 9 (``robustloss.evaluate.diagnostics``) reads it and warns when the gradient attacks ran
without EOT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from robustloss.models.modes import kept_modes
from robustloss.evaluate.records import Evaluation

# Two passes closer than this are "the same": non-deterministic GPU kernels (atomics, cuDNN algorithm
# choice) move logits at float round-off level, which is no defence and must not trigger the EOT check.
SAME_OUTPUT_RTOL, SAME_OUTPUT_ATOL = 1e-4, 1e-5


@contextlib.contextmanager
def _eval_mode_and_private_rng(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode (dropout off: attacks run in eval mode too) and a forked RNG, so probing a randomised
    model does not shift the random stream of the evaluation that follows (results stay reproducible)."""
    devices = [device] if device.type == "cuda" else []
    with kept_modes(model):
        model.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield


def is_stochastic(model: nn.Module, x: Tensor) -> bool:
    """True when two eval-mode forward passes on the same inputs ``x`` give different logits."""
    with _eval_mode_and_private_rng(model, x.device):
        first, second = model(x), model(x)
    return not torch.allclose(first, second, rtol=SAME_OUTPUT_RTOL, atol=SAME_OUTPUT_ATOL)


def record_stochasticity(evaluation: Evaluation, model: nn.Module, x: Tensor) -> bool:
    """Probe ``model`` on a batch ``x`` (a few dozen evaluated images suffice), store the answer in
    ``evaluation.meta["stochastic"]`` for the diagnostics, and return it."""
    stochastic = is_stochastic(model, x)
    evaluation.meta["stochastic"] = stochastic
    return stochastic


def prediction_spread(model: nn.Module, x: Tensor, y: Tensor, *, draws: int = 10, batch_size: int = 500
                      ) -> tuple[float, float]:
    """(mean accuracy, standard deviation over draws) of ``model`` on ``(x, y)``, each draw one forward
    pass over every image. A deterministic model gives a spread of 0; a randomised one shows how far a
    single-pass accuracy can be from its expectation. Uses the global RNG (seed it for reproducibility)."""
    if draws < 1:
        raise ValueError(f"prediction_spread: draws must be >= 1, got {draws}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"prediction_spread: needs as many labels as images (> 0), got {len(x)} and {len(y)}")
    with kept_modes(model), torch.no_grad():
        model.eval()
        accuracies = torch.tensor([_accuracy(model, x, y, batch_size) for _ in range(draws)], dtype=torch.float64)
    spread = float(accuracies.std()) if draws > 1 else 0.0
    return float(accuracies.mean()), spread


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    correct = sum(int((model(x[i:i + batch_size]).argmax(dim=1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)
