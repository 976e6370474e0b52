"""The trainer end to end on synthetic MIMeta data: runner, pretraining resume, NaN and stop handling, cells."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bttui.config.schema import ExperimentConfig
from bttui.errors import BttuiError
from bttui.runs.events import read_events
from bttui.train import finetune
from bttui.train.pretrain import (
    FINAL_NAME,
    INTERRUPTED_NAME,
    KnnData,
    PretrainData,
    channel_stats,
    epoch_checkpoint_name,
    load_checkpoint,
    LARS,
    lr_factor,
    run_pretraining,
)
from bttui.train.runner import Runner

TINY = """
name = "tiny"
seed = 0
[data]
root = "{root}"
image_size = 32
synthesize = {synth}
synth_per_class = 6
[pretrain]
datasets = ["organs_sagittal"]
batch_size = 8
epochs = 2
projector = [64, 64]
log_every = {log_every}
warmup_epochs = 1
lr = {lr}
[finetune]
datasets = ["organs_sagittal"]
init = {init}
strategy = ["linear", "full"]
label_fractions = [1.0]
epochs = 2
batch_size = 16
"""


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from bttui.data.synth import synthesize

    root = tmp_path_factory.mktemp("mimeta")
    synthesize(root, datasets=["organs_sagittal"], per_class=6, image_size=32)
    return root


def make_run(tmp_path: Path, root: Path, *, synth: bool = False, log_every: int = 2, lr: float = 0.03,
             init: str = '["barlow_twins", "random"]') -> Path:
    from bttui.config import load_config
    from bttui.runs.store import Store

    cfg_file = tmp_path / "exp.toml"
    cfg_file.write_text(TINY.format(root=root, synth=str(synth).lower(), log_every=log_every, lr=lr, init=init))
    cfg = load_config(cfg_file)
    return Store(tmp_path / "store").create_run(cfg, config_path=cfg_file).dir


def read_json(path: Path):
    return json.loads(path.read_text())


def test_end_to_end_run_on_synthetic_data(tmp_path):
    root = tmp_path / "data"  # missing: the trainer synthesizes it
    run_dir = make_run(tmp_path, root, synth=True)
    assert Runner(run_dir).run() == 0

    status = read_json(run_dir / "status.json")
    assert status["status"] == "completed" and status["reason"] is None
    assert status["cells_done"] == status["cells_total"] == 4
    assert set(status["cells"].values()) == {"completed"}
    # What the runs table's GPU column shows: this machine trains on the CPU.
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert status["device"] == expected_device and (status["gpus"] == []) == (expected_device == "cpu")

    summary = read_json(run_dir / "summary.json")
    assert summary["pretrain"]["status"] == "completed" and summary["pretrain"]["epochs"] == 2
    assert Path(summary["pretrain"]["checkpoint"]).name == FINAL_NAME
    results = summary["results"]
    assert [r["cell"] for r in results] == [
        "organs_sagittal/barlow_twins/linear/1/s0", "organs_sagittal/barlow_twins/full/1/s0",
        "organs_sagittal/random/linear/1/s0", "organs_sagittal/random/full/1/s0"]
    for r in results:
        assert r["status"] == "completed", r.get("error")
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["balanced_accuracy"] <= 1.0
        lo, hi = r["test_accuracy_ci"]
        assert 0.0 <= lo <= r["test_accuracy"] <= hi <= 1.0
        cm = np.array(r["confusion_matrix"])
        assert cm.shape == (11, 11) and len(r["class_names"]) == 11
        assert cm.trace() / cm.sum() == pytest.approx(r["test_accuracy"])
        assert r["n_train"] > 0 and r["label_fraction"] == 1.0
        assert r["probe"] == ("sgd" if r["strategy"] == "linear" else None)
        feats = np.load(run_dir / "artifacts" / "cells" / r["cell"].replace("/", "--") / "test_features.npz")
        assert feats["features"].shape == (cm.sum(), 512)
    assert results[0]["init"] == f"barlow_twins:{run_dir.name}"
    assert results[0]["lineage"]["backbone_from"] == f"run:{run_dir.name}"
    assert results[2]["init"] == "random" and results[2]["lineage"]["backbone_from"] is None
    split = read_json(run_dir / "artifacts" / "splits" / "organs_sagittal_1_0.json")
    assert split["n"] == results[0]["n_train"] == len(split["indices"])

    log = read_events(run_dir / "events.jsonl")
    assert log.torn == 0
    types = [e["type"] for e in log.events]
    assert types[:2] == ["config", "command"]
    assert types[-1] == "status" and log.events[-1]["status"] == "completed"
    steps = [e for e in log.events if e["type"] == "step"]
    assert [e["step"] for e in steps] == sorted({e["step"] for e in steps}) and steps[0]["step"] == 1
    assert all(np.isfinite(e["loss"]) and 0 <= e["data_wait"] <= 1 for e in steps)
    epochs = [e for e in log.events if e["type"] == "epoch"]
    assert len(epochs) == 2 and all(len(e["xcorr"]) <= 32 and "eff_rank" in e for e in epochs)
    assert "knn_accuracy" in epochs[-1]
    assert sum(t == "cell_epoch" for t in types) == 8 and sum(t == "cell_end" for t in types) == 4


def test_pretraining_resume_repeats_the_uninterrupted_steps(tmp_path):
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    pc = cfg.pretrain
    pc.epochs, pc.batch_size, pc.projector, pc.log_every = 3, 8, [32, 32], 1
    pc.warmup_epochs, pc.checkpoint_every, pc.keep_last, pc.knn_every = 1, 1, 5, 1
    pc.optimizer, pc.lr = "lars", 0.2  # LARS state (momentum buffers, group flags) must survive weights_only loading
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (24, 1, 32, 32), dtype=np.uint8)
    knn = KnnData(imgs[:12], rng.integers(0, 3, 12), imgs[12:], rng.integers(0, 3, 12))
    data = PretrainData(imgs, *channel_stats(imgs), knn=knn)

    def losses(ckpt_dir, **kw):
        events = []
        res = run_pretraining(cfg, data, ckpt_dir, device=torch.device("cpu"),
                              emit=lambda t, **f: events.append((t, f)), **kw)
        return res, {f["step"]: f["loss"] for t, f in events if t == "step"}

    full_res, full = losses(tmp_path / "a", resume=False)
    assert full_res.status == "completed" and sorted(full) == list(range(1, 10))
    # Resume from the epoch-1 checkpoint: the later steps repeat bit for bit.
    for name in (epoch_checkpoint_name(2), epoch_checkpoint_name(3), FINAL_NAME):
        (tmp_path / "a" / name).unlink()
    res, part = losses(tmp_path / "a", resume=True)
    assert res.resumed_from.endswith(epoch_checkpoint_name(1))
    assert sorted(part) == list(range(4, 10)) and all(part[s] == full[s] for s in part)
    # Stop mid-epoch at a step boundary, then resume from the interrupted checkpoint.
    calls = iter(range(100))
    res, first = losses(tmp_path / "b", resume=False, should_stop=lambda: next(calls) == 4)
    assert res.status == "stopped" and sorted(first) == [1, 2, 3, 4]
    ck = load_checkpoint(tmp_path / "b" / INTERRUPTED_NAME)
    assert ck["step"] == 4 and ck["epoch_state"]["batch"] == 1 and ck["backbone"] == "resnet18"
    assert isinstance(ck["rng"]["numpy"]["keys"], torch.Tensor) and len(ck["norm"]["mean"]) == 1
    res, rest = losses(tmp_path / "b", resume=True)
    assert res.status == "completed" and sorted(rest) == list(range(5, 10))
    assert all(rest[s] == full[s] for s in rest)
    assert not (tmp_path / "b" / INTERRUPTED_NAME).exists()


def test_nan_loss_fails_the_run_with_a_reason(tmp_path, synth_root, monkeypatch):
    import bttui.train.model as model_mod

    real = model_mod.barlow_twins_loss
    calls = {"n": 0}

    def nan_on_third(z1, z2, lambd):
        calls["n"] += 1
        loss, on, off = real(z1, z2, lambd)
        return (loss * float("nan") if calls["n"] == 3 else loss), on, off

    monkeypatch.setattr(model_mod, "barlow_twins_loss", nan_on_third)
    run_dir = make_run(tmp_path, synth_root, lr=0.5)
    assert Runner(run_dir).run() == 1
    status = read_json(run_dir / "status.json")
    assert status["status"] == "failed"
    assert status["reason"].startswith("pretraining failed: loss became NaN at step 3 (epoch 1); try a lower lr (currently")
    assert "fp32" in status["reason"]
    summary = read_json(run_dir / "summary.json")
    assert summary["pretrain"]["status"] == "failed" and summary["results"] == []
    assert not (run_dir / "checkpoints" / FINAL_NAME).exists()


def test_stop_then_resume_completes_the_run(tmp_path, synth_root):
    run_dir = make_run(tmp_path, synth_root, log_every=1, init='["barlow_twins"]')
    runner = Runner(run_dir)
    calls = iter(range(1000))
    runner.should_stop = lambda: next(calls) >= 5  # SIGTERM arrives before the 6th step
    assert runner.run() == 128 + signal.SIGTERM
    status = read_json(run_dir / "status.json")
    assert status["status"] == "stopped" and "resume" in status["reason"]
    assert (run_dir / "checkpoints" / INTERRUPTED_NAME).exists()

    assert Runner(run_dir, resume=True).run() == 0
    status = read_json(run_dir / "status.json")
    assert status["status"] == "completed"
    events = read_events(run_dir / "events.jsonl").events
    assert [e["type"] for e in events].count("config") == 1
    assert [e["type"] for e in events].count("command") == 2
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, len(steps) + 1))  # numbering continues across the resume
    results = read_json(run_dir / "summary.json")["results"]
    assert [r["status"] for r in results] == ["completed", "completed"]


def test_main_rejects_a_directory_without_config(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bttui.train", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "config.toml" in proc.stderr


# ---------------------------------------------------------------------------- fine-tuning pieces
def test_metrics_and_bootstrap():
    m = finetune.classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
    assert m["test_accuracy"] == pytest.approx(0.6)
    assert m["per_class_accuracy"] == [0.5, 1.0, 0.0, None]
    assert m["confusion_matrix"][0] == [1, 1, 0, 0] and m["confusion_matrix"][2] == [1, 0, 0, 0]
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    lo, hi = finetune.bootstrap_ci(np.r_[np.ones(80), np.zeros(20)])
    assert 0.70 < lo < 0.8 < hi < 0.9


@pytest.mark.parametrize("probe", ["sgd", "lbfgs"])
def test_linear_probes_separate_clusters(probe):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=gen) * 4
    y = torch.arange(3).repeat(40)
    x = centers[y] + torch.randn(120, 16, generator=gen)
    tr, va = slice(0, 90), slice(90, 120)
    seen = []
    ft = ExperimentConfig().finetune
    ft.epochs, ft.lr, ft.batch_size, ft.patience = 30, 0.05, 16, 0
    if probe == "sgd":
        readout, best_epoch, val_acc = finetune._fit_readout_sgd(x[tr], y[tr], x[va], y[va], 3, ft, 0,
                                                                 lambda e, s, b: seen.append(s), lambda: False)
        assert 1 <= best_epoch <= 30
    else:
        readout, l2, val_acc = finetune._fit_readout_lbfgs(x[tr], y[tr], x[va], y[va], 3,
                                                           lambda e, s, b: seen.append(s), lambda: False)
        assert l2 in finetune.LBFGS_L2_GRID
    assert val_acc >= 0.9 and all("val_accuracy" in s for s in seen)
    with torch.no_grad():
        assert float((readout(x[va]).argmax(1) == y[va]).float().mean()) == pytest.approx(val_acc)


def test_checkpoint_inits_and_missing_imagenet_weights(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "tv.pt")
    cfg = ExperimentConfig()
    init = finetune.resolve_init(cfg, f"checkpoint:{tmp_path / 'tv.pt'}", 0, run_dir=tmp_path)
    assert init.init == f"checkpoint:{(tmp_path / 'tv.pt').resolve()}" and init.norm is None
    assert torch.equal(init.backbone.conv1.weight, net.conv1.weight)
    cfg.finetune.imagenet_weights = str(tmp_path / "missing" / "resnet18.pth")
    with pytest.raises(BttuiError, match="resnet18-f37072fd.pth"):
        finetune.resolve_init(cfg, "imagenet", 0, run_dir=tmp_path)
    torch.save({"not": "weights"}, tmp_path / "bad.pt")
    with pytest.raises(BttuiError, match="no backbone weights"):
        finetune.resolve_init(cfg, f"checkpoint:{tmp_path / 'bad.pt'}", 0, run_dir=tmp_path)


def test_lr_schedule():
    assert lr_factor(0, 100, 10, 0.001, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.001, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.001, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.001, "cosine") == pytest.approx(0.001)
    assert lr_factor(55, 100, 10, 0.001, "constant") == 1.0


def test_collapse_alarm_warns_or_stops(tmp_path):
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    pc = cfg.pretrain
    pc.epochs, pc.batch_size, pc.projector, pc.knn_every = 1, 8, [16, 16], 0
    cfg.health.min_std = 10.0  # unreachable: every epoch raises the alarm
    imgs = np.random.default_rng(1).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    data = PretrainData(imgs, *channel_stats(imgs))
    events = []
    res = run_pretraining(cfg, data, tmp_path / "warn", device=torch.device("cpu"),
                          emit=lambda t, **f: events.append((t, f)), resume=False)
    assert res.status == "completed"
    assert any(t == "log" and f.get("alarm") == "collapse" and f["level"] == "warning" for t, f in events)
    cfg.health.on_collapse = "stop"
    res = run_pretraining(cfg, data, tmp_path / "stop", device=torch.device("cpu"), resume=False)
    assert res.status == "failed" and "collapse" in res.reason and "health.min_std" in res.reason


def test_lars_excludes_biases_from_decay_and_adaptation():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [w], "exclude": False}, {"params": [b], "exclude": True}], lr=0.1,
               weight_decay=0.5, momentum=0.0, eta=0.001)
    w.grad = torch.full((2, 2), 1.0)
    b.grad = torch.full((2,), 3.0)
    opt.step()
    d = torch.full((2, 2), 1.0) + 0.5 * 2.0  # gradient plus weight decay
    trust = 0.001 * torch.norm(torch.full((2, 2), 2.0)) / torch.norm(d)
    assert torch.allclose(w.detach(), torch.full((2, 2), 2.0) - 0.1 * trust * d)
    assert torch.allclose(b.detach(), torch.ones(2) - 0.1 * 3.0)  # plain momentum-SGD step


def test_telemetry_is_na_without_a_gpu():
    from bttui.train.telemetry import GpuTelemetry, host_rss_mb

    rss = host_rss_mb()
    assert rss is not None and rss > 10
    if not torch.cuda.is_available():
        tel = GpuTelemetry()
        assert tel.sample() == {} and tel.nvml() == {}
