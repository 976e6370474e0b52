"""Backbone, projector and readout shapes and parameter counts (the paper's numbers)."""

import torch

from bttui.train.model import BarlowTwins, Projector, Readout, build_backbone, count_parameters, extract_features


def test_parameter_counts_match_the_paper():
    backbone = build_backbone("resnet18")
    assert count_parameters(backbone) == 11_176_512
    assert backbone.feat_dim == 512
    assert count_parameters(Projector(512, [2048, 2048, 2048])) == 9_445_376
    assert count_parameters(Readout(512, 11)) == 5_643


def test_projector_layout_and_zero_init_residual():
    proj = Projector(512, [64, 64, 32])
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in proj if isinstance(m, torch.nn.Linear))
    backbone = build_backbone("resnet18")
    assert torch.count_nonzero(backbone.layer1[0].bn2.weight) == 0  # zero_init_residual


def test_barlow_twins_forward_and_features():
    torch.manual_seed(0)
    model = BarlowTwins(build_backbone("resnet18"), [32, 16], lambd=0.0051)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, on, off, z1, z2 = model(x1, x2)
    assert z1.shape == (4, 16) and z2.shape == (4, 16)
    assert torch.isclose(loss, on + off)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    imgs = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    model.train()
    f = extract_features(model.backbone, imgs, [0.5], [0.25], torch.device("cpu"), batch_size=2)
    assert f.shape == (5, 512) and f.dtype == torch.float32
    assert model.backbone.training  # mode restored
