"""Networks: the ResNet backbone, the Barlow Twins projector and model, and the linear readout.

Architecture after Zbontar et al. 2021 (arXiv:2103.03230) and its public code:
torchvision ResNet with ``zero_init_residual=True`` and the classifier removed,
projector Linear(no bias)-BN-ReLU blocks and a final plain Linear(no bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bttui.train.loss import barlow_twins_loss

BACKBONES = ("resnet18", "resnet50")
# Top-level modules of a torchvision ResNet (fc replaced by Identity) that surgical fine-tuning may train.
BACKBONE_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def build_backbone(name: str = "resnet18") -> nn.Module:
    """A randomly initialised torchvision ResNet whose ``fc`` is Identity; ``.feat_dim`` is its output width."""
    import torchvision

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.feat_dim = feat_dim
    return net


def feature_dim(backbone: nn.Module) -> int:
    """Width of the backbone's output features (512 for ResNet-18, 2048 for ResNet-50)."""
    return int(getattr(backbone, "feat_dim", 512))


class Projector(nn.Sequential):
    """Barlow Twins projector: ``in_dim -> sizes[0] -> ... -> sizes[-1]``.

    Every layer but the last is Linear(no bias)-BatchNorm1d-ReLU; the last is a plain Linear(no bias).
    """

    def __init__(self, in_dim: int, sizes: Sequence[int]) -> None:
        if not sizes:
            raise ValueError("projector needs at least one layer width")
        dims = [int(in_dim), *map(int, sizes)]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 2):
            layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        super().__init__(*layers)
        self.out_dim = dims[-1]


class BarlowTwins(nn.Module):
    """Backbone + projector trained with the Barlow Twins loss on two views of a batch.

    ``projector`` is either a list of layer widths or a ready ``nn.Module``. ``distributed``:
    the loss is that of the global batch across torchrun ranks (bttui.train.loss).
    """

    def __init__(self, backbone: nn.Module, projector: Sequence[int] | nn.Module, lambd: float = 0.0051,
                 distributed: bool = False) -> None:
        super().__init__()
        self.distributed = bool(distributed)
        self.backbone = backbone
        if isinstance(projector, nn.Module):
            self.projector = projector
        else:
            if len(projector) == 0:
                raise ValueError("pretrain.projector is empty; give at least one layer width, e.g. [2048, 2048, 2048]")
            self.projector = Projector(feature_dim(backbone), projector)
        self.lambd = float(lambd)

    def embed(self, x: Tensor) -> Tensor:
        """Projector output for one view."""
        return self.projector(self.backbone(x))

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(loss, on_diag, off_diag, z1, z2)`` for the two views ``x1``, ``x2`` [N, 3, S, S]."""
        # Two separate passes (as the reference) so BatchNorm statistics are per view.
        z1 = self.embed(x1)
        z2 = self.embed(x2)
        if self.distributed:
            loss, on_diag, off_diag = barlow_twins_loss(z1, z2, self.lambd, distributed=True)
        else:
            loss, on_diag, off_diag = barlow_twins_loss(z1, z2, self.lambd)
        return loss, on_diag, off_diag, z1, z2


class Readout(nn.Linear):
    """The fine-tuning head: one linear layer from backbone features to class logits."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__(int(in_dim), int(n_classes))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (optionally only trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def to_channels_last(module: nn.Module, device: torch.device) -> nn.Module:
    """channels_last memory format on CUDA (+26% ResNet-18 throughput with AMP); unchanged elsewhere."""
    if device.type == "cuda":
        return module.to(memory_format=torch.channels_last)
    return module


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, mean: Sequence[float], std: Sequence[float],
                     device: torch.device, *, batch_size: int = 256, amp_dtype: torch.dtype | None = None) -> Tensor:
    """Backbone features [N, D] (float32, CPU) of uint8 images [N, C, S, S], in eval mode.

    The module's train/eval mode is restored afterwards.
    """
    from bttui.train.augment import eval_transform

    was_training = backbone.training
    backbone.eval()
    device = torch.device(device)
    out = []
    try:
        for i in range(0, images.shape[0], max(1, batch_size)):
            x = eval_transform(images[i:i + batch_size].to(device, non_blocking=True), mean, std)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                f = backbone(x)
            out.append(f.float().cpu())
    finally:
        backbone.train(was_training)
    if not out:
        return torch.zeros(0, feature_dim(backbone))
    return torch.cat(out)
