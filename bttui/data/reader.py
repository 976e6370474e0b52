"""Light MIMeta reader (numpy, h5py, pyyaml only): dataset infos, labels, split indices and a format checker.

It reads the same on-disk layout as the ``mimeta`` package (``mimeta/mimeta.py``)
and gives the same answers, so the CLI and TUI can browse data without torch:

    <root>/<id>/info.yaml                    id, name, domain, input_size [C,H,W], tasks, *_num_samples
    <root>/<id>/images.hdf5                  dataset "images": uint8 [N,H,W] or [N,H,W,3]
    <root>/<id>/task_labels/<task_name>.npy  one label per image
    <root>/<id>/splits/{train,val,test}.txt  lines "images/000123.tiff" -> index 123
    <root>/<id>/original_splits/{train,val,test}.txt

Split policies: ``mimeta`` reads ``splits/``, ``original`` reads
``original_splits/`` (both exactly as ``mimeta.MIMeta(split=...)`` /
``MIMeta(original_split=...)``), and ``random`` is the authors' code's 80/10/10
random split with seed 42, defined here as: ``perm =
np.random.default_rng(42).permutation(N)``; train = the first ``int(0.8 * N)``
entries of ``perm``, val = the next ``int(0.1 * N)``, test = the rest; each
returned sorted. (It keeps the authors' proportions and seed; it is not
bit-identical to the permutation their torch code drew.)
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bttui.errors import BttuiError

SPLITS = ("train", "val", "test")
SPLIT_POLICIES = ("mimeta", "original", "random")
SPLIT_DIRS = {"mimeta": "splits", "original": "original_splits"}
# torchcross.data.TaskTarget member names; mimeta does TaskTarget[task_target].
TASK_TARGETS = (
    "MULTICLASS_CLASSIFICATION",
    "BINARY_CLASSIFICATION",
    "MULTILABEL_CLASSIFICATION",
    "ORDINAL_REGRESSION",
    "REGRESSION",
    "BINARY_SEGMENTATION",
    "MULTILABEL_SEGMENTATION",
)
RANDOM_SPLIT_SEED = 42
RANDOM_SPLIT_FRACTIONS = (0.8, 0.1)  # train, val; test = the rest


@dataclass(frozen=True)
class TaskInfo:
    """One task of a dataset: its name, torchcross target name and class names in label order."""

    name: str
    target: str
    labels: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetInfo:
    """The parsed info.yaml of one MIMeta dataset plus the directory it lives in."""

    id: str
    name: str
    domain: str
    input_size: list[int]
    tasks: list[TaskInfo]
    splits_num_samples: dict[str, int]
    original_splits_num_samples: dict[str, int]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def channels(self) -> int:
        return int(self.input_size[0])

    def task(self, name: str | None = None) -> TaskInfo:
        """The named task, or the first one when ``name`` is None; BttuiError with a suggestion otherwise."""
        if name is None:
            return self.tasks[0]
        for t in self.tasks:
            if t.name == name:
                return t
        names = [t.name for t in self.tasks]
        raise BttuiError(
            f"Dataset '{self.id}' has no task '{name}'{_suggest(name, names)}. "
            f"Available tasks: {', '.join(repr(n) for n in names)} (from {self.path / 'info.yaml'})."
        )


# ---------------------------------------------------------------------------------------------
# paths


def _suggest(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validate_dataset_id(dataset_id: str) -> str:
    """Refuse ids that could leave the data root (``..``, path separators, NUL, absolute paths)."""
    if not isinstance(dataset_id, str) or not dataset_id:
        raise BttuiError(f"Dataset id {dataset_id!r} is not valid: give a non-empty directory name such as 'organs_axial'.")
    bad = (
        dataset_id in (".", "..")
        or "/" in dataset_id
        or "\\" in dataset_id
        or "\0" in dataset_id
        or os.path.isabs(dataset_id)
        or dataset_id.startswith("~")
    )
    if bad:
        raise BttuiError(
            f"Dataset id {dataset_id!r} is not allowed: an id is a single directory name inside the data root "
            f"(no '..', '/', '\\', NUL or absolute paths), such as 'organs_axial' or 'crc'."
        )
    return dataset_id


def _root(root: str | os.PathLike) -> Path:
    p = Path(root)
    if not p.is_dir():
        raise BttuiError(
            f"MIMeta data root '{p}' does not exist or is not a directory. Point data.root at the directory "
            f"that holds one sub-directory per dataset (e.g. organs_axial/info.yaml), or run "
            f"`bttui data synth` to generate synthetic data for a demo."
        )
    return p


def _dataset_dirs(root: Path) -> list[Path]:
    """Sub-directories holding an info.yaml, skipping hidden ones (synth's .tmp-* build dirs)."""
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / "info.yaml").is_file():
            out.append(entry)
    return out


