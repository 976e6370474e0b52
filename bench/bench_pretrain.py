"""End-to-end pretraining throughput vs the model-only bound, in one process with one batch size.

End to end: uint8 cache -> batch gather (bttui.train.pretrain.Batcher) -> per-sample two-view
augmentation on the device (bttui.train.augment) -> forward/backward/optimiser step.
Model-only bound: the same step on two pre-staged float views already on the device.
Prints images/s (one image = one pair of views), the ratio and peak memory.

    python bench/bench_pretrain.py                 # CPU: 64 px, batch 32; GPU: 224 px, bf16, batch 256
    python bench/bench_pretrain.py --size 32 --batch 16 --steps 3
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BttuiPipeline,
    defaults,
    machine,
    peak_memory_mb,
    projector_widths,
    step_arguments,
    synthetic_uint8,
    timed,
)


def main(argv: list[str] | None = None) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ap = step_arguments(__doc__.splitlines()[0], device)
    ap.add_argument("--channels", type=int, default=1, help="1 (CT organs) or 3 (histology)")
    ap.add_argument("--images", type=int, default=defaults(device)["images"], help="images in the uint8 cache")
    args = ap.parse_args(argv)

    projector = projector_widths(args.projector)
    images = synthetic_uint8(max(args.images, args.batch), args.channels, args.size)
    mean, std = [0.5] * args.channels, [0.25] * args.channels
    pipeline = BttuiPipeline(images, device, args.batch, "barlow_twins", args.size, mean, std, args.precision,
                             projector)
    step, cache = pipeline.step, pipeline.cache

    with torch.no_grad():
        s1, s2 = pipeline.views(torch.arange(args.batch))
    staged1, staged2 = s1.clone(), s2.clone()

    def model_only(i: int) -> None:
        step(staged1, staged2)

    def augment_only(i: int) -> None:
        pipeline.views()

    t_model = timed(model_only, args.steps, args.warmup, device)
    t_e2e = timed(pipeline, args.steps, args.warmup, device)
    t_aug = timed(augment_only, args.steps, args.warmup, device)
    out = {
        "machine": machine(), "device": str(device), "size": args.size, "batch": args.batch, "steps": args.steps,
        "precision": step.plan.precision, "channels": args.channels, "projector": projector,
        "cache": f"{cache.device}{' pinned' if cache.device.type == 'cpu' and cache.is_pinned() else ''}",
        "end_to_end_images_per_s": round(args.batch / t_e2e, 1),
        "model_only_images_per_s": round(args.batch / t_model, 1),
        "augment_only_images_per_s": round(args.batch / t_aug, 1),
        "ratio_end_to_end_vs_model_only": round(t_model / t_e2e, 3),
        **peak_memory_mb(device),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
