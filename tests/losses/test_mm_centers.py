"""Max-Mahalanobis centers: Algorithm 1's simplex, the d < L - 1 fallback, hierarchical centers."""

from __future__ import annotations

import math

import pytest
import torch

from robustloss.losses.mm_centers import (
    CIFAR100_COARSE_LABELS,
    cifar100_superclass_groups,
    hierarchical_mm_centers,
    max_pairwise_cosine,
    mm_centers,
    spread_centers,
)


def assert_simplex(centers, num_classes, dim, norm):
    assert centers.shape == (num_classes, dim)
    assert centers.dtype == torch.float64
    gram = centers @ centers.T
    torch.testing.assert_close(gram.diagonal(), torch.full((num_classes,), norm**2, dtype=torch.float64),
                               rtol=0, atol=1e-9 * norm**2)
    off_diagonal = gram[~torch.eye(num_classes, dtype=torch.bool)]
    expected = torch.full_like(off_diagonal, -(norm**2) / (num_classes - 1))
    torch.testing.assert_close(off_diagonal, expected, rtol=0, atol=1e-9 * norm**2)


# --- Algorithm 1 (d >= L - 1) -------------------------------------------------------------------


@pytest.mark.parametrize("norm", [1.0, 10.0])
def test_simplex_for_every_class_count_up_to_100(norm):
    for num_classes in range(2, 101):
        for dim in (num_classes - 1, num_classes, num_classes + 5):
            assert_simplex(mm_centers(num_classes, dim, norm), num_classes, dim, norm)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_simplex_in_large_dimension_uses_only_first_coordinates(num_classes):
    centers = mm_centers(num_classes, 256)
    assert_simplex(centers, num_classes, 256, 10.0)
    assert torch.count_nonzero(centers[:, num_classes - 1:]) == 0


def test_two_classes_are_antipodal():
    assert mm_centers(2, 1).tolist() == [[10.0], [-10.0]]
    assert mm_centers(2, 3, norm=2.0).tolist() == [[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]]


def test_three_classes_form_an_equilateral_triangle():
    # Algorithm 1 by hand: mu_2 = (-1/2, sqrt(3)/2), mu_3 = (-1/2, -[1 + 1/4 * 2] / (sqrt(3)/2 * 2)).
    s = math.sqrt(3) / 2
    torch.testing.assert_close(mm_centers(3, 2, norm=1.0),
                               torch.tensor([[1.0, 0.0], [-0.5, s], [-0.5, -s]], dtype=torch.float64))
    centers = mm_centers(3, 2)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        angle = math.degrees(math.acos(float(centers[i] @ centers[j]) / 100))
        assert angle == pytest.approx(120.0, abs=1e-9)


def test_four_classes_form_a_regular_tetrahedron():
    centers = mm_centers(4, 3, norm=1.0)
    cosines = centers @ centers.T
    assert cosines[~torch.eye(4, dtype=torch.bool)].tolist() == pytest.approx([-1 / 3] * 12, abs=1e-12)
    torch.testing.assert_close(centers.sum(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    edges = torch.pdist(centers)
    assert edges.tolist() == pytest.approx([math.sqrt(8 / 3)] * 6, abs=1e-12)


def test_single_class_is_norm_times_first_basis_vector():
    assert mm_centers(1, 3, norm=4.0).tolist() == [[4.0, 0.0, 0.0]]


def test_dtype_only_casts_the_result():
    centers = mm_centers(10, 16, dtype=torch.float32)
    assert centers.dtype == torch.float32
    assert torch.equal(centers, mm_centers(10, 16).float())


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 3), "num_classes"),
        ((2.0, 3), "num_classes"),
        ((True, 3), "num_classes"),
        ((3, 0), "dim"),
        ((3, 2, 0.0), "norm"),
        ((3, 2, -1.0), "norm"),
        ((3, 2, math.inf), "norm"),
        ((3, 2, "ten"), "norm"),
    ],
)
def test_mm_centers_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        mm_centers(*args)


# --- fallback for d < L - 1 -----------------------------------------------------------------------

