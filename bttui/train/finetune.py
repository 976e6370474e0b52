"""One fine-tuning cell: build the backbone from its init, train a readout (linear / full / surgical), test it.

The protocol of the paper (readout only, full and surgical fine-tuning of a ResNet-18
on a stratified fraction of the training labels) with the corrections FACTS.md lists:
the best epoch is chosen on the validation split, the test split is used once, at
the end, and ImageNet weights get ImageNet normalisation.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bttui.errors import BttuiError
from bttui.faults import fault_point
from bttui.train.augment import LightAugment, eval_transform
from bttui.train.model import BACKBONE_STAGES, Readout, build_backbone, extract_features, feature_dim

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
LBFGS_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 strengths tried on the validation split
LBFGS_MAX_ITER = 200  # per L2 value; warm starts make the later ones converge in far fewer
LBFGS_PATIENCE = 2  # stop the L2 path after this many values in a row that do not beat the best on val
# Up to this many feature values (n x d) the fit runs on one thread: an evaluation is then a few
# MFLOP, where intra-op threads gain little when the cores are free (one thread: ~1.3x slower fit
# on a quiet 2-core box) and lose a lot when they are shared with other work (two threads: 5-10x
# slower there; docs/benchmarks.md "Linear probe"). 0 turns this off.
LBFGS_SINGLE_THREAD_MAX = 4_000_000
BOOTSTRAP_RESAMPLES = 1000


class CellStopped(Exception):
    """The run was asked to stop (SIGTERM/SIGINT) while this cell was training."""


def _noop(*_a: Any, **_k: Any) -> None:
    return None


# ---------------------------------------------------------------------------- backbone inits
@dataclass
class BackboneInit:
    """A ready backbone and where it came from."""

    backbone: nn.Module
    init: str  # resolved, e.g. "barlow_twins:<run id>" or "checkpoint:/abs/path"
    backbone_from: str | None
    norm: tuple[list[float], list[float]] | None  # normalisation the backbone was trained with
    name: str = "resnet18"
    lineage: dict[str, Any] = field(default_factory=dict)


def imagenet_weights_path(cfg: Any) -> Path:
    """Where the ImageNet ResNet-18 weights are read: finetune.imagenet_weights, else torch hub's cache."""
    if cfg.finetune is not None and cfg.finetune.imagenet_weights:
        return Path(cfg.finetune.imagenet_weights)
    import torch.hub
    from torchvision.models import ResNet18_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)


