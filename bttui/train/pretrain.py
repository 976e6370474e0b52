"""The Barlow Twins pretraining loop, read top to bottom like the reference ``main.py``.

Zbontar et al. 2021 (arXiv:2103.03230). The whole pretraining set lives in memory
as one uint8 tensor (on the GPU when it fits), views are made on the device with
per-sample parameters (bttui.train.augment), and every random draw of an epoch comes
from a ``torch.Generator`` seeded with (seed, epoch), so a run resumed from a
checkpoint repeats the uninterrupted run's steps exactly.

Under torchrun (bttui.train.distributed) every rank runs this loop on its
``batch_size / world_size`` slice of each global batch; augmentation parameters are
drawn for the global batch, so views (and a resume) do not depend on the number of
ranks. Only rank 0 emits events, updates status and writes checkpoints.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bttui.errors import BttuiError
from bttui.faults import fault_point
from bttui.train import distributed as dist_mod
from bttui.train.augment import TwoViewAugment
from bttui.train.loss import cross_correlation
from bttui.train.model import BarlowTwins, build_backbone, extract_features, feature_dim
from bttui.train.telemetry import GpuTelemetry, host_rss_mb

Emit = Callable[..., Any]

FINAL_NAME = "pretrain_final.pt"
INTERRUPTED_NAME = "pretrain_interrupted.pt"
KNN_K = 20
KNN_TEMPERATURE = 0.07  # weighted kNN vote of Wu et al. 2018, as in solo-learn's online kNN
KNN_MAX_MEMORY = 20_000  # caps keep the per-epoch kNN check well under a tenth of an epoch on CRC
KNN_MAX_QUERIES = 5_000
HEALTH_SAMPLES = 512  # images whose backbone features give the effective rank
XCORR_MAX = 32


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the periodic checkpoint written after ``epoch`` completed epochs."""
    return f"pretrain_epoch{epoch:04d}.pt"


# ---------------------------------------------------------------------------- data
@dataclass
class KnnData:
    """Labelled images for the online kNN check: memory bank (train split) and queries (val split)."""

    memory_images: np.ndarray
    memory_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray


