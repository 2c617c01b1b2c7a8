"""Random resizing and padding at inference (Xie et al. 2018, "Mitigating adversarial effects
through randomization"; the "Random" row of the I-SCE paper's tables).

For every image and every forward pass:

1. resize it (bilinear) to a random size s x s, s uniform in [min_size, max_size];
2. zero-pad it at a random position to a pad_to x pad_to canvas;
3. resize the canvas (bilinear, deterministic) back to the input size H.

Step 3 is our addition. Xie et al. feed the 331 x 331 canvas to an Inception network whose global
pooling accepts any size; our backbones (LeNet, VGG, ...) end in Linear layers sized for their native
input, so the canvas must come back to H x H. The randomness that matters (scale and position of the
content relative to the filters) survives: the content ends up at scale s / pad_to in [H / H', 1]
at a random offset. Defaults follow Xie's 299 -> [299, 331] ratio: s in [H, round(H * 331 / 299)]
and pad_to = the top of that range (28 -> 31 for MNIST, 32 -> 35 for CIFAR).

Randomness is drawn per image from the global torch RNG (``torch.randint`` on the input's device), so
two forward passes differ and ``torch.manual_seed`` makes a run reproducible. Every operation is
differentiable in the input, so gradient attacks (and EOT, ``eot=`` on the gradient attacks) see the
real decision function rather than a masked one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

XIE_RATIO = 331 / 299  # Xie et al.: 299 x 299 inputs, resized into [299, 331), padded to 331

# Model metadata the rest of the package reads with getattr (engine: num_classes; adaptive objective:
# trained_with; feature-space analyses: feature_dim). Only these are forwarded: forwarding everything
# would also expose ``features``/``head``, which would silently bypass the defence.
FORWARDED_ATTRIBUTES = ("num_classes", "trained_with", "feature_dim")


class RandomResizePad(nn.Module):
    """Wrap any model that maps [0, 1] NCHW images to logits with Xie et al.'s randomization.

    ``min_size``/``max_size``: range of the random size s (pixels; None = H and round(H * 331/299) of the
    input). ``pad_to``: canvas size (None = max_size; must be >= max_size). ``draws``: random draws per
    forward pass; with draws > 1 the output is log(mean softmax over draws), a valid logit vector whose
    argmax is the expected prediction (with draws = 1 it is the model's own logits on one draw).
    """

    def __init__(self, model: nn.Module, *, min_size: int | None = None, max_size: int | None = None,
                 pad_to: int | None = None, draws: int = 1):
        super().__init__()
        for name, value in (("min_size", min_size), ("max_size", max_size), ("pad_to", pad_to)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"random-resize-pad: {name} must be a positive integer (pixels) or None, got {value}")
        if min_size is not None and max_size is not None and min_size > max_size:
            raise ValueError(f"random-resize-pad: min_size={min_size} > max_size={max_size}; swap them")
        if int(draws) != draws or draws < 1:
            raise ValueError(f"random-resize-pad: draws must be an integer >= 1, got {draws}")
        self.model = model
        self.min_size, self.max_size, self.pad_to, self.draws = min_size, max_size, pad_to, int(draws)
        # In the state dict so the evaluation cache's model fingerprint tells settings apart.
        settings = [-1 if v is None else int(v) for v in (min_size, max_size, pad_to)] + [self.draws]
        self.register_buffer("defense_settings", torch.tensor(settings, dtype=torch.int64))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (incl. self.model)
        except AttributeError:
            if name in FORWARDED_ATTRIBUTES:
                return getattr(super().__getattr__("model"), name)
            raise

    def sizes(self, height: int) -> tuple[int, int, int]:
        """(min_size, max_size, pad_to) for inputs of this height, defaults resolved and checked."""
        low = height if self.min_size is None else self.min_size
        high = max(low, round(height * XIE_RATIO)) if self.max_size is None else self.max_size
        canvas = high if self.pad_to is None else self.pad_to
        if low > high:
            raise ValueError(f"random-resize-pad: min_size={low} exceeds the default max_size={high} for "
                             f"{height}px inputs; set max_size explicitly")
        if canvas < high:
            raise ValueError(f"random-resize-pad: pad_to={canvas} is smaller than max_size={high}; the resized "
                             f"image would not fit the canvas")
        return low, high, canvas

    def randomize(self, x: Tensor) -> Tensor:
        """One random draw of resize -> pad -> resize back, independently per image."""
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"random-resize-pad expects square images, got {tuple(x.shape[-2:])}")
        height = x.shape[-1]
        low, high, canvas = self.sizes(height)
        n = len(x)
        size = torch.randint(low, high + 1, (n,), device=x.device)
        # the offset is uniform over the positions where the resized image fits
        top = (torch.rand(n, device=x.device) * (canvas - size + 1)).long()
        left = (torch.rand(n, device=x.device) * (canvas - size + 1)).long()
        groups, placed = [], []
        for s in size.unique().tolist():  # one interpolate per distinct size (at most high - low + 1)
            idx = (size == s).nonzero().squeeze(1)
            resized = F.interpolate(x[idx], size=(s, s), mode="bilinear", align_corners=False)
            groups.append(idx)
            placed.append(_place(resized, top[idx], left[idx], canvas))
        # back to the input order with one gather (cheaper than an index_put per size group)
        padded = torch.cat(placed)[torch.cat(groups).argsort()]
        if canvas == height:
            return padded
        return F.interpolate(padded, size=(height, height), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.draws == 1:
            return self.model(self.randomize(x))
        probs = torch.stack([self.model(self.randomize(x)).softmax(dim=1) for _ in range(self.draws)]).mean(dim=0)
        return probs.clamp_min(1e-12).log()

    def extra_repr(self) -> str:
        return f"min_size={self.min_size}, max_size={self.max_size}, pad_to={self.pad_to}, draws={self.draws}"


def _place(images: Tensor, top: Tensor, left: Tensor, canvas: int) -> Tensor:
    """Zero-pad each s x s image into a canvas x canvas frame with its corner at (top, left), per image.

    Pads by the largest possible margin on every side, then crops a canvas-sized window whose start
    differs per image (gather), so the whole batch is placed without a Python loop over images.
    """
    n, c, s, _ = images.shape
    margin = canvas - s
    framed = F.pad(images, (margin, margin, margin, margin))  # (n, c, s + 2m, s + 2m)
    window = torch.arange(canvas, device=images.device)
    rows = (margin - top).view(n, 1) + window  # (n, canvas): framed row of each canvas row
    cols = (margin - left).view(n, 1) + window
    framed = framed.gather(2, rows.view(n, 1, canvas, 1).expand(n, c, canvas, framed.shape[3]))
    return framed.gather(3, cols.view(n, 1, 1, canvas).expand(n, c, canvas, canvas))
