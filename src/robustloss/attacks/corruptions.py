"""General-purpose corruptions: Gaussian noise and random rotation.

Protocol of the MMC paper (Pang et al., "Rethinking softmax cross-entropy loss for adversarial
robustness", ICLR 2020), Sec. 4.5 and Table 2, Part III: classification accuracy (%) on the
CIFAR-10 test set under

* Gaussian noise with standard deviation sigma = 0.05 (Fawzi et al. 2016; Gilmer et al. 2019),
* random rotation with angles in +-30 degrees (Engstrom et al. 2019),

with pixel values in [0, 1] (Sec. 4.1) and neither transformation used as training
augmentation. The paper reports one accuracy per model and names no repeated draws, so the
default here is one random draw per test image (``draws=1``). It does not say how values
leaving [0, 1] or the corners uncovered by a rotation are handled; we clip to [0, 1] and fill
uncovered pixels with 0 (zero padding), the natural background of MNIST.

``draws = k > 1`` is the worst-of-k variant of Engstrom et al. (2019): k independent random
corruptions per image, and the image counts as fooled if any of them fools the model. Per
sample the attack returns the first fooling draw, else the last draw, and the base class judges
success on what is returned; ``queries`` is the number of draws used (the first fooling one,
else k). Draws are made for the whole batch every time, so a sample's random corruptions do not
depend on whether other samples were fooled.

Strength and ``eps``: these attacks have no norm budget (``norm = None``, the base class checks
only the [0, 1] box), but the evaluation engine builds every attack as ``create_attack(name,
eps=e, **params)`` for each e of a grid and files the results under e. So ``eps`` is an alias
for the corruption strength (sigma for noise, max_degrees for rotation): a sigma grid is simply
``AttackSpec("gaussian-noise", [0.02, 0.05, 0.1])``. Giving ``sigma`` (or ``max_degrees``)
instead also works; giving both with different values is an error. With neither, the paper's
value is used. The attack then reports its strength as ``eps`` as well.

Randomness comes only from the ``generator`` argument (drawn on the CPU, then moved to the
images' device), so a seed reproduces the same corruptions on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustloss.attacks.base import Attack
from robustloss.attacks.objectives import Objective
from robustloss.attacks.presets import register_preset
from robustloss.attacks.registry import ATTACKS

MMC_SIGMA = 0.05  # MMC paper, Table 2 caption
MMC_MAX_DEGREES = 30.0  # MMC paper, Table 2 caption


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image of x (N, C, H, W) about its centre by degrees[i], counter-clockwise as
    displayed (the same sense as ``torch.rot90(x, 1, dims=(-2, -1))``).

    Bilinear interpolation, zero padding, align_corners=False (pixels are squares whose centres
    rotate onto centres for multiples of 90 degrees on square images), clipped to [0, 1].
    """
    angle = degrees.to(x.device, x.dtype) * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    h, w = x.shape[-2:]
    # affine_grid maps each output location (u right, v down, normalised to [-1, 1] along each
    # axis) to the input location it samples. With v pointing down, sampling at
    # (cos u - sin v, sin u + cos v) shows the image turned counter-clockwise by +angle. The H/W
    # factors keep the rotation rigid in pixel space for non-square images.
    zero = torch.zeros_like(angle)
    theta = torch.stack([
        torch.stack([cos, -sin * (h / w), zero], dim=1),
        torch.stack([sin * (w / h), cos, zero], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    turned = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return turned.clamp(0, 1)  # bilinear weights sum to 1, but round-off can leave [0, 1] slightly


class RandomCorruption(Attack):
    """Shared draw loop: ``draws`` random corruptions, keep the first that fools each sample."""

    norm = None
    strength_name = ""  # "sigma" or "max_degrees"

    def __init__(self, *, eps: float | None, strength: float | None, default: float, draws: int, targeted: bool):
        if eps is not None and strength is not None and float(eps) != float(strength):
            raise ValueError(f"{self.name}: eps is an alias for {self.strength_name}; got eps={eps} and "
                             f"{self.strength_name}={strength} - give one of them")
        value = strength if strength is not None else eps if eps is not None else default
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{self.name}: {self.strength_name} must be a finite number >= 0, got {value}")
        if int(draws) != draws or draws < 1:
            raise ValueError(f"{self.name}: draws must be an integer >= 1, got {draws}")
        super().__init__(eps=value, targeted=targeted, objective=None)
        self.strength, self.draws = float(value), int(draws)

    def hyperparameters(self) -> dict:
        # no "objective": these attacks use none (the base's default "ce" would be misleading)
        return {"eps": self.eps, self.strength_name: self.strength, "draws": self.draws, "targeted": self.targeted}

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One random corruption of every image of x, in [0, 1]."""
        raise NotImplementedError

    def run(
        self, model: nn.Module, x: Tensor, y: Tensor, goal: Tensor, objective: Objective,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        result = x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        queries = torch.full((len(x),), self.draws, dtype=torch.int64, device=x.device)
        for draw in range(1, self.draws + 1):
            candidate = self.corrupt(x, generator)
            if draw == self.draws:
                # the last draw needs no forward here: the base class judges what is returned
                result[~found] = candidate[~found]
                break
            with torch.no_grad():
                hit = self.is_success(model(candidate), y, goal) & ~found
            result[hit] = candidate[hit]
            queries[hit] = draw
            found |= hit
            if found.all():
                break
        return result, queries


@ATTACKS.register("gaussian-noise")
class GaussianNoise(RandomCorruption):
    """x_adv = clip(x + sigma * n, 0, 1), n ~ N(0, I). Default sigma = 0.05 (MMC paper, Table 2)."""

    name = "gaussian-noise"
    strength_name = "sigma"

    def __init__(self, *, eps: float | None = None, sigma: float | None = None, draws: int = 1,
                 targeted: bool = False):
        super().__init__(eps=eps, strength=sigma, default=MMC_SIGMA, draws=draws, targeted=targeted)

    @property
    def sigma(self) -> float:
        return self.strength

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return (x + self.sigma * noise).clamp(0, 1)


@ATTACKS.register("rotation")
class RandomRotation(RandomCorruption):
    """Rotation by an angle uniform in [-max_degrees, max_degrees] per image. Default 30 degrees
    (MMC paper, Table 2); see ``rotate`` for the interpolation."""

    name = "rotation"
    strength_name = "max_degrees"

    def __init__(self, *, eps: float | None = None, max_degrees: float | None = None, draws: int = 1,
                 targeted: bool = False):
        super().__init__(eps=eps, strength=max_degrees, default=MMC_MAX_DEGREES, draws=draws, targeted=targeted)
        if self.strength > 180:
            raise ValueError(f"{self.name}: max_degrees must be <= 180, got {self.strength}")

    @property
    def max_degrees(self) -> float:
        return self.strength

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        u = torch.rand((len(x),), generator=generator, dtype=torch.float64)
        return rotate(x, (2 * u - 1) * self.max_degrees)


register_preset("noise-mmc", "gaussian-noise", "MMC paper (Pang et al., ICLR 2020), Sec. 4.5 / Table 2 Part III: "
                "Gaussian noise, sigma 0.05, one draw", sigma=MMC_SIGMA, draws=1)
register_preset("rotation-mmc", "rotation", "MMC paper (Pang et al., ICLR 2020), Sec. 4.5 / Table 2 Part III: "
                "random rotation within +-30 degrees, one draw", max_degrees=MMC_MAX_DEGREES, draws=1)
