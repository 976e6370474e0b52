"""Data sources the TUI reads through: the run store, a clock, the GPU sampler; plus fakes for tests.

The App receives these in ``__init__`` so tests inject a fixed clock, a fake GPU
sampler and a store built in a temporary directory. Everything here is plain
Python (no Textual) and is called from worker threads, never touching widgets.
"""

from __future__ import annotations

import calendar
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Protocol

# A running run whose heartbeat is older than this is shown as crashed (design.md: 120 s).
LOG_TAIL_BYTES = 64 * 1024


# --------------------------------------------------------------------------- clocks


class Clock(Protocol):
    def now(self) -> float: ...

    def localtime(self, ts: float) -> time.struct_time: ...


class SystemClock:
    """Wall clock in the machine's local time zone."""

    def now(self) -> float:
        return time.time()

    def localtime(self, ts: float) -> time.struct_time:
        return time.localtime(ts)


class FakeClock:
    """A frozen clock in UTC (snapshots must not depend on the time zone); ``advance`` moves it."""

    def __init__(self, now: float) -> None:
        self._now = float(now)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def localtime(self, ts: float) -> time.struct_time:
        return time.gmtime(ts)


# --------------------------------------------------------------------------- rows


@dataclass
class RunRow:
    """One run as the runs table shows it (status already liveness-checked)."""

    id: str
    name: str
    status: str
    reason: str | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    heartbeat: float | None = None
    stage: str | None = None
    cell: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    cells_done: int | None = None
    cells_total: int | None = None
    cells: dict[str, str] = field(default_factory=dict)
    loss: float | None = None
    best_accuracy: float | None = None
    sweep_id: str | None = None
    run_dir: Path | None = None
    pid: int | None = None
    datasets: tuple[str, ...] = ()
    device: str | None = None  # "cuda" or "cpu" once the trainer has picked one
    gpus: tuple[str, ...] = ()  # the machine's GPU ids the trainer runs on (status.json `gpus`)

    @property
    def gpu_text(self) -> str:
        """The runs table's GPU column: "0", "0,1", "cpu", or "-" before the trainer has picked a device."""
        if self.gpus:
            return ",".join(self.gpus)
        return "cpu" if self.device == "cpu" else "-"

    def matches(self, text: str) -> bool:
        """Whether the row passes a filter: every word must match (case-insensitive).

        ``status:S`` (or ``s:``), ``dataset:D`` (or ``ds:``), ``sweep:W``, ``stage:G`` and ``gpu:N``
        match that field (prefix for status and stage, substring for datasets and sweep id, exact GPU
        id or ``cpu``); ``a,b`` after the colon means either. Other words match name, id, status, stage or cell as substrings.
        """
        hay = " ".join(str(x) for x in (self.name, self.id, self.status, self.stage or "", self.cell or "")).lower()
        for word in text.strip().lower().split():
            key, sep, value = word.partition(":")
            field_name = FILTER_KEYS.get(key) if sep else None
            values = [v for v in value.split(",") if v] or [""]
            if field_name == "status":
                ok = any(self.status.lower().startswith(v) for v in values)
            elif field_name == "stage":
                ok = any((self.stage or "").lower().startswith(v) for v in values)
            elif field_name == "dataset":
                ok = any(v in d.lower() for v in values for d in self.datasets)
            elif field_name == "gpu":
                ok = any(v in self.gpus or (v == "cpu" and self.device == "cpu") for v in values)
            elif field_name == "sweep":
                ok = any(v in (self.sweep_id or "").lower() for v in values)
            else:
                ok = word in hay
            if not ok:
                return False
        return True


# Filter keys before a colon and the field each one filters.
FILTER_KEYS = {"status": "status", "s": "status", "dataset": "dataset", "ds": "dataset", "sweep": "sweep",
               "stage": "stage", "gpu": "gpu"}


@dataclass
class EventChunk:
    events: list[dict]
    offset: int
    torn: int = 0


