"""Bad input to the pretraining engine: clear BttuiErrors, exit code 2, and nothing overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bttui.config.schema import ExperimentConfig
from bttui.errors import BttuiError
from bttui.train.model import BarlowTwins, build_backbone
from bttui.train.pretrain import (
    FINAL_NAME,
    INTERRUPTED_NAME,
    PretrainData,
    channel_stats,
    epoch_checkpoint_name,
    load_checkpoint,
    run_pretraining,
)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))


def tiny_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    pc = cfg.pretrain
    pc.epochs, pc.batch_size, pc.projector, pc.knn_every = 1, 8, [16, 16], 0
    pc.checkpoint_every, pc.log_every = 1, 1
    return cfg


def tiny_data() -> PretrainData:
    imgs = np.random.default_rng(0).integers(0, 256, (16, 1, 32, 32), dtype=np.uint8)
    return PretrainData(imgs, *channel_stats(imgs))


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def cpu(cfg, data, ckpt, **kw):
    return run_pretraining(cfg, data, ckpt, device=torch.device("cpu"), **kw)


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    assert cpu(tiny_cfg(), tiny_data(), folder, resume=False).status == "completed"
    (folder / FINAL_NAME).unlink()  # as if stopped right after epoch 1's checkpoint
    return folder


@pytest.fixture
def trained(_trained_once, tmp_path):
    """A checkpoint folder holding only epoch 1's checkpoint of ``tiny_cfg()`` (a fresh copy per test)."""
    import shutil

    return Path(shutil.copytree(_trained_once, tmp_path / "ckpt"))


def test_batch_below_two_and_empty_projector_are_refused(tmp_path):
    cfg = tiny_cfg()
    cfg.pretrain.batch_size = 1
    with pytest.raises(BttuiError, match=r"pretrain.batch_size = 1: .* at least 2 images"):
        cpu(cfg, tiny_data(), tmp_path / "a", resume=False)
    cfg = tiny_cfg()
    cfg.pretrain.projector = []
    with pytest.raises(BttuiError, match=r"pretrain.projector is empty"):
        cpu(cfg, tiny_data(), tmp_path / "b", resume=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # The config loader refuses both before any run exists.
    from bttui.config import ConfigError, loads_config

    for text, msg in (("[pretrain]\nbatch_size = 1\n", "pretrain.batch_size must be >= 2"),
                      ("[pretrain]\nprojector = []\n", "pretrain.projector must list at least one layer width")):
        with pytest.raises(ConfigError, match=msg):
            loads_config(text, "exp.toml", check_paths=False)


@pytest.mark.parametrize("key, value, shown", [
    ("batch_size", 4, "pretrain.batch_size was 8 and is now 4"),
    ("projector", [32, 16], "pretrain.projector was [16, 16] and is now [32, 16]"),
    ("backbone", "resnet50", "pretrain.backbone was 'resnet18' and is now 'resnet50'"),
])
def test_resume_with_an_incompatible_config_fails_and_writes_nothing(trained, key, value, shown):
    cfg, data, tmp_path = tiny_cfg(), tiny_data(), trained
    before = snapshot(tmp_path)
    setattr(cfg.pretrain, key, value)
    cfg.pretrain.epochs = 2
    with pytest.raises(BttuiError) as err:
        cpu(cfg, data, tmp_path, resume=True)
    msg = str(err.value)
    assert shown in msg and epoch_checkpoint_name(1) in msg and "nothing was overwritten" in msg
    assert snapshot(tmp_path) == before


def test_compatible_changes_resume(trained):
    cfg, data, tmp_path = tiny_cfg(), tiny_data(), trained
    cfg.pretrain.epochs, cfg.pretrain.log_every = 2, 5  # more epochs, other logging: fine
    res = cpu(cfg, data, tmp_path, resume=True)
    assert res.status == "completed" and res.epochs == 2 and res.resumed_from.endswith(epoch_checkpoint_name(1))


def test_checkpoint_of_another_architecture_or_kind_is_refused(trained):
    cfg, data, tmp_path = tiny_cfg(), tiny_data(), trained
    path = tmp_path / epoch_checkpoint_name(1)
    ck = load_checkpoint(path)
    ck["model"] = BarlowTwins(build_backbone("resnet18"), [24, 16]).state_dict()  # config says [16, 16]
    torch.save(ck, path)
    before = snapshot(tmp_path)
    with pytest.raises(BttuiError, match=r"do not fit this run's model .* another architecture .*projector"):
        cpu(cfg, data, tmp_path, resume=True)
    assert snapshot(tmp_path) == before
    torch.save({"weights": torch.zeros(2)}, path)
    before = snapshot(tmp_path)
    with pytest.raises(BttuiError, match="not a bttui pretraining checkpoint"):
        cpu(cfg, data, tmp_path, resume=True)
    assert snapshot(tmp_path) == before


def test_trainer_exits_2_on_an_incompatible_resume(tmp_path):
    from bttui.config import config_to_toml, load_config
    from bttui.data.synth import synthesize
    from bttui.runs.store import Store
    from bttui.train.runner import Runner

    root = tmp_path / "data"
    synthesize(root, datasets=["organs_sagittal"], per_class=4, image_size=32)
    cfg_file = tmp_path / "exp.toml"
    cfg_file.write_text(f'name = "r"\n[data]\nroot = "{root}"\nimage_size = 32\n[pretrain]\ndatasets = ["organs_sagittal"]\n'
                        "batch_size = 8\nepochs = 2\nprojector = [16, 16]\nknn_every = 0\n")
    run_dir = Store(tmp_path / "store").create_run(load_config(cfg_file), config_path=cfg_file).dir
    runner = Runner(run_dir)
    calls = iter(range(1000))
    runner.should_stop = lambda: next(calls) >= 2
    assert runner.run() > 128  # stopped: resumable
    ckpts = run_dir / "checkpoints"
    assert (ckpts / INTERRUPTED_NAME).exists()
    before, summary_before = snapshot(ckpts), (run_dir / "summary.json").read_bytes()
    cfg = load_config(run_dir / "config.toml")
    cfg.data.image_size = 64
    (run_dir / "config.toml").write_text(config_to_toml(cfg))
    assert Runner(run_dir, resume=True).run() == 2
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "data.image_size was 32 and is now 64" in status["reason"]
    assert snapshot(ckpts) == before and (run_dir / "summary.json").read_bytes() == summary_before
