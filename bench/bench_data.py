"""Data pipeline benchmark: bttui's bulk HDF5 -> uint8 cache -> uint8 tensor batches vs mimeta.MIMeta item by item.

Generates (or reuses) a MIMeta-format dataset with ``bttui.data.synth`` (default:
the synthetic CRC set, 9 classes x 334 = 3,006 RGB images at 224 px, like CRC),
then measures one epoch of shuffled batches of 256 through each path:

  bttui-cold   load_pixels() builds the memory-mapped uint8 cache from images.hdf5
               (chunked bulk reads), then yields uint8 torch batches from it
  bttui-warm   the cache exists: np.load(mmap) + shuffled row gathers -> uint8 torch batches
  mimeta-w0    mimeta.MIMeta(...) with its default transform (Resize, ToTensor,
               Normalize) through torch.utils.data.DataLoader, num_workers=0
  mimeta-w2    the same with num_workers=2

Each mode runs in its own fresh Python process (so its peak RSS, from
resource.getrusage, is its own) on the same machine, the same file (in the
page cache for every mode: it was just written) and the same images; 200
random images are then compared pixel for pixel between the two paths. Run:

    OMP_NUM_THREADS=2 python bench/bench_data.py            # full size, ~3 min on 2 cores
    OMP_NUM_THREADS=2 python bench/bench_data.py --quick    # 32 px smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = "crc"
MODES = ("bttui-cold", "bttui-warm", "mimeta-w0", "mimeta-w0-t1", "mimeta-w2")
# Epochs per mode: the first includes opening (and for bttui-cold, building the cache).
EPOCHS = {"bttui-cold": 1, "bttui-warm": 3, "mimeta-w0": 1, "mimeta-w0-t1": 2, "mimeta-w2": 2}


def _rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def run_mode(mode: str, root: Path, cache: Path, batch: int, size: int) -> dict:
    """One epoch through one path, in this process; returns the measurements."""
    import numpy as np
    import torch

    import mimeta  # noqa: F401 - imported by every mode so the start RSS counts the same libraries
    import torch.utils.data  # noqa: F401

    import bttui.train.data  # noqa: F401

    # torch's default on this box is one intra-op thread per core; mimeta-w0-t1 pins one thread, which is
    # far faster for mimeta's tiny per-item tensor ops (DataLoader workers do the same internally).
    torch.set_num_threads(1 if mode.endswith("-t1") else int(os.environ.get("OMP_NUM_THREADS", "2")))
    rss0 = _rss_mb()
    rng = np.random.default_rng(0)
    n = 0
    epoch_s = []
    t0 = time.perf_counter()
    if mode.startswith("bttui"):
        from bttui.train.data import load_pixels

        if mode == "bttui-cold":
            shutil.rmtree(cache, ignore_errors=True)
        images, _ = load_pixels(root, DATASET, image_size=size, cache_dir=cache)
        t_open = time.perf_counter() - t0
        for _ in range(EPOCHS[mode]):
            order = rng.permutation(len(images))
            for start in range(0, len(order), batch):
                idx = np.sort(order[start:start + batch])  # sorted gathers read the memmap forwards
                x = torch.from_numpy(images[idx])  # uint8 [b,C,S,S]; the trainer moves this to the GPU as is
                n += x.shape[0]
            epoch_s.append(time.perf_counter() - t0 - sum(epoch_s))
    else:
        import mimeta
        from torch.utils.data import DataLoader

        workers = int(mode.split("-w")[1][0])
        ds = mimeta.MIMeta(str(root), DATASET, "tissue class")  # default transform, use_hdf5=True
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        t_open = time.perf_counter() - t0
        for _ in range(EPOCHS[mode]):
            it = iter(loader)
            for x, _ in it:
                n += x.shape[0]
            del it  # joins the workers, so RUSAGE_CHILDREN below includes their peak RSS
            epoch_s.append(time.perf_counter() - t0 - sum(epoch_s))
    per_epoch = n // len(epoch_s)
    return {
        "mode": mode, "images": per_epoch, "epochs": len(epoch_s), "epoch_seconds": epoch_s,
        "open_seconds": t_open, "first_epoch_images_per_s": per_epoch / epoch_s[0],
        "images_per_s": per_epoch / min(epoch_s[1:] or epoch_s), "rss_start_mb": rss0, "peak_rss_mb": _peak_mb(),
        "peak_rss_children_mb": _peak_mb(resource.RUSAGE_CHILDREN),
    }


def verify(root: Path, cache: Path, size: int, sample: int = 200) -> int:
    """Images (a random sample) on which bttui's cache and mimeta's default item path disagree; 0 = same pixels."""
    import mimeta
    import numpy as np
    import torch

    from bttui.train.data import load_pixels

    images, _ = load_pixels(root, DATASET, image_size=size, cache_dir=cache)
    ds = mimeta.MIMeta(str(root), DATASET, "tissue class")
    bad = 0
    for i in np.random.default_rng(1).choice(len(ds), size=min(sample, len(ds)), replace=False):
        x, _ = ds[int(i)]
        # Undo Normalize(0.5, 0.5) and ToTensor's /255 to get mimeta's uint8 pixels back.
        u8 = torch.round((x * 0.5 + 0.5) * 255).to(torch.uint8).numpy()
        bad += int(not np.array_equal(u8, images[int(i)]))
    return bad


def ensure_data(root: Path, per_class: int, size: int) -> None:
    from bttui.data import reader, synth

    if (root / DATASET / "info.yaml").is_file():
        n, h, _, _ = reader.image_shape(root, DATASET)
        if n == per_class * len(synth.DATASETS[DATASET].classes) and h == size:
            return
        shutil.rmtree(root / DATASET)
    t0 = time.perf_counter()
    synth.synthesize(root, datasets=[DATASET], per_class=per_class, image_size=size, seed=0)
    print(f"generated {root / DATASET} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the label only
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="MIMeta root to create/reuse (default: a temp dir)")
    ap.add_argument("--per-class", type=int, default=334, help="images per class (9 classes)")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 per class at 32 px")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # child process
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.per_class, args.size = 20, 32

    if args.mode:  # child: one measurement, one JSON line
        print(json.dumps(run_mode(args.mode, args.data, args.cache, args.batch, args.size)))
        return 0

    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="bttui-bench-")
        args.data = Path(tmp) / "data"
    try:
        ensure_data(args.data, args.per_class, args.size)
        cache = args.data.parent / f"{args.data.name}-cache"
        results = []
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--data", str(args.data), "--cache", str(cache),
                   "--batch", str(args.batch), "--size", str(args.size)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"mode {mode} failed")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{mode:12s} {r['images']:5d} images x {r['epochs']} epochs  first epoch "
                  f"{r['first_epoch_images_per_s']:7.0f} img/s  steady {r['images_per_s']:7.0f} img/s  "
                  f"peak RSS {r['peak_rss_mb']:5.0f} MiB (start {r['rss_start_mb']:.0f}, "
                  f"largest worker {r['peak_rss_children_mb']:.0f})", flush=True)
        by = {r["mode"]: r for r in results}
        mismatches = verify(args.data, cache, args.size)
        same = mismatches == 0
        print(f"same pixels (200 random images, bttui cache vs mimeta items): {same}")
        for fast, key in (("bttui-warm", "images_per_s"), ("bttui-warm", "first_epoch_images_per_s"),
                          ("bttui-cold", "first_epoch_images_per_s")):
            for slow in ("mimeta-w0", "mimeta-w0-t1", "mimeta-w2"):
                ratio = by[fast][key] / by[slow]["images_per_s"]
                label = "steady" if key == "images_per_s" else "first epoch"
                print(f"{fast} ({label}) / {slow} (steady): {ratio:.1f}x")
        n_img = results[0]["images"]
        print(f"machine: {machine()}; {n_img} images of {args.size} px RGB, batch {args.batch}")
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "size": args.size, "batch": args.batch,
                                             "same_pixels": same, "results": results}, indent=2))
        return 0 if same else 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
