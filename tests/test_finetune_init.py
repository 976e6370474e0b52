"""Backbone inits: bttui / torchvision / lightly / solo-learn checkpoints, ImageNet weights from a file, @epoch=N."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from bttui.config.schema import ExperimentConfig
from bttui.errors import BttuiError
from bttui.train import finetune


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None)


def _same_backbone(backbone: nn.Module, net: nn.Module) -> None:
    ours = backbone.state_dict()
    for k, v in net.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(ours[k], v), k


def _init(tmp_path, obj, name="ck.pt", cfg=None):
    torch.save(obj, tmp_path / name)
    return finetune.resolve_init(cfg or ExperimentConfig(), f"checkpoint:{tmp_path / name}", 0, run_dir=tmp_path)


def test_torchvision_state_dict_loads(tmp_path, net):
    init = _init(tmp_path, net.state_dict())
    _same_backbone(init.backbone, net)
    assert init.lineage["format"] == "state_dict"


def test_lightly_sequential_backbone_loads(tmp_path, net):
    # lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1]) inside the SSL module.
    seq = nn.Sequential(*list(net.children())[:-1])
    model = nn.Module()
    model.backbone = seq
    model.projection_head = nn.Linear(512, 8)
    sd = model.state_dict()
    assert "backbone.0.weight" in sd and "backbone.4.0.conv1.weight" in sd
    init = _init(tmp_path, sd)
    _same_backbone(init.backbone, net)
    assert init.lineage["format"] == "lightly"
    # The same inside a PyTorch Lightning checkpoint, and a bare lightly backbone.
    init = _init(tmp_path, {"epoch": 7, "state_dict": sd, "hyper_parameters": {"lr": 0.1}}, "pl.ckpt")
    _same_backbone(init.backbone, net)
    init = _init(tmp_path, seq.state_dict(), "bare.pt")
    _same_backbone(init.backbone, net)


def test_solo_learn_checkpoint_loads(tmp_path, net):
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd.update({"projector.0.weight": torch.zeros(16, 512), "classifier.weight": torch.zeros(10, 512),
               "momentum_backbone.conv1.weight": torch.zeros(64, 3, 7, 7)})
    init = _init(tmp_path, {"state_dict": sd, "epoch": 399})
    _same_backbone(init.backbone, net)
    assert init.lineage["format"] == "solo-learn"


def test_ddp_prefixed_bttui_checkpoint_loads(tmp_path, net):
    sd = {f"module.backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd["module.projector.0.weight"] = torch.zeros(4, 512)
    init = _init(tmp_path, {"model": sd, "backbone": "resnet18", "epoch": 3, "norm": {"mean": [0.5] * 3, "std": [0.2] * 3}})
    _same_backbone(init.backbone, net)
    assert init.norm == ([0.5] * 3, [0.2] * 3) and init.lineage["epoch"] == 3


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    other = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(other.state_dict(), tmp_path / "mobilenet.pt")
    with pytest.raises(BttuiError) as err:
        finetune.resolve_init(ExperimentConfig(), f"checkpoint:{tmp_path / 'mobilenet.pt'}", 0, run_dir=tmp_path)
    msg = str(err.value)
    assert "mobilenet.pt" in msg and "missing keys" in msg and "unexpected keys" in msg and "conv1.weight" in msg
    assert err.value.exit_code == 2


def test_shape_mismatch_is_reported_not_raised_by_torch(tmp_path, net):
    sd = dict(net.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grayscale-input ResNet
    with pytest.raises(BttuiError, match=r"1 with another shape \(e.g. conv1.weight \[64, 1, 7, 7\] vs \[64, 3, 7, 7\]\)"):
        _init(tmp_path, sd)


def test_imagenet_weights_from_a_file(tmp_path, net):
    cfg = ExperimentConfig()
    torch.save(net.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    cfg.finetune.imagenet_weights = str(tmp_path / "resnet18-f37072fd.pth")
    init = finetune.resolve_init(cfg, "imagenet", 0, run_dir=tmp_path)
    _same_backbone(init.backbone, net)
    assert init.norm == (finetune.IMAGENET_MEAN, finetune.IMAGENET_STD) and init.init == "imagenet"
    # wrong keys
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    cfg.finetune.imagenet_weights = str(tmp_path / "wrong.pth")
    with pytest.raises(BttuiError, match=r"wrong\.pth \(ImageNet weights.*missing keys"):
        finetune.resolve_init(cfg, "imagenet", 0, run_dir=tmp_path)
    # wrong shapes (a 10-class fc is dropped; a different stem is not)
    sd = dict(net.state_dict())
    sd["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    cfg.finetune.imagenet_weights = str(tmp_path / "shape.pth")
    with pytest.raises(BttuiError, match="layer1.0.conv1.weight"):
        finetune.resolve_init(cfg, "imagenet", 0, run_dir=tmp_path)
    # missing file: the message says where to put it
    cfg.finetune.imagenet_weights = str(tmp_path / "nowhere" / "r18.pth")
    with pytest.raises(BttuiError, match=r"copy torchvision's resnet18-f37072fd.pth .* into .*nowhere"):
        finetune.resolve_init(cfg, "imagenet", 0, run_dir=tmp_path)


def _bttui_ckpt(backbone: nn.Module, epoch: int) -> dict:
    return {"format": 1, "kind": "bttui-pretrain", "backbone": "resnet18", "epoch": epoch,
            "model": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}


def test_epoch_suffix_picks_the_periodic_checkpoint(tmp_path):
    from bttui.train.model import build_backbone
    from bttui.train.pretrain import FINAL_NAME, epoch_checkpoint_name

    run = tmp_path / "20250101-000000-pre-abcd"
    (run / "checkpoints").mkdir(parents=True)
    nets = {}
    for epoch, name in ((5, epoch_checkpoint_name(5)), (10, FINAL_NAME)):
        torch.manual_seed(epoch)
        nets[epoch] = build_backbone()
        torch.save(_bttui_ckpt(nets[epoch], epoch), run / "checkpoints" / name)
    cfg = ExperimentConfig()
    mid = finetune.resolve_init(cfg, "barlow_twins@epoch=5", 0, run_dir=run)
    assert mid.init == f"barlow_twins:{run.name}@epoch=5" and mid.lineage["epoch"] == 5
    assert torch.equal(mid.backbone.conv1.weight, nets[5].conv1.weight)
    final = finetune.resolve_init(cfg, "barlow_twins", 0, run_dir=run)
    assert torch.equal(final.backbone.conv1.weight, nets[10].conv1.weight)
    other = finetune.resolve_init(cfg, "run:2025@epoch=5", 0, run_dir=tmp_path / "me",
                                  resolve_run=lambda ref: (run.name, run))
    assert other.init == f"run:{run.name}@epoch=5" and torch.equal(other.backbone.conv1.weight, nets[5].conv1.weight)
    ck = finetune.resolve_init(cfg, f"checkpoint:{run}@epoch=5", 0, run_dir=tmp_path)
    assert torch.equal(ck.backbone.conv1.weight, nets[5].conv1.weight)
    with pytest.raises(BttuiError, match=r"pretrain_epoch0007.pt does not exist; checkpoints there: "
                                         r"pretrain_epoch0005.pt, pretrain_final.pt"):
        finetune.resolve_init(cfg, "barlow_twins@epoch=7", 0, run_dir=run)
    with pytest.raises(BttuiError, match="has no pretraining checkpoints"):
        finetune.resolve_init(cfg, "barlow_twins", 0, run_dir=tmp_path / "empty")
