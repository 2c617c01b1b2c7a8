"""Two-dimensional t-SNE of feature vectors, by scikit-learn or, where installed, openTSNE.

``method="auto"`` prefers openTSNE (an optional extra, ``pip install openTSNE``: its FFT and
Barnes-Hut gradients are several times faster on CPU) and falls back to scikit-learn, which
is a dependency of the package and therefore always there. Both are seeded, so the same
features and seed give the same coordinates.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from robustloss.errors import ConfigError

TSNE_METHODS = ("auto", "sklearn", "opentsne")


def opentsne_available() -> bool:
    return importlib.util.find_spec("openTSNE") is not None


def resolve_tsne_method(method: str) -> str:
    """The backend that ``method`` names here: "sklearn" or "opentsne"."""
    if method not in TSNE_METHODS:
        raise ConfigError(f"unknown t-SNE method {method!r}; valid: {', '.join(TSNE_METHODS)}")
    if method == "auto":
        return "opentsne" if opentsne_available() else "sklearn"
    if method == "opentsne" and not opentsne_available():
        raise ConfigError("t-SNE method 'opentsne' needs the openTSNE package, which is not installed: "
                          "pip install openTSNE, or use method 'sklearn' (or 'auto', which falls back to it)")
    return method


def _capped_perplexity(perplexity: float, n: int) -> float:
    # Both libraries need perplexity well below the number of points; a small test set (a few dozen
    # points) would otherwise fail outright. The usual rule of thumb is n / 3.
    return float(max(1.0, min(perplexity, (n - 1) / 3)))


def tsne_2d(points: np.ndarray, *, method: str = "auto", seed: int = 0,
            perplexity: float = 30.0) -> tuple[np.ndarray, str]:
    """((n, 2) float64 coordinates, the backend used). ``points`` is (n, d) with n >= 4."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 4:
        raise ValueError(f"t-SNE needs an (n, d) array with n >= 4 points, got shape {points.shape}")
    backend = resolve_tsne_method(method)
    perplexity = _capped_perplexity(perplexity, len(points))
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # One thread for OpenMP and BLAS: scikit-learn ships its own OpenMP runtime, and right after PyTorch
    # work torch's threads are still spin-waiting in theirs. The pools then fight over the cores: on
    # 2 cores, t-SNE of 900 LeNet-5 feature vectors took 21-65 s with the default threads, 3 s with one.
    with threadpool_limits(limits=1):
        if backend == "opentsne":
            from openTSNE import TSNE as OpenTSNE

            # n_jobs=1: a fixed summation order, so a seed always gives the same coordinates.
            embedding = OpenTSNE(n_components=2, perplexity=perplexity, initialization="pca", random_state=seed,
                                 n_jobs=1, verbose=False).fit(points)
            return np.asarray(embedding, dtype=np.float64), backend
        from sklearn.manifold import TSNE

        # PCA initialisation: deterministic, and it keeps the global layout more faithful than a random start.
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
        return np.asarray(tsne.fit_transform(points), dtype=np.float64), backend
