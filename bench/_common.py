"""Shared pieces of the pretraining benchmarks: arguments and their defaults per device, peak memory, the bttui step
and bttui's input pipeline in front of it."""

from __future__ import annotations

import argparse
import platform
import resource
import time
from typing import Any

import numpy as np
import torch


def machine() -> str:
    """One line naming the machine the numbers came from."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak host RSS of this process and, on CUDA, torch's peak allocated GPU memory (MB)."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def defaults(device: torch.device) -> dict[str, Any]:
    """CPU here: 64 px, batch 32, a few steps; GPU: 224 px bf16 batch 256 (the issue's targets)."""
    if device.type == "cuda":
        return {"size": 224, "batch": 256, "steps": 30, "warmup": 5, "precision": "bf16", "images": 4096}
    return {"size": 64, "batch": 32, "steps": 4, "warmup": 1, "precision": "fp32", "images": 512}


def step_arguments(description: str, device: torch.device) -> argparse.ArgumentParser:
    """The arguments every pretraining-step benchmark takes (size, batch, steps, warmup, precision, projector),
    with ``defaults(device)``; a script adds its own before parsing."""
    d = defaults(device)
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size", type=int, default=d["size"])
    ap.add_argument("--batch", type=int, default=d["batch"])
    ap.add_argument("--steps", type=int, default=d["steps"])
    ap.add_argument("--warmup", type=int, default=d["warmup"])
    ap.add_argument("--precision", default=d["precision"], choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--projector", default="2048,2048,2048")
    return ap


def projector_widths(text: str) -> list[int]:
    """``--projector 2048,2048,2048`` as layer widths."""
    return [int(v) for v in text.split(",")]


def synthetic_uint8(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images [n, C, S, S] (blurred noise, so crops and blur have something to act on)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, channels, max(2, size // 8), max(2, size // 8)), dtype=np.uint8)
    t = torch.from_numpy(small).float()
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


class BttuiStep:
    """The trainer's step as run_pretraining does it: autocast, GradScaler for fp16, channels_last on CUDA."""

    def __init__(self, device: torch.device, precision: str, projector: list[int], lr: float = 0.03) -> None:
        from bttui.config.schema import PretrainConfig
        from bttui.train.model import BarlowTwins, build_backbone
        from bttui.train.pretrain import build_optimizer, speed_plan

        pc = PretrainConfig()
        pc.precision, pc.projector, pc.lr = precision, projector, lr
        self.device = device
        self.plan = speed_plan(pc, device)
        torch.manual_seed(0)
        self.model = BarlowTwins(build_backbone("resnet18"), projector, 0.0051).to(device)
        if self.plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.plan.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.opt = build_optimizer(self.model, pc)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.plan.scaler)

    def __call__(self, v1: torch.Tensor, v2: torch.Tensor) -> float:
        if self.plan.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        dt = self.plan.amp_dtype
        with torch.autocast(device_type=self.device.type, dtype=dt or torch.float32, enabled=dt is not None):
            loss = self.model(v1, v2)[0]
        value = float(loss.detach())
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return value


class BttuiPipeline:
    """bttui's path from a uint8 cache to a step: batch gather (``Batcher``), per-sample two-view augmentation on the
    device (``TwoViewAugment``), then ``BttuiStep``. ``pipeline(i)`` runs one end-to-end step on a random batch."""

    def __init__(self, images: np.ndarray, device: torch.device, batch: int, views: str, size: int,
                 mean: list[float], std: list[float], precision: str, projector: list[int]) -> None:
        from bttui.train.augment import TwoViewAugment
        from bttui.train.pretrain import Batcher, _make_cache

        self.batch = batch
        self.cache = _make_cache(images, device)
        self.batcher = Batcher(self.cache, device, batch)
        self.augment = TwoViewAugment(views, size, mean, std)
        self.gen = torch.Generator().manual_seed(0)
        self.step = BttuiStep(device, precision, projector)

    def views(self, idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of the images at ``idx`` (default: a random batch from the cache)."""
        if idx is None:
            idx = torch.randperm(self.cache.shape[0], generator=self.gen)[: self.batch]
        return self.augment(self.batcher(idx), self.gen)

    def __call__(self, i: int) -> None:
        self.step(*self.views())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn(i)`` after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        fn(warmup + i)
    sync(device)
    return (time.perf_counter() - t0) / steps