KNOWN_OPTIMA = (
    [(n, 2, math.cos(2 * math.pi / n)) for n in range(4, 11)]  # regular polygons
    + [
        (6, 3, 0.0),  # octahedron
        (12, 3, 1 / math.sqrt(5)),  # icosahedron
        (8, 3, (math.sqrt(8) - 1) / 7),  # Tammes N = 8: square antiprism, 74.8585 degrees
        (5, 3, 0.0),  # Tammes N = 5: 90 degrees
        (6, 4, 0.0),  # d + 2 <= L <= 2d: 0 is optimal (Rankin), the cross-polytope for L = 2d
        (8, 4, 0.0),
        (10, 5, 0.0),
    ]
)


def test_square_antiprism_value_is_the_tammes_angle():
    # Two squares at heights +-h, turned 45 degrees: equal side and slant cosines give this h^2.
    h2 = (math.sqrt(8) - 1) / 7
    assert h2 == pytest.approx(-h2 + (1 - h2) / math.sqrt(2), abs=1e-15)
    assert math.degrees(math.acos(h2)) == pytest.approx(74.8585, abs=1e-4)


@pytest.mark.parametrize("num_classes, dim, optimum", KNOWN_OPTIMA)
def test_fallback_reaches_known_optimum(num_classes, dim, optimum):
    centers = mm_centers(num_classes, dim, norm=10.0)
    assert centers.shape == (num_classes, dim)
    torch.testing.assert_close(centers.norm(dim=1), torch.full((num_classes,), 10.0, dtype=torch.float64))
    assert max_pairwise_cosine(centers) == pytest.approx(optimum, abs=1e-3)
    assert max_pairwise_cosine(centers) >= optimum - 1e-9  # no configuration beats the optimum


def test_fallback_is_spread_centers_with_seed_zero_and_deterministic():
    centers = mm_centers(12, 3, norm=1.0)
    assert torch.equal(centers, spread_centers(12, 3, 1.0, seed=0))
    assert torch.equal(spread_centers(12, 3, seed=5), spread_centers(12, 3, seed=5))
    assert not torch.equal(spread_centers(12, 3, seed=5), spread_centers(12, 3, seed=6))


def test_fallback_on_100_points_in_the_plane():
    centers = mm_centers(100, 2, norm=1.0)
    assert max_pairwise_cosine(centers) == pytest.approx(math.cos(2 * math.pi / 100), abs=1e-4)


def test_spread_centers_approximates_the_simplex_when_it_exists():
    assert max_pairwise_cosine(spread_centers(4, 3)) == pytest.approx(-1 / 3, abs=1e-4)


def test_spread_centers_edge_cases():
    assert spread_centers(1, 2, norm=3.0).tolist() == [[3.0, 0.0]]
    one_dim = spread_centers(3, 1, norm=2.0)  # nothing can move in d = 1, but the result is valid
    assert one_dim.abs().tolist() == [[2.0]] * 3
    assert spread_centers(5, 2, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="restarts"):
        spread_centers(5, 2, restarts=0)
    with pytest.raises(ValueError, match="steps"):
        spread_centers(5, 2, steps=0)