@dataclass
class PretrainData:
    """The uint8 pretraining images [N, C, S, S], their normalisation stats and optional kNN data."""

    images: np.ndarray
    mean: list[float]
    std: list[float]
    knn: KnnData | None = None
    sources: dict[str, int] = field(default_factory=dict)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] in [0, 1] units (bttui.train.data.dataset_stats).

    A constant channel's std of 0 would divide by zero; it becomes 1.0 (centred, unscaled).
    """
    from bttui.train.data import dataset_stats

    mean, std = dataset_stats(images)
    return [float(m) for m in mean], [float(s) if s > 1e-6 else 1.0 for s in std]


def load_pretrain_data(cfg: Any, cache_dir: str | os.PathLike | None = None) -> PretrainData:
    """Load and concatenate ``cfg.pretrain.datasets`` (splits ``cfg.pretrain.splits``), labels unused.

    The first dataset's train/val splits feed the online kNN check.
    """
    from bttui.train import data as tdata

    pc = cfg.pretrain
    arrays = [tdata.load_dataset(cfg.data.root, ds, task=None, image_size=cfg.data.image_size,
                                 split_policy=cfg.data.split_policy, grayscale=cfg.data.grayscale, cache_dir=cache_dir)
              for ds in pc.datasets]
    images = np.ascontiguousarray(tdata.concat_for_pretraining(arrays, list(pc.splits)))
    mean, std = channel_stats(images)
    first = arrays[0]
    knn = None
    tr, va = np.asarray(first.splits.get("train", [])), np.asarray(first.splits.get("val", []))
    if len(tr) and len(va):
        knn = KnnData(np.asarray(first.images[tr]), np.asarray(first.labels[tr]),
                      np.asarray(first.images[va]), np.asarray(first.labels[va]))
    sources = {a.dataset_id: int(sum(len(a.splits[s]) for s in pc.splits)) for a in arrays}
    return PretrainData(images=images, mean=mean, std=std, knn=knn, sources=sources)


# ---------------------------------------------------------------------------- optimisation
class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) as in the Barlow Twins reference code.

    Parameter groups flagged ``exclude=True`` (biases and BatchNorm parameters) get
    neither weight decay nor the trust-ratio adaptation.
    """

    def __init__(self, params: Any, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not g["exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0,
                                    torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def build_optimizer(model: nn.Module, pc: Any) -> torch.optim.Optimizer:
    """Adam, SGD or LARS for ``pc.optimizer``; every group carries its unscheduled ``base_lr``.

    LARS follows the reference: lr and bias_lr are per 256 images (scaled by batch/256),
    1-d parameters (biases, BatchNorm) skip weight decay and adaptation. Adam and SGD
    decay every parameter, as the authors' Adam setup did.
    """
    if pc.optimizer == "lars":
        scale = pc.batch_size / 256
        weights = [p for p in model.parameters() if p.ndim != 1]
        biases = [p for p in model.parameters() if p.ndim == 1]
        groups = [
            {"params": weights, "base_lr": pc.lr * scale, "lr": pc.lr * scale, "exclude": False},
            {"params": biases, "base_lr": pc.bias_lr * scale, "lr": pc.bias_lr * scale, "exclude": True},
        ]
        return LARS(groups, lr=pc.lr * scale, weight_decay=pc.weight_decay, momentum=pc.momentum)
    groups = [{"params": list(model.parameters()), "base_lr": pc.lr}]
    if pc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=pc.lr, momentum=pc.momentum, weight_decay=pc.weight_decay)
    if pc.optimizer == "adam":
        return torch.optim.Adam(groups, lr=pc.lr, weight_decay=pc.weight_decay)
    raise BttuiError(f"pretrain.optimizer = {pc.optimizer!r} is not supported; valid: adam, sgd, lars.")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float, schedule: str) -> float:
    """Multiplier of the base lr for 0-based ``step``: linear warmup then cosine to ``min_ratio``, or 1."""
    if schedule == "constant":
        return 1.0
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    q = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return min_ratio + (1.0 - min_ratio) * q


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device``; None means fp32 (autocast is used on CUDA only)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass(frozen=True)
class SpeedPlan:
    """The speed settings a run actually uses on its device (CPU: all off, fp32, exact)."""

    amp_dtype: torch.dtype | None
    scaler: bool  # GradScaler: fp16 on CUDA only (bf16 has fp32's exponent range)
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


def speed_plan(pc: Any, device: torch.device) -> SpeedPlan:
    """Resolve ``pretrain.precision``, ``channels_last`` and ``compile`` for ``device``."""
    device = torch.device(device)
    amp_dtype = resolve_precision(pc.precision, device)
    cuda = device.type == "cuda"
    return SpeedPlan(amp_dtype=amp_dtype, scaler=cuda and amp_dtype == torch.float16,
                     channels_last=bool(pc.channels_last and cuda), cudnn_benchmark=cuda, compile=bool(pc.compile))


# ---------------------------------------------------------------------------- health metrics
def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli 2007; RankMe); NaN when it cannot be computed
    (non-finite features, an SVD that does not converge): a health figure must never fail the run by itself."""
    features = features.double()
    if features.numel() == 0 or not bool(torch.isfinite(features).all()):
        return float("nan")
    try:
        s = torch.linalg.svdvals(features)
    except RuntimeError:  # torch.linalg.LinAlgError is a RuntimeError
        return float("nan")
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def oom_reason(key: str, batch: int, precision: str, image_size: int, where: str = "") -> str:
    """The failure reason of a CUDA out-of-memory: the batch size tried, the config key and a smaller value."""
    smaller = max(2, batch // 2) if key.startswith("pretrain") else max(1, batch // 2)
    advice = f"try --set {key}={smaller}"
    if precision == "fp32":
        advice += ' (or --set pretrain.precision="bf16", which halves activation memory)'
    return (f"CUDA out of memory{where} at {key} = {batch} ({precision}, {image_size} px images); {advice}, "
            f"then resume the run")


def release_cuda_memory() -> None:
    """Give cached CUDA blocks back after an out-of-memory (so the error report and the next run have room)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except RuntimeError:
            pass


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of the L2-normalised embeddings: ~1/sqrt(D) healthy, 0 collapsed."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def downsample_square(c: torch.Tensor, size: int = XCORR_MAX) -> list[list[float]]:
    """Every k-th row and column of a square matrix (at most ``size`` x ``size``), rounded to 3 decimals.

    Strided picking keeps true diagonal entries on the diagonal (block averaging would dilute them).
    """
    k = max(1, math.ceil(c.shape[0] / size))
    sub = c[::k, ::k][:size, :size].detach().float().cpu()
    return [[round(float(v), 3) for v in row] for row in sub]


