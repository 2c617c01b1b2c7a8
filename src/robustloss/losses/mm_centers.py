"""Max-Mahalanobis (MM) centers for the MMC loss (Pang et al., ICLR 2020, Appendix B.1 and B.3).

* ``mm_centers``: L centers in R^d with equal norm C_MM and every pairwise inner product
  -C_MM^2 / (L - 1), i.e. a regular simplex, built by the paper's Algorithm 1 (needs d >= L - 1).
  When d < L - 1 no simplex fits, and ``spread_centers`` approximates the MM criterion instead.
* ``spread_centers``: L centers that (approximately) minimise the largest pairwise cosine.
* ``hierarchical_mm_centers``: the hierarchical MM centers of Appendix B.3 for a class tree.
* ``cifar100_superclass_groups``: CIFAR-100's 20 superclasses as lists of fine labels.

Everything is computed in float64; ``dtype`` only casts the result.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "mm_centers",
    "spread_centers",
    "max_pairwise_cosine",
    "hierarchical_mm_centers",
    "cifar100_superclass_groups",
    "CIFAR100_COARSE_LABELS",
]

# A class tree: a class index (leaf) or a sequence of subtrees.
Tree = Union[int, Sequence["Tree"]]


def _check_int(name: str, value, minimum: int) -> int:
    # bool is an int subclass, but mm_centers(True, ...) is surely a mistake.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_norm(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _unit_simplex(num_classes: int) -> np.ndarray:
    """Algorithm 1 with C_MM = 1, as an (L, max(L - 1, 1)) array.

    mu_j is zero beyond coordinate j, so L centers need only L - 1 coordinates: the loop never
    writes coordinate L (the last center's own coordinate, which is sqrt(1 - 1) = 0 in exact
    arithmetic and would only pick up rounding noise).
    """
    L = num_classes
    mu = np.zeros((L, max(L - 1, 1)))
    mu[0, 0] = 1.0
    for i in range(1, L):
        for j in range(i):
            # mu_i(j) is still 0 here, so this is <mu_i, mu_j> of the algorithm.
            inner = mu[i, :j] @ mu[j, :j]
            mu[i, j] = -(1.0 + inner * (L - 1)) / (mu[j, j] * (L - 1))
        if i < L - 1:
            # Rounding can push 1 - ||mu_i||^2 a hair below 0; the true value is positive here.
            mu[i, i] = math.sqrt(max(0.0, 1.0 - mu[i, :i] @ mu[i, :i]))
    return mu


def mm_centers(num_classes: int, dim: int, norm: float = 10.0, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """The Max-Mahalanobis centers, an (L, d) tensor whose row l is the center of class l.

    For d >= L - 1 this is Algorithm 1 (GenerateMMcenters) of Pang et al. (2020): every center
    has norm ``norm`` (C_MM; 10 is the paper's MMC-10) and every pair has inner product
    -norm**2 / (L - 1), the vertices of a regular simplex centred at the origin. Only the first
    L - 1 coordinates are used; the rest are zero. L = 1 gives the single center norm * e_1.

    For d < L - 1 the simplex does not exist. The result is then ``spread_centers(L, d, norm)``
    (seed 0): an *approximation*, found by optimisation, of the centers that minimise the largest
    pairwise cosine, which is the MM criterion argmin max_{i != j} <mu_i, mu_j> at fixed norm.
    """
    L = _check_int("num_classes", num_classes, 1)
    d = _check_int("dim", dim, 1)
    c = _check_norm("norm", norm)
    if d < L - 1:
        return spread_centers(L, d, c, dtype=dtype)
    unit = _unit_simplex(L)
    centers = np.zeros((L, d))
    centers[:, : unit.shape[1]] = unit
    return torch.from_numpy(c * centers).to(dtype)


def max_pairwise_cosine(centers: Tensor) -> float:
    """The largest cosine similarity between two different rows of ``centers`` (an (L, d) tensor, L >= 2)."""
    if centers.ndim != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must be an (L, d) tensor with L >= 2, got shape {tuple(centers.shape)}")
    x = centers.detach().to(torch.float64)
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("centers contain a zero vector, whose cosine with other centers is undefined")
    x = x / norms
    gram = (x @ x.T).fill_diagonal_(-math.inf)
    return float(gram.max())


def _random_frame(rows: int, cols: int, generator: torch.Generator) -> Tensor:
    """A (rows, cols) matrix with orthonormal columns, uniformly (Haar) distributed.

    These are the first ``cols`` columns of a random rotation of R^rows. The sign fix makes the
    QR factorisation unique, without which the distribution would not be uniform.
    """
    gauss = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def spread_centers(
    num_classes: int,
    dim: int,
    norm: float = 10.0,
    *,
    seed: int = 0,
    steps: int = 1500,
    restarts: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """L centers of norm ``norm`` in R^d that approximately minimise the largest pairwise cosine.

    This is the fallback of ``mm_centers`` when d < L - 1 (a Tammes-like problem with no closed
    form in general). Method: projected gradient descent on the unit sphere of the smooth
    surrogate (1/t) * logsumexp_{i != j}(t <x_i, x_j>), whose minimiser tends to that of the max
    as t grows. t anneals geometrically from 10 (all pairs push, which spreads the points) to
    5000 (only the closest pairs push, which sharpens the minimax). The step moves the point with
    the largest gradient by lr, lr decaying geometrically from 0.05 to 1e-5, so the step does not
    depend on the gradient's scale, which changes a lot with t. ``restarts`` random starts run as
    one batch; the one with the smallest true max cosine wins.

    Deterministic for a given seed (the global RNG is untouched). On known optima (regular
    polygons, octahedron, icosahedron, square antiprism, cross-polytopes) the max cosine comes
    within about 1e-4 of the optimum; L = 100, d <= 10 takes under a second on a CPU.

    Cost grows as steps * restarts * L^2 * d. ``restarts=None`` picks 8 for small problems and
    fewer, down to 1, for large ones, where restarts matter less (random high-dimensional starts
    are already well spread). Even so, L = 1000 in d = 512 takes an estimated 1.5 minutes on a 2-core CPU.
    """
    L = _check_int("num_classes", num_classes, 1)
    d = _check_int("dim", dim, 1)
    c = _check_norm("norm", norm)
    steps = _check_int("steps", steps, 1)
    if restarts is None:
        # Keep the work per step (restarts * L^2 * d) near 2e6: 8 restarts for L = 100, d = 10.
        restarts = max(1, min(8, 2_000_000 // (L * L * d)))
    restarts = _check_int("restarts", restarts, 1)
    if L == 1:
        single = torch.zeros(1, d, dtype=torch.float64)
        single[0, 0] = c
        return single.to(dtype)

    t_start, t_end = 10.0, 5000.0
    lr_start, lr_end = 0.05, 1e-5
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(restarts, L, d, generator=generator, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    diagonal = torch.eye(L, dtype=torch.bool)
    # Small problems are thousands of tiny ops, where waking a thread pool costs more than the
    # arithmetic (measured: 10 classes in 2-D take 0.1 s on one thread, 4.6 s on two busy cores).
    with _threads(1 if restarts * L * L * d <= 2_000_000 else torch.get_num_threads()):
        x = _descend(x, diagonal, steps, t_start, t_end, lr_start, lr_end)

    gram = (x @ x.transpose(1, 2)).masked_fill(diagonal, -math.inf)
    best = int(gram.flatten(1).amax(dim=1).argmin())
    return (c * x[best]).to(dtype)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _descend(x: Tensor, diagonal: Tensor, steps: int, t_start: float, t_end: float, lr_start: float,
             lr_end: float) -> Tensor:
    for step in range(steps):
        progress = step / max(steps - 1, 1)
        t = t_start * (t_end / t_start) ** progress
        lr = lr_start * (lr_end / lr_start) ** progress
        gram = x @ x.transpose(1, 2)
        # Softmax over all ordered pairs i != j: the surrogate's gradient w.r.t. gram.
        weights = torch.softmax((t * gram).masked_fill(diagonal, -math.inf).flatten(1), dim=1).view_as(gram)
        grad = 2.0 * weights @ x  # gram is symmetric, so each pair counts twice
        grad = grad - (grad * x).sum(dim=-1, keepdim=True) * x  # tangent to the sphere
        # clamp_min: in d = 1 the tangent space is {0}, and nothing should move.
        biggest = grad.norm(dim=-1).amax(dim=-1).clamp_min(1e-300)
        x = x - (lr / biggest)[:, None, None] * grad
        x = x / x.norm(dim=-1, keepdim=True)
    return x


def _tree_depth(tree: Tree) -> int:
    if isinstance(tree, (str, bytes)) or not isinstance(tree, Sequence):
        return 0
    return 1 + max(_tree_depth(child) for child in tree)


def _tree_leaves(tree: Tree, path: str, out: list[int]) -> None:
    """Collect leaves depth-first, checking the tree's shape on the way (path names the node for errors)."""
    if isinstance(tree, (str, bytes)) or not isinstance(tree, Sequence):
        if isinstance(tree, bool):
            raise ValueError(f"tree leaf {path} must be a class index, got {tree!r}")
        try:
            out.append(operator.index(tree))
        except TypeError:
            raise ValueError(f"tree leaf {path} must be a class index (int) or a list, got {tree!r}") from None
        return
    if len(tree) == 0:
        raise ValueError(f"tree node {path} is empty; every group needs at least one class")
    for k, child in enumerate(tree):
        _tree_leaves(child, f"{path}[{k}]", out)


# Long on purpose: one recursive construction (Appendix B.3) whose steps share the tree walk's state;
# split, the pieces would only make sense together.
def hierarchical_mm_centers(
    tree: Sequence[Tree],
    dim: int,
    norms: Sequence[float] = (10.0, 1.0),
    *,
    seed: int = 0,
    rotate: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Hierarchical MM centers (Appendix B.3): an (L, d) tensor, row l = center of class l.

    ``tree`` is a nested list whose leaves are the class indices 0..L-1, each exactly once. The
    common two-level form is a list of superclasses, each a list of classes, e.g.
    ``cifar100_superclass_groups()``; deeper nesting works the same way, and a leaf may sit at
    any depth.

    The root is the origin. The children of a node at center m get m + offsets, where offsets
    are ``mm_centers(n_children, dim, norms[k])`` for children at depth k + 1 (the paper's C^s;
    it wants later norms much smaller). Sibling offsets below the root are turned by a random
    rotation drawn per node from ``seed`` (if ``rotate``), so that different superclasses do not
    all lay out their classes along the same directions. Two deliberate details:

    * A lone child sits at its parent's center: with no sibling to separate from, an offset
      would only move it off the parent, towards other groups.
    * When d >= n_children - 1 the offsets form a simplex centred at the origin, so a group's
      mean equals its own center. With fewer dimensions the offsets come from the
      ``spread_centers`` approximation and their mean need not be zero.
    """
    d = _check_int("dim", dim, 1)
    if isinstance(tree, (str, bytes)) or not isinstance(tree, Sequence):
        raise ValueError(f"tree must be a (nested) list of class indices, got {type(tree).__name__}")
    if isinstance(norms, (str, bytes)) or not isinstance(norms, Sequence):
        raise ValueError(f"norms must be a sequence of positive numbers (one per tree level), got {norms!r}")
    norms = [_check_norm(f"norms[{k}]", value) for k, value in enumerate(norms)]
    leaves: list[int] = []
    _tree_leaves(tree, "tree", leaves)
    depth = _tree_depth(tree)
    if depth > len(norms):
        raise ValueError(f"the tree has depth {depth} but only {len(norms)} norms were given; pass one per level")

    num_classes = len(leaves)
    seen: set[int] = set()
    duplicates: set[int] = set()
    for leaf in leaves:
        (duplicates if leaf in seen else seen).add(leaf)
    duplicates = sorted(duplicates)
    missing = sorted(set(range(num_classes)) - seen)
    out_of_range = sorted(leaf for leaf in seen if not 0 <= leaf < num_classes)
    if duplicates or missing or out_of_range:
        problems = []
        if duplicates:
            problems.append(f"duplicated: {duplicates}")
        if missing:
            problems.append(f"missing: {missing}")
        if out_of_range:
            problems.append(f"out of range: {out_of_range}")
        raise ValueError(
            f"the tree has {num_classes} leaves, so it must hold each class 0..{num_classes - 1} exactly once; "
            + "; ".join(problems)
        )

    generator = torch.Generator().manual_seed(seed)
    centers = torch.zeros(num_classes, d, dtype=torch.float64)
    offsets_cache: dict[tuple[int, float], Tensor] = {}

    def place(node: Tree, center: Tensor, level: int) -> None:
        # level = depth of this node; its children are at depth level + 1 and use norms[level].
        if not isinstance(node, Sequence):
            centers[operator.index(node)] = center
            return
        n = len(node)
        if n == 1:
            offsets = torch.zeros(1, d, dtype=torch.float64)
        else:
            key = (n, norms[level])
            if key not in offsets_cache:
                offsets_cache[key] = mm_centers(n, d, norms[level])
            offsets = offsets_cache[key]
            if rotate and level > 0:
                # Algorithm 1 only fills the first n - 1 coordinates, so a random orthonormal
                # frame of that many columns does what a full random rotation would, for less.
                used = n - 1 if d >= n - 1 else d
                frame = _random_frame(d, used, generator)
                offsets = offsets[:, :used] @ frame.T
        for child, offset in zip(node, offsets):
            place(child, center + offset, level + 1)

    place(tree, torch.zeros(d, dtype=torch.float64), 0)
    return centers.to(dtype)


# CIFAR-100's coarse (superclass) label of each fine label 0..99: the coarse_labels that go with
# fine_labels in the dataset's `train` file. Checked in the tests: 20 superclasses of 5 classes.
CIFAR100_COARSE_LABELS: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip


def cifar100_superclass_groups() -> list[list[int]]:
    """CIFAR-100 as 20 groups (superclass k = group k) of 5 fine labels each, in increasing order."""
    groups: list[list[int]] = [[] for _ in range(20)]
    for fine, coarse in enumerate(CIFAR100_COARSE_LABELS):
        groups[coarse].append(fine)
    return groups