def parse_time(value: Any) -> float | None:
    """ISO 8601 string, datetime or unix seconds -> unix seconds (naive ISO strings are UTC)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def row_from_parts(run_id: str, run_data: dict, status_data: dict, status: str, reason: str | None,
                   run_dir: Path | None, datasets: Iterable[str] = ()) -> RunRow:
    cells = status_data.get("cells") or {}
    gpus = status_data.get("gpus")
    return RunRow(
        id=run_id,
        name=str(run_data.get("name") or run_id),
        status=status,
        reason=reason,
        created=parse_time(run_data.get("created")),
        started=_float(status_data.get("started")),
        ended=_float(status_data.get("ended")),
        heartbeat=_float(status_data.get("heartbeat")),
        stage=status_data.get("stage"),
        cell=status_data.get("cell"),
        epoch=_int(status_data.get("epoch")),
        epochs=_int(status_data.get("epochs")),
        step=_int(status_data.get("step")),
        steps=_int(status_data.get("steps")),
        cells_done=_int(status_data.get("cells_done")),
        cells_total=_int(status_data.get("cells_total")),
        cells=dict(cells) if isinstance(cells, dict) else {},
        loss=_float(status_data.get("loss")),
        best_accuracy=_float(status_data.get("best_accuracy")),
        sweep_id=run_data.get("sweep_id") if isinstance(run_data.get("sweep_id"), str) else None,
        run_dir=run_dir,
        pid=_int(status_data.get("pid")),
        datasets=tuple(datasets),
        device=status_data.get("device") if isinstance(status_data.get("device"), str) else None,
        gpus=tuple(str(g) for g in gpus) if isinstance(gpus, list) else (),
    )


# --------------------------------------------------------------------------- file readers


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_events_incremental(path: Path, offset: int = 0) -> EventChunk:
    """Complete JSON lines from byte ``offset``; a torn last line is left for the next call.

    """
    from bttui.runs.events import read_events

    log = read_events(path, offset)
    return EventChunk(list(log.events), int(log.offset), int(getattr(log, "torn", 0)))


def tail_lines(path: Path, max_lines: int = 200) -> list[str]:
    """The last ``max_lines`` lines of a text file, reading at most the last 64 KiB."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > LOG_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line was probably cut in the middle
    return lines[-max_lines:]


def _signature(run_dir: Path) -> str | None:
    """inode:mtime_ns:size of run.json and status.json (None without run.json): a rewrite changes it."""
    parts = []
    for name in ("run.json", "status.json"):
        try:
            st = os.stat(run_dir / name)
        except OSError:
            if name == "run.json":
                return None
            parts.append("-")
        else:
            parts.append(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)


