"""Named recipes (`preset = "paper"`): dotted key -> value, applied above the schema defaults and below the file's keys."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # What the paper's text states: ResNet-18, 3x2048 projector, Adam 3e-2, batch 256, 1000 epochs,
    # MIMeta's predefined splits with colour kept; the schedule and decay follow the reference recipe.
    "paper": {
        "data.split_policy": "mimeta",
        "data.grayscale": False,
        "pretrain.backbone": "resnet18",
        "pretrain.optimizer": "adam",
        "pretrain.lr": 0.03,
        "pretrain.batch_size": 256,
        "pretrain.projector": [2048, 2048, 2048],
        "pretrain.epochs": 1000,
        "pretrain.lambd": 0.0051,
        "pretrain.augment": "barlow_twins",
        "pretrain.weight_decay": 1e-6,
        "pretrain.schedule": "cosine",
        "pretrain.warmup_epochs": 10.0,
    },
    # What the authors' public code did (FACTS.md section 2): lightly's lambda 5e-3, SimCLR-style
    # symmetric views, grayscale everywhere, Adam with decay 0.03 and no schedule, batch 64,
    # random 80/10/10 split with seed 42.
    "authors-code": {
        "data.grayscale": True,
        "data.split_policy": "random",
        "pretrain.lambd": 0.005,
        "pretrain.augment": "simclr",
        "pretrain.optimizer": "adam",
        "pretrain.lr": 0.03,
        "pretrain.weight_decay": 0.03,
        "pretrain.batch_size": 64,
        "pretrain.schedule": "constant",
    },
    # The reference Barlow Twins recipe (Zbontar et al. 2021, FACTS.md section 3): LARS with
    # per-256-image rates, 10 warmup epochs then cosine to 0.001x, ResNet-50 and 3x8192 projector.
    "reference": {
        "pretrain.backbone": "resnet50",
        "pretrain.projector": [8192, 8192, 8192],
        "pretrain.lambd": 0.0051,
        "pretrain.optimizer": "lars",
        "pretrain.lr": 0.2,
        "pretrain.bias_lr": 0.0048,
        "pretrain.weight_decay": 1e-6,
        "pretrain.momentum": 0.9,
        "pretrain.schedule": "cosine",
        "pretrain.warmup_epochs": 10.0,
        "pretrain.min_lr_ratio": 0.001,
        "pretrain.batch_size": 2048,
        "pretrain.augment": "barlow_twins",
    },
}

PRESET_DOCS: dict[str, str] = {
    "paper": "the paper's stated settings (Adam 0.03, batch 256, 3x2048 projector, 1000 epochs, MIMeta splits)",
    "authors-code": "what the authors' public code ran (lambda 5e-3, SimCLR views, grayscale, random split, batch 64)",
    "reference": "the reference Barlow Twins recipe (LARS, warmup + cosine, ResNet-50, 3x8192 projector, batch 2048)",
}