def dataset_dir(root: str | os.PathLike, dataset_id: str) -> Path:
    """The directory of ``dataset_id`` under ``root``; BttuiError listing the available ids if absent."""
    validate_dataset_id(dataset_id)
    r = _root(root)
    d = r / dataset_id
    if not (d / "info.yaml").is_file():
        ids = [p.name for p in _dataset_dirs(r)]
        avail = ", ".join(ids) if ids else "none (no sub-directory with an info.yaml)"
        if d.is_dir():
            fix = ("the directory exists but its info.yaml is missing. Fix: restore info.yaml from the MIMeta "
                   "download (every dataset directory needs one)")
        else:
            fix = "Fix: use one of the available ids, or point data.root at the MIMeta root that holds it"
        raise BttuiError(
            f"Dataset '{dataset_id}' not found under '{r}'{_suggest(dataset_id, ids)}: there is no "
            f"'{d / 'info.yaml'}'; {fix}. Available datasets: {avail}."
        )
    return d


# ---------------------------------------------------------------------------------------------
# info.yaml


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BttuiError(f"Cannot read '{path}': {exc}".replace("\n", " ") + " Fix: correct the YAML syntax at the "
                         "position shown, or restore the file from the MIMeta download.") from exc


def parse_info(raw: Any, path: Path) -> DatasetInfo:
    """Validate a loaded info.yaml mapping and build a DatasetInfo; BttuiError naming the first bad key."""
    problems = _info_problems(raw)
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise BttuiError(f"'{path}' is not a valid MIMeta info.yaml: {problems[0]}{more}. Fix: correct it "
                         f"(`bttui data check` lists every problem) or restore it from the MIMeta download.")
    tasks = [
        TaskInfo(
            name=t["task_name"],
            target=t["task_target"],
            labels=[str(t["labels"][k]) for k in sorted(t["labels"], key=int)],
        )
        for t in raw["tasks"]
    ]
    known = {"id", "name", "domain", "input_size", "tasks", "splits_num_samples", "original_splits_num_samples"}
    return DatasetInfo(
        id=str(raw["id"]),
        name=str(raw["name"]),
        domain=str(raw["domain"]),
        input_size=[int(v) for v in raw["input_size"]],
        tasks=tasks,
        splits_num_samples={str(k): int(v) for k, v in (raw.get("splits_num_samples") or {}).items()},
        original_splits_num_samples={
            str(k): int(v) for k, v in (raw.get("original_splits_num_samples") or {}).items()
        },
        path=path.parent,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _info_problems(raw: Any) -> list[str]:
    """Every reason ``raw`` is not a usable info.yaml mapping (empty list = fine)."""
    if not isinstance(raw, dict):
        return [f"the top level must be a mapping with keys id, name, domain, input_size, tasks (got {type(raw).__name__})"]
    out = []
    for key in ("id", "name", "domain"):
        if key not in raw:
            out.append(f"key '{key}' is missing")
        elif not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool):
            out.append(f"key '{key}' must be a string (got {raw[key]!r})")
    size = raw.get("input_size")
    if size is None:
        out.append("key 'input_size' is missing (expected [C, H, W], e.g. [1, 224, 224])")
    elif not (isinstance(size, list) and len(size) == 3 and all(_is_int(v) and v > 0 for v in size)):
        out.append(f"key 'input_size' must be a list of three positive integers [C, H, W] (got {size!r})")
    elif size[0] not in (1, 3):
        out.append(f"key 'input_size' has {size[0]} channels; MIMeta images have 1 (grayscale) or 3 (RGB)")
    tasks = raw.get("tasks")
    if tasks is None:
        out.append("key 'tasks' is missing (a list of {task_name, task_target, labels})")
    elif not isinstance(tasks, list) or not tasks:
        out.append(f"key 'tasks' must be a non-empty list (got {tasks!r})")
    else:
        for i, t in enumerate(tasks):
            where = f"tasks[{i}]"
            if not isinstance(t, dict):
                out.append(f"{where} must be a mapping with task_name, task_target, labels")
                continue
            if not isinstance(t.get("task_name"), str) or not t.get("task_name"):
                out.append(f"{where}.task_name must be a non-empty string (got {t.get('task_name')!r})")
            elif "/" in t["task_name"] or "\0" in t["task_name"] or t["task_name"] in (".", ".."):
                out.append(f"{where}.task_name {t['task_name']!r} cannot name a file under task_labels/")
            if t.get("task_target") not in TASK_TARGETS:
                out.append(
                    f"{where}.task_target must be one of {', '.join(TASK_TARGETS)} (got {t.get('task_target')!r})"
                )
            labels = t.get("labels")
            if not isinstance(labels, dict) or not labels:
                out.append(f"{where}.labels must be a non-empty mapping {{0: name, 1: name, ...}} (got {labels!r})")
            elif not all(_is_int(k) for k in labels) or sorted(labels) != list(range(len(labels))):
                out.append(f"{where}.labels keys must be the integers 0..{len(labels) - 1} (got {sorted(labels, key=str)!r})")
    for key in ("splits_num_samples", "original_splits_num_samples"):
        v = raw.get(key)
        if v is None:
            out.append(f"key '{key}' is missing (a mapping such as {{train: 100, val: 20, test: 30}})")
        elif not isinstance(v, dict) or not all(_is_int(n) and n >= 0 for n in v.values()):
            out.append(f"key '{key}' must map split names to sample counts (got {v!r})")
    return out


