"""Disk space: free-space checks before launches and checkpoints, `du` of runs and caches, `gc` of old checkpoints.

Stdlib only (the trainer calls `ensure_free` right before each checkpoint
write, so a full disk becomes a clear failed status instead of a torn file).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bttui.errors import BttuiError

GIB = 1 << 30
MIB = 1 << 20
SPARE_BYTES = 64 * MIB  # a write that leaves the disk at 0 bytes breaks every other process on it too
CHECKPOINT_FACTOR = 3  # room for the new checkpoint, its temp copy and the one it replaces
# Parameters of the backbones bttui builds (torchvision counts without the fc layer).
BACKBONE_PARAMS = {"resnet18": 11_176_512, "resnet50": 23_508_032}
BACKBONE_DIM = {"resnet18": 512, "resnet50": 2048}
# Pixel cache file names written by bttui.train.data.cache_key (+ "-c<channels>" folded into the fingerprint).
CACHE_RE = re.compile(r"^(?P<dataset>.+)-s(?P<size>\d+)-(?P<mode>gray|native)-v(?P<version>\d+)-"
                      r"(?P<fingerprint>[0-9a-f]{16})-c(?P<channels>\d+)\.npy$")
_FINGERPRINT_BYTES = 1 << 20  # bytes hashed from each end of images.hdf5
# Temp files younger than these may belong to a write in progress. A pixel cache fill keeps touching its file
# (mmap writeback updates the mtime), a run folder is built in well under a second, and status.json/summary.json
# temp files live for milliseconds; a crash is the only way to leave one older.
STALE_TEMP_S = 3600  # cache `.tmp-*` files and store `.tmp-<id>` / `.deleting-<id>` folders
RUN_TEMP_S = 60  # atomic-write temps in a run folder (`.status.json.<hex>.tmp`)
# Checkpoint and test-feature temps carry their writer's pid: `.pretrain_epoch0002.pt.<pid>.tmp`,
# `.test_features.<pid>.tmp.npz` (bttui.train.pretrain.save_atomic, bttui.train.finetune).
_PID_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp(?:\.npz)?$")
_ATOMIC_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # bttui.runs.atomic.write_bytes_atomic


def human(n: float) -> str:
    """Bytes as `1.5 GiB` / `12.0 MiB` / `512 B`."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _existing(path: str | os.PathLike) -> Path:
    """`path`, or its nearest existing parent (a store not made yet lives on its parent's disk)."""
    p = Path(os.path.abspath(os.fspath(path)))
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing(path)).free


