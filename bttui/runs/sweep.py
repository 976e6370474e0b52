"""Sweeps: one run per point of a grid of config overrides, queued under one sweep id; resume and summarise them.

A sweep is a manifest `<store>/.bttui/sweeps/<sweep id>.json` (the base config
path, the grid, every point's overrides) written before any run, plus runs
whose run.json carries `sweep_id` and `sweep_point` ({dotted key: value}). The
runs are the truth: a sweep whose manifest is lost is still found (and shown)
through its runs, and `resume` re-creates points whose run was never made.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bttui.errors import BttuiError
from bttui.runs.atomic import read_json, write_json_atomic
from bttui.runs.layout import iso_utc, slugify
from bttui.runs.status import COMPLETED, CRASHED, FAILED, QUEUED, RUNNING, STOPPED
from bttui.runs.store import RunRecord, Store

SWEEP_FORMAT = 1
SWEEP_DIR = (".bttui", "sweeps")
MAX_POINTS = 10_000  # a typo such as a 10^6-point grid should fail before it floods the store


def sweeps_dir(store: Store) -> Path:
    return store.root.joinpath(*SWEEP_DIR)


def new_sweep_id(name: object, now: float | None = None) -> str:
    """`sw-YYYYMMDD-HHMMSS-<slug>-<4 hex>` (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"sw-{stamp}-{slugify(name)}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- grid


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """`["finetune.lr=[1e-3, 1e-4]", "seed=[0, 1]"]` -> {"finetune.lr": [0.001, 0.0001], "seed": [0, 1]} (order kept)."""
    grid: dict[str, list] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise BttuiError(f"--grid expects KEY=[VALUES] with the values as a TOML array, e.g. "
                             f"--grid 'finetune.lr=[1e-3, 1e-4]'; got {item!r}.")
        key, _, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not key:
            raise BttuiError(f"--grid {item!r} names no config key before '='; e.g. --grid 'seed=[0, 1, 2]'.")
        try:
            values = tomllib.loads(f"v = {text}")["v"]
        except (tomllib.TOMLDecodeError, KeyError):
            values = None
        if not isinstance(values, list) or not values:
            raise BttuiError(f"--grid {key}: the values {text!r} are not a non-empty TOML array; write them in "
                             f"brackets, e.g. --grid '{key}=[1, 2]' (strings quoted: ['a', 'b']).")
        if key in grid:
            raise BttuiError(f"--grid {key} is given twice; put all its values in one array.")
        shown = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(shown)) != len(shown):
            raise BttuiError(f"--grid {key} repeats a value ({text}); each grid value must be different.")
        grid[key] = values
    if not grid:
        raise BttuiError("A sweep needs at least one --grid KEY=[VALUES], e.g. --grid 'finetune.lr=[1e-3, 1e-4]'.")
    return grid


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest."""
    keys = list(grid)
    total = math.prod(len(v) for v in grid.values())
    if total > MAX_POINTS:
        raise BttuiError(f"The grid has {total} points (more than {MAX_POINTS}); split the sweep up.")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def toml_value(value: Any) -> str:
    """A Python value written as a TOML value (what `--set KEY=VALUE` parses back to the same value)."""
    from bttui.config.load import toml_value as _toml_value

    try:
        return _toml_value(value)
    except TypeError:
        raise BttuiError(f"Grid value {value!r} ({type(value).__name__}) cannot be a config value.") from None


def point_overrides(point: dict[str, Any]) -> list[str]:
    return [f"{key}={toml_value(value)}" for key, value in point.items()]


def point_label(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in point.items())


def _same_point(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _load_point(config_path: str | os.PathLike, overrides: Sequence[str], point: dict[str, Any]) -> Any:
    from bttui.config.load import load_config

    try:
        return load_config(config_path, [*overrides, *point_overrides(point)])
    except BttuiError as err:
        raise BttuiError(f"Grid point {point_label(point)} is not a valid config, so no run of the sweep was "
                         f"created: {err}") from None


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepPoint:
    """One grid point and its run (None until created)."""

    point: dict[str, Any]
    record: RunRecord | None = None

    @property
    def status(self) -> str:
        return self.record.status if self.record is not None else "missing"

    def best_accuracy(self) -> float | None:
        if self.record is None:
            return None
        return best_accuracy(self.record)


@dataclass
class Sweep:
    """A sweep as found on disk: its manifest (may be empty) and its points with their runs."""

    id: str
    manifest: dict
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        grid = self.manifest.get("grid")
        if isinstance(grid, dict) and grid:
            return list(grid)
        keys: list[str] = []
        for p in self.points:
            keys.extend(k for k in p.point if k not in keys)
        return keys

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.points:
            out[p.status] = out.get(p.status, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.manifest.get("name"), "created": self.manifest.get("created"),
                "config_path": self.manifest.get("config_path"), "overrides": self.manifest.get("overrides", []),
                "grid": self.manifest.get("grid") or {k: [] for k in self.keys},
                "points": [{"point": p.point, "run_id": p.record.id if p.record else None, "status": p.status,
                            "reason": p.record.reason if p.record else None, "best_accuracy": p.best_accuracy()}
                           for p in self.points]}


def best_accuracy(record: RunRecord) -> float | None:
    """The best test accuracy of the run's cells (summary.json), else status.json's best_accuracy."""
    best = None
    results = record.summary().get("results")
    for item in results if isinstance(results, list) else []:
        acc = item.get("test_accuracy") if isinstance(item, dict) else None
        if isinstance(acc, (int, float)) and not isinstance(acc, bool) and acc == acc:
            best = acc if best is None else max(best, acc)
    if best is None:
        acc = record.status_data.get("best_accuracy")
        if isinstance(acc, (int, float)) and not isinstance(acc, bool) and acc == acc:
            best = float(acc)
    return best


def create_sweep(store: Store, config_path: str | os.PathLike, grid: dict[str, list], *,
                 overrides: Sequence[str] = (), submit: bool = True, sampler: Any = None,
                 settings: Any = None) -> Sweep:
    """Validate every grid point, write the manifest, create one run per point and queue them all.

    Nothing is created when any point's config is invalid.
    """
    points = grid_points(grid)
    configs = [_load_point(config_path, overrides, p) for p in points]  # all checked before the first write
    name = str(getattr(configs[0], "name", "") or "sweep")
    sweep_id = new_sweep_id(name)
    manifest = {"format": SWEEP_FORMAT, "id": sweep_id, "name": name, "created": iso_utc(),
                "config_path": os.path.abspath(config_path), "overrides": list(overrides), "grid": grid,
                "points": points}
    sweeps_dir(store).mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweeps_dir(store) / f"{sweep_id}.json", manifest)
    for point, cfg in zip(points, configs):
        store.create_run(cfg, config_path=config_path, sweep_id=sweep_id, extra={"sweep_point": point})
    sweep = load_sweep(store, sweep_id)
    if submit:
        submit_points(store, sweep, sampler=sampler, settings=settings)
    return load_sweep(store, sweep_id)


def submit_points(store: Store, sweep: Sweep, *, sampler: Any = None, settings: Any = None) -> list[str]:
    """Put every point that waits (queued, no trainer, not in the queue) into the queue; returns their run ids."""
    from bttui.runs import queue

    q = queue.Queue(store)
    queued_ids = {e.run_id for e in q.entries()}
    submitted = []
    for p in sweep.points:
        rec = p.record
        if rec is None or rec.status != QUEUED or rec.status_data.get("pid") or rec.id in queued_ids:
            continue
        queue.submit(store, rec.paths, resume=bool(rec.status_data.get("started")), sampler=sampler,
                     settings=settings)
        submitted.append(rec.id)
    return submitted


def list_sweeps(store: Store) -> list[str]:
    """Sweep ids known to the store (manifests and run.json sweep ids), newest first."""
    ids = set()
    try:
        ids.update(p.stem for p in sweeps_dir(store).glob("sw-*.json"))
    except OSError:
        pass
    for run_dir in store.run_dirs():
        data = read_json(run_dir / "run.json", default=None)
        if isinstance(data, dict) and isinstance(data.get("sweep_id"), str):
            ids.add(data["sweep_id"])
    return sorted(ids, reverse=True)


def resolve_sweep(store: Store, ref: str) -> str:
    """The sweep id `ref` names: an id or a unique id prefix ("sw-" may be left out)."""
    ref = str(ref).strip()
    known = list_sweeps(store)
    if ref in known:
        return ref
    matches = [s for s in known if s.startswith(ref) or s.startswith("sw-" + ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BttuiError(f"{ref!r} matches {len(matches)} sweeps in the store {store.root}: "
                         f"{', '.join(matches[:10])}. Give a longer prefix.")
    hint = f" Known sweeps: {', '.join(known[:5])}." if known else " The store has no sweeps."
    raise BttuiError(f"No sweep matches {ref!r} in the store {store.root}.{hint}")


def load_sweep(store: Store, ref: str) -> Sweep:
    """The sweep with its points in grid order; runs not in the manifest's grid are appended."""
    sweep_id = resolve_sweep(store, ref)
    manifest = read_json(sweeps_dir(store) / f"{sweep_id}.json", default=None)
    manifest = manifest if isinstance(manifest, dict) else {}
    runs = [r for r in store.list_runs() if r.run_data.get("sweep_id") == sweep_id]
    runs.sort(key=lambda r: r.id)
    points: list[SweepPoint] = []
    for point in manifest.get("points") or []:
        points.append(SweepPoint(point=point))
    for rec in runs:
        point = rec.run_data.get("sweep_point")
        point = point if isinstance(point, dict) else {}
        for p in points:
            # Several runs of one point (a point re-created by hand): the newest wins.
            if _same_point(p.point, point) and (p.record is None or p.record.id < rec.id):
                p.record = rec
                break
        else:
            points.append(SweepPoint(point=point, record=rec))
    return Sweep(id=sweep_id, manifest=manifest, points=points)