def read_info(root: str | os.PathLike, dataset_id: str) -> DatasetInfo:
    """Parse ``<root>/<dataset_id>/info.yaml``."""
    d = dataset_dir(root, dataset_id)
    path = d / "info.yaml"
    return parse_info(_load_yaml(path), path)


def list_datasets(root: str | os.PathLike) -> list[DatasetInfo]:
    """Every dataset under ``root`` (sub-directories with an info.yaml), sorted by id."""
    r = _root(root)
    infos = []
    for d in _dataset_dirs(r):
        path = d / "info.yaml"
        infos.append(parse_info(_load_yaml(path), path))
    return sorted(infos, key=lambda i: i.id)


# ---------------------------------------------------------------------------------------------
# labels, images, splits


def label_path(root: str | os.PathLike, dataset_id: str, task: str) -> Path:
    return dataset_dir(root, dataset_id) / "task_labels" / f"{task}.npy"


def read_labels(root: str | os.PathLike, dataset_id: str, task: str | None = None) -> np.ndarray:
    """All labels of ``task`` (default: the first task), one per image, as mimeta's ``MIMeta(...).labels``."""
    info = read_info(root, dataset_id)
    t = info.task(task)
    path = info.path / "task_labels" / f"{t.name}.npy"
    if not path.is_file():
        raise BttuiError(f"Label file '{path}' is missing: dataset '{dataset_id}' declares task '{t.name}' in "
                         f"info.yaml. Fix: restore it from the MIMeta download, or remove the task from info.yaml.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BttuiError(f"Cannot read label file '{path}': {exc}. Fix: restore it from the MIMeta download.") from exc


def _open_images(path: Path):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise BttuiError(f"Cannot open image file '{path}': {exc}. Regenerate or re-download this dataset.") from exc
    if "images" not in f:
        f.close()
        raise BttuiError(f"Image file '{path}' has no dataset 'images' (MIMeta stores pixels in images.hdf5['images']).")
    return f


def image_shape(root: str | os.PathLike, dataset_id: str) -> tuple[int, int, int, int]:
    """(N, H, W, C) of ``images.hdf5``; C is 1 for [N,H,W] storage."""
    path = dataset_dir(root, dataset_id) / "images.hdf5"
    if not path.is_file():
        raise BttuiError(f"Image file '{path}' is missing.")
    with _open_images(path) as f:
        shape = f["images"].shape
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2]), 1
    if len(shape) == 4:
        return int(shape[0]), int(shape[1]), int(shape[2]), int(shape[3])
    raise BttuiError(f"Image file '{path}' holds images of shape {shape}; MIMeta expects [N,H,W] or [N,H,W,3].")


