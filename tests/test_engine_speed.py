"""Speed paths resolved per device: precision, GradScaler, channels_last, cudnn.benchmark, compile, the batch gatherer.

This machine has no GPU: the CUDA branches are checked as decisions (speed_plan) and
the CPU path is checked to stay exact fp32 with nothing switched on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bttui.config.schema import ExperimentConfig
from bttui.train.pretrain import Batcher, PretrainData, channel_stats, resolve_precision, run_pretraining, speed_plan

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def pc(**kw):
    cfg = ExperimentConfig().pretrain
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_cpu_always_trains_in_exact_fp32_with_no_speed_switches(precision):
    plan = speed_plan(pc(precision=precision, channels_last=True, compile=False), CPU)
    assert plan.amp_dtype is None and plan.precision == "fp32"
    assert not plan.scaler and not plan.channels_last and not plan.cudnn_benchmark and not plan.compile


@pytest.mark.parametrize("precision, dtype, scaler", [
    ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True), ("fp32", None, False)])
def test_cuda_precision_and_grad_scaler(precision, dtype, scaler):
    # speed_plan only reads the device type: no GPU is touched for explicit precisions.
    plan = speed_plan(pc(precision=precision), CUDA)
    assert plan.amp_dtype == dtype and plan.scaler is scaler  # GradScaler for fp16 only (bf16 keeps fp32's range)
    assert plan.channels_last and plan.cudnn_benchmark
    assert not speed_plan(pc(precision=precision, channels_last=False), CUDA).channels_last
    assert speed_plan(pc(compile=True), CPU).compile


def test_auto_precision_picks_bf16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", CUDA) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", CUDA) == torch.float16  # pre-Ampere: fp16 with grad scaling
    assert resolve_precision("auto", CPU) is None


def test_cpu_batcher_is_plain_indexing():
    cache = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (10, 1, 8, 8), dtype=np.uint8))
    b = Batcher(cache, CPU, 4)
    idx = torch.tensor([7, 2, 2, 9])
    assert not b.staged and torch.equal(b(idx), cache[idx])


def _tiny():
    cfg = ExperimentConfig()
    cfg.data.image_size = 32
    p = cfg.pretrain
    p.epochs, p.batch_size, p.projector, p.knn_every, p.log_every = 1, 8, [16, 16], 0, 1
    imgs = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    return cfg, PretrainData(imgs, *channel_stats(imgs))


def test_compile_flag_wraps_the_training_model(tmp_path, monkeypatch):
    cfg, data = _tiny()
    cfg.pretrain.compile = True
    seen = []

    def fake_compile(model, *a, **k):  # the real compile takes ~40 s on this CPU (see the slow test)
        seen.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    events = []
    res = run_pretraining(cfg, data, tmp_path, device=CPU, resume=False, emit=lambda t, **f: events.append((t, f)))
    assert res.status == "completed" and seen == ["BarlowTwins"]
    start = next(f for t, f in events if t == "stage_start")
    assert start["compile"] is True and start["precision"] == "fp32" and start["channels_last"] is False
    assert start["cache_device"] == "cpu" and start["cache_pinned"] is False


@pytest.mark.slow
def test_torch_compile_really_runs_on_cpu():
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(5, 4)
    y = torch.compile(m)(x)
    assert torch.allclose(y, m(x), atol=1e-5)