def _config_datasets(path: Path) -> tuple[str, ...] | None:
    """Dataset ids named in config.toml's [pretrain] and [finetune] sections, in order, no repeats
    (None when the file is missing or unreadable: it may still be being written)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    found: list[str] = []
    for section in ("pretrain", "finetune"):
        sec = config.get(section)
        names = sec.get("datasets") if isinstance(sec, dict) else None
        if isinstance(names, list):
            found += [n for n in names if isinstance(n, str) and n not in found]
    return tuple(found)


@dataclass
class _CachedRun:
    """What list_runs keeps per run directory between calls."""

    sig: str
    status_data: dict
    row: "RunRow"
    active: bool


# --------------------------------------------------------------------------- the store source


class RunSource(Protocol):
    root: Path
    label: str

    def list_runs(self) -> list[RunRow]: ...

    def get_run(self, run_id: str) -> RunRow | None: ...

    def read_events(self, run_id: str, offset: int = 0) -> EventChunk: ...

    def read_summary(self, run_id: str) -> dict | None: ...

    def read_log_tail(self, run_id: str, max_lines: int = 200) -> list[str]: ...

    def read_embedding(self, run_id: str, result: dict, method: str) -> dict | None: ...

    def read_config(self, run_id: str) -> dict | None: ...


def _home_label(root: Path) -> str:
    try:
        return "~/" + str(root.relative_to(Path.home()))
    except ValueError:
        return str(root)


class StoreSource:
    """The run store seen by the TUI: ``bttui.runs`` Store + Index when present, run files otherwise.

    Statuses are liveness-checked against the injected clock, so a frozen clock
    gives the same "running"/"crashed" answer on every machine.
    """

    def __init__(self, root: str | os.PathLike, clock: Clock | None = None, label: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.clock = clock or SystemClock()
        self.label = label if label is not None else _home_label(self.root)
        self._lock = threading.Lock()
        self._dirs: dict[str, Path] = {}
        self._cache: dict[str, _CachedRun] = {}
        self._dataset_cache: dict[str, tuple[str, ...]] = {}

    def list_runs(self) -> list[RunRow]:
        """Every run, newest first. Only run directories whose run.json/status.json changed are re-read;
        queued and running ones get their liveness re-checked against the clock on every call."""
        with self._lock:
            rows = self._scan()
            self._dirs = {r.id: r.run_dir for r in rows if r.run_dir is not None}
        rows.sort(key=lambda r: (r.created or 0.0, r.id), reverse=True)
        return rows

    def _scan(self) -> list[RunRow]:
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        from bttui.runs.store import is_run_entry

        rows: list[RunRow] = []
        cache: dict[str, _CachedRun] = {}
        for entry in entries:
            try:
                if not is_run_entry(entry.name) or not entry.is_dir():
                    continue
            except OSError:
                continue
            d = Path(entry.path)
            sig = _signature(d)
            if sig is None:
                continue  # no run.json: not a run
            cached = self._cache.get(entry.name)
            if cached is None or cached.sig != sig:
                cached = self._read_run(d, sig)
                if cached is None:
                    continue
            elif cached.active:
                # Same files, but the trainer may have died since: liveness depends on the clock and /proc.
                status, reason = self._effective(cached.status_data, d)
                if (status, reason) != (cached.row.status, cached.row.reason):
                    cached.row = replace(cached.row, status=status, reason=reason)
            cache[entry.name] = cached
            rows.append(cached.row)
        self._cache = cache
        return rows

    def _read_run(self, d: Path, sig: str) -> "_CachedRun | None":
        run_data = _read_json(d / "run.json")
        if run_data is None:
            return None
        status_data = _read_json(d / "status.json") or {"status": "queued"}
        run_id = str(run_data.get("id") or d.name)
        status, reason = self._effective(status_data, d)
        row = row_from_parts(run_id, run_data, status_data, status, reason, d, self._datasets(run_id, d))
        active = str(status_data.get("status") or "queued") in ("queued", "running")
        return _CachedRun(sig, status_data, row, active)

    def _datasets(self, run_id: str, run_dir: Path) -> tuple[str, ...]:
        """The datasets a run's config names, read once per run: config.toml never changes after creation."""
        found = self._dataset_cache.get(run_id)
        if found is None:
            found = _config_datasets(run_dir / "config.toml")
            if found is None:
                return ()  # not cached: the launcher may not have written it yet
            self._dataset_cache[run_id] = found
        return found

    def _effective(self, status_data: dict, run_dir: Path | None = None) -> tuple[str, str | None]:
        from bttui.runs.status import effective_status

        status, reason = effective_status(status_data, now=self.clock.now())
        if run_dir is not None and status in ("queued", "running") and (run_dir / "slurm.json").is_file():
            from bttui.runs.store import slurm_adjusted

            status, reason = slurm_adjusted(run_dir, status, reason)
        return status, reason

    def _dir(self, run_id: str) -> Path:
        d = self._dirs.get(run_id)
        return d if d is not None else self.root / run_id

    def get_run(self, run_id: str) -> RunRow | None:
        d = self._dir(run_id)
        run_data = _read_json(d / "run.json")
        if run_data is None:
            return None
        status_data = _read_json(d / "status.json") or {"status": "queued"}
        status, reason = self._effective(status_data, d)
        return row_from_parts(run_id, run_data, status_data, status, reason, d, self._datasets(run_id, d))

    def read_events(self, run_id: str, offset: int = 0) -> EventChunk:
        return read_events_incremental(self._dir(run_id) / "events.jsonl", offset)

    def read_summary(self, run_id: str) -> dict | None:
        return _read_json(self._dir(run_id) / "summary.json")

    def read_log_tail(self, run_id: str, max_lines: int = 200) -> list[str]:
        return tail_lines(self._dir(run_id) / "train.log", max_lines)

    def read_embedding(self, run_id: str, result: dict, method: str) -> dict | None:
        """The cell's ``embedding_<method>.npz`` as plain lists (None when absent or unreadable)."""
        return load_embedding(embedding_path(self._dir(run_id), result, method))

    def read_config(self, run_id: str) -> dict | None:
        """The run's resolved config.toml as a dict (None when absent or unreadable)."""
        import tomllib

        try:
            with open(self._dir(run_id) / "config.toml", "rb") as fh:
                return tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            return None


