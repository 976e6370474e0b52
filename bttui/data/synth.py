"""Synthetic MIMeta-format datasets (numpy, h5py, pyyaml only) standing in for the organ views and CRC.

The real MIMeta data cannot be downloaded here, so tests, demos and the
quickstart use datasets generated in exactly the MIMeta on-disk layout (see
``bttui.data.reader``), readable by ``mimeta.MIMeta``.

Each class is a texture family with a class-specific structure (stripe
orientation and frequency, ring frequency, checker, blob count and size, ...)
drawn at a random position, scale, phase, intensity and noise level. That
structure is local and survives the Barlow Twins augmentations (random resized
crop keeps 8-100% of the area, flips keep horizontal/vertical/diagonal-pair
structure, colour jitter/grayscale/solarize change intensities but not
geometry, blur sigma <= 2 px keeps the low and middle frequencies). The three
organ views share the 11 classes and their texture families but render them
differently (body silhouette, frequency scale, a 90-degree turn for sagittal,
noise), so pretraining across views helps each one. CRC mimics H&E colours;
smooth muscle and stroma are deliberately similar (straight vs wavy stripes),
as they are the main confusion in the paper.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bttui.errors import BttuiError

ORGAN_CLASSES = [
    "heart", "left lung", "right lung", "liver", "spleen", "pancreas",
    "left kidney", "right kidney", "bladder", "left femoral head", "right femoral head",
]
CRC_CLASSES = [
    "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
    "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
]


@dataclass(frozen=True)
class SynthSpec:
    """What one synthetic dataset looks like on disk."""

    id: str
    name: str
    domain: str
    task: str
    classes: tuple[str, ...]
    channels: int
    view: str  # organ rendering variant, or "crc"


DATASETS: dict[str, SynthSpec] = {
    "organs_axial": SynthSpec("organs_axial", "Synthetic OrganMNIST Axial", "Abdominal CT (synthetic)",
                              "organ label", tuple(ORGAN_CLASSES), 1, "axial"),
    "organs_coronal": SynthSpec("organs_coronal", "Synthetic OrganMNIST Coronal", "Abdominal CT (synthetic)",
                                "organ label", tuple(ORGAN_CLASSES), 1, "coronal"),
    "organs_sagittal": SynthSpec("organs_sagittal", "Synthetic OrganMNIST Sagittal", "Abdominal CT (synthetic)",
                                 "organ label", tuple(ORGAN_CLASSES), 1, "sagittal"),
    "crc": SynthSpec("crc", "Synthetic Colorectal Cancer Histology", "Histology (synthetic)",
                     "tissue class", tuple(CRC_CLASSES), 3, "crc"),
}

# (train, val, test) fractions; the two policies deliberately partition differently.
SPLIT_FRACTIONS = (0.60, 0.15, 0.25)
ORIGINAL_SPLIT_FRACTIONS = (0.70, 0.10, 0.20)
HDF5_CHUNK_IMAGES = 64

# Organ texture families (class index -> pattern spec); shared by the three views.
_ORGAN_PATTERNS: list[tuple] = [
    ("rings", 3.0),            # heart
    ("stripes", 0.0, 3.0),     # left lung: horizontal-normal stripes, low frequency
    ("stripes", 90.0, 3.0),    # right lung: the perpendicular orientation
    ("checker", 4.0),          # liver
    ("blobs", (2, 4), (0.14, 0.22)),     # spleen: few large blobs
    ("blobs", (14, 22), (0.035, 0.06)),  # pancreas: many small blobs
    ("stripes", 0.0, 8.0),     # left kidney: high frequency
    ("stripes", 90.0, 8.0),    # right kidney
    ("disk",),                 # bladder: one large smooth disk
    ("crosshatch", 5.0),       # left femoral head
    ("rings", 7.0),            # right femoral head: dense rings
]
# view -> (frequency scale, angle offset in degrees, body half-axes (x, y), superellipse power, noise sigma)
_VIEWS = {
    "axial": (1.0, 0.0, (0.92, 0.72), 2.0, 0.06),
    "coronal": (1.25, 0.0, (0.68, 0.94), 2.0, 0.08),
    "sagittal": (0.85, 90.0, (0.82, 0.82), 4.0, 0.07),
}
# CRC: class -> (pattern spec, background RGB, foreground RGB, contrast)
_CRC_PATTERNS: list[tuple] = [
    (("cells", (5, 8), (0.20, 0.30), 0.025), (0.97, 0.95, 0.96), (0.85, 0.55, 0.72)),   # adipose
    (("flat",), (0.93, 0.93, 0.94), (0.80, 0.80, 0.84)),                                 # background
    (("speckle", (30, 50), (0.01, 0.04)), (0.88, 0.70, 0.80), (0.45, 0.25, 0.45)),     # debris
    (("blobs", (45, 70), (0.028, 0.045)), (0.90, 0.70, 0.82), (0.25, 0.12, 0.45)),     # lymphocytes
    (("wavy", 2.0, 1.2), (0.82, 0.80, 0.90), (0.62, 0.60, 0.82)),                       # mucus
    (("stripes", None, 6.0), (0.95, 0.70, 0.80), (0.78, 0.30, 0.50)),                   # smooth muscle
    (("cells", (3, 5), (0.14, 0.22), 0.06), (0.96, 0.88, 0.92), (0.40, 0.22, 0.55)),   # normal mucosa
    (("wavy", 5.0, 0.6), (0.96, 0.78, 0.86), (0.80, 0.40, 0.58)),                       # stroma
    (("blobs", (10, 16), (0.06, 0.10)), (0.85, 0.62, 0.78), (0.32, 0.15, 0.42)),       # tumour epithelium
]


def synthesize(
    root: str | os.PathLike,
    datasets: list[str] | None = None,
    per_class: int = 40,
    image_size: int = 64,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> list[str]:
    """Write synthetic MIMeta datasets under ``root``; returns the ids written.

    ``datasets`` defaults to all of ``DATASETS``. Each dataset is built in
    ``<root>/.tmp-<id>-<random>`` and renamed into place, so a crash never
    leaves a half-written dataset. An existing ``<root>/<id>`` is refused
    unless ``overwrite`` (so real MIMeta data is never clobbered by a demo).
    The output depends only on (id, per_class, image_size, seed).
    """
    ids = list(DATASETS) if datasets is None else list(datasets)
    for ds_id in ids:
        if ds_id not in DATASETS:
            import difflib

            close = difflib.get_close_matches(str(ds_id), list(DATASETS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BttuiError(f"Cannot synthesize unknown dataset '{ds_id}'{hint}; available: {', '.join(DATASETS)}.")
    if not isinstance(per_class, int) or per_class < 4:
        raise BttuiError(f"per_class must be an integer >= 4 (one image per class in each split needs it); got {per_class!r}.")
    if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise BttuiError(f"image_size must be an integer between 8 and 1024; got {image_size!r}.")
    root_p = Path(root)
    root_p.mkdir(parents=True, exist_ok=True)
    for ds_id in ids:
        final = root_p / ds_id
        if final.exists() and not overwrite:
            raise BttuiError(
                f"'{final}' already exists; refusing to overwrite a dataset. Remove it, choose another root, "
                f"or pass overwrite=True (CLI: --overwrite)."
            )
    written = []
    for ds_id in ids:
        _write_dataset(root_p, DATASETS[ds_id], per_class, image_size, seed, overwrite)
        written.append(ds_id)
    return written


# ---------------------------------------------------------------------------------------------
# writing


def _write_dataset(root: Path, spec: SynthSpec, per_class: int, size: int, seed: int, overwrite: bool) -> None:
    import h5py
    import yaml

    # Stable per-dataset stream: generating a subset gives the same data as generating all.
    rng = np.random.default_rng([seed, zlib.crc32(spec.id.encode())])
    images, labels = _render(spec, per_class, size, rng)
    n = len(labels)
    splits = _stratified_partition(labels, SPLIT_FRACTIONS, rng)
    original = _stratified_partition(labels, ORIGINAL_SPLIT_FRACTIONS, rng)

    tmp = root / f".tmp-{spec.id}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        with h5py.File(tmp / "images.hdf5", "w") as f:
            chunk = (min(HDF5_CHUNK_IMAGES, n),) + images.shape[1:]
            f.create_dataset("images", data=images, dtype=np.uint8, chunks=chunk)
        (tmp / "task_labels").mkdir()
        np.save(tmp / "task_labels" / f"{spec.task}.npy", labels.astype(np.int64))
        for sub, parts in (("splits", splits), ("original_splits", original)):
            (tmp / sub).mkdir()
            for name, idx in parts.items():
                text = "".join(f"images/{i:06d}.tiff\n" for i in idx)
                (tmp / sub / f"{name}.txt").write_text(text, encoding="utf-8")
        info = {
            "id": spec.id,
            "name": spec.name,
            "description": "Synthetic stand-in generated by bttui (bttui.data.synth); not real medical data.",
            "domain": spec.domain,
            "synthetic": True,
            "synth_seed": seed,
            "input_size": [spec.channels, size, size],
            "num_samples": n,
            "tasks": [{
                "task_name": spec.task,
                "task_target": "MULTICLASS_CLASSIFICATION",
                "num_classes": len(spec.classes),
                "labels": {i: c for i, c in enumerate(spec.classes)},
            }],
            "splits_num_samples": {k: int(len(v)) for k, v in splits.items()},
            "original_splits_num_samples": {k: int(len(v)) for k, v in original.items()},
        }
        # info.yaml last: a directory without it is not a dataset to either reader.
        (tmp / "info.yaml").write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True), encoding="utf-8")
        final = root / spec.id
        if final.exists():
            if not overwrite:
                raise BttuiError(f"'{final}' appeared while synthesizing; refusing to overwrite it.")
            old = root / f".old-{spec.id}-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _stratified_partition(labels: np.ndarray, fractions: tuple[float, float, float],
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per class: shuffle, then cut into train/val/test by ``fractions`` with at least one image in each."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        m = len(members)
        n_val = max(1, int(round(fractions[1] * m)))
        n_test = max(1, int(round(fractions[2] * m)))
        n_train = m - n_val - n_test
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# rendering


def _render(spec: SynthSpec, per_class: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    imgs, labs = [], []
    for c in range(len(spec.classes)):
        if spec.view == "crc":
            imgs.append(_render_crc(c, per_class, size, rng))
        else:
            imgs.append(_render_organ(c, spec.view, per_class, size, rng))
        labs.append(np.full(per_class, c, dtype=np.int64))
    images = np.concatenate(imgs)
    labels = np.concatenate(labs)
    order = rng.permutation(len(labels))  # interleave classes: image index says nothing about the class
    return images[order], labels[order]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    lin = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0)
    y, x = np.meshgrid(lin, lin, indexing="ij")
    return x[None], y[None]  # (1, S, S) in [-1, 1]


def _col(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _frame(n: int, size: int, rng: np.random.Generator, angle: float | None, jitter: float,
           shift: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Per-image rotated, shifted coordinates (u, v); ``angle=None`` draws any orientation."""
    x, y = _grid(size)
    if angle is None:
        theta = rng.uniform(0, math.pi, n)
    else:
        theta = np.deg2rad(angle + rng.uniform(-jitter, jitter, n))
    cx, cy = rng.uniform(-shift, shift, (2, n))
    ct, st = _col(np.cos(theta)), _col(np.sin(theta))
    xs, ys = x - _col(cx), y - _col(cy)
    return xs * ct + ys * st, -xs * st + ys * ct