def knn_accuracy(memory: torch.Tensor, memory_labels: torch.Tensor, queries: torch.Tensor,
                 query_labels: torch.Tensor, k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> float:
    """Weighted cosine kNN classification accuracy of ``queries`` against a labelled memory bank."""
    memory = F.normalize(memory.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    n_classes = int(max(memory_labels.max(), query_labels.max())) + 1
    k = min(k, memory.shape[0])
    correct = 0
    for i in range(0, queries.shape[0], 1024):
        sim = queries[i:i + 1024] @ memory.T
        top, idx = sim.topk(k, dim=1)
        w = (top / temperature).exp()
        votes = torch.zeros(sim.shape[0], n_classes)
        votes.scatter_add_(1, memory_labels[idx], w)
        correct += int((votes.argmax(1) == query_labels[i:i + 1024]).sum())
    return correct / max(1, queries.shape[0])


# ---------------------------------------------------------------------------- checkpoints
def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain types, loadable with ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": [int(v) for v in py_state[1]], "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["state"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then os.replace (never a torn checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from bttui.runs.disk import ensure_free, estimate_bytes  # a full disk: a clear failure, not a torn file
    ensure_free(path.parent, estimate_bytes(obj), f"checkpoint {path.name}")
    try:
        torch.save(obj, tmp)
        fault_point("pretrain.checkpoint.temp_written")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_candidates(ckpt_dir: Path) -> list[Path]:
    """Pretraining checkpoints in ``ckpt_dir``, newest first."""
    if not ckpt_dir.is_dir():
        return []
    files = [p for p in ckpt_dir.glob("pretrain_*.pt") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == FINAL_NAME), reverse=True)


def find_resume_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable pretraining checkpoint and its contents, or None."""
    for path in resume_candidates(ckpt_dir):
        try:
            return path, load_checkpoint(path)
        except Exception:
            continue  # a torn or foreign file: try the next older one
    return None


# Keys a resumed run must share with the checkpoint it continues: the architecture, and what
# decides the data order and the meaning of a step (changing them mid-run breaks exact resume).
CRITICAL_KEYS = ("pretrain.backbone", "pretrain.projector", "pretrain.batch_size", "data.image_size",
                 "pretrain.datasets", "pretrain.splits", "data.split_policy", "data.grayscale", "seed")


def critical_config(cfg: Any) -> dict[str, Any]:
    """The values of :data:`CRITICAL_KEYS` in ``cfg`` (plain lists and scalars, recorded in checkpoints)."""
    out: dict[str, Any] = {}
    for key in CRITICAL_KEYS:
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        out[key] = list(obj) if isinstance(obj, (list, tuple)) else obj
    return out


def check_resume_compatible(ck: Any, cfg: Any, path: Path) -> None:
    """BttuiError (raised before anything is written) when checkpoint ``path`` cannot continue under ``cfg``."""
    if not isinstance(ck, dict) or ck.get("kind") != "bttui-pretrain" or "model" not in ck:
        raise BttuiError(f"cannot resume from {path}: it is not a bttui pretraining checkpoint (no kind = "
                         "\"bttui-pretrain\" with model weights); remove it from the run's checkpoints/ folder or "
                         "start a new run; nothing was overwritten.")
    recorded = ck.get("config")
    if not isinstance(recorded, dict):  # checkpoints written before the config was recorded
        recorded = {"pretrain.backbone": ck.get("backbone"), "pretrain.projector": ck.get("projector")}
    now = critical_config(cfg)
    changed = [f"{k} was {recorded[k]!r} and is now {now[k]!r}" for k in CRITICAL_KEYS
               if recorded.get(k) is not None and _norm(recorded[k]) != _norm(now[k])]
    if changed:
        raise BttuiError(f"cannot resume from {path}: the run's config.toml changed incompatibly since that "
                         f"checkpoint was written ({'; '.join(changed)}). Restore the old values in config.toml, or "
                         "start a new run with the new config; nothing was overwritten.")


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_model_state(model: nn.Module, state: Any, path: Path, cfg: Any) -> None:
    """``model.load_state_dict(state)``; a checkpoint of another architecture becomes a clear BttuiError."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise BttuiError(f"cannot resume from {path}: its weights do not fit this run's model (pretrain.backbone = "
                         f"{cfg.pretrain.backbone!r}, pretrain.projector = {list(cfg.pretrain.projector)}); it was "
                         f"written for another architecture ({detail[:300]}). Remove the checkpoint or start a new "
                         "run; nothing was overwritten.") from None


# ---------------------------------------------------------------------------- the loop
@dataclass
class PretrainResult:
    """How pretraining ended; ``summary()`` is summary.json's "pretrain" entry."""

    status: str
    reason: str | None = None
    epochs: int = 0
    epochs_planned: int = 0
    steps: int = 0
    final_loss: float | None = None
    checkpoint: str | None = None
    knn_accuracy: float | None = None
    resumed_from: str | None = None
    images: int = 0
    backbone: str = "resnet18"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    time_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _noop(*_a: Any, **_k: Any) -> None:
    return None


def run_pretraining(cfg: Any, data: PretrainData, ckpt_dir: str | os.PathLike, *, device: torch.device,
                    emit: Emit = _noop, progress: Emit = _noop, should_stop: Callable[[], bool] = lambda: False,
                    resume: bool = True, log: Callable[[str], None] = _noop,
                    dist: dist_mod.DistContext | None = None) -> PretrainResult:
    """Pretrain ``cfg.pretrain`` on ``data``; checkpoints go to ``ckpt_dir``.

    ``emit(type, **fields)`` writes an event, ``progress(**fields)`` updates status.json,
    ``should_stop()`` is polled at every step boundary (SIGTERM/SIGINT). ``dist``: this
    process's place under torchrun (None: alone); ranks other than 0 never write.
    """
    pc, hc = cfg.pretrain, cfg.health
    dist = dist or dist_mod.DistContext()
    is_main = dist.is_main
    if not is_main:
        emit = progress = log = _noop
    ckpt_dir = Path(ckpt_dir)
    device = torch.device(device)
    t_start = time.perf_counter()
    n_images = int(data.images.shape[0])
    batch = int(pc.batch_size)
    if batch < 2:
        raise BttuiError(f"pretrain.batch_size = {batch}: the Barlow Twins loss standardises each embedding "
                         "dimension over the batch, which needs at least 2 images; use 2 or more (256 in the paper).")
    local_batch = dist_mod.check_batch(batch, dist.world_size)
    shard = (dist.rank, dist.world_size) if dist.enabled else None
    steps_per_epoch = n_images // batch  # drop_last, as the reference's DataLoader
    if steps_per_epoch == 0:
        raise BttuiError(f"pretrain.batch_size = {batch} is larger than the pretraining set ({n_images} images from "
                         f"{', '.join(pc.datasets)}, splits {', '.join(pc.splits)}); lower pretrain.batch_size.")
    total_steps = steps_per_epoch * pc.epochs
    warmup_steps = int(round(pc.warmup_epochs * steps_per_epoch))
    result = PretrainResult(status="running", epochs_planned=pc.epochs, images=n_images, backbone=pc.backbone,
                            mean=list(data.mean), std=list(data.std))

    # ---- model, optimiser, precision
    torch.manual_seed(cfg.seed)  # the same seed on every rank: identical initial weights
    if not pc.projector:
        raise BttuiError("pretrain.projector is empty; give at least one layer width, e.g. [2048, 2048, 2048].")
    model = BarlowTwins(build_backbone(pc.backbone), list(pc.projector), pc.lambd, distributed=dist.enabled)
    model = dist_mod.sync_batchnorm(model, dist, device).to(device)
    plan = speed_plan(pc, device)
    channels_last, amp_dtype, precision_name = plan.channels_last, plan.amp_dtype, plan.precision
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if plan.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: cuDNN picks the fastest kernels once
    optimizer = build_optimizer(model, pc)
    scaler = torch.amp.GradScaler("cuda", enabled=plan.scaler)
    if pc.precision not in ("auto", "fp32") and device.type != "cuda":
        log(f"precision {pc.precision} needs CUDA; training in fp32 on {device.type}")

    # ---- resume
    start_epoch, step, epoch_state = 0, 0, None
    if resume:
        found = find_resume_checkpoint(ckpt_dir)
        if found is not None:
            path, ck = found
            check_resume_compatible(ck, cfg, path)
            load_model_state(model, ck["model"], path, cfg)
            optimizer.load_state_dict(ck["optimizer"])
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            set_rng_state(ck.get("rng", {}))
            start_epoch, step = int(ck["epoch"]), int(ck["step"])
            epoch_state = ck.get("epoch_state")
            result.resumed_from = str(path)
            result.final_loss = ck.get("loss")
            result.knn_accuracy = ck.get("knn_accuracy")
            emit("log", level="info", stage="pretrain",
                 message=f"resumed pretraining from {path.name} (epoch {start_epoch}, step {step})")
            if path.name == FINAL_NAME and start_epoch >= pc.epochs:
                result.status, result.epochs, result.steps, result.checkpoint = "completed", start_epoch, step, str(path)
                result.time_s = time.perf_counter() - t_start
                return result

    train_model = dist_mod.wrap_model(model, dist, device)
    if plan.compile:
        train_model = torch.compile(train_model)
    augment = TwoViewAugment(pc.augment, cfg.data.image_size, data.mean, data.std)
    telemetry = GpuTelemetry(device if device.type == "cuda" else None)
    cache = _make_cache(data.images, device)
    batcher = Batcher(cache, device, local_batch)
    health_idx = torch.from_numpy(np.sort(np.random.default_rng(0).permutation(n_images)[:HEALTH_SAMPLES]))
    knn_sets = _knn_subsets(data.knn)
    emit("stage_start", stage="pretrain", epochs=pc.epochs, steps=total_steps, steps_per_epoch=steps_per_epoch,
         images=n_images, batch_size=batch, device=str(device), precision=precision_name,
         channels_last=channels_last, compile=bool(pc.compile), start_epoch=start_epoch, start_step=step,
         world_size=dist.world_size, per_rank_batch=local_batch, cache_device=str(cache.device),
         cache_pinned=bool(cache.device.type == "cpu" and cache.is_pinned()))

    def checkpoint_payload(epoch_done: int, loss_value: float | None, state: dict | None) -> dict[str, Any]:
        return {"format": 1, "kind": "bttui-pretrain", "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch_done, "step": step, "rng": rng_state(), "epoch_state": state,
                "backbone": pc.backbone, "projector": [int(v) for v in pc.projector],
                "feat_dim": feature_dim(model.backbone), "norm": {"mean": list(data.mean), "std": list(data.std)},
                "loss": loss_value, "knn_accuracy": result.knn_accuracy, "seed": int(cfg.seed),
                "config": critical_config(cfg), "world_size": dist.world_size}

    def save(payload: dict[str, Any], path: Path) -> None:
        if is_main:  # other ranks hold the same weights and never write
            save_atomic(payload, path)

    def fail(reason: str) -> PretrainResult:
        result.status, result.reason = "failed", reason
        result.time_s = time.perf_counter() - t_start
        emit("stage_end", stage="pretrain", status="failed", reason=reason, step=step)
        return result

    last_loss: float | None = result.final_loss
    for epoch in range(start_epoch, pc.epochs):
        epoch_no = epoch + 1
        t_epoch = time.perf_counter()
        gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
        perm = torch.randperm(n_images, generator=gen)
        first_batch, loss_sum, std_sum, n_seen = 0, 0.0, 0.0, 0
        if epoch_state is not None and int(epoch_state["epoch"]) == epoch:
            perm = epoch_state["perm"]
            gen.set_state(epoch_state["gen"])
            first_batch = int(epoch_state["batch"])
            loss_sum, std_sum, n_seen = float(epoch_state["loss_sum"]), float(epoch_state["std_sum"]), int(epoch_state["n"])
        epoch_state = None
        model.train()
        win_t, win_data, win_imgs, win_steps = 0.0, 0.0, 0, 0
        z1 = z2 = None
        for i in range(first_batch, steps_per_epoch):
            stop_now = dist.any_true(should_stop(), device) if dist.enabled else should_stop()
            if stop_now:  # every rank stops at the same step, or the others would wait in all_reduce forever
                state = {"epoch": epoch, "batch": i, "perm": perm, "gen": gen.get_state(),
                         "loss_sum": loss_sum, "std_sum": std_sum, "n": n_seen}
                path = ckpt_dir / INTERRUPTED_NAME
                save(checkpoint_payload(epoch, last_loss, state) if is_main else {}, path)
                emit("checkpoint", stage="pretrain", path=str(path), epoch=epoch, step=step)
                result.status, result.reason = "stopped", f"stopped at step {step} (epoch {epoch_no})"
                result.epochs, result.steps, result.final_loss = epoch, step, last_loss
                result.time_s = time.perf_counter() - t_start
                emit("stage_end", stage="pretrain", status="stopped", step=step)
                return result
            t0 = time.perf_counter()
            idx = perm[i * batch:(i + 1) * batch]
            if shard is not None:
                idx = idx[dist.rank * local_batch:(dist.rank + 1) * local_batch]
            out_of_memory = False
            try:
                x = batcher(idx)
                v1, v2 = augment(x, gen, shard)
                if channels_last:
                    v1 = v1.contiguous(memory_format=torch.channels_last)
                    v2 = v2.contiguous(memory_format=torch.channels_last)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # so data_wait measures the augmentation, not just its launch
                t1 = time.perf_counter()
                factor = lr_factor(step, total_steps, warmup_steps, pc.min_lr_ratio, pc.schedule)
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * factor
                with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss, on_diag, off_diag, z1, z2 = train_model(v1, v2)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    lr_now = optimizer.param_groups[0]["lr"]
                    return fail(f"loss became {'NaN' if math.isnan(loss_value) else 'Inf'} at step {step + 1} "
                                f"(epoch {epoch_no}); try a lower lr (currently {lr_now:.3g}) or fp32 precision")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                fault_point("pretrain.step.after_backward")
                scaler.step(optimizer)
                scaler.update()
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:
                # Outside the except block: its traceback no longer pins the step's tensors.
                x = v1 = v2 = loss = on_diag = off_diag = z1 = z2 = None
                optimizer.zero_grad(set_to_none=True)
                release_cuda_memory()
                return fail(oom_reason("pretrain.batch_size", batch, precision_name, cfg.data.image_size,
                                       f" in step {step + 1} (epoch {epoch_no})"))
            step += 1
            last_loss = loss_value
            loss_sum += loss_value
            std_sum += float(embedding_std(z1))
            n_seen += 1
            t2 = time.perf_counter()
            win_t += t2 - t0
            win_data += t1 - t0
            win_imgs += batch
            win_steps += 1
            if step % pc.log_every == 0 or step == 1 or step == total_steps:
                fields = dict(stage="pretrain", step=step, epoch=epoch_no, loss=loss_value,
                              on_diag=float(on_diag.detach()), off_diag=float(off_diag.detach()), lr=optimizer.param_groups[0]["lr"],
                              images_per_s=round(win_imgs / max(win_t, 1e-9), 1),
                              data_wait=round(win_data / max(win_t, 1e-9), 4),
                              step_time=round(win_t / win_steps, 5))
                rss = host_rss_mb()
                if rss is not None:
                    fields["rss_mb"] = rss
                fields.update(telemetry.sample())
                emit("step", **fields)
                progress(stage="pretrain", epoch=epoch_no, epochs=pc.epochs, step=step, steps=total_steps,
                         loss=loss_value)
                win_t, win_data, win_imgs, win_steps = 0.0, 0.0, 0, 0

        # ---- end of epoch: health, kNN, checkpoint
        mean_loss = loss_sum / max(1, n_seen)
        emb_std = std_sum / max(1, n_seen)
        # Rank 0 measures health; its collapse verdict holds for every rank (one decision, no deadlock).
        verdict: str | None = None
        if is_main:
            feats = extract_features(model.backbone, cache[health_idx.to(cache.device)], data.mean, data.std, device,
                                     batch_size=batch, amp_dtype=amp_dtype)
            if not bool(torch.isfinite(feats).all()):
                # The loss can stay finite while the backbone's weights blow up (LARS at a huge lr): every later
                # number (rank, kNN, the cells) would be garbage, so stop here with the cause.
                lr_now = optimizer.param_groups[0]["lr"]
                verdict = (f"backbone features became non-finite (NaN/Inf) at epoch {epoch_no}; try a lower lr "
                           f"(currently {lr_now:.3g}) or fp32 precision")
        if verdict is None and is_main:
            erank = effective_rank(feats)
            erank_ratio = erank / max(1, min(feats.shape))
            fields = dict(stage="pretrain", epoch=epoch_no, step=step, loss=mean_loss, emb_std=round(emb_std, 6),
                          eff_rank=round(erank, 3), eff_rank_ratio=round(erank_ratio, 4),
                          lr=optimizer.param_groups[0]["lr"])
            if z1 is not None:
                fields["xcorr"] = downsample_square(cross_correlation(z1.detach(), z2.detach()))
            if knn_sets is not None and pc.knn_every > 0 and (epoch_no % pc.knn_every == 0 or epoch_no == pc.epochs):
                mem_x, mem_y, q_x, q_y = knn_sets
                mem_f = extract_features(model.backbone, mem_x, data.mean, data.std, device, batch_size=batch, amp_dtype=amp_dtype)
                q_f = extract_features(model.backbone, q_x, data.mean, data.std, device, batch_size=batch, amp_dtype=amp_dtype)
                result.knn_accuracy = knn_accuracy(mem_f, mem_y, q_f, q_y)
                fields["knn_accuracy"] = round(result.knn_accuracy, 4)
            fields["epoch_time"] = round(time.perf_counter() - t_epoch, 3)
            emit("epoch", **fields)
            fault_point("pretrain.epoch.end")
            progress(stage="pretrain", epoch=epoch_no, epochs=pc.epochs, step=step, steps=total_steps, loss=mean_loss)

            collapse = []
            if emb_std < hc.min_std:
                collapse.append(f"embedding std {emb_std:.3g} < health.min_std {hc.min_std:g}")
            if erank_ratio < hc.min_rank_ratio:
                collapse.append(f"effective rank / dim {erank_ratio:.3g} < health.min_rank_ratio {hc.min_rank_ratio:g}")
            if collapse:
                message = f"representation collapse suspected at epoch {epoch_no}: " + "; ".join(collapse)
                if hc.on_collapse == "stop":
                    verdict = message + " (health.on_collapse = stop)"
                else:
                    emit("log", level="warning", stage="pretrain", epoch=epoch_no, alarm="collapse", message=message)
        if dist.enabled:
            verdict = dist.broadcast_text(verdict, device)
        if verdict is not None:
            return fail(verdict)

        if epoch_no % pc.checkpoint_every == 0 or epoch_no == pc.epochs:
            payload = checkpoint_payload(epoch_no, mean_loss, None) if is_main else {}
            if epoch_no % pc.checkpoint_every == 0:
                path = ckpt_dir / epoch_checkpoint_name(epoch_no)
                save(payload, path)
                emit("checkpoint", stage="pretrain", path=str(path), epoch=epoch_no, step=step)
                fault_point("pretrain.checkpoint.saved")
                if is_main:
                    _prune_periodic(ckpt_dir, pc.keep_last)
            if epoch_no == pc.epochs:
                path = ckpt_dir / FINAL_NAME
                save(payload, path)
                emit("checkpoint", stage="pretrain", path=str(path), epoch=epoch_no, step=step)
                fault_point("pretrain.final.saved")
                result.checkpoint = str(path)
            stale = ckpt_dir / INTERRUPTED_NAME
            if is_main and stale.exists():
                stale.unlink()
        result.epochs, result.steps, result.final_loss = epoch_no, step, mean_loss

    if result.checkpoint is None:
        # Resumed from a checkpoint of the last epoch written just before the final one: write it now.
        path = ckpt_dir / FINAL_NAME
        final_loss = result.final_loss if result.final_loss is not None else last_loss
        save(checkpoint_payload(pc.epochs, final_loss, None) if is_main else {}, path)
        emit("checkpoint", stage="pretrain", path=str(path), epoch=pc.epochs, step=step)
        result.checkpoint, result.final_loss = str(path), final_loss
    result.status = "completed"
    result.epochs, result.steps = pc.epochs, step
    result.time_s = time.perf_counter() - t_start
    emit("stage_end", stage="pretrain", status="completed", step=step, loss=result.final_loss,
         knn_accuracy=result.knn_accuracy, checkpoint=result.checkpoint)
    return result


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct, reproducible stream per (seed, epoch); the large odd multiplier keeps seeds apart.
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def _make_cache(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The uint8 image tensor, on the GPU when it takes under a quarter of free memory, else pinned host memory."""
    cache = torch.from_numpy(np.ascontiguousarray(images))
    if device.type != "cuda":
        return cache
    try:
        free, _total = torch.cuda.mem_get_info(device)
        if cache.numel() < free // 4:
            return cache.to(device)
    except Exception:
        pass
    return cache.pin_memory()


class Batcher:
    """Gathers one batch of uint8 images from the cache onto the training device.

    CPU: plain indexing (the exact path the tests pin). GPU-resident cache: indexing on the GPU.
    Pinned host cache: ``index_select`` into one of two reusable pinned buffers, then an
    asynchronous copy; indexing a pinned tensor directly would give pageable memory, whose
    ``non_blocking`` copy is synchronous. Two buffers alternate so a copy still in flight is
    never overwritten (each step also waits for its loss value, which bounds the overlap).
    """

    def __init__(self, cache: torch.Tensor, device: torch.device, batch: int) -> None:
        self.cache, self.device = cache, torch.device(device)
        self.staged = self.device.type == "cuda" and cache.device.type == "cpu" and cache.is_pinned()
        self.buffers: list[torch.Tensor] = []
        if self.staged:
            self.buffers = [torch.empty((batch, *cache.shape[1:]), dtype=cache.dtype).pin_memory() for _ in range(2)]
        self.turn = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.staged:
            return self.cache[idx.to(self.cache.device)].to(self.device, non_blocking=True)
        buf = self.buffers[self.turn][: idx.numel()]
        self.turn ^= 1
        torch.index_select(self.cache, 0, idx, out=buf)
        return buf.to(self.device, non_blocking=True)


def _knn_subsets(knn: KnnData | None) -> tuple[torch.Tensor, ...] | None:
    if knn is None or len(knn.memory_labels) == 0 or len(knn.query_labels) == 0:
        return None
    rng = np.random.default_rng(0)
    mem = np.sort(rng.permutation(len(knn.memory_labels))[:KNN_MAX_MEMORY])
    qry = np.sort(rng.permutation(len(knn.query_labels))[:KNN_MAX_QUERIES])
    return (torch.from_numpy(np.ascontiguousarray(knn.memory_images[mem])), torch.from_numpy(knn.memory_labels[mem]).long(),
            torch.from_numpy(np.ascontiguousarray(knn.query_images[qry])), torch.from_numpy(knn.query_labels[qry]).long())


def _prune_periodic(ckpt_dir: Path, keep_last: int) -> None:
    periodic = sorted(p for p in ckpt_dir.glob("pretrain_epoch*.pt") if p.name[len("pretrain_epoch"):-3].isdigit())
    for old in periodic[:-keep_last] if keep_last > 0 else periodic:
        old.unlink(missing_ok=True)