def embedding_path(run_dir: Path, result: dict, method: str) -> Path:
    """The cell's ``embedding_<method>.npz`` (in ``bttui.results.cell_artifacts_dir``)."""
    from bttui.results import cell_artifacts_dir

    return Path(cell_artifacts_dir(run_dir, result)) / f"embedding_{method}.npz"


def load_embedding(path: Path) -> dict | None:
    """coords [N][2], labels [N], class_names, method (``bttui.export.read_embedding_file``) as plain lists;
    None when the file is absent, unreadable or not N x 2 coordinates with one label each."""
    import numpy as np

    from bttui.export import read_embedding_file

    try:
        emb = read_embedding_file(path)
        coords = np.asarray(emb["coords"], dtype=float)
        labels = np.asarray(emb["labels"]).astype(int)
    except (OSError, KeyError, ValueError):
        return None
    if coords.ndim != 2 or coords.shape[1] != 2 or len(labels) != len(coords):
        return None
    return {"coords": coords.tolist(), "labels": labels.tolist(), "class_names": emb["class_names"],
            "method": emb["method"]}


# --------------------------------------------------------------------------- sample store (tests, demos)

# 2024-11-25 16:00:00 UTC: every timestamp of the sample store is relative to this.
SAMPLE_NOW = float(calendar.timegm((2024, 11, 25, 16, 0, 0)))

SAMPLE_CLASSES = ["heart", "l. lung [L]", "r. lung", "liver", "spleen"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_run(root: Path, run_id: str, name: str, created: float, status: dict,
               events: Iterable[dict] = (), summary: dict | None = None, log: str = "",
               datasets: dict[str, list[str]] | None = None, sweep_id: str | None = None) -> Path:
    d = root / run_id
    d.mkdir(parents=True, exist_ok=True)
    run = {"format": 1, "id": run_id, "name": name, "created": _iso(created), "host": "sample-host",
           "boot_id": "sample-boot", "git_commit": None, "versions": {"bttui": "0.1.0"}, "hardware": {},
           "lineage": {}, "sweep_id": sweep_id, "config_path": None}
    (d / "run.json").write_text(json.dumps(run, indent=1))
    if datasets:
        # Only the sections' dataset lists: enough for the runs table's Datasets column and filter.
        (d / "config.toml").write_text("".join(f'[{section}]\ndatasets = {json.dumps(names)}\n'
                                               for section, names in datasets.items()))
    base = {"reason": None, "pid": None, "pid_start": None, "host": "sample-host", "boot_id": "sample-boot",
            "heartbeat": None, "started": None, "ended": None, "stage": None, "cell": None}
    base.update(status)
    (d / "status.json").write_text(json.dumps(base, indent=1))
    with open(d / "events.jsonl", "w") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary, indent=1))
    if log:
        (d / "train.log").write_text(log)
    return d


def _confusion(n_classes: int, per_class: int, acc: float, shift: int) -> list[list[int]]:
    rows = []
    for i in range(n_classes):
        right = int(round(per_class * min(1.0, acc + 0.04 * ((i + shift) % 3 - 1))))
        row = [0] * n_classes
        row[i] = right
        wrong = per_class - right
        for k in range(wrong):
            j = (i + 1 + (k % (n_classes - 1))) % n_classes
            row[j] += 1
        rows.append(row)
    return rows


def _result(cell: str, init: str, strategy: str, fraction: float, acc: float, shift: int, ci: bool) -> dict:
    cm = _confusion(len(SAMPLE_CLASSES), 20, acc, shift)
    per_class = [cm[i][i] / sum(cm[i]) for i in range(len(cm))]
    total = sum(map(sum, cm))
    test_acc = sum(cm[i][i] for i in range(len(cm))) / total
    item = {"cell": cell, "dataset": "organs_sagittal", "task": "organ label", "init": init,
            "strategy": strategy, "label_fraction": fraction, "n_train": int(400 * fraction), "seed": 0,
            "status": "completed", "test_accuracy": test_acc, "per_class_accuracy": per_class,
            "confusion_matrix": cm, "class_names": list(SAMPLE_CLASSES),
            "lineage": {"backbone_from": init}}
    if ci:
        item["test_accuracy_ci"] = [max(0.0, test_acc - 0.045), min(1.0, test_acc + 0.045)]
    return item


