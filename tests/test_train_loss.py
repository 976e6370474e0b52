"""Barlow Twins loss against an independent numpy computation."""

import numpy as np
import pytest
import torch

from bttui.train.loss import barlow_twins_loss, cross_correlation, off_diagonal


def numpy_loss(z1: np.ndarray, z2: np.ndarray, lambd: float) -> tuple[float, float, float]:
    def bn(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # biased variance, eps of BatchNorm1d

    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = float(((np.diag(c) - 1) ** 2).sum())
    off = float(lambd * ((c - np.diag(np.diag(c))) ** 2).sum())
    return on + off, on, off


@pytest.mark.parametrize("lambd", [0.0051, 0.0, 1.0])
def test_matches_numpy(lambd):
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(16, 6)) * 3 + 1
    z2 = z1 + rng.normal(size=(16, 6)) * 0.5
    loss, on, off = barlow_twins_loss(torch.tensor(z1, dtype=torch.float32), torch.tensor(z2, dtype=torch.float32), lambd)
    ref = numpy_loss(z1, z2, lambd)
    assert loss.item() == pytest.approx(ref[0], rel=1e-4, abs=1e-5)
    assert on.item() == pytest.approx(ref[1], rel=1e-4, abs=1e-5)
    assert off.item() == pytest.approx(ref[2], rel=1e-4, abs=1e-6)
    if lambd == 0.0:
        assert off.item() == 0.0 and loss.item() == pytest.approx(on.item())


def test_identical_views_have_unit_diagonal():
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    c = cross_correlation(z, z)
    assert torch.allclose(torch.diagonal(c), torch.ones(8), atol=1e-4)
    _, on, off = barlow_twins_loss(z, z, 0.0051)
    assert on.item() < 1e-6
    assert off.item() > 0  # random z is not perfectly decorrelated


def test_off_diagonal_helper():
    x = torch.arange(9.0).view(3, 3)
    assert off_diagonal(x).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]


def test_gradient_is_finite_and_float32_under_autocast():
    z1 = torch.randn(8, 16, requires_grad=True)
    z2 = torch.randn(8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, on, off = barlow_twins_loss(z1.bfloat16(), z2.bfloat16(), 0.0051)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0
