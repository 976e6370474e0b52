"""The Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, arXiv:2103.03230).

Written after the reference implementation (facebookresearch/barlowtwins ``main.py``):
both embeddings are standardised per dimension over the batch, their cross-correlation
matrix ``c`` is pushed towards the identity: ``sum_i (1 - c_ii)^2 + lambd * sum_{i!=j} c_ij^2``.

Under torchrun (``distributed=True``) the batch is the global one: means, variances and
``c`` are summed over ranks with the autograd-aware ``torch.distributed.nn.functional.all_reduce``
(a plain ``all_reduce`` detaches the other ranks' share and leaves the gradients off by a factor
of ``world_size``, the bug lightly fixed). Every rank then holds the same loss value; the gradient
reaching each rank's embeddings is ``world_size`` times the single-process gradient of its slice,
which DDP's averaging of parameter gradients over ranks turns back into the exact global-batch
gradient (tests/test_engine_distributed.py checks both).
"""

from __future__ import annotations

import torch
from torch import Tensor

# nn.BatchNorm1d's default epsilon; the reference normalises with an affine-free BatchNorm1d.
BN_EPS = 1e-5


def _all_reduce_sum(t: Tensor) -> Tensor:
    """Sum over ranks, differentiable: its backward all-reduces the incoming gradients."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def _standardise(z: Tensor, eps: float = BN_EPS, distributed: bool = False, n_total: int | None = None) -> Tensor:
    """Per-dimension batch standardisation: batch mean, biased batch variance, no affine.

    ``distributed``: the statistics are those of the global batch of ``n_total`` rows (all ranks).
    """
    if not distributed:
        mean = z.mean(dim=0, keepdim=True)
        var = z.var(dim=0, unbiased=False, keepdim=True)
        return (z - mean) / torch.sqrt(var + eps)
    mean = _all_reduce_sum(z.sum(dim=0, keepdim=True)) / n_total
    var = _all_reduce_sum((z - mean).pow(2).sum(dim=0, keepdim=True)) / n_total
    return (z - mean) / torch.sqrt(var + eps)


def _is_distributed(flag: bool) -> bool:
    return bool(flag) and torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def off_diagonal(x: Tensor) -> Tensor:
    """The off-diagonal elements of a square matrix, flattened (the reference's trick)."""
    n, m = x.shape
    assert n == m, "off_diagonal needs a square matrix"
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def cross_correlation(z1: Tensor, z2: Tensor, distributed: bool = False) -> Tensor:
    """The [D, D] cross-correlation matrix of two batches of embeddings [N, D], in float32 (float64 stays float64).

    Autocast is switched off here: under bf16 the D x D sums lose too many digits
    for the on-diagonal term to converge to 1 (the reference runs this part in fp32 too).
    ``distributed``: z1, z2 are this rank's slice; ``c`` is that of the global batch.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    dist = _is_distributed(distributed)
    n = z1.shape[0] * (torch.distributed.get_world_size() if dist else 1)  # equal slices (batch % world checked)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        dtype = torch.float64 if z1.dtype == torch.float64 else torch.float32
        a = _standardise(z1.to(dtype), distributed=dist, n_total=n)
        b = _standardise(z2.to(dtype), distributed=dist, n_total=n)
        c = a.T @ b / n
        return _all_reduce_sum(c) if dist else c


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float,
                      distributed: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Barlow Twins loss of two views' embeddings ``z1, z2`` [N, D].

    Returns ``(loss, on_diag, off_diag)`` where ``on_diag = sum_i (c_ii - 1)^2``,
    ``off_diag = lambd * sum_{i != j} c_ij^2`` (already weighted) and
    ``loss = on_diag + off_diag``; float32 scalars (float64 for float64 input).
    ``distributed=True`` inside an initialised process group: the loss of the global batch.
    """
    c = cross_correlation(z1, z2, distributed=distributed)
    on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum() * lambd
    return on_diag + off_diag, on_diag, off_diag