def ensure_free(path: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """BttuiError unless the filesystem of `path` has `needed_bytes` (+64 MiB spare) free, naming `what`."""
    free = free_bytes(path)
    needed = int(needed_bytes) + SPARE_BYTES
    if free < needed:
        raise BttuiError(f"Not enough free disk space for {what} in {path}: it needs {human(needed)} "
                         f"(including {human(SPARE_BYTES)} spare) but {human(free)} is free. Free some space "
                         f"(`bttui gc` drops old checkpoints of finished runs) and resume the run.")


def estimate_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict/list (a checkpoint payload), found by duck typing (no torch import)."""
    total, stack, seen = 0, [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if hasattr(item, "element_size") and hasattr(item, "numel"):
            try:
                total += int(item.numel()) * int(item.element_size())
            except Exception:  # noqa: BLE001 - an odd object only makes the estimate smaller
                pass
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return default if node is None else node


def estimate_checkpoint_bytes(cfg: Any) -> int:
    """A pretraining checkpoint's size for `cfg` (an ExperimentConfig or its dict): fp32 weights of backbone and
    projector plus the optimizer state (Adam: two moments; SGD/LARS: one); a backbone for fine-tune-only configs."""
    backbone = str(_get(cfg, "pretrain.backbone", "resnet18"))
    params = BACKBONE_PARAMS.get(backbone, BACKBONE_PARAMS["resnet50"])
    if _get(cfg, "pretrain") is None:
        return params * 4
    widths = [BACKBONE_DIM.get(backbone, 2048), *[int(w) for w in _get(cfg, "pretrain.projector", []) or []]]
    for a, b in zip(widths, widths[1:]):
        params += a * b + 3 * b  # Linear weights, bias/BN affine (the projector's BN layers hold a few more)
    copies = 3 if str(_get(cfg, "pretrain.optimizer", "adam")) == "adam" else 2
    return params * 4 * copies


def required_free_bytes(cfg: Any = None, settings: Any = None) -> int:
    """What a launch needs free: max(min_free_gb GiB (default 1), 3x the checkpoint); 0 when min_free_gb = 0."""
    floor_gb = getattr(settings, "min_free_gb", 1.0) if settings is not None else 1.0
    if not floor_gb:
        return 0
    ckpt = estimate_checkpoint_bytes(cfg) if cfg is not None else 0
    return max(int(float(floor_gb) * GIB), CHECKPOINT_FACTOR * ckpt)


def _check_writable(store_root: str | os.PathLike) -> None:
    """BttuiError when the store's filesystem is mounted read-only (checked first: no amount of free space helps)."""
    where = _existing(store_root)
    try:
        flags = os.statvfs(where).f_flag
    except OSError:
        return
    if flags & getattr(os, "ST_RDONLY", 1):
        raise BttuiError(f"The run store {store_root} is on a read-only filesystem ({where}); nothing can be written "
                         f"there. Remount it read-write or use a writable store (--store DIR or $BTTUI_STORE).")


def check_free_space(store_root: str | os.PathLike, cfg: Any = None, settings: Any = None) -> None:
    """Before a launch: BttuiError naming the store, free and needed space when the store's disk is too full."""
    _check_writable(store_root)
    if settings is None:
        from bttui.config.settings import load_settings

        settings = load_settings()
    needed = required_free_bytes(cfg, settings)
    if needed <= 0:
        return
    free = free_bytes(store_root)
    if free < needed:
        raise BttuiError(f"Not enough free disk space in the run store {store_root}: {human(free)} free, a run needs "
                         f"{human(needed)} (max of min_free_gb = {getattr(settings, 'min_free_gb', 1.0):g} GiB and 3x "
                         f"its checkpoint size). Free space with `bttui gc`, use another --store, or lower min_free_gb "
                         f"in the machine settings (0 turns the check off).")


# ---------------------------------------------------------------- du


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes allocated to the files below `path` (its size on disk, sparse files counted as stored)."""
    total = 0
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path):
        return _size(st)
    for base, dirs, files in os.walk(path):
        for name in files:
            try:
                total += _size(os.lstat(os.path.join(base, name)))
            except OSError:
                continue
    return total


def _size(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return min(st.st_size, blocks * 512) if blocks is not None else st.st_size


LOG_NAMES = ("events.jsonl", "train.log", "slurm.out")


def run_usage(run_dir: str | os.PathLike) -> dict[str, int]:
    """{checkpoints, artifacts, logs, other, total} bytes of one run directory."""
    run_dir = Path(run_dir)
    out = {"checkpoints": tree_bytes(run_dir / "checkpoints"), "artifacts": tree_bytes(run_dir / "artifacts"),
           "logs": 0, "other": 0}
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        entries = []
    for entry in entries:
        if entry.name in ("checkpoints", "artifacts"):
            continue
        size = tree_bytes(entry.path)
        if entry.name in LOG_NAMES or entry.name.endswith((".log", ".out")):
            out["logs"] += size
        else:
            out["other"] += size
    out["total"] = sum(out.values())
    return out


def store_usage(store: Any, run_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """{"runs": [{id, name, status, checkpoints, artifacts, logs, other, total}], "cache", "total"} for a Store."""
    records = store.list_runs() if run_ids is None else [store.get(r) for r in run_ids]
    runs = [{"id": r.id, "name": r.name, "status": r.status, **run_usage(r.paths.dir)} for r in records]
    cache = tree_bytes(store.root / "cache") if run_ids is None else 0
    db = 0
    if run_ids is None:
        from bttui.runs.store import db_dir

        local = db_dir(store.root)  # the databases of a store on NFS live on local disk
        db = tree_bytes(store.root / ".bttui") + (tree_bytes(local) if local != store.root / ".bttui" else 0)
    return {"store": str(store.root), "runs": runs, "cache": cache, "databases": db,
            "total": sum(r["total"] for r in runs) + cache + db}


# ---------------------------------------------------------------- gc


@dataclass(frozen=True)
class Removal:
    """One file (or folder) `gc` removes and why."""

    path: Path
    bytes: int
    why: str


def hdf5_fingerprint(path: str | os.PathLike) -> str:
    """The images.hdf5 fingerprint in cache names; must equal bttui.train.data._hdf5_fingerprint (tested)."""
    st = os.stat(path)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_FINGERPRINT_BYTES))
        if st.st_size > _FINGERPRINT_BYTES:
            fh.seek(max(_FINGERPRINT_BYTES, st.st_size - _FINGERPRINT_BYTES))
            h.update(fh.read(_FINGERPRINT_BYTES))
    return h.hexdigest()[:16]


def _keep_checkpoints(files: list[Path]) -> set[Path]:
    """Final and best checkpoints, and the newest other one (what a resume or a later fine-tune can use)."""
    keep = {p for p in files if "final" in p.name or "best" in p.name}
    rest = [p for p in files if p not in keep]
    if rest:
        keep.add(max(rest, key=lambda p: (p.stat().st_mtime_ns, p.name)))
    return keep


def checkpoint_removals(record: Any, now: float | None = None) -> list[Removal]:
    """Old checkpoints of a finished run (and temp files of interrupted writes)."""
    from bttui.runs.status import FINAL_STATUSES

    if record.status not in FINAL_STATUSES:
        return []
    folder = Path(record.paths.checkpoints)
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
    temps = [p for p in files if p.name.startswith(".") and p.name.endswith(".tmp")]
    ckpts = [p for p in files if p.suffix in (".pt", ".pth") and not p.name.startswith(".")]
    keep = _keep_checkpoints(ckpts)
    out = [Removal(p, tree_bytes(p), f"old checkpoint of {record.status} run {record.id}")
           for p in sorted(ckpts) if p not in keep]
    out += [Removal(p, tree_bytes(p), f"unfinished checkpoint write of run {record.id}") for p in sorted(temps)]
    out += [r for r in run_temp_removals(record.paths.dir, now=now) if r.path.parent != folder]
    return out


def _age(path: Path, now: float) -> float | None:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return None


def _pid_temp_dead(name: str) -> bool:
    """True for a pid-tagged temp name whose writer is gone (never for this process's own temps)."""
    from bttui.runs import liveness

    m = _PID_TEMP_RE.match(name)
    if m is None:
        return False
    pid = int(m.group("pid"))
    return pid != os.getpid() and not liveness.pid_alive(pid)


def run_temp_removals(run_dir: str | os.PathLike, now: float | None = None) -> list[Removal]:
    """Temp files killed writes left in one run folder: checkpoint and test-feature temps whose writer pid is gone,
    and atomic-write temps (`.status.json.<hex>.tmp`) older than a minute. Never a complete file."""
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    out: list[Removal] = []
    try:
        top = [p for p in run_dir.iterdir() if p.name.startswith(".") and _ATOMIC_TEMP_RE.match(p.name)]
    except OSError:
        top = []
    for path in sorted(top):
        age = _age(path, now)
        if age is not None and age > RUN_TEMP_S and path.is_file():
            out.append(Removal(path, tree_bytes(path), f"unfinished write of {path.name.split('.')[1]} "
                                                       f"in run {run_dir.name}"))
    tagged: list[Path] = []
    for folder in (run_dir / "checkpoints", *sorted((run_dir / "artifacts" / "cells").glob("*"))):
        try:
            tagged += [p for p in folder.iterdir() if p.name.startswith(".") and p.is_file()]
        except OSError:
            continue
    out += [Removal(p, tree_bytes(p), f"unfinished write of a dead trainer in run {run_dir.name}")
            for p in sorted(tagged) if _pid_temp_dead(p.name)]
    return out


def store_temp_removals(store_root: str | os.PathLike, now: float | None = None) -> list[Removal]:
    """Run folders a killed `create_run` (`.tmp-<id>`) or `delete_run` (`.deleting-<id>`) left in the store,
    older than an hour, and pixel-cache temps (`cache/.tmp-*`) older than an hour."""
    root = Path(store_root)
    now = time.time() if now is None else now
    out: list[Removal] = []
    try:
        entries = sorted(p for p in root.iterdir() if p.name.startswith((".tmp-", ".deleting-")))
    except OSError:
        entries = []
    for path in entries:
        age = _age(path, now)
        if age is not None and age > STALE_TEMP_S:
            what = "half-made run folder" if path.name.startswith(".tmp-") else "half-deleted run folder"
            out.append(Removal(path, tree_bytes(path), f"{what} older than an hour"))
    try:
        cache = sorted(p for p in (root / "cache").iterdir() if p.name.startswith(".tmp-"))
    except OSError:
        cache = []
    for path in cache:
        age = _age(path, now)
        if age is not None and age > STALE_TEMP_S:
            out.append(Removal(path, tree_bytes(path), "unfinished cache write older than an hour"))
    return out


def resume_temp_removals(run_dir: str | os.PathLike, now: float | None = None) -> list[Removal]:
    """What a resuming trainer removes first: its run's leftovers (see run_temp_removals) and the store's."""
    run_dir = Path(run_dir)
    return run_temp_removals(run_dir, now=now) + store_temp_removals(run_dir.parent, now=now)


def _data_roots(store: Any, records: list, settings: Any) -> set[Path]:
    import tomllib

    roots: set[Path] = set()
    for record in records:
        try:
            with open(record.paths.config_toml, "rb") as fh:
                root = tomllib.load(fh).get("data", {}).get("root")
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError):
            continue
        if isinstance(root, str) and root:
            roots.add(Path(root))
    if settings is not None and getattr(settings, "data_root", None):
        roots.add(Path(settings.data_root))
    return roots


def cache_removals(store: Any, records: list | None = None, settings: Any = None,
                   now: float | None = None) -> list[Removal]:
    """Pixel caches (and their stats files) whose images.hdf5 is gone or changed, found among the data roots of the
    store's runs and the machine settings (or named by a `<cache>.source.json` beside the cache)."""
    import json

    cache_dir = store.root / "cache"
    try:
        entries = sorted(p for p in cache_dir.iterdir() if p.is_file())
    except OSError:
        return []
    now = time.time() if now is None else now
    records = store.list_runs() if records is None else records
    roots = _data_roots(store, records, settings)
    fingerprints: dict[Path, str | None] = {}

    def fingerprint(h5: Path) -> str | None:
        if h5 not in fingerprints:
            try:
                fingerprints[h5] = hdf5_fingerprint(h5)
            except OSError:
                fingerprints[h5] = None
        return fingerprints[h5]

    out: list[Removal] = []
    for path in entries:
        if path.name.startswith(".tmp-"):
            continue  # store_temp_removals
        m = CACHE_RE.match(path.name)
        if m is None:
            continue
        dataset, fp = m.group("dataset"), m.group("fingerprint")
        sidecar = path.with_name(path.name + ".source.json")
        candidates = [root / dataset / "images.hdf5" for root in roots]
        try:
            source = json.loads(sidecar.read_text(encoding="utf-8"))
            if isinstance(source, dict) and source.get("h5_path"):
                candidates = [Path(source["h5_path"])]
        except (OSError, ValueError):
            pass
        if any(fingerprint(h5) == fp for h5 in candidates):
            continue
        stem = path.name[: -len(".npy")]
        companions = [p for p in entries if p != path and p.name.startswith(stem + ".")]
        why = (f"cache of dataset {dataset}, whose images.hdf5 is gone or changed "
               f"(looked in {', '.join(str(c) for c in candidates) or 'no known data root'})")
        out.append(Removal(path, tree_bytes(path), why))
        out += [Removal(p, tree_bytes(p), f"belongs to the removed cache {path.name}") for p in companions]
    return out


def gc_plan(store: Any, settings: Any = None, now: float | None = None) -> list[Removal]:
    """Everything `bttui gc` would remove: old checkpoints and temp files of finished runs, caches of vanished
    datasets, and what killed writes left in the store (half-made run folders, cache temps)."""
    if settings is None:
        from bttui.config.settings import load_settings

        settings = load_settings()
    records = store.list_runs()
    plan: list[Removal] = []
    for record in records:
        plan += checkpoint_removals(record, now=now)
    plan += cache_removals(store, records, settings, now=now)
    plan += store_temp_removals(store.root, now=now)
    return plan


def apply(plan: Iterable[Removal]) -> int:
    """Remove the planned paths; returns the bytes freed (files that vanished meanwhile count as nothing)."""
    freed = 0
    for item in plan:
        try:
            if item.path.is_dir():
                shutil.rmtree(item.path)
            else:
                item.path.unlink()
        except FileNotFoundError:
            continue
        freed += item.bytes
    return freed