# Children of ``nn.Sequential(*list(resnet.children())[:-1])`` (lightly's examples build the backbone so):
# 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4, 8 avgpool.
SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DDP, torch.compile, Lightning modules named `model`
_BACKBONE_PREFIXES = ("backbone.", "encoder.")  # bttui/solo-learn/lightly name it backbone; some code says encoder


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def backbone_state_dict(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The backbone weights in ``obj`` with torchvision ResNet key names, and its metadata (``meta["format"]``).

    Accepts bttui checkpoints (``{"model": ...}``), plain torchvision ResNet state
    dicts, PyTorch Lightning checkpoints (``{"state_dict": ...}``) as written by
    solo-learn (``backbone.conv1.weight``) and lightly (``backbone.0.weight`` from
    ``nn.Sequential(*list(resnet.children())[:-1])``), and bare lightly backbones
    (``0.weight``). Drops classifier, projector and momentum-encoder weights and
    the ``module.`` / ``_orig_mod.`` prefixes of DDP and torch.compile.
    """
    if not isinstance(obj, dict):
        raise BttuiError(f"{source} does not hold a state dict (found {type(obj).__name__}); give a bttui "
                         "checkpoint (pretrain_*.pt), a torchvision ResNet state dict, or a lightly / solo-learn "
                         "checkpoint.")
    meta: dict[str, Any] = {}
    if isinstance(obj.get("model"), dict):
        meta = {k: obj[k] for k in ("backbone", "norm", "epoch", "step", "kind") if k in obj}
        meta["format"] = "bttui"
        sd = obj["model"]
    elif isinstance(obj.get("state_dict"), dict):
        meta = {"format": "lightning", **({"epoch": obj["epoch"]} if isinstance(obj.get("epoch"), int) else {})}
        sd = obj["state_dict"]
    else:
        meta = {"format": "state_dict"}
        sd = obj
    sd = {_strip(k, _WRAPPER_PREFIXES): v for k, v in sd.items() if isinstance(k, str) and torch.is_tensor(v)}
    if any(k.startswith(_BACKBONE_PREFIXES) for k in sd):
        # Only the online backbone: projector, classifier and momentum copies are other modules.
        sd = {_strip(k, _BACKBONE_PREFIXES): v for k, v in sd.items() if k.startswith(_BACKBONE_PREFIXES)}
    if sd and all(k.split(".", 1)[0].isdigit() for k in sd):
        if meta["format"] != "bttui":
            meta["format"] = "lightly"
        mapped = {}
        for k, v in sd.items():
            head, _, rest = k.partition(".")
            mapped[f"{SEQUENTIAL_RESNET[head]}.{rest}" if head in SEQUENTIAL_RESNET else k] = v
        sd = mapped
    elif meta["format"] == "lightning" and "conv1.weight" in sd:
        meta["format"] = "solo-learn"
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "projector.", "projection_head.", "classifier."))}
    if not sd:
        raise BttuiError(f"{source} holds no backbone weights; give a bttui checkpoint, a torchvision ResNet "
                         "state dict, or a lightly / solo-learn checkpoint whose backbone is a torchvision ResNet.")
    return sd, meta


def load_backbone_weights(path: Path, source_label: str) -> tuple[nn.Module, dict[str, Any], str]:
    """A backbone built to match the weights in ``path`` and loaded with them; returns (backbone, meta, name).

    Any missing key, unexpected key or shape mismatch is an error naming the file
    and examples of each: a checkpoint of another architecture never loads partly.
    """
    if not path.is_file():
        raise BttuiError(f"Checkpoint {path} ({source_label}) does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BttuiError(f"Cannot read checkpoint {path} ({source_label}): {type(exc).__name__}: {exc}. "
                         "It must be a file written by torch.save holding tensors only.") from exc
    sd, meta = backbone_state_dict(obj, f"Checkpoint {path} ({source_label})")
    name = meta.get("backbone") or ("resnet50" if "layer1.0.conv3.weight" in sd else "resnet18")
    backbone = build_backbone(name)
    own = backbone.state_dict()
    # Old checkpoints lack BatchNorm's num_batches_tracked counters; they carry no weights.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}" for k in sd
              if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def some(items: list[str]) -> str:
            return ", ".join(items[:3]) or "-"

        raise BttuiError(f"Checkpoint {path} ({source_label}, read as {meta.get('format', 'a state dict')}) does not "
                         f"fit a torchvision {name} backbone: {len(missing)} missing keys (e.g. {some(missing)}), "
                         f"{len(unexpected)} unexpected keys (e.g. {some(unexpected)}), {len(shapes)} with another "
                         f"shape (e.g. {some(shapes)}). bttui fine-tunes torchvision ResNet-18/50 backbones; give a "
                         "bttui, torchvision, lightly or solo-learn checkpoint of one.")
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return backbone, meta, name


def pretrain_checkpoint_in(run_dir: Path, epoch: int | None, what: str) -> Path:
    """The final (or ``@epoch=N``) pretraining checkpoint of a run directory."""
    from bttui.train.pretrain import FINAL_NAME, epoch_checkpoint_name

    ckpt_dir = run_dir / "checkpoints"
    path = ckpt_dir / (FINAL_NAME if epoch is None else epoch_checkpoint_name(epoch))
    if path.is_file():
        return path
    have = sorted(p.name for p in ckpt_dir.glob("pretrain_*.pt")) if ckpt_dir.is_dir() else []
    hint = (f"checkpoints there: {', '.join(have)}" if have else "it has no pretraining checkpoints")
    if epoch is not None:
        hint += " (periodic ones exist every pretrain.checkpoint_every epochs; only the last keep_last are kept)"
    raise BttuiError(f"{what}: {path} does not exist; {hint}.")


def resolve_init(cfg: Any, init_text: str, seed: int, *, run_dir: Path,
                 resolve_run: Callable[[str], tuple[str, Path]] | None = None) -> BackboneInit:
    """Build the backbone for an init string (random | imagenet | barlow_twins | run:<id> | checkpoint:<path>)."""
    from bttui.config.init_spec import parse_init

    spec = parse_init(init_text)
    default_name = cfg.pretrain.backbone if cfg.pretrain is not None else "resnet18"
    if spec.kind == "random":
        torch.manual_seed(seed)
        return BackboneInit(build_backbone(default_name), "random", None, None, default_name, {"backbone_from": None})
    if spec.kind == "imagenet":
        path = imagenet_weights_path(cfg)
        if not path.is_file():
            raise BttuiError(
                f"ImageNet weights not found at {path}. This machine cannot download them: copy torchvision's "
                f"resnet18-f37072fd.pth (ResNet18_Weights.IMAGENET1K_V1) into {path.parent} (torch hub's checkpoint "
                "folder), or set finetune.imagenet_weights to the file's path.")
        backbone, _meta, name = load_backbone_weights(path, "ImageNet weights")
        return BackboneInit(backbone, "imagenet", f"imagenet:{path}", (IMAGENET_MEAN, IMAGENET_STD), name,
                            {"backbone_from": f"imagenet:{path}", "checkpoint": str(path)})
    suffix = f"@epoch={spec.epoch}" if spec.epoch is not None else ""
    if spec.kind == "barlow_twins":
        run_id = run_dir.name
        path = pretrain_checkpoint_in(run_dir, spec.epoch, f"init {init_text} (this run's pretraining)")
        init = f"barlow_twins:{run_id}{suffix}"
        origin = f"run:{run_id}"
    elif spec.kind == "run":
        if resolve_run is None:
            raise BttuiError(f"init {init_text}: no run store to look up run {spec.ref!r} in.")
        run_id, other = resolve_run(spec.ref)
        path = pretrain_checkpoint_in(Path(other), spec.epoch, f"init {init_text}")
        init = f"run:{run_id}{suffix}"
        origin = f"run:{run_id}"
    else:  # checkpoint
        ref = Path(spec.ref).expanduser()
        if ref.is_dir():
            base = ref.parent if ref.name == "checkpoints" else ref
            path = pretrain_checkpoint_in(base, spec.epoch, f"init {init_text}")
        else:
            if spec.epoch is not None:
                raise BttuiError(f"init {init_text}: @epoch= needs a run directory after checkpoint:, "
                                 f"but {ref} is a file; drop @epoch= or point at the run directory.")
            path = ref
        path = path.resolve()
        init = f"checkpoint:{path}"
        origin = f"checkpoint:{path}"
    backbone, meta, name = load_backbone_weights(path, f"init {init_text}")
    norm = None
    if isinstance(meta.get("norm"), dict) and meta["norm"].get("mean"):
        norm = ([float(v) for v in meta["norm"]["mean"]], [float(v) for v in meta["norm"]["std"]])
    lineage = {"backbone_from": origin, "checkpoint": str(path), "epoch": meta.get("epoch"), "step": meta.get("step"),
               "format": meta.get("format")}
    return BackboneInit(backbone, init, origin, norm, name, lineage)


# ---------------------------------------------------------------------------- metrics
def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall; None for classes absent from the test set), confusion counts
    (rows = true), balanced accuracy and macro F1 (over classes present in truth or predictions)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    per_class = [float(tp[c] / support[c]) if support[c] else None for c in range(n_classes)]
    recalls = [v for v in per_class if v is not None]
    f1s = []
    for c in range(n_classes):
        if support[c] == 0 and predicted[c] == 0:
            continue
        denom = support[c] + predicted[c]
        f1s.append(float(2 * tp[c] / denom) if denom else 0.0)
    return {
        "test_accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
    }


def bootstrap_ci(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> list[float]:
    """Percentile bootstrap confidence interval of the accuracy from per-sample correctness."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(resamples, len(correct)))
    accs = correct[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return [float(np.quantile(accs, alpha)), float(np.quantile(accs, 1 - alpha))]


# ---------------------------------------------------------------------------- training pieces
def _evaluate_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = float(F.cross_entropy(logits, labels))
    acc = int((logits.argmax(1) == labels).sum()) / len(labels) if len(labels) else 0.0
    return loss, acc


class _BestEpoch:
    """Model selection on validation accuracy with early stopping after ``patience`` epochs without a gain.

    Keeps the best epoch's weights of ``module`` (``snapshot()`` copies them); without a validation
    split every epoch counts as the best, so the last one is kept.
    """

    def __init__(self, module: nn.Module, has_val: bool, patience: int | None,
                 snapshot: Callable[[], dict[str, torch.Tensor]] | None = None) -> None:
        self.module, self.has_val, self.patience = module, has_val, patience
        self.snapshot = snapshot or (lambda: copy.deepcopy(module.state_dict()))
        self.state, self.accuracy, self.epoch, self.since = copy.deepcopy(module.state_dict()), -1.0, None, 0

    def update(self, epoch: int, stats: dict[str, float]) -> None:
        if not self.has_val or stats["val_accuracy"] > self.accuracy:
            self.accuracy = stats.get("val_accuracy", -1.0)
            self.state, self.epoch, self.since = self.snapshot(), epoch, 0
        else:
            self.since += 1

    @property
    def val_accuracy(self) -> float | None:
        """The best validation accuracy so far (-1.0 before the first epoch); None without a validation split."""
        return self.accuracy if self.has_val else None

    @property
    def patience_spent(self) -> bool:
        return bool(self.patience) and self.since >= self.patience

    def restore(self) -> None:
        self.module.load_state_dict(self.state)


def _fit_readout_sgd(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor | None, val_y: torch.Tensor | None,
                     n_classes: int, ft: Any, seed: int, on_epoch: Callable[..., None],
                     should_stop: Callable[[], bool]) -> tuple[Readout, int | None, float | None]:
    """Mini-batch training of the readout on precomputed features (Adam, as the paper's recipe)."""
    torch.manual_seed(seed)
    readout = Readout(train_f.shape[1], n_classes)
    opt = torch.optim.Adam(readout.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best = _BestEpoch(readout, val_f is not None, ft.patience)
    for epoch in range(1, ft.epochs + 1):
        if should_stop():
            raise CellStopped()
        perm = torch.randperm(len(train_y), generator=gen)
        tot_loss, tot_correct = 0.0, 0
        for i in range(0, len(perm), ft.batch_size):
            idx = perm[i:i + ft.batch_size]
            logits = readout(train_f[idx])
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            fault_point("finetune.step.after_backward")
            opt.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_correct += int((logits.detach().argmax(1) == train_y[idx]).sum())
        stats = {"train_loss": tot_loss / len(perm), "train_accuracy": tot_correct / len(perm)}
        if val_f is not None:
            with torch.no_grad():
                stats["val_loss"], stats["val_accuracy"] = _evaluate_logits(readout(val_f), val_y)
        best.update(epoch, stats)
        on_epoch(epoch, stats, best.val_accuracy)
        if best.patience_spent:
            break
    best.restore()
    return readout, best.epoch, best.val_accuracy


def _fit_readout_lbfgs(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor | None, val_y: torch.Tensor | None,
                       n_classes: int, on_epoch: Callable[..., None], should_stop: Callable[[], bool]
                       ) -> tuple[Readout, float, float | None]:
    """Full-batch L-BFGS multinomial logistic regression; the L2 strength is picked on the validation split.

    Features are standardised for conditioning; the scaling is folded back into the returned readout.
    The path over ``LBFGS_L2_GRID`` stops after ``LBFGS_PATIENCE`` strengths in a row without a better
    validation result.
    """
    mu = train_f.mean(0)
    sd = train_f.std(0, unbiased=False).clamp_min(1e-6)
    xs = (train_f - mu) / sd
    vs = (val_f - mu) / sd if val_f is not None else None
    best: tuple[float, float, torch.Tensor, torch.Tensor, float] | None = None  # (acc, -loss, W, b, l2)
    # Strongest regularisation first, each fit warm-started from the previous one: the weakly
    # regularised problems (slow from zero on near-separable features) start close to their optimum.
    grid = sorted(LBFGS_L2_GRID, reverse=True) if val_f is not None else [1e-4]
    w = torch.zeros(n_classes, xs.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    threads = torch.get_num_threads()
    if xs.numel() <= LBFGS_SINGLE_THREAD_MAX:
        torch.set_num_threads(1)
    try:
        since = 0
        for i, l2 in enumerate(grid, start=1):
            if should_stop():
                raise CellStopped()
            opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=LBFGS_MAX_ITER, history_size=20, tolerance_grad=1e-6,
                                    tolerance_change=1e-9, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(xs @ w.T + b, train_y) + 0.5 * l2 * w.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            with torch.no_grad():
                tr_loss, tr_acc = _evaluate_logits(xs @ w.T + b, train_y)
                stats = {"train_loss": tr_loss, "train_accuracy": tr_acc, "l2": l2}
                key: tuple[float, float] = (0.0, 0.0)
                if vs is not None:
                    stats["val_loss"], stats["val_accuracy"] = _evaluate_logits(vs @ w.T + b, val_y)
                    key = (stats["val_accuracy"], -stats["val_loss"])
            if best is None or key > best[:2]:
                best, since = (key[0], key[1], w.detach().clone(), b.detach().clone(), l2), 0
            else:
                since += 1
            on_epoch(i, stats, best[0] if vs is not None else None)
            # Validation accuracy along the path is near-unimodal, and the weakest strengths left
            # (near-separable, slow fits) are the costliest: stop once it has turned down.
            if since >= LBFGS_PATIENCE:
                break
    finally:
        torch.set_num_threads(threads)
    assert best is not None
    readout = Readout(train_f.shape[1], n_classes)
    with torch.no_grad():
        readout.weight.copy_(best[2] / sd)
        readout.bias.copy_(best[3] - (best[2] / sd) @ mu)
    return readout, best[4], (best[0] if vs is not None else None)


class Classifier(nn.Module):
    """Backbone followed by the linear readout."""

    def __init__(self, backbone: nn.Module, readout: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.readout = readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.backbone(x))


def _trainable_stages(strategy_kind: str, layers: tuple[str, ...]) -> tuple[str, ...]:
    return BACKBONE_STAGES if strategy_kind == "full" else layers


def _set_train_mode(model: Classifier, stages: tuple[str, ...]) -> None:
    """Train mode for trained stages and the readout; frozen stages keep eval-mode BatchNorm statistics."""
    model.train()
    for name, module in model.backbone.named_children():
        if name not in stages:
            module.eval()


@torch.no_grad()
def _predict(model: Classifier, images: torch.Tensor, mean: list[float], std: list[float], device: torch.device,
             batch: int, amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, backbone features) of uint8 images, eval mode, on the CPU."""
    model.eval()
    logits, feats = [], []
    for i in range(0, images.shape[0], batch):
        x = eval_transform(images[i:i + batch].to(device), mean, std)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            f = model.backbone(x)
            out = model.readout(f.float())
        logits.append(out.float().cpu())
        feats.append(f.float().cpu())
    if not logits:
        return torch.zeros(0, model.readout.out_features), torch.zeros(0, model.readout.in_features)
    return torch.cat(logits), torch.cat(feats)


@torch.no_grad()
def stage_features(backbone: nn.Module, images: torch.Tensor, stages: tuple[str, ...], mean: list[float],
                   std: list[float], device: torch.device, batch: int,
                   amp_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Globally average-pooled outputs [N, C_stage] of the named backbone stages (eval mode, one pass per batch)."""
    outputs: dict[str, torch.Tensor] = {}
    feats: dict[str, list[torch.Tensor]] = {s: [] for s in stages}

    def hook(name: str) -> Callable[..., None]:
        def grab(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            outputs[name] = out
        return grab

    handles = [getattr(backbone, s).register_forward_hook(hook(s)) for s in stages]
    was_training = backbone.training
    backbone.eval()
    try:
        for i in range(0, images.shape[0], batch):
            x = eval_transform(images[i:i + batch].to(device), mean, std)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                backbone(x)
            for s in stages:
                feats[s].append(outputs[s].float().mean(dim=(2, 3)).cpu())
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    return {s: torch.cat(v) if v else torch.zeros(0) for s, v in feats.items()}


def layer_probe(backbone: nn.Module, stages: tuple[str, ...], splits: dict[str, tuple[torch.Tensor, torch.Tensor] | None],
                n_classes: int, mean: list[float], std: list[float], device: torch.device, batch: int,
                amp_dtype: torch.dtype | None, should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Test accuracy of an L-BFGS linear probe on each stage's pooled features (L2 strength chosen on val).

    ``splits`` maps "train", "val" (or None) and "test" to (uint8 images, labels).
    """
    feats = {name: (stage_features(backbone, pair[0], stages, mean, std, device, batch, amp_dtype), pair[1])
             for name, pair in splits.items() if pair is not None}
    out: dict[str, float] = {}
    for s in stages:
        tr, va = feats["train"], feats.get("val")
        readout, _l2, _val = _fit_readout_lbfgs(tr[0][s], tr[1], va[0][s] if va else None, va[1] if va else None,
                                                n_classes, _noop, should_stop)
        te_f, te_y = feats["test"][0][s], feats["test"][1]
        with torch.no_grad():
            out[s] = float((readout(te_f).argmax(1) == te_y).float().mean()) if len(te_y) else 0.0
    return out


# ---------------------------------------------------------------------------- the cell
def run_cell(cfg: Any, cell: Any, data: Any, *, device: torch.device, run_dir: str | os.PathLike,
             emit: Callable[..., Any] = _noop, progress: Callable[..., Any] = _noop,
             should_stop: Callable[[], bool] = lambda: False,
             resolve_run: Callable[[str], tuple[str, Path]] | None = None) -> dict[str, Any]:
    """Fine-tune and test one cell (a ``bttui.config.CellSpec``) on ``data`` (``DatasetArrays``).

    Returns the result item of docs/design.md. Writes the label subset to
    ``artifacts/splits/`` and the test features to ``artifacts/cells/<slug>/test_features.npz``.
    """
    from bttui.config.init_spec import parse_strategy
    from bttui.runs.atomic import write_json_atomic
    from bttui.train.data import label_subset, split_stats
    from bttui.train.pretrain import resolve_precision

    t0 = time.perf_counter()
    ft = cfg.finetune
    device = torch.device(device)
    run_dir = Path(run_dir)
    artifacts = run_dir / "artifacts"
    strategy = parse_strategy(cell.strategy)
    n_classes = len(data.class_names)
    if n_classes < 2:
        raise BttuiError(f"Dataset {cell.dataset}, task {data.task!r} has {n_classes} class"
                         f"{'' if n_classes == 1 else 'es'}; classification needs at least 2. Pick another task "
                         "with finetune.task.")
    amp_dtype = resolve_precision(cfg.pretrain.precision if cfg.pretrain is not None else "auto", device)

    # ---- labels: a stratified, nested subset of the train split; val and test untouched
    train_idx = np.asarray(label_subset(data.labels, data.splits["train"], cell.label_fraction, cell.seed,
                                        class_names=data.class_names))
    val_idx = np.asarray(data.splits.get("val", np.empty(0, dtype=np.int64)))
    test_idx = np.asarray(data.splits["test"])
    (artifacts / "splits").mkdir(parents=True, exist_ok=True)
    write_json_atomic(artifacts / "splits" / f"{cell.dataset}_{cell.label_fraction:g}_{cell.seed}.json",
                      {"dataset": cell.dataset, "task": data.task, "label_fraction": cell.label_fraction,
                       "seed": cell.seed, "n": int(len(train_idx)), "indices": [int(i) for i in train_idx]})
    if len(test_idx) == 0:
        raise BttuiError(f"Dataset {cell.dataset} has an empty test split; cannot evaluate cell {cell.id}.")

    # ---- backbone and normalisation
    init = resolve_init(cfg, cell.init, cell.seed, run_dir=run_dir, resolve_run=resolve_run)
    if init.norm is not None:
        mean, std = init.norm
    else:
        mean, std = split_stats(data)
        std = [s if s > 1e-6 else 1.0 for s in std]
    backbone = init.backbone.to(device)
    dim = feature_dim(backbone)
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))

    def take(idx: np.ndarray) -> torch.Tensor:
        # Fancy indexing copies, so a read-only memory-mapped cache never reaches torch.
        return torch.from_numpy(np.ascontiguousarray(np.asarray(data.images[idx])))

    x_tr, y_tr = take(train_idx), labels[train_idx]
    x_va, y_va = (take(val_idx), labels[val_idx]) if len(val_idx) else (None, None)
    x_te, y_te = take(test_idx), labels[test_idx]
    batch = int(ft.batch_size)

    def on_epoch(epoch: int, stats: dict[str, float], best: float | None) -> None:
        emit("cell_epoch", stage="finetune", cell=cell.id, epoch=epoch, **{k: round(v, 6) for k, v in stats.items()})
        fault_point("finetune.epoch")
        progress(stage="finetune", cell=cell.id, epoch=epoch, epochs=ft.epochs,
                 cell_val_accuracy=None if best is None or best < 0 else round(best, 6))

    probe = None
    extra: dict[str, Any] = {}
    if strategy.kind == "linear":
        # Frozen backbone, no augmentation: features are computed once (eval-mode BatchNorm).
        for p in backbone.parameters():
            p.requires_grad_(False)
        f_tr = extract_features(backbone, x_tr, mean, std, device, batch_size=batch, amp_dtype=amp_dtype)
        f_va = extract_features(backbone, x_va, mean, std, device, batch_size=batch, amp_dtype=amp_dtype) if x_va is not None else None
        probe = ft.probe
        if probe == "lbfgs":
            readout, l2, val_acc = _fit_readout_lbfgs(f_tr, y_tr, f_va, y_va, n_classes, on_epoch, should_stop)
            best_epoch, extra["probe_l2"] = None, l2
        else:
            readout, best_epoch, val_acc = _fit_readout_sgd(f_tr, y_tr, f_va, y_va, n_classes, ft, cell.seed, on_epoch, should_stop)
        model = Classifier(backbone, readout.to(device))
    else:
        stages = _trainable_stages(strategy.kind, strategy.layers)
        torch.manual_seed(cell.seed)
        model = Classifier(backbone, Readout(dim, n_classes)).to(device)
        for name, module in model.backbone.named_children():
            for p in module.parameters():
                p.requires_grad_(name in stages)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=ft.lr, weight_decay=ft.weight_decay)
        augment = LightAugment(cfg.data.image_size, mean, std)
        gen = torch.Generator().manual_seed(cell.seed)
        best = _BestEpoch(model, x_va is not None, ft.patience,
                          lambda: {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        for epoch in range(1, ft.epochs + 1):
            if should_stop():
                raise CellStopped()
            _set_train_mode(model, stages)
            perm = torch.randperm(len(y_tr), generator=gen)
            tot_loss, tot_correct, seen = 0.0, 0, 0
            for i in range(0, len(perm), batch):
                idx = perm[i:i + batch]
                if len(idx) < 2 and len(perm) > 1:
                    continue  # BatchNorm cannot train on a batch of one
                x = augment(x_tr[idx].to(device), gen)
                with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y_tr[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                fault_point("finetune.step.after_backward")
                opt.step()
                tot_loss += float(loss.detach()) * len(idx)
                tot_correct += int((logits.argmax(1).cpu() == y_tr[idx]).sum())
                seen += len(idx)
            stats = {"train_loss": tot_loss / max(1, seen), "train_accuracy": tot_correct / max(1, seen)}
            if x_va is not None:
                logits_va, _ = _predict(model, x_va, mean, std, device, batch, amp_dtype)
                stats["val_loss"], stats["val_accuracy"] = _evaluate_logits(logits_va, y_va)
            if not math.isfinite(stats["train_loss"]):
                raise BttuiError(f"cell {cell.id}: the training loss became NaN at epoch {epoch}; "
                                 f"try a lower finetune.lr (currently {ft.lr:g}).")
            best.update(epoch, stats)
            on_epoch(epoch, stats, best.val_accuracy)
            if best.patience_spent:
                break
        best.restore()
        best_epoch, val_acc = best.epoch, best.val_accuracy

    # ---- test, once, with the selected state
    logits_te, feats_te = _predict(model, x_te, mean, std, device, batch, amp_dtype)
    pred = logits_te.argmax(1).numpy()
    truth = y_te.numpy()
    metrics = classification_metrics(truth, pred, n_classes)
    cell_dir = artifacts / "cells" / cell.slug
    cell_dir.mkdir(parents=True, exist_ok=True)
    tmp = cell_dir / f".test_features.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, features=feats_te.numpy().astype(np.float32), labels=truth.astype(np.int64),
                        predictions=pred.astype(np.int64), indices=test_idx.astype(np.int64))
    os.replace(tmp, cell_dir / "test_features.npz")

    # ---- layer-wise probes of the backbone this cell tested (for `linear`: the pretrained one)
    if ft.probe_layers:
        stages = tuple(s for s in BACKBONE_STAGES if s in ft.probe_layers)
        extra["layer_probe"] = layer_probe(
            model.backbone, stages,
            {"train": (x_tr, y_tr), "val": (x_va, y_va) if x_va is not None else None, "test": (x_te, y_te)},
            n_classes, mean, std, device, batch, amp_dtype, should_stop)

    # ---- 2-D embeddings of the test features; a failure here costs the picture, not the cell
    if ft.embeddings:
        from bttui.train.embed import write_embeddings

        try:
            extra["embeddings"] = write_embeddings(cell_dir, feats_te.numpy(), truth, list(data.class_names),
                                                   ft.embeddings, seed=cell.seed)
        except Exception as exc:  # noqa: BLE001 - e.g. umap-learn missing or too few test images
            emit("log", level="warning", cell=cell.id, message=f"cell {cell.id}: embeddings failed: "
                                                             f"{type(exc).__name__}: {exc}")
            extra["embeddings_error"] = f"{type(exc).__name__}: {exc}"

    result: dict[str, Any] = {
        "cell": cell.id, "dataset": cell.dataset, "task": data.task, "init": init.init, "strategy": str(strategy),
        "label_fraction": cell.label_fraction, "n_train": int(len(train_idx)), "seed": cell.seed, "status": "completed",
        **metrics,
        "class_names": list(data.class_names), "lineage": init.lineage,
        "best_epoch": best_epoch, "val_accuracy": None if val_acc is None or val_acc < 0 else float(val_acc),
        "test_accuracy_ci": bootstrap_ci((pred == truth).astype(np.float64), seed=cell.seed),
        "probe": probe, "n_val": int(len(val_idx)), "n_test": int(len(test_idx)),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "backbone": init.name, "artifacts": f"artifacts/cells/{cell.slug}", "time_s": round(time.perf_counter() - t0, 3), "error": None, **extra,
    }
    return result
