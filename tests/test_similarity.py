"""RSA and linear CKA on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from telly.study.similarity import linear_cka, rsa


def _random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q


def _unit_vectors_at(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_cka_of_a_representation_with_itself_is_one(rng):
    x = rng.standard_normal((100, 8))
    assert linear_cka(x, x) == pytest.approx(1.0)


def test_cka_is_invariant_to_rotation_and_isotropic_scaling(rng):
    x = rng.standard_normal((100, 8))
    y = rng.standard_normal((100, 5)) + x[:, :5]
    reference = linear_cka(x, y)
    assert linear_cka(x @ _random_orthogonal(8, rng), y) == pytest.approx(reference)
    assert linear_cka(7.5 * x, y) == pytest.approx(reference)


def test_cka_of_independent_features_is_near_zero(rng):
    assert linear_cka(rng.standard_normal((2000, 10)), rng.standard_normal((2000, 10))) < 0.1


def test_cka_accepts_torch_tensors(rng):
    x = rng.standard_normal((50, 4))
    y = rng.standard_normal((50, 6))
    tensor_x = torch.tensor(x, dtype=torch.float32)
    assert linear_cka(tensor_x, y) == pytest.approx(linear_cka(x, y), abs=1e-6)


def test_rsa_is_one_for_the_same_geometry(rng):
    x = rng.standard_normal((30, 6))
    y = x @ _random_orthogonal(6, rng) * 3
    assert rsa(x, y) == pytest.approx(1.0)
    assert rsa(torch.tensor(x), torch.tensor(y)) == pytest.approx(1.0)


def test_rsa_on_four_points_worked_by_hand():
    # Four unit vectors in the plane; the cosine of two is the cosine of their angle difference.
    # X at 0°, 20°, 50°, 110°. Pairs (01, 02, 03, 12, 13, 23) differ by 20, 50, 110, 30, 90, 60°:
    #   upper triangle of X Xᵀ = cos: .940, .643, -.342, .866, .000, .500
    #   ascending ranks:             6,    4,     1,    5,    2,    3
    # Y at 0°, 40°, 50°, 150°. Pairs differ by 40, 50, 150, 10, 110, 100°:
    #   upper triangle of Y Yᵀ = cos: .766, .643, -.866, .985, -.342, -.174
    #   ascending ranks:             5,    4,     1,    6,    2,    3
    # Rank differences 1, 0, 0, -1, 0, 0: Σd² = 2, so ρ = 1 - 6·2 / (6·(6² - 1)) = 1 - 2/35 = 33/35.
    x = _unit_vectors_at([0, 20, 50, 110])
    y = _unit_vectors_at([0, 40, 50, 150])
    assert rsa(x, y) == pytest.approx(33 / 35)


def test_rsa_is_minus_one_when_the_similarity_order_is_reversed(rng):
    # Y's cosine matrix is (aI - C)/(a - 1) for X's cosine matrix C and a above C's largest
    # eigenvalue: positive definite with a unit diagonal, so it is the Gram matrix of unit rows,
    # and its off-diagonal entries are -C/(a - 1), a strictly decreasing function of X's.
    x = rng.standard_normal((12, 5))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosines = unit @ unit.T
    a = np.linalg.eigvalsh(cosines).max() + 1
    y = np.linalg.cholesky((a * np.eye(12) - cosines) / (a - 1))
    assert rsa(x, y) == pytest.approx(-1.0)


@pytest.mark.parametrize("measure", [rsa, linear_cka])
def test_shapes_are_checked(measure, rng):
    with pytest.raises(ValueError, match="same number of rows"):
        measure(rng.standard_normal((5, 3)), rng.standard_normal((6, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        measure(rng.standard_normal((2, 3)), rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        measure(rng.standard_normal(5), rng.standard_normal((5, 3)))
