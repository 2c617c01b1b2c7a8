"""t-SNE of penultimate features with adversarial examples (PC paper, Fig. 1 and Fig. 3).

The PC paper embeds the penultimate features of MNIST test images with t-SNE and overlays
the successful adversarial examples ('+'): under CE they sit inside the cluster of the most
probable false class, under PC they mostly stay near the hard samples in the middle.

Method: a class-stratified subsample of the test split (so every class keeps its share and
t-SNE stays fast on CPU) is attacked; the clean samples the model classifies correctly and
the attack fools give the adversarial points. Clean and adversarial features are embedded
*together*: t-SNE coordinates of separate runs are not comparable, so only a joint embedding
can show where an adversarial example lands relative to the clean clusters. Samples already
misclassified are plotted but not attacked (an "adversarial example" of them means nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustloss.analysis.features import penultimate_features, stratified_subsample
from robustloss.analysis.tsne import tsne_2d
from robustloss.data.split import ImageSplit


@dataclass
class FeatureEmbedding:
    """One joint t-SNE of clean test samples and their successful adversarial examples.

    Row i is either a clean sample or an adversarial example; ``source[i]`` is the index of the
    test sample it comes from, so an adversarial point and its clean origin share that index."""

    coordinates: np.ndarray  # (m, 2) t-SNE coordinates
    labels: np.ndarray  # (m,) true class (an adversarial example keeps its clean sample's class)
    predictions: np.ndarray  # (m,) the model's class on the point: the adversarial class for adversarial points
    adversarial: np.ndarray  # (m,) bool, True for adversarial examples
    source: np.ndarray  # (m,) index into the test split
    attack: str
    eps: float | None
    method: str  # the t-SNE backend that ran: "sklearn" or "opentsne"
    attacked: int  # clean-correct samples that were attacked (successes / attacked = attack success rate)

    @property
    def adversarial_predictions(self) -> np.ndarray:
        """The adversarial class of every adversarial example."""
        return self.predictions[self.adversarial]

    @property
    def success_rate(self) -> float:
        return float(self.adversarial.sum()) / self.attacked if self.attacked else 0.0


def build_attack(attack: str, eps: float | None, params: dict[str, Any] | None = None):
    """A registered attack or a preset (``pgd-pc``), with ``params`` overriding the preset's."""
    from robustloss.evaluate.config import AttackSpec  # evaluation imports attacks: keep it out of import time

    return AttackSpec(attack, params=dict(params or {})).build(eps)


def _adversarial_examples(model, x, y, attack, seed: int, batch_size: int):
    """(adversarial images, their predictions, success mask) over x in batches, one seeded generator."""
    if len(x) == 0:  # nothing classified correctly: nothing to attack
        return x, y, torch.zeros(0, dtype=torch.bool, device=x.device)
    generator = torch.Generator().manual_seed(seed)  # random starts drawn on the CPU: same on every device
    images, predictions, success = [], [], []
    for start in range(0, len(x), batch_size):
        result = attack(model, x[start:start + batch_size], y[start:start + batch_size], generator=generator)
        images.append(result.x_adv)
        predictions.append(result.pred)
        success.append(result.success)
    return torch.cat(images), torch.cat(predictions), torch.cat(success)


def embed_with_adversarial_examples(
    model: torch.nn.Module,
    split: ImageSplit,
    *,
    attack: str = "pgd",
    eps: float | None = 0.1,
    attack_params: dict[str, Any] | None = None,
    n: int = 1000,
    method: str = "auto",
    seed: int = 0,
    perplexity: float = 30.0,
    device: str | torch.device = "cpu",
    batch_size: int = 500,
) -> FeatureEmbedding:
    """Attack a class-stratified subsample of ``n`` test samples and embed clean and successful
    adversarial features jointly with t-SNE. The same seed gives the same subsample, the same
    random starts and the same coordinates."""
    attack_obj = build_attack(attack, eps, attack_params)
    model = model.to(device).eval()
    index = stratified_subsample(split.labels.numpy(), n, seed)
    x, y = split.batch(torch.as_tensor(index))
    x, y = x.to(device), y.to(device)

    clean_features = penultimate_features(model, x, batch_size=batch_size)
    with torch.no_grad():
        clean_pred = model.head(clean_features).argmax(1)
    correct = torch.nonzero(clean_pred == y).flatten()

    x_adv, adv_pred, success = _adversarial_examples(model, x[correct], y[correct], attack_obj, seed, batch_size)
    fooled = correct[success]
    adv_features = penultimate_features(model, x_adv[success], batch_size=batch_size)

    points = torch.cat([clean_features, adv_features]).cpu().numpy()
    coordinates, backend = tsne_2d(points, method=method, seed=seed, perplexity=perplexity)
    fooled_cpu = fooled.cpu().numpy()
    return FeatureEmbedding(
        coordinates=coordinates,
        labels=np.concatenate([y.cpu().numpy(), y[fooled].cpu().numpy()]),
        predictions=np.concatenate([clean_pred.cpu().numpy(), adv_pred[success].cpu().numpy()]),
        adversarial=np.concatenate([np.zeros(len(index), bool), np.ones(len(fooled_cpu), bool)]),
        source=np.concatenate([index, index[fooled_cpu]]),
        attack=attack,
        eps=eps,
        method=backend,
        attacked=len(correct),
    )


def embedding_rows(label: str, embedding: FeatureEmbedding) -> list[dict]:
    """One CSV row per point: the run, where it is, what it is."""
    return [
        {"run": label, "test_index": int(s), "x": float(c[0]), "y": float(c[1]), "label": int(t),
         "prediction": int(p), "adversarial": bool(a), "attack": embedding.attack, "eps": embedding.eps,
         "method": embedding.method}
        for c, t, p, a, s in zip(embedding.coordinates, embedding.labels, embedding.predictions,
                                 embedding.adversarial, embedding.source)
    ]