def _write_embedding(folder: Path, n_classes: int, shift: int, per_class: int = 12) -> None:
    """A fixed t-SNE-like picture: one ring-shaped cluster per class (no randomness, so snapshots hold)."""
    import math

    import numpy as np

    coords, labels = [], []
    for c in range(n_classes):
        cx, cy = 10 * math.cos(2 * math.pi * c / n_classes), 10 * math.sin(2 * math.pi * c / n_classes)
        for k in range(per_class):
            a = 2 * math.pi * k / per_class
            radius = 1.5 + (k % 3) * 0.5 + shift
            coords.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
            labels.append(c)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "embedding_tsne.npz", coords=np.asarray(coords, dtype=np.float32),
             labels=np.asarray(labels, dtype=np.int64), class_names=np.asarray(SAMPLE_CLASSES),
             indices=np.arange(len(labels)), method=np.asarray("tsne"))


def write_sample_store(root: str | os.PathLike, now: float = SAMPLE_NOW) -> Path:
    """Hand-written run directories with fixed timestamps: one of each status, a live pretraining
    run with step/epoch/health events and a completed fine-tuning sweep with confusion matrices."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    # 1. live pretraining run (heartbeat 4 s before `now`)
    t0 = now - 3 * 3600 - 12 * 60
    events: list[dict] = [{"t": t0, "type": "config", "config": {"name": "crc-bt-paper"}},
                          {"t": t0, "type": "stage_start", "stage": "pretrain"}]
    n_epochs_done = 12
    steps_per_epoch = 40
    for ep in range(1, n_epochs_done + 1):
        for k in range(0, steps_per_epoch, 10):
            step = (ep - 1) * steps_per_epoch + k
            loss = 2000.0 * (0.82 ** (step / 40)) + 300.0
            events.append({"t": t0 + step * 20.0, "type": "step", "stage": "pretrain", "epoch": ep, "step": step,
                           "loss": loss, "on_diag": loss * 0.7, "off_diag": loss * 0.3, "lr": 0.03 * (1 - step / 2000),
                           "images_per_s": 3400.0 + (step % 7) * 3, "data_wait": 0.03,
                           "rss_mb": 2900.0 + step / 4, "gpu_mem_allocated_mb": 9800.0 + (step % 5) * 20,
                           "gpu_mem_reserved_mb": 10400.0, "gpu_mem_peak_mb": 11300.0,
                           "gpu_mem_used_mb": 38000.0 + (step % 3) * 100, "gpu_mem_total_mb": 81920.0,
                           "gpu_util": 90.0 + step % 8})
        size = 8
        xcorr = [[(1.0 - 0.5 * 0.8 ** ep) if i == j else (0.3 * 0.8 ** ep) * (1 if (i + j) % 2 else -1)
                  for j in range(size)] for i in range(size)]
        events.append({"t": t0 + ep * steps_per_epoch * 20.0, "type": "epoch", "stage": "pretrain", "epoch": ep,
                       "step": ep * steps_per_epoch, "loss": 2000.0 * (0.82 ** ep) + 300.0,
                       "emb_std": 0.2 + 0.02 * ep, "effective_rank": 900 + 60 * ep, "rank_dim": 2048,
                       "knn_accuracy": 0.6 + 0.02 * ep, "cross_correlation": xcorr})
    events.append({"t": now - 10, "type": "log", "level": "info", "message": "epoch 12 done in 27.1 s, checkpoint saved"})
    log = "".join(f"16:{m:02d}:00 epoch {e} done in 27.{e} s\n" for m, e in zip(range(40, 52), range(1, 13)))
    log += "15:59:50 [warn] data loader slow: 3% wait [not markup]\n"
    _write_run(root, "20241125-124800-crc-bt-paper-a1b2", "crc-bt-paper", t0,
               {"status": "running", "pid": 999999, "pid_start": 1, "heartbeat": now - 4, "started": t0,
                "stage": "pretrain", "epoch": 12, "epochs": 100, "step": 480, "steps": 4000,
                "device": "cuda", "gpus": ["0"],
                "cells_done": 0, "cells_total": 2, "loss": 2000.0 * (0.82 ** 12) + 300.0,
                "cells": {"organs_sagittal/barlow_twins/linear/1/s0": "pending",
                          "organs_sagittal/imagenet/linear/1/s0": "pending"}},
               events, None, log, datasets={"pretrain": ["crc"], "finetune": ["organs_sagittal"]})

    # 2. queued sweep member
    _write_run(root, "20241125-154000-crc-sweep-lr-3-c3d4", "crc-sweep-lr/3", now - 20 * 60, {"status": "queued"},
               datasets={"pretrain": ["crc"]}, sweep_id="sw-20241125-crc-lr-7c1d")

    # 3. completed fine-tuning sweep with results
    t2 = now - 26 * 3600
    results = [
        _result("organs_sagittal/barlow_twins/linear/0.1/s0", "barlow_twins", "linear", 0.1, 0.63, 0, True),
        _result("organs_sagittal/barlow_twins/linear/1/s0", "barlow_twins", "linear", 1.0, 0.80, 1, True),
        _result("organs_sagittal/imagenet/linear/1/s0", "imagenet", "linear", 1.0, 0.50, 2, False),
    ]
    run_dir = root / "20241124-140000-organs-xdomain-e5f6"
    for i, r in enumerate(results):
        r["artifacts"] = "artifacts/cells/" + r["cell"].replace("/", "--")
        if i < 2:
            r["embeddings"] = ["tsne"]
            _write_embedding(run_dir / r["artifacts"], len(SAMPLE_CLASSES), shift=i)
    cell_events = [{"t": t2, "type": "stage_start", "stage": "finetune"}]
    for i, r in enumerate(results):
        cell_events.append({"t": t2 + 600 * i, "type": "cell_start", "stage": "finetune", "cell": r["cell"]})
        for ep in range(1, 4):
            cell_events.append({"t": t2 + 600 * i + 100 * ep, "type": "cell_epoch", "stage": "finetune",
                                "cell": r["cell"], "epoch": ep, "train_loss": 1.5 / ep, "train_accuracy": 0.5 + 0.1 * ep,
                                "val_loss": 1.6 / ep, "val_accuracy": 0.45 + 0.1 * ep})
        cell_events.append({"t": t2 + 600 * i + 500, "type": "cell_end", "stage": "finetune", "cell": r["cell"],
                            "result": r})
    _write_run(root, "20241124-140000-organs-xdomain-e5f6", "organs-xdomain", t2,
               {"status": "completed", "started": t2, "ended": t2 + 41 * 60, "heartbeat": t2 + 41 * 60,
                "stage": "finetune", "cells_done": 3, "cells_total": 3, "best_accuracy": 0.80,
                "device": "cuda", "gpus": ["1", "2"],
                "cells": {r["cell"]: "completed" for r in results}},
               cell_events, {"pretrain": None, "results": results},
               "14:00:00 fine-tuning 3 cells\n14:41:00 done\n", datasets={"finetune": ["organs_sagittal"]})

    # 4. crashed: says running, heartbeat 2 h old
    t3 = now - 5 * 3600
    _write_run(root, "20241125-110000-crc-bt-bs512-0a0b", "crc-bt-bs512", t3,
               {"status": "running", "pid": 999998, "pid_start": 1, "heartbeat": now - 2 * 3600, "started": t3,
                "stage": "pretrain", "epoch": 88, "epochs": 1000, "loss": 950.25, "device": "cuda", "gpus": ["1"]},
               datasets={"pretrain": ["crc"]})

    # 5. stopped, with a name that looks like Rich markup (must be shown literally)
    t4 = now - 50 * 3600
    _write_run(root, "20241123-140000-quick-start-9f9f", "quick[bold]start", t4,
               {"status": "stopped", "reason": "stopped by user", "started": t4, "ended": t4 + 300,
                "stage": "pretrain", "epoch": 3, "epochs": 10, "loss": 1520.0, "device": "cpu", "gpus": []},
               datasets={"pretrain": ["organs_axial"]})
    return root
