"""bttui's pretraining step vs the authors' stack, same machine, model, batch and resolution, as a ratio.

The authors' stack (FACTS.md section 2): lightly's ``BarlowTwinsLoss`` (lambda 5e-3) and
``SimCLRTransform`` (per-item torchvision transforms on PIL images), a PyTorch ``DataLoader``
with worker processes and a PyTorch Lightning training loop, Adam lr 0.03 / weight decay 0.03.
bttui: uint8 cache, batched per-sample augmentation on the device, the trainer's step.
Both train the same network (torchvision ResNet-18 + bttui's 3-layer projector), so the ratio
measures the data path and the loop, not a model difference. Needs the ``bench`` extra
(``pip install "bttui[bench]"``: lightly).

    python bench/bench_authors.py                 # CPU: 64 px, batch 32; GPU: 224 px, bf16, batch 256
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BttuiPipeline,
    machine,
    peak_memory_mb,
    projector_widths,
    step_arguments,
    synthetic_uint8,
    sync,
    timed,
)


def authors_images_per_s(images, size: int, batch: int, steps: int, warmup: int, precision: str,
                         projector: list[int], workers: int, device: torch.device) -> float:
    import lightning.pytorch as pl
    from lightly.loss import BarlowTwinsLoss
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from bttui.train.model import Projector, build_backbone

    class PilImages(Dataset):
        """The authors' dataset: PIL images (grayscale replicated to RGB), transformed one item at a time."""

        def __init__(self, arr, transform) -> None:
            self.arr, self.transform = arr, transform

        def __len__(self) -> int:
            return len(self.arr)

        def __getitem__(self, i: int):
            a = self.arr[i]
            img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).convert("RGB")
            return self.transform(img)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.backbone = build_backbone("resnet18")
            self.projector = Projector(512, projector)
            self.criterion = BarlowTwinsLoss(lambda_param=5e-3)

        def training_step(self, batch, batch_idx):
            x1, x2 = batch
            z1 = self.projector(self.backbone(x1))
            z2 = self.projector(self.backbone(x2))
            return self.criterion(z1, z2)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.03, weight_decay=0.03)

    class Clock(pl.Callback):
        t0 = t1 = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warmup:
                sync(device)
                Clock.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == warmup + steps - 1:
                sync(device)
                Clock.t1 = time.perf_counter()

    transform = SimCLRTransform(input_size=size)
    loader = DataLoader(PilImages(images, transform), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    lp = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}[precision]
    trainer = pl.Trainer(max_steps=warmup + steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision=lp, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Clock()], num_sanity_val_steps=0)
    trainer.fit(Module(), loader)
    return steps * batch / (Clock.t1 - Clock.t0)


def main(argv: list[str] | None = None) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ap = step_arguments(__doc__.splitlines()[0], device)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (authors)")
    args = ap.parse_args(argv)
    projector = projector_widths(args.projector)
    n = args.batch * (args.steps + args.warmup + 1)
    images = synthetic_uint8(n, 1, args.size)
    bttui_step = BttuiPipeline(images, device, args.batch, "simclr", args.size, [0.5], [0.25],  # the authors' views
                               args.precision, projector)

    bttui_ips = args.batch / timed(bttui_step, args.steps, args.warmup, device)
    mem_bttui = peak_memory_mb(device)
    authors_ips = authors_images_per_s(images, args.size, args.batch, args.steps, args.warmup, args.precision,
                                       projector, args.workers, device)
    out = {"machine": machine(), "device": str(device), "size": args.size, "batch": args.batch, "steps": args.steps,
           "precision": args.precision, "authors_dataloader_workers": args.workers,
           "bttui_images_per_s": round(bttui_ips, 1), "authors_images_per_s": round(authors_ips, 1),
           "ratio_bttui_vs_authors": round(bttui_ips / authors_ips, 3),
           "bttui_peak": mem_bttui, "after_authors_peak": peak_memory_mb(device)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