def random_split(n: int, split: str) -> np.ndarray:
    """The authors' 80/10/10 random split with seed 42 over ``n`` images (see the module docstring)."""
    if split not in SPLITS:
        raise BttuiError(f"Unknown split '{split}'{_suggest(split, list(SPLITS))}; valid splits: {', '.join(SPLITS)}.")
    perm = np.random.default_rng(RANDOM_SPLIT_SEED).permutation(n)
    n_train = int(RANDOM_SPLIT_FRACTIONS[0] * n)
    n_val = int(RANDOM_SPLIT_FRACTIONS[1] * n)
    part = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}[split]
    return np.sort(part).astype(np.int64)


def parse_split_lines(lines: list[str]) -> list[int]:
    """mimeta's rule: the index is int() of the basename without extension ("images/000123.tiff" -> 123)."""
    return [int(p.split("/")[-1].split(".")[0]) for p in (x.strip() for x in lines) if p]


def read_split(root: str | os.PathLike, dataset_id: str, split: str, policy: str = "mimeta") -> np.ndarray:
    """Sorted int64 image indices of ``split`` (train/val/test) under ``policy`` (mimeta/original/random)."""
    if policy not in SPLIT_POLICIES:
        raise BttuiError(
            f"Unknown split policy '{policy}'{_suggest(policy, list(SPLIT_POLICIES))}; "
            f"valid policies: {', '.join(SPLIT_POLICIES)}."
        )
    if split not in SPLITS:
        raise BttuiError(f"Unknown split '{split}'{_suggest(split, list(SPLITS))}; valid splits: {', '.join(SPLITS)}.")
    d = dataset_dir(root, dataset_id)
    if policy == "random":
        return random_split(image_shape(root, dataset_id)[0], split)
    path = d / SPLIT_DIRS[policy] / f"{split}.txt"
    if not path.is_file():
        raise BttuiError(
            f"Split file '{path}' is missing: dataset '{dataset_id}' has no {policy} '{split}' split. "
            f"Try split_policy = \"random\" or another policy."
        )
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    try:
        idx = parse_split_lines(lines)
    except ValueError as exc:
        raise BttuiError(f"Split file '{path}' has a line that is not of the form 'images/000123.tiff': {exc}") from exc
    return np.array(sorted(idx), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# summaries for `bttui data ls` / `preview` (no pixel reads)


def scan_datasets(root: str | os.PathLike) -> tuple[list[DatasetInfo], list[str]]:
    """Every readable dataset under ``root`` and one problem line per unreadable info.yaml.

    Unlike ``list_datasets`` (which stops at the first bad info.yaml, as mimeta
    does) this keeps going, so ``bttui data ls`` can show the good ones.
    """
    r = _root(root)
    infos, problems = [], []
    for d in _dataset_dirs(r):
        path = d / "info.yaml"
        try:
            infos.append(parse_info(_load_yaml(path), path))
        except BttuiError as exc:
            problems.append(str(exc))
    return sorted(infos, key=lambda i: i.id), problems


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def split_sizes(info: DatasetInfo, n_images: int | None = None) -> dict[str, dict[str, int | None]]:
    """Images per split for each policy, from the split files' line counts (``None``: file missing).

    ``random`` needs the image count: ``n_images``, else the label count of the
    first task (a memory-mapped header read, no pixels).
    """
    out: dict[str, dict[str, int | None]] = {}
    for policy, sub in SPLIT_DIRS.items():
        out[policy] = {}
        for s in SPLITS:
            p = info.path / sub / f"{s}.txt"
            out[policy][s] = _count_lines(p) if p.is_file() else None
    if n_images is None:
        n_images = image_count(info)
    if n_images is not None:
        n_train = int(RANDOM_SPLIT_FRACTIONS[0] * n_images)
        n_val = int(RANDOM_SPLIT_FRACTIONS[1] * n_images)
        out["random"] = {"train": n_train, "val": n_val, "test": n_images - n_train - n_val}
    else:
        out["random"] = {s: None for s in SPLITS}
    return out


def image_count(info: DatasetInfo) -> int | None:
    """Number of images, read from the first task's label file header (cheap); None when unreadable."""
    p = info.path / "task_labels" / f"{info.tasks[0].name}.npy"
    try:
        return int(np.load(p, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, IndexError):
        return None


def summarize(info: DatasetInfo) -> dict[str, Any]:
    """Plain-data description of one dataset (what `bttui data ls --json` prints)."""
    return {
        "id": info.id,
        "name": info.name,
        "domain": info.domain,
        "path": str(info.path),
        "channels": info.channels,
        "image_size": [int(info.input_size[1]), int(info.input_size[2])],
        "num_images": image_count(info),
        "tasks": [{"name": t.name, "target": t.target, "num_classes": t.num_classes, "classes": list(t.labels)}
                  for t in info.tasks],
        "splits": split_sizes(info),
    }


def class_histograms(root: str | os.PathLike, dataset_id: str, task: str | None = None,
                     policy: str = "mimeta") -> dict[str, np.ndarray]:
    """Images per class (int64, one entry per class of ``task``) in each split under ``policy``."""
    info = read_info(root, dataset_id)
    t = info.task(task)
    labels = np.asarray(read_labels(root, dataset_id, t.name)).reshape(-1)
    out = {}
    for s in SPLITS:
        idx = read_split(root, dataset_id, s, policy)
        lab = labels[idx[(idx >= 0) & (idx < len(labels))]]
        lab = lab[(lab >= 0) & (lab < t.num_classes)].astype(np.int64)
        out[s] = np.bincount(lab, minlength=t.num_classes)
    return out


def read_images(root: str | os.PathLike, dataset_id: str, indices: np.ndarray | list[int]) -> np.ndarray:
    """uint8 pixels of the given images, as stored ([k,H,W] or [k,H,W,3]), in the order given."""
    path = dataset_dir(root, dataset_id) / "images.hdf5"
    if not path.is_file():
        raise BttuiError(f"Image file '{path}' is missing. Fix: restore it from the MIMeta download.")
    idx = np.asarray(indices, dtype=np.int64)
    with _open_images(path) as f:
        ds = f["images"]
        if idx.size and (idx.min() < 0 or idx.max() >= ds.shape[0]):
            raise BttuiError(f"Image index {int(idx.max())} is out of range for '{path}' ({ds.shape[0]} images).")
        uniq, inverse = np.unique(idx, return_inverse=True)  # h5py fancy reads need increasing indices
        got = ds[uniq] if uniq.size else np.empty((0,) + ds.shape[1:], dtype=np.uint8)
    return got[inverse]


# ---------------------------------------------------------------------------------------------
# check

# Fix hints appended to problems; one per kind so every message says what to do.
_FIX_DOWNLOAD = "Fix: restore the file from the MIMeta download (or regenerate synthetic data with `bttui data synth --overwrite`)."
_FIX_INFO = "Fix: correct info.yaml (MIMeta format: id, name, domain, input_size [C,H,W], tasks) or restore it from the MIMeta download."
_FIX_SPLIT = "Fix: restore the split files from the same MIMeta download as images.hdf5, or use data.split_policy = \"random\"."


def check(root: str | os.PathLike, dataset: str | None = None, *, task: str | None = None,
          policy: str | None = None) -> list[str]:
    """Every problem found under ``root`` (or in one dataset), one sentence each with a fix; empty = all fine.

    ``task`` restricts the label checks to that task, ``policy`` the split
    checks to that split policy (``random`` checks no split files): what one
    training run needs. Without them everything is checked.
    """
    r = Path(root)
    if not r.is_dir():
        return [f"{r}: the data root does not exist or is not a directory. Fix: point data.root (or the ROOT "
                f"argument) at the directory holding one sub-directory per dataset, or create one with "
                f"`bttui data synth {r}`."]
    if policy is not None and policy not in SPLIT_POLICIES:
        return [f"Unknown split policy '{policy}'{_suggest(policy, list(SPLIT_POLICIES))}; valid: {', '.join(SPLIT_POLICIES)}."]
    if dataset is not None:
        try:
            validate_dataset_id(dataset)
        except BttuiError as exc:
            return [str(exc)]
        d = r / dataset
        if not d.is_dir():
            ids = [p.name for p in _dataset_dirs(r)]
            return [f"{d}: dataset '{dataset}' does not exist{_suggest(dataset, ids)} "
                    f"(available: {', '.join(ids) or 'none'}). Fix: use one of the available ids."]
        return _check_dataset(d, task=task, policy=policy)
    dirs = [
        e for e in sorted(r.iterdir())
        if e.is_dir() and not e.name.startswith(".")
        and ((e / "info.yaml").exists() or (e / "images.hdf5").exists() or (e / "task_labels").exists())
    ]
    if not dirs:
        return [f"{r}: no datasets found (expected sub-directories such as organs_axial/ holding info.yaml). "
                f"Fix: point at the MIMeta root, or generate data with `bttui data synth {r}`."]
    problems: list[str] = []
    for d in dirs:
        problems.extend(_check_dataset(d, task=task, policy=policy))
    return problems


def require_valid(root: str | os.PathLike, dataset_id: str, *, task: str | None = None,
                  policy: str | None = None) -> None:
    """Raise one BttuiError listing every problem that would stop training on this dataset/task/policy."""
    problems = check(root, dataset_id, task=task, policy=policy)
    if problems:
        listed = problems[0] if len(problems) == 1 else " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise BttuiError(
            f"Dataset '{dataset_id}' under '{root}' cannot be loaded: {len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}: {listed} Re-check with `bttui data check {root} {dataset_id}`."
        )


def _check_dataset(d: Path, *, task: str | None = None, policy: str | None = None) -> list[str]:
    out: list[str] = []
    name = d.name
    info_path = d / "info.yaml"
    raw: Any = None
    if not info_path.is_file():
        out.append(f"{info_path}: missing (every dataset needs an info.yaml with id, name, domain, input_size, "
                   f"tasks). {_FIX_DOWNLOAD}")
    else:
        try:
            raw = _load_yaml(info_path)
        except BttuiError as exc:
            out.append(f"{info_path}: malformed YAML ({exc}). Fix: correct the syntax at the line shown or restore "
                       f"the file from the MIMeta download.")
            raw = None
        else:
            ip = _info_problems(raw)
            out.extend(f"{info_path}: {p}. {_FIX_INFO}" for p in ip)
            if isinstance(raw, dict) and "id" in raw and str(raw["id"]) != name:
                out.append(f"{info_path}: id '{raw['id']}' does not match the directory name '{name}' (mimeta looks "
                           f"datasets up by id). Fix: rename the directory to '{raw['id']}' or set `id: {name}`; "
                           f"remove it if it is a stray copy.")
            if ip:
                # Keep checking images and splits, but don't trust half-valid task lists.
                raw = raw if isinstance(raw, dict) else None
    info_ok = raw is not None and not _info_problems(raw)

    # images.hdf5
    n_images: int | None = None
    h5_path = d / "images.hdf5"
    if not h5_path.is_file():
        out.append(f"{h5_path}: missing (expected an HDF5 file with dataset 'images', uint8 [N,H,W] or [N,H,W,3]). "
                   f"{_FIX_DOWNLOAD}")
    else:
        h5_problems, n_images = _check_hdf5(h5_path, raw if info_ok else None)
        out.extend(h5_problems)

    # task labels
    if info_ok:
        tasks = raw["tasks"]
        names = [t["task_name"] for t in tasks]
        if task is not None and task not in names:
            out.append(f"{info_path}: no task '{task}'{_suggest(task, names)}; available tasks: "
                       f"{', '.join(repr(n) for n in names)}. Fix: set finetune.task to one of them.")
        for ti, t in enumerate(tasks):
            if task is not None and t["task_name"] != task:
                continue
            lp = d / "task_labels" / f"{t['task_name']}.npy"
            if not lp.is_file():
                out.append(f"{lp}: missing label file for task '{t['task_name']}'. {_FIX_DOWNLOAD}")
                continue
            try:
                lab = np.load(lp, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a reported problem
                out.append(f"{lp}: unreadable ({str(exc).splitlines()[0]}). {_FIX_DOWNLOAD}")
                continue
            if lab.ndim == 0:
                out.append(f"{lp}: holds a single value, not one label per image. {_FIX_DOWNLOAD}")
                continue
            if n_images is not None and len(lab) != n_images:
                out.append(f"{lp}: {len(lab)} labels but images.hdf5 holds {n_images} images (one label per image "
                           f"expected). Fix: the two files come from different versions of the dataset; restore both "
                           f"from one MIMeta download.")
            if t["task_target"] in ("MULTICLASS_CLASSIFICATION", "BINARY_CLASSIFICATION", "ORDINAL_REGRESSION"):
                k = len(t["labels"])
                if not np.issubdtype(lab.dtype, np.integer):
                    out.append(f"{lp}: labels have dtype {lab.dtype}; class labels must be integers 0..{k - 1}. "
                               f"Fix: save them with np.save(path, labels.astype(np.int64)).")
                elif lab.size:
                    lo, hi = int(lab.min()), int(lab.max())
                    if t["task_target"] == "BINARY_CLASSIFICATION":
                        k = max(k, 2)
                    if lo < 0 or hi >= k:
                        bad = int(np.count_nonzero((lab < 0) | (lab >= k)))
                        out.append(
                            f"{lp}: {bad} label(s) outside the {k} classes of task '{t['task_name']}' "
                            f"(values range {lo}..{hi}, valid 0..{k - 1}). Fix: add the missing classes to "
                            f"tasks[{ti}].labels in info.yaml, or correct the label file."
                        )

    # splits
    if policy is None:
        policies = list(SPLIT_DIRS.items())
    else:
        policies = [(policy, SPLIT_DIRS[policy])] if policy in SPLIT_DIRS else []
        if policy == "random" and n_images == 0:
            out.append(f"{h5_path}: the random split policy needs at least one image. {_FIX_DOWNLOAD}")
    for pol, sub in policies:
        counts_key = f"{sub}_num_samples"
        declared = raw.get(counts_key) if isinstance(raw, dict) and isinstance(raw.get(counts_key), dict) else {}
        seen: dict[int, str] = {}
        for split in SPLITS:
            sp = d / sub / f"{split}.txt"
            if not sp.is_file():
                # original_splits may legitimately lack a split (mimeta lists only those with count > 0);
                # bttui's default policy needs all three of splits/.
                if pol == "mimeta" or policy == "original" or int(declared.get(split, 0) or 0) > 0:
                    out.append(f"{sp}: missing ({pol} policy needs train, val and test split files). {_FIX_SPLIT}")
                continue
            try:
                with open(sp, encoding="utf-8") as fh:
                    lines = [x.strip() for x in fh.readlines()]
            except (OSError, UnicodeDecodeError) as exc:
                out.append(f"{sp}: unreadable ({exc}). {_FIX_SPLIT}")
                continue
            idx = []
            bad_lines = 0
            for ln, text in enumerate(lines, 1):
                if not text:
                    continue
                try:
                    idx.append(int(text.split("/")[-1].split(".")[0]))
                except ValueError:
                    bad_lines += 1
                    if bad_lines == 1:
                        first_bad = (ln, text)
            if bad_lines:
                out.append(f"{sp}:{first_bad[0]}: '{first_bad[1]}' is not of the form 'images/000123.tiff'"
                           f"{f' ({bad_lines} such lines)' if bad_lines > 1 else ''}. {_FIX_SPLIT}")
            if not idx:
                if not bad_lines:
                    out.append(f"{sp}: empty split (no image listed). Fix: list at least one image per line as "
                               f"'images/000123.tiff', or use another data.split_policy.")
                continue
            arr = np.array(idx, dtype=np.int64)
            if n_images is not None:
                oob = arr[(arr < 0) | (arr >= n_images)]
                if oob.size:
                    out.append(
                        f"{sp}: {oob.size} index(es) out of range for {n_images} images "
                        f"(e.g. {int(oob[0])}; valid 0..{n_images - 1}). {_FIX_SPLIT}"
                    )
            uniq, counts = np.unique(arr, return_counts=True)
            if (counts > 1).any():
                out.append(f"{sp}: {int((counts > 1).sum())} index(es) listed more than once "
                           f"(e.g. {int(uniq[counts > 1][0])}). Fix: remove the repeated lines.")
            for i in uniq.tolist():
                if i in seen:
                    out.append(
                        f"{sp}: index {i} is also in {sub}/{seen[i]}.txt (splits must not overlap); "
                        f"further overlaps between these files are not listed. {_FIX_SPLIT}"
                    )
                    break
            for i in uniq.tolist():
                seen.setdefault(i, split)
            if split in declared and _is_int(declared[split]) and int(declared[split]) != len(arr):
                out.append(f"{sp}: {len(arr)} lines but info.yaml {counts_key}.{split} says {declared[split]}. "
                           f"Fix: set {counts_key}.{split} to {len(arr)} in info.yaml, or restore the split file.")
    return out


def _check_hdf5(path: Path, raw: dict | None) -> tuple[list[str], int | None]:
    """Problems of images.hdf5 and its image count (None when unusable)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise OSError or others
        return [f"{path}: unreadable HDF5 file ({str(exc).splitlines()[0]}); the file is damaged or truncated. "
                f"{_FIX_DOWNLOAD}"], None
    out: list[str] = []
    with f:
        if "images" not in f:
            return [f"{path}: no dataset 'images' (found: {', '.join(f.keys()) or 'nothing'}); MIMeta stores pixels "
                    f"in images.hdf5['images']. {_FIX_DOWNLOAD}"], None
        ds = f["images"]
        if not isinstance(ds, h5py.Dataset):
            return [f"{path}: 'images' is a group, not an array. {_FIX_DOWNLOAD}"], None
        shape = ds.shape
        if ds.dtype != np.uint8:
            out.append(f"{path}: 'images' has dtype {ds.dtype}; MIMeta stores uint8 pixels (0-255). "
                       f"Fix: convert with images.astype(np.uint8) after scaling to 0-255, or restore the file.")
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] != 3):
            out.append(f"{path}: 'images' has shape {shape}; expected [N,H,W] (grayscale) or [N,H,W,3] (RGB). "
                       f"{_FIX_DOWNLOAD}")
            return out, None
        n = int(shape[0])
        if n == 0:
            out.append(f"{path}: 'images' holds no images. {_FIX_DOWNLOAD}")
            return out, 0
        try:
            # Touch the first and last image: a file cut short after its header fails here.
            ds[0]
            ds[n - 1]
        except Exception as exc:  # noqa: BLE001
            out.append(f"{path}: pixel data unreadable ({str(exc).splitlines()[0]}); the file is probably "
                       f"truncated. {_FIX_DOWNLOAD}")
        if raw is not None:
            c = 1 if len(shape) == 3 else 3
            if int(raw["input_size"][0]) != c:
                out.append(f"{path}: images have {c} channel(s) but info.yaml input_size says {raw['input_size'][0]}. "
                           f"Fix: set input_size to [{c}, {shape[1]}, {shape[2]}] in info.yaml.")
            elif [int(v) for v in raw["input_size"][1:]] != [int(shape[1]), int(shape[2])]:
                out.append(f"{path}: images are {shape[1]}x{shape[2]} but info.yaml input_size says "
                           f"{raw['input_size'][1]}x{raw['input_size'][2]}. Fix: set input_size to "
                           f"[{c}, {shape[1]}, {shape[2]}] in info.yaml.")
    return out, n
