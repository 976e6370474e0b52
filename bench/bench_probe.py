"""Linear probe benchmark: full-batch L-BFGS logistic regression vs the epoch-trained (Adam, 100 epochs) readout.

Both probes see the same frozen features: synthetic CRC-sized ResNet-like features
(non-negative, low-rank class structure plus noise; 9 classes, 512-d) split
train/val/test. Reports test accuracy of each, the difference in points, and the
wall-time ratio. Target (issue 5): within 0.5 points at >= 10x less time.

    OMP_NUM_THREADS=2 python bench/bench_probe.py [--n 5000] [--dim 512] [--classes 9] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from bttui.config.schema import FinetuneConfig
from bttui.train.finetune import _fit_readout_lbfgs, _fit_readout_sgd


def synthetic_features(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-ReLU average-pooled-like features: class means in a 32-d subspace, correlated noise, ReLU."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(32, dim)) / np.sqrt(32)
    centers = rng.normal(size=(classes, 32)) * 0.45
    y = rng.integers(0, classes, n)
    latent = centers[y] + rng.normal(size=(n, 32))
    x = latent @ basis + rng.normal(size=(n, dim)) * 0.8
    x = np.maximum(x + 0.3, 0.0)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def accuracy(readout: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((readout(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64,
                        help="image side for timing one ResNet-18 feature pass (the cost an epoch-trained probe "
                             "that runs the frozen backbone every epoch pays per epoch); 0 = skip")
    args = parser.parse_args()

    rows = []
    for seed in range(args.repeats):
        x, y = synthetic_features(args.n, args.dim, args.classes, seed)
        n_tr, n_va = int(args.n * 0.7), int(args.n * 0.1)
        tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, args.n)
        ft = FinetuneConfig(epochs=args.epochs, batch_size=256, lr=1e-3, weight_decay=0.0, patience=0)
        noop = lambda *a: None  # noqa: E731
        t0 = time.perf_counter()
        sgd, best_epoch, _ = _fit_readout_sgd(x[tr], y[tr], x[va], y[va], args.classes, ft, seed, noop, lambda: False)
        t_sgd = time.perf_counter() - t0
        t0 = time.perf_counter()
        lbfgs, l2, _ = _fit_readout_lbfgs(x[tr], y[tr], x[va], y[va], args.classes, noop, lambda: False)
        t_lbfgs = time.perf_counter() - t0
        row = {"seed": seed, "sgd_acc": accuracy(sgd, x[te], y[te]), "lbfgs_acc": accuracy(lbfgs, x[te], y[te]),
               "sgd_s": t_sgd, "lbfgs_s": t_lbfgs, "sgd_best_epoch": best_epoch, "lbfgs_l2": l2}
        row["diff_points"] = (row["lbfgs_acc"] - row["sgd_acc"]) * 100
        row["speedup"] = t_sgd / t_lbfgs
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    print(f"\n{args.n} x {args.dim} features, {args.classes} classes, {args.repeats} seeds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"SGD/Adam probe ({args.epochs} epochs, batch 256, best epoch on val): acc {mean('sgd_acc') * 100:.2f}%  "
          f"time {mean('sgd_s'):.2f} s")
    print(f"L-BFGS probe (L2 from {len(__import__('bttui.train.finetune', fromlist=['x']).LBFGS_L2_GRID)} values on val): "
          f"acc {mean('lbfgs_acc') * 100:.2f}%  time {mean('lbfgs_s'):.2f} s")
    if args.image_size:
        from bttui.train.model import build_backbone, extract_features

        n_img = 512
        images = torch.randint(0, 256, (n_img, 3, args.image_size, args.image_size), dtype=torch.uint8)
        backbone = build_backbone()
        t0 = time.perf_counter()
        extract_features(backbone, images, [0.5] * 3, [0.25] * 3, torch.device("cpu"), batch_size=128)
        per_pass = (time.perf_counter() - t0) * int(args.n * 0.7) / n_img  # one pass over the training split
        paper_style = args.epochs * per_pass + mean("sgd_s")
        ours = per_pass + mean("lbfgs_s")
        print(f"with the backbone in the loop ({args.image_size} px, ResNet-18, CPU; one pass over "
              f"{int(args.n * 0.7)} train images ~ {per_pass:.1f} s): epoch-trained probe over images "
              f"~ {paper_style:.0f} s vs extract once + L-BFGS ~ {ours:.1f} s: {paper_style / ours:.0f}x")
    print(f"difference {mean('diff_points'):+.2f} points (worst {min(r['diff_points'] for r in rows):+.2f}); "
          f"speed-up {mean('speedup'):.1f}x")


if __name__ == "__main__":
    main()
