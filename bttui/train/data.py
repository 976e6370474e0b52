"""Trainer-side MIMeta loading: labels and splits from ``mimeta.MIMeta``, pixels as uint8 [N,C,S,S] arrays.

Labels, class names and predefined split indices come from the reference
reader (``mimeta.MIMeta``); pixels are read from ``images.hdf5`` in bulk
chunks (mimeta's per-item PIL path would take minutes for CRC's 107k images)
and resized as a batch with antialiased bilinear interpolation. The resized
uint8 array can be cached as a memory-mapped ``.npy`` so later runs start in
seconds; per-split normalisation statistics are cached beside it as JSON.
Before anything is read, ``bttui.data.reader.require_valid`` lists every
problem of the dataset, task and split policy a run needs in one error.

Channels. A dataset keeps the channel count it is stored with (info.yaml
``input_size``, as mimeta does): grayscale organ slices load as 1 channel,
RGB histology (CRC) as 3. ``data.grayscale`` turns RGB into one luma channel
(the authors' code did this for every dataset). When several datasets are
concatenated for cross-domain pretraining (``concat_for_pretraining``), every
1-channel image is replicated to 3 identical channels and RGB stays RGB, so a
mixed organ + CRC pretraining set is one [M,3,S,S] array and the backbone
always sees three channels; the augmentations and ``normalize`` do the same
replication for single-dataset batches.

Also: nested stratified label subsets and pretraining concatenation.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bttui.data import reader
from bttui.errors import BttuiError
from bttui.faults import fault_point

# Bump when the pixel pipeline changes so stale caches are never reused.
CACHE_VERSION = 1
# Images per bulk read; a multiple of synth's 64-image HDF5 chunks (~150 MB of float32 at 224 px RGB).
READ_BATCH = 256
# Bytes hashed at each end of images.hdf5 for the cache key (cheap, catches in-place rewrites).


@dataclass
class DatasetArrays:
    """One dataset in memory: uint8 images [N,C,S,S], int64 labels [N], split index arrays."""

    dataset_id: str
    task: str
    class_names: list[str]
    images: np.ndarray
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    channels: int
    cache_path: Path | None = field(default=None, compare=False)
    split_policy: str = "mimeta"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


# ---------------------------------------------------------------------------------------------
# labels and splits via mimeta


def _mimeta_view(root: str, dataset_id: str, task: str, split_policy: str,
                 n_images: int) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    import mimeta

    # MIMeta caches every info.yaml at class level, keyed only by data_path: a dataset written
    # into the same root after an earlier read (bttui data synth, tests) would be invisible.
    try:
        mimeta.MIMeta._read_dataset_info(root)
    except Exception as exc:  # noqa: BLE001 - mimeta reads every sub-directory; any bad one fails it
        raise BttuiError(
            f"mimeta could not read the dataset infos under '{root}' ({type(exc).__name__}: {exc}); "
            f"run `bttui data check {root}` to list the broken files."
        ) from exc
    claimants = _dirs_claiming(root, dataset_id)
    if claimants != [dataset_id] or mimeta.MIMeta._dataset_dir_mapping.get(dataset_id) != dataset_id:
        # mimeta maps ids to directories by the id inside info.yaml, last listed wins: another
        # directory claiming this id (a copy, a leftover build dir) could silently serve its data.
        others = [c for c in claimants if c != dataset_id]
        raise BttuiError(
            f"Under '{root}', the info.yaml of {', '.join(repr(o) for o in others) or 'another directory'} "
            f"also claims dataset id '{dataset_id}', so mimeta may read the wrong directory. Remove or fix "
            f"the duplicate (`bttui data check` lists id mismatches)."
        )

    def make(**kw):
        # use_hdf5=False and an identity transform: we only want labels/indices, no open file handle.
        try:
            return mimeta.MIMeta(root, dataset_id, task, transform=lambda x: x, use_hdf5=False, **kw)
        except (ValueError, FileNotFoundError, KeyError, IndexError) as exc:
            raise BttuiError(f"mimeta could not open dataset '{dataset_id}' task '{task}' under '{root}': {exc}") from exc

    full = make()
    if full.task_target.name not in ("MULTICLASS_CLASSIFICATION", "BINARY_CLASSIFICATION"):
        raise BttuiError(
            f"Task '{task}' of dataset '{dataset_id}' is {full.task_target.name}; bttui fine-tunes "
            f"classification tasks (MULTICLASS_CLASSIFICATION or BINARY_CLASSIFICATION) only."
        )
    labels = np.asarray(full.labels).reshape(len(full.labels), -1)[:, 0].astype(np.int64)
    if n_images != len(labels):
        raise BttuiError(
            f"Dataset '{dataset_id}': images.hdf5 holds {n_images} images but task_labels/{task}.npy "
            f"has {len(labels)} labels; run `bttui data check`."
        )
    classes = [str(full.classes[k]) for k in sorted(full.classes, key=int)]
    splits: dict[str, np.ndarray] = {}
    for s in reader.SPLITS:
        if split_policy == "random":
            splits[s] = reader.random_split(len(labels), s)
        elif split_policy == "mimeta":
            splits[s] = np.asarray(make(split=s).split_indices, dtype=np.int64)
        else:
            splits[s] = np.asarray(make(original_split=s).split_indices, dtype=np.int64)
    return labels, classes, splits


def _dirs_claiming(root: str, dataset_id: str) -> list[str]:
    """Directory names under ``root`` whose info.yaml has ``id: <dataset_id>`` (mimeta's lookup key)."""
    import yaml

    out = []
    for name in sorted(os.listdir(root)):
        info = os.path.join(root, name, "info.yaml")
        if os.path.isfile(info):
            with open(info, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
            if isinstance(raw, dict) and str(raw.get("id")) == dataset_id:
                out.append(name)
    return out


# ---------------------------------------------------------------------------------------------
# pixels


def _hdf5_fingerprint(path: Path) -> str:
    # One definition shared with `bttui gc`, which must recognise these cache names.
    from bttui.runs.disk import hdf5_fingerprint

    return hdf5_fingerprint(path)


def cache_key(dataset_id: str, image_size: int, grayscale: bool, fingerprint: str) -> str:
    """File name of the pixel cache for one dataset, size, colour mode and images.hdf5 version."""
    mode = "gray" if grayscale else "native"
    return f"{dataset_id}-s{image_size}-{mode}-v{CACHE_VERSION}-{fingerprint}.npy"


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of uint8 RGB [..., 3], rounded exactly like PIL's ``convert("L")`` (what mimeta does)."""
    r = rgb[..., 0].astype(np.uint32)
    g = rgb[..., 1].astype(np.uint32)
    b = rgb[..., 2].astype(np.uint32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _to_nchw(batch: np.ndarray, out_channels: int) -> np.ndarray:
    """uint8 [b,H,W] or [b,H,W,3] -> uint8 [b,C,H,W] with C = out_channels (luma or replication)."""
    if batch.ndim == 3:
        x = batch[:, None]
        return np.repeat(x, 3, axis=1) if out_channels == 3 else x
    if out_channels == 1:
        return rgb_to_luma(batch)[:, None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    """Batch resize uint8 [b,C,H,W] -> [b,C,S,S], bilinear with antialiasing, rounded back to uint8."""
    if batch.shape[-2:] == (size, size):
        return batch
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(batch).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).numpy()


def _fill_pixels(h5_path: Path, out: np.ndarray, out_channels: int, size: int) -> None:
    import h5py

    with h5py.File(h5_path, "r") as f:
        ds = f["images"]
        n = ds.shape[0]
        step = READ_BATCH
        if ds.chunks:  # align reads with the stored chunks so each is decompressed once
            step = max(ds.chunks[0], (READ_BATCH // ds.chunks[0]) * ds.chunks[0])
        for start in range(0, n, step):
            stop = min(n, start + step)
            out[start:stop] = _resize(_to_nchw(ds[start:stop], out_channels), size)


def _check_free_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    margin = 64 << 20  # keep 64 MiB spare so the cache never fills a disk to the last byte
    if free < needed + margin:
        raise BttuiError(
            f"Not enough free disk space in '{directory}' for the image cache: it needs "
            f"{(needed + margin) / 2**30:.2f} GiB (including 64 MiB spare) but {free / 2**30:.2f} GiB is free. "
            f"Free some space, point the cache elsewhere, or run without a cache directory."
        )


def load_pixels(root: str | os.PathLike, dataset_id: str, *, image_size: int, grayscale: bool = False,
                channels: int | None = None, cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, Path | None]:
    """uint8 [N,C,S,S] pixels of one dataset (memory-mapped when cached) and the cache file used, if any."""
    d = reader.dataset_dir(root, dataset_id)
    h5_path = d / "images.hdf5"
    if not h5_path.is_file():
        raise BttuiError(f"Image file '{h5_path}' is missing; run `bttui data check` on the data root.")
    n, h, w, c_stored = reader.image_shape(root, dataset_id)
    if c_stored not in (1, 3):
        raise BttuiError(f"'{h5_path}' stores {c_stored} channels; MIMeta images are grayscale or RGB.")
    c_out = 1 if grayscale else (channels or c_stored)
    shape = (n, c_out, image_size, image_size)

    if cache_dir is None:
        out = np.empty(shape, dtype=np.uint8)
        _fill_pixels(h5_path, out, c_out, image_size)
        return out, None

    cdir = Path(cache_dir)
    cdir.mkdir(parents=True, exist_ok=True)
    # channels are part of the pixels: fold them into the key via the grayscale flag and count.
    key = cache_key(dataset_id, image_size, grayscale, _hdf5_fingerprint(h5_path) + f"-c{c_out}")
    final = cdir / key
    if final.is_file():
        try:
            arr = np.load(final, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return arr, final
        except (OSError, ValueError):
            pass  # unreadable cache: rebuild it below
    _check_free_space(cdir, int(np.prod(shape)) + 4096)
    tmp = cdir / f".tmp-{key}-{secrets.token_hex(4)}.npy"
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill_pixels(h5_path, mm, c_out, image_size)
        mm.flush()
        del mm
        fault_point("data.cache.temp_written")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Where the pixels came from, so `bttui gc` can tell whether the source still exists.
    sidecar = final.with_name(final.name + ".source.json")
    sidecar_tmp = sidecar.with_name(f".tmp-{sidecar.name}-{secrets.token_hex(4)}")
    sidecar_tmp.write_text(json.dumps({"h5_path": str(h5_path.resolve()), "root": str(Path(root).resolve()),
                                       "dataset": dataset_id}), encoding="utf-8")
    os.replace(sidecar_tmp, sidecar)
    return np.load(final, mmap_mode="r"), final


# ---------------------------------------------------------------------------------------------
# public API


def load_dataset(root: str | os.PathLike, dataset_id: str, *, task: str | None = None, image_size: int,
                 split_policy: str = "mimeta", grayscale: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> DatasetArrays:
    """Load one MIMeta dataset as uint8 arrays.

    ``task`` defaults to the first task in info.yaml; ``split_policy`` is
    ``mimeta`` (splits/), ``original`` (original_splits/) or ``random`` (the
    authors' 80/10/10, seed 42; see ``bttui.data.reader``). Images keep their
    stored channel count (info.yaml input_size, as mimeta does) unless
    ``grayscale`` turns RGB into one luma channel. With ``cache_dir`` the
    resized pixels are cached as a memory-mapped .npy.
    """
    if split_policy not in reader.SPLIT_POLICIES:
        raise BttuiError(
            f"Unknown split policy '{split_policy}'; valid: {', '.join(reader.SPLIT_POLICIES)} (data.split_policy)."
        )
    if not isinstance(image_size, int) or image_size < 1:
        raise BttuiError(f"image_size must be a positive integer (data.image_size); got {image_size!r}.")
    info = reader.read_info(root, dataset_id)  # clear errors for unknown ids, escapes, bad info.yaml
    t = info.task(task)
    # Every problem of the files this run reads, in one error, before mimeta stops at the first one.
    reader.require_valid(root, dataset_id, task=t.name, policy=split_policy)
    n_images = reader.image_shape(root, dataset_id)[0]  # header only: fail before reading pixels
    labels, classes, splits = _mimeta_view(str(Path(root)), dataset_id, t.name, split_policy, n_images)
    for s, idx in splits.items():
        if idx.size and (idx.min() < 0 or idx.max() >= len(labels)):
            raise BttuiError(
                f"Dataset '{dataset_id}': the {split_policy} '{s}' split lists image index {int(idx.max())} "
                f"but there are only {len(labels)} images; run `bttui data check`."
            )
    images, cache_path = load_pixels(root, dataset_id, image_size=image_size, grayscale=grayscale,
                                     channels=info.channels, cache_dir=cache_dir)
    return DatasetArrays(dataset_id=dataset_id, task=t.name, class_names=classes, images=images,
                         labels=labels, splits=splits, channels=int(images.shape[1]), cache_path=cache_path,
                         split_policy=split_policy)


def label_subset(labels: np.ndarray, train_idx: np.ndarray, fraction: float, seed: int, *,
                 class_names: Sequence[str] | None = None) -> np.ndarray:
    """Stratified, seeded, nested subset of ``train_idx`` keeping ``fraction`` of each class (>= 1 each).

    One seeded random order per class (independent of ``fraction``) and the
    first ceil(fraction * n_c) of each, so for one seed the subset at fraction a
    is contained in the subset at any b >= a. Fraction 1.0 returns all of
    ``train_idx``. Returned sorted. Because every class present gets at least
    one example, no fraction is "too small"; the one failure is a class with no
    training image at all, reported when ``class_names`` (the task's classes,
    index = label) is given.
    """
    if not (0.0 < float(fraction) <= 1.0):
        raise BttuiError(f"Label fraction must be in (0, 1]; got {fraction!r} (finetune.label_fractions).")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if train_idx.size == 0:
        raise BttuiError("The training split is empty, so no labelled subset can be drawn; check the dataset's "
                         "split files with `bttui data check` or use another data.split_policy.")
    labels = np.asarray(labels)
    train_labels = labels[train_idx]
    if class_names is not None:
        present = np.bincount(train_labels[(train_labels >= 0) & (train_labels < len(class_names))].astype(np.int64),
                              minlength=len(class_names))
        missing = [f"{i} ({class_names[i]})" for i in np.flatnonzero(present == 0)]
        if missing:
            raise BttuiError(
                f"Label fraction {fraction:g} cannot give one training example per class: class"
                f"{'es' if len(missing) > 1 else ''} {', '.join(missing)} ha{'ve' if len(missing) > 1 else 's'} no "
                f"image in the training split ({len(train_idx)} images). Use a split policy whose training split "
                f"covers every class (data.split_policy), or a task whose classes all occur in training."
            )
    if float(fraction) == 1.0:
        return np.sort(train_idx)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(train_labels):  # sorted: same classes -> same rng stream for every fraction
        members = np.sort(train_idx[train_labels == c])
        order = rng.permutation(members)
        # round() first: 0.3 * 10 is 3.0000000000000004 in floats, and ceil would give 4.
        k = max(1, math.ceil(round(float(fraction) * len(members), 9)))
        chosen.append(order[:k])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def concat_for_pretraining(arrays: Sequence[DatasetArrays], splits: Sequence[str] = ("train",)) -> np.ndarray:
    """One uint8 [M,3,S,S] array of the chosen splits of every dataset (grayscale replicated); never test."""
    if "test" in splits:
        raise BttuiError("Pretraining may not read the test split (pretrain.splits); use train and/or val.")
    bad = [s for s in splits if s not in reader.SPLITS]
    if bad:
        raise BttuiError(f"Unknown split(s) {bad} in pretrain.splits; valid: train, val.")
    if not arrays:
        raise BttuiError("No datasets given for pretraining (pretrain.datasets is empty).")
    sizes = {a.images.shape[-2:] for a in arrays}
    if len(sizes) != 1:
        raise BttuiError(f"Pretraining datasets have different image sizes {sorted(sizes)}; load them with one image_size.")
    parts = []
    for a in arrays:
        idx = np.unique(np.concatenate([np.asarray(a.splits[s], dtype=np.int64) for s in splits]))
        assert np.intersect1d(idx, a.splits["test"]).size == 0, (
            f"{a.dataset_id}: pretraining indices overlap the test split"
        )
        x = np.asarray(a.images[idx])
        if x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        parts.append(x)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


# Images per statistics chunk: 128 x 3 x 224 x 224 is 19 MB of uint8 (38 MB as uint16 squares).
STATS_CHUNK = 128


def dataset_stats(images: np.ndarray, batch: int = STATS_CHUNK,
                  indices: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 [N,C,S,S] images (or the rows ``indices``), in [0, 1] units.

    Exact integer sums (uint64) of pixels and squared pixels over chunks of
    ``batch`` images: no float copy of the array, ~0.5 GB/s on one core, so a
    memory-mapped CRC cache (16 GB) is streamed rather than loaded.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a uint8 [N,C,S,S] array, got shape {images.shape}")
    idx = None if indices is None else np.sort(np.asarray(indices, dtype=np.int64))
    n = len(images) if idx is None else len(idx)
    if n == 0:
        raise ValueError(f"expected a non-empty uint8 [N,C,S,S] array, got shape {images.shape} with {n} rows selected")
    c = images.shape[1]
    total = np.zeros(c, dtype=np.uint64)
    total_sq = np.zeros(c, dtype=np.uint64)
    for start in range(0, n, batch):
        chunk = images[start:start + batch] if idx is None else images[idx[start:start + batch]]
        chunk = np.asarray(chunk)
        if chunk.dtype != np.uint8:
            chunk = np.clip(chunk, 0, 255).astype(np.uint8)
        for k in range(c):
            v = chunk[:, k]
            total[k] += v.sum(dtype=np.uint64)
            sq = v.astype(np.uint16)
            np.multiply(sq, sq, out=sq)  # 255**2 = 65025 fits uint16
            total_sq[k] += sq.sum(dtype=np.uint64)
    count = float(n * images.shape[2] * images.shape[3])
    mean = total.astype(np.float64) / count
    var = np.maximum(total_sq.astype(np.float64) / count - mean * mean, 0.0)
    return (mean / 255.0).tolist(), (np.sqrt(var) / 255.0).tolist()


def _indices_digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.sort(np.asarray(idx, dtype=np.int64))).tobytes()).hexdigest()[:16]


def stats_path(cache_path: Path, split_policy: str, splits: Sequence[str]) -> Path:
    """Where the statistics of ``splits`` of a cached dataset live: beside the cache, keyed like it."""
    return cache_path.with_name(f"{cache_path.stem}.{split_policy}-{'+'.join(splits)}.stats.json")


def split_stats(data: DatasetArrays, splits: Sequence[str] = ("train",)) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of ``splits`` of one loaded dataset (default: the training split), in [0, 1] units.

    With a pixel cache (``data.cache_path``) the result is stored beside it as
    ``<cache stem>.<policy>-<splits>.stats.json`` together with a digest of the
    indices, so the next run on the same data, size and split reads it back
    instead of streaming the pixels again. A constant channel keeps std 0 here;
    callers replace it before dividing.
    """
    idx = np.unique(np.concatenate([np.asarray(data.splits[s], dtype=np.int64) for s in splits]))
    digest = _indices_digest(idx)
    path = stats_path(data.cache_path, data.split_policy, splits) if data.cache_path is not None else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("indices_sha256") == digest and cached.get("n") == int(len(idx)):
                return [float(v) for v in cached["mean"]], [float(v) for v in cached["std"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or stale: recompute and overwrite below
    mean, std = dataset_stats(data.images, indices=idx)
    if path is not None:
        tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
        try:
            tmp.write_text(json.dumps({"dataset": data.dataset_id, "split_policy": data.split_policy,
                                       "splits": list(splits), "n": int(len(idx)), "indices_sha256": digest,
                                       "mean": mean, "std": std}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only cache directory only costs the recomputation
    return mean, std


def concat_stats(arrays: Sequence[DatasetArrays], splits: Sequence[str] = ("train",)) -> tuple[list[float], list[float]]:
    """Mean/std (3 channels) of what ``concat_for_pretraining(arrays, splits)`` returns, from per-dataset stats.

    Combines each dataset's (cached) ``split_stats`` weighted by its pixel
    count, with 1-channel datasets counted in all three channels, exactly as the
    concatenation replicates them; no pass over the concatenated array.
    """
    n_tot = 0.0
    s1 = np.zeros(3)
    s2 = np.zeros(3)
    for a in arrays:
        mean, std = split_stats(a, splits)
        m = np.resize(np.asarray(mean, dtype=np.float64), 3)  # 1 channel -> the same value three times
        sd = np.resize(np.asarray(std, dtype=np.float64), 3)
        n = float(len(np.unique(np.concatenate([np.asarray(a.splits[s]) for s in splits])))) * a.images.shape[2] * a.images.shape[3]
        n_tot += n
        s1 += n * m
        s2 += n * (sd * sd + m * m)
    if n_tot == 0:
        raise BttuiError("No pretraining images: every dataset's chosen splits are empty (pretrain.splits).")
    mean = s1 / n_tot
    var = np.maximum(s2 / n_tot - mean * mean, 0.0)
    return mean.tolist(), np.sqrt(var).tolist()