def test_max_pairwise_cosine():
    assert max_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])) == pytest.approx(0.0)
    assert max_pairwise_cosine(torch.tensor([[1.0, 1.0], [2.0, 2.0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="L >= 2"):
        max_pairwise_cosine(torch.ones(1, 3))
    with pytest.raises(ValueError, match="zero vector"):
        max_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


# --- hierarchical MM centers ----------------------------------------------------------------------


def test_cifar100_superclass_groups():
    groups = cifar100_superclass_groups()
    assert len(CIFAR100_COARSE_LABELS) == 100
    assert [len(group) for group in groups] == [5] * 20
    assert sorted(label for group in groups for label in group) == list(range(100))
    assert groups[0] == [4, 30, 55, 72, 95]  # aquatic mammals: beaver, dolphin, otter, seal, whale
    assert groups[1] == [1, 32, 67, 73, 91]  # fish: aquarium fish, flatfish, ray, shark, trout
    assert groups[2] == [54, 62, 70, 82, 92]  # flowers: orchid, poppy, rose, sunflower, tulip


def test_hierarchical_cifar100_structure():
    groups = cifar100_superclass_groups()
    dim = 64
    centers = hierarchical_mm_centers(groups, dim, norms=(10.0, 1.0))
    assert centers.shape == (100, dim) and centers.dtype == torch.float64
    superclass_centers = mm_centers(20, dim, 10.0)
    within, between = [], []
    for g, group in enumerate(groups):
        members = centers[group]
        # Sub-centers are a rotated simplex, so their mean is the superclass center ...
        torch.testing.assert_close(members.mean(dim=0), superclass_centers[g], atol=1e-12, rtol=0)
        # ... and relative to it they are MM centers of norm 1.
        assert_simplex(members - superclass_centers[g], 5, dim, 1.0)
        within.append(torch.pdist(members).max())
        others = centers[[label for label in range(100) if label not in group]]
        between.append(torch.cdist(members, others).min())
    assert max(within) * 5 < min(between)


def test_hierarchical_rotation_is_optional_seeded_and_differs_per_group():
    groups = [[0, 1, 2], [3, 4, 5]]
    plain = hierarchical_mm_centers(groups, 8, rotate=False)
    tops = mm_centers(2, 8)
    offsets = mm_centers(3, 8, 1.0)
    torch.testing.assert_close(plain, torch.cat([tops[0] + offsets, tops[1] + offsets]))

    rotated = hierarchical_mm_centers(groups, 8, seed=3)
    assert torch.equal(rotated, hierarchical_mm_centers(groups, 8, seed=3))
    assert not torch.equal(rotated, hierarchical_mm_centers(groups, 8, seed=4))
    first, second = rotated[:3] - tops[0], rotated[3:] - tops[1]
    assert not torch.allclose(first, second)
    assert_simplex(first, 3, 8, 1.0)
    assert_simplex(second, 3, 8, 1.0)


def test_hierarchical_rows_follow_class_indices():
    # Same groups, class labels permuted: each class keeps the center of its tree position.
    ordered = hierarchical_mm_centers([[0, 1], [2, 3]], 4)
    shuffled = hierarchical_mm_centers([[2, 0], [3, 1]], 4)
    assert torch.equal(shuffled[[2, 0, 3, 1]], ordered)


def test_hierarchical_three_levels_and_lone_children():
    tree = [[[0, 1], [2, 3]], [[4, 5], [6]], 7]
    centers = hierarchical_mm_centers(tree, 8, norms=(10.0, 1.0, 0.1))
    level1 = mm_centers(3, 8, 10.0)
    torch.testing.assert_close(centers[7], level1[2])  # a leaf at depth 1
    torch.testing.assert_close(centers[:4].mean(dim=0), level1[0], atol=1e-12, rtol=0)
    # Subgroups [4, 5] and [6] sit at level1[1] +- u; [4, 5] is centred on its subgroup.
    torch.testing.assert_close((centers[4] + centers[5]) / 2 + centers[6], 2 * level1[1], atol=1e-12, rtol=0)
    # Class 6 is a lone child: it sits on its parent, norms[1] away from the top-level center.
    assert float((centers[6] - level1[1]).norm()) == pytest.approx(1.0, abs=1e-12)
    assert float((centers[0] - centers[1]).norm()) == pytest.approx(0.2, abs=1e-12)  # antipodal, norm 0.1


def test_hierarchical_with_fewer_dimensions_than_groups_uses_the_fallback():
    centers = hierarchical_mm_centers(cifar100_superclass_groups(), 3)
    assert centers.shape == (100, 3)
    assert torch.isfinite(centers).all()


@pytest.mark.parametrize(
    "tree, norms, match",
    [
        ([[0, 1], [3]], (10.0, 1.0), r"missing: \[2\]"),
        ([[0, 1], [1, 2]], (10.0, 1.0), r"duplicated: \[1\]"),
        ([[0, 1], [5]], (10.0, 1.0), r"missing: \[2\].*out of range: \[5\]"),
        ([[0, 1], []], (10.0, 1.0), r"tree\[1\] is empty"),
        ([[0, 1], ["2"]], (10.0, 1.0), r"tree\[1\]\[0\]"),
        ([[0, 1], [2.0]], (10.0, 1.0), "class index"),
        ([[0, True]], (10.0, 1.0), "class index"),
        ([[[0], [1]]], (10.0, 1.0), "depth 3 but only 2 norms"),
        ([[0], [1]], (10.0, 0.0), r"norms\[1\]"),
        ([[0], [1]], 10.0, "norms must be a sequence"),
        (3, (10.0, 1.0), "tree must be"),
        ("01", (10.0, 1.0), "tree must be"),
    ],
)
def test_hierarchical_rejects_invalid_trees(tree, norms, match):
    with pytest.raises(ValueError, match=match):
        hierarchical_mm_centers(tree, 4, norms)