def _pattern(spec: tuple, n: int, size: int, rng: np.random.Generator, fscale: float = 1.0,
             angle_offset: float = 0.0) -> np.ndarray:
    """Float32 (n, S, S) texture in [0, 1] for one texture family, with per-image random nuisances."""
    kind = spec[0]
    phase = _col(rng.uniform(0, 2 * math.pi, n))
    freq_jitter = _col(rng.uniform(0.88, 1.12, n)) * fscale
    x, y = _grid(size)
    if kind == "stripes":
        angle = None if spec[1] is None else spec[1] + angle_offset
        u, _ = _frame(n, size, rng, angle, 8.0)
        return 0.5 + 0.5 * np.sin(math.pi * spec[2] * freq_jitter * u + phase)
    if kind == "wavy":
        u, v = _frame(n, size, rng, None, 0.0)
        amp = _col(rng.uniform(0.5, 1.0, n)) * spec[2]
        return 0.5 + 0.5 * np.sin(math.pi * spec[1] * freq_jitter * u + amp * np.sin(math.pi * 1.5 * v) + phase)
    if kind == "rings":
        u, v = _frame(n, size, rng, 0.0, 180.0, shift=0.35)
        r = np.sqrt(u * u + v * v)
        return 0.5 + 0.5 * np.sin(math.pi * spec[1] * freq_jitter * r + phase)
    if kind == "checker":
        u, v = _frame(n, size, rng, angle_offset, 10.0)
        f = math.pi * spec[1] * freq_jitter
        return 0.5 + 0.5 * np.tanh(4.0 * np.sin(f * u + phase) * np.sin(f * v))
    if kind == "crosshatch":
        u, v = _frame(n, size, rng, 45.0 + angle_offset, 8.0)
        f = math.pi * spec[1] * freq_jitter
        return np.maximum(np.sin(f * u + phase), np.sin(f * v)) * 0.5 + 0.5
    if kind == "disk":
        u, v = _frame(n, size, rng, 0.0, 0.0, shift=0.25)
        radius = _col(rng.uniform(0.38, 0.6, n))
        r = np.sqrt(u * u + v * v)
        return 1.0 / (1.0 + np.exp((r - radius) / 0.04))
    if kind in ("blobs", "cells", "speckle"):
        lo, hi = spec[1]
        counts = rng.integers(lo, hi + 1, n)
        kmax = int(counts.max())
        rmin, rmax = spec[2]
        # Radii shrink with the view's frequency scale so blob size stays a class cue.
        radii = rng.uniform(rmin, rmax, (kmax, n)) / fscale
        centres = rng.uniform(-0.95, 0.95, (kmax, 2, n))
        weights = rng.uniform(0.55, 1.0, (kmax, n)) if kind == "speckle" else np.ones((kmax, n))
        out = np.zeros((n, size, size), dtype=np.float32)
        for k in range(kmax):
            active = _col((k < counts).astype(np.float32))
            d2 = (x - _col(centres[k, 0])) ** 2 + (y - _col(centres[k, 1])) ** 2
            r = _col(radii[k])
            if kind == "cells":
                width = spec[3]
                val = np.exp(-((np.sqrt(d2) - r) ** 2) / (2 * width * width))
            else:
                val = np.exp(-d2 / (2 * r * r))
            np.maximum(out, val * active * _col(weights[k]), out=out)
        return out
    if kind == "flat":
        # Smooth low-frequency shading only: "nothing here" is the class cue.
        a, b = rng.uniform(-0.3, 0.3, (2, n))
        return np.clip(0.5 + _col(a) * x + _col(b) * y, 0.0, 1.0) * np.ones((n, size, size), np.float32)
    raise ValueError(f"unknown texture family {kind!r}")


