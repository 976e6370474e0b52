"""The Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, arXiv:2103.03230).

Written after the reference implementation (facebookresearch/barlowtwins ``main.py``):
both embeddings are standardised per dimension over the batch, their cross-correlation
matrix ``c`` is pushed towards the identity: ``sum_i (1 - c_ii)^2 + lambd * sum_{i!=j} c_ij^2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# nn.BatchNorm1d's default epsilon; the reference normalises with an affine-free BatchNorm1d.
BN_EPS = 1e-5


def _standardise(z: Tensor, eps: float = BN_EPS) -> Tensor:
    """Per-dimension batch standardisation: batch mean, biased batch variance, no affine."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def off_diagonal(x: Tensor) -> Tensor:
    """The off-diagonal elements of a square matrix, flattened (the reference's trick)."""
    n, m = x.shape
    assert n == m, "off_diagonal needs a square matrix"
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """The [D, D] cross-correlation matrix of two batches of embeddings [N, D], in float32.

    Autocast is switched off here: under bf16 the D x D sums lose too many digits
    for the on-diagonal term to converge to 1 (the reference runs this part in fp32 too).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        a = _standardise(z1.float())
        b = _standardise(z2.float())
        return a.T @ b / n


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float) -> tuple[Tensor, Tensor, Tensor]:
    """Barlow Twins loss of two views' embeddings ``z1, z2`` [N, D].

    Returns ``(loss, on_diag, off_diag)`` where ``on_diag = sum_i (c_ii - 1)^2``,
    ``off_diag = lambd * sum_{i != j} c_ij^2`` (already weighted) and
    ``loss = on_diag + off_diag``; all float32 scalars.
    """
    c = cross_correlation(z1, z2)
    on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum() * lambd
    return on_diag + off_diag, on_diag, off_diag