def resume_sweep(store: Store, ref: str, *, sampler: Any = None, settings: Any = None,
                 resume: Callable[..., Any] | None = None) -> dict[str, list[str]]:
    """Re-queue the unfinished points: failed/stopped/crashed runs resume, missing runs are created, queued runs
    that fell out of the queue go back in; running, queued and completed points are left alone.

    Returns {"resumed": [...], "created": [...], "requeued": [...], "skipped": [...]} (run ids).
    """
    from bttui.runs.control import resume_run

    resume = resume or resume_run
    sweep = load_sweep(store, ref)
    done: dict[str, list[str]] = {"resumed": [], "created": [], "requeued": [], "skipped": []}
    missing = [p for p in sweep.points if p.record is None]
    if missing:
        config_path = sweep.manifest.get("config_path")
        if not config_path:
            raise BttuiError(f"Sweep {sweep.id} lacks its manifest, so its {len(missing)} missing points cannot be "
                             f"re-created; start a new sweep.")
        overrides = sweep.manifest.get("overrides") or []
        configs = [_load_point(config_path, overrides, p.point) for p in missing]
        for p, cfg in zip(missing, configs):
            store.create_run(cfg, config_path=config_path, sweep_id=sweep.id, extra={"sweep_point": p.point})
    for p in sweep.points:
        rec = p.record
        if rec is not None and rec.status in (FAILED, STOPPED, CRASHED):
            resume(store, rec, detach=True, sampler=sampler, settings=settings)
            done["resumed"].append(rec.id)
        elif rec is not None and rec.status in (COMPLETED, RUNNING, QUEUED):
            done["skipped"].append(rec.id)
    fresh = load_sweep(store, sweep.id)
    created_ids = {p.record.id for p in fresh.points if p.record is not None} - {
        p.record.id for p in sweep.points if p.record is not None}
    done["created"] = sorted(created_ids)
    submitted = submit_points(store, fresh, sampler=sampler, settings=settings)
    done["requeued"] = [r for r in submitted if r not in created_ids]
    done["skipped"] = [r for r in done["skipped"] if r not in submitted]
    return done


def follow_sweep(store: Store, sweep_id: str, *, on_change: Callable[[SweepPoint, str], None],
                 poll: float = 2.0, drain_every: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 timeout: float | None = None) -> Sweep:
    """Poll until every point ends; `on_change(point, old_status)` for each status change.

    There is no daemon: a trainer that is killed never starts the next run, so the
    follower drains the queue itself every `drain_every` seconds.
    """
    from bttui.runs.queue import start_ready
    from bttui.runs.status import FINAL_STATUSES

    seen: dict[int, str] = {}
    last_drain = time.monotonic()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        sweep = load_sweep(store, sweep_id)
        for i, p in enumerate(sweep.points):
            if seen.get(i) != p.status:
                old = seen.get(i, "")
                seen[i] = p.status
                on_change(p, old)
        if all(p.status in FINAL_STATUSES for p in sweep.points):
            return sweep
        if deadline is not None and time.monotonic() >= deadline:
            return sweep
        if time.monotonic() - last_drain >= drain_every:
            last_drain = time.monotonic()
            try:
                start_ready(store)
            except BttuiError:
                pass
        sleep(poll)