def _render_organ(c: int, view: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    fscale, angle_offset, (ax, ay), power, noise = _VIEWS[view]
    tex = _pattern(_ORGAN_PATTERNS[c], n, size, rng, fscale, angle_offset)
    x, y = _grid(size)
    # Body silhouette: view-specific, identical in distribution for every class (no label cue).
    sx = _col(ax * rng.uniform(0.9, 1.05, n))
    sy = _col(ay * rng.uniform(0.9, 1.05, n))
    body = (np.abs(x / sx) ** power + np.abs(y / sy) ** power) < 1.0
    tissue = _col(rng.uniform(0.25, 0.45, n))
    contrast = _col(rng.uniform(0.3, 0.55, n))
    air = _col(rng.uniform(0.0, 0.12, n))
    img = np.where(body, tissue + contrast * tex, air)
    gx, gy = rng.uniform(-0.08, 0.08, (2, n))
    img = img + _col(gx) * x + _col(gy) * y + rng.normal(0.0, noise, img.shape).astype(np.float32)
    return _to_uint8(img)


def _render_crc(c: int, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    spec, bg, fg = _CRC_PATTERNS[c]
    tex = _pattern(spec, n, size, rng)
    bg_c = np.asarray(bg, np.float32)[None, :] + rng.uniform(-0.05, 0.05, (n, 3)).astype(np.float32)
    fg_c = np.asarray(fg, np.float32)[None, :] + rng.uniform(-0.06, 0.06, (n, 3)).astype(np.float32)
    t = tex[..., None]  # (n, S, S, 1)
    img = bg_c[:, None, None, :] * (1.0 - t) + fg_c[:, None, None, :] * t
    img = img * _col(rng.uniform(0.85, 1.05, n))[..., None]  # stain intensity
    img = img + rng.normal(0.0, 0.035, img.shape).astype(np.float32)
    return _to_uint8(img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
