"""The run store: a folder of run directories; create runs atomically, list them, resolve references.

The run directory is the source of truth; nothing here caches (see index.py
for the SQLite cache). A store that does not exist yet lists as empty and is
created by the first `create_run`.
"""

from __future__ import annotations

import difflib
import os
import platform
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bttui.errors import BttuiError
from bttui.faults import fault_point
from bttui.runs import liveness
from bttui.runs.atomic import read_json, write_json_atomic, write_text_atomic
from bttui.runs.events import EventLog, read_events
from bttui.runs.layout import RunPaths, is_safe_component, iso_utc, new_run_id, slugify
from bttui.runs.status import ACTIVE_STATUSES, QUEUED, RUN_STATUSES, effective_status

RUN_FORMAT = 1
DEFAULT_STORE = "runs"
RESERVED = frozenset({"cache"})
"""Store entries that are never runs (hidden entries such as .bttui and .tmp-* are skipped too)."""


def resolve_store_root(cli_value: str | os.PathLike | None = None) -> Path:
    """`--store` > `$BTTUI_STORE` > the settings file's `store` > `./runs`, as an absolute path."""
    if cli_value:
        chosen: str | os.PathLike = cli_value
    elif os.environ.get("BTTUI_STORE"):
        chosen = os.environ["BTTUI_STORE"]
    else:
        chosen = _settings_store() or DEFAULT_STORE
    return Path(os.path.abspath(os.path.expanduser(os.fspath(chosen))))


def _settings_store() -> str | None:
    try:
        from bttui.config.settings import load_settings
    except ImportError:  # the config package is optional for browsing copied runs
        return None
    return load_settings().store


# SQLite's WAL needs shared memory and POSIX locks that these filesystems do not give reliably.
NETWORK_FS_PREFIXES = ("nfs", "cifs", "smb", "fuse", "9p", "afs", "sshfs", "davfs", "glusterfs", "ceph")
_db_dirs: dict[str, Path] = {}


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the filesystem holding `path` (its nearest existing parent), from /proc/mounts; None if unknown."""
    p = os.path.realpath(os.path.abspath(os.fspath(path)))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    best, best_type = "", None
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                # Mount points escape spaces and tabs as octal (\040).
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
                inside = p == point or p.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, best_type = point, fields[2]
    except OSError:
        return None
    return best_type


def db_dir(store_root: str | os.PathLike) -> Path:
    """Where the store's index and queue databases live: `<store>/.bttui`, or for a store on a network
    filesystem a local folder (settings `local_db_dir`, else $XDG_CACHE_HOME/bttui) / <hash of the store path>."""
    root = os.path.abspath(os.path.expanduser(os.fspath(store_root)))
    cached = _db_dirs.get(root)
    if cached is not None:
        return cached
    fs = (filesystem_type(root) or "").lower()
    if fs.startswith(NETWORK_FS_PREFIXES):
        base = None
        try:
            from bttui.config.settings import load_settings

            base = load_settings().local_db_dir
        except Exception:  # noqa: BLE001 - a broken settings file: the default location still works
            base = None
        if not base:
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            base = os.path.join(cache, "bttui")
        import hashlib

        chosen = Path(base) / hashlib.sha256(root.encode()).hexdigest()[:16]
    else:
        chosen = Path(root) / ".bttui"
    _db_dirs[root] = chosen
    return chosen


def _config_api() -> tuple[Any, Any]:
    try:
        from bttui.config import config_to_toml, validate  # type: ignore[attr-defined]
    except ImportError:
        from bttui.config.load import config_to_toml, validate
    return config_to_toml, validate


def _cells_total(cfg: Any) -> int | None:
    try:
        from bttui.config.cells import expand_cells
    except ImportError:
        return None
    return len(expand_cells(cfg))


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD of the git repository containing `cwd` (default: the working directory), or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=2, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _versions() -> dict[str, str]:
    from bttui import __version__

    return {"python": platform.python_version(), "bttui": __version__}


def _hardware() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine()}


@dataclass
class RunRecord:
    """One run as found on disk; `status` is the effective status (crash detection applied)."""

    id: str
    name: str
    created: str
    paths: RunPaths
    status: str
    reason: str | None
    status_data: dict
    run_data: dict

    def summary(self) -> dict:
        """summary.json ({} until the trainer writes it)."""
        data = read_json(self.paths.summary, default=None)
        return data if isinstance(data, dict) else {}

    def config_dict(self) -> dict:
        """config.toml parsed ({} when missing or unreadable)."""
        try:
            with open(self.paths.config_toml, "rb") as fh:
                return tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            return {}

    def events(self, offset: int = 0) -> EventLog:
        """events.jsonl from byte `offset`."""
        return read_events(self.paths.events, offset)

    @property
    def stored_status(self) -> str | None:
        """The status word in status.json (never "crashed")."""
        return self.status_data.get("status")


def load_record(run_dir: str | os.PathLike, *, now: float | None = None, host: str | None = None,
                boot: str | None = None) -> RunRecord | None:
    """The run in `run_dir`, or None if it has no readable run.json (not a run)."""
    paths = RunPaths(Path(run_dir))
    run_data = read_json(paths.run_json, default=None)
    if not isinstance(run_data, dict):
        return None
    status_data = read_json(paths.status, default=None)
    status_data = status_data if isinstance(status_data, dict) else {}
    status, reason = slurm_adjusted(paths.dir, *effective_status(status_data, now, host=host, boot=boot))
    name = run_data.get("name")
    created = run_data.get("created")
    return RunRecord(
        id=paths.id,
        name=name if isinstance(name, str) else paths.id,
        created=created if isinstance(created, str) else "",
        paths=paths,
        status=status,
        reason=reason,
        status_data=status_data,
        run_data=run_data,
    )


def slurm_adjusted(run_dir: Path, status: str, reason: str | None) -> tuple[str, str | None]:
    """A queued/running Slurm run (it has a slurm.json) whose job squeue no longer lists is crashed."""
    if status in ACTIVE_STATUSES and (run_dir / "slurm.json").is_file():
        from bttui.runs.slurm import adjust_status

        return adjust_status(run_dir, status, reason)
    return status, reason


def is_run_entry(name: str) -> bool:
    """False for store entries that are never runs: hidden ones (.bttui, .tmp-*) and cache/."""
    return is_safe_component(name) and name not in RESERVED


class Store:
    """A run store rooted at `root`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------ creating

    def create_run(self, cfg: Any, *, config_path: str | os.PathLike | None = None,
                   sweep_id: str | None = None, status: str = QUEUED, extra: dict | None = None) -> RunPaths:
        """Make a complete run directory for `cfg` and return its paths.

        `extra` adds keys to run.json (e.g. a sweep's `sweep_point`); it never replaces the standard ones.

        The directory is built as `.tmp-<id>` inside the store and renamed into
        place, so listings never see a half-made run.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        config_to_toml, validate = _config_api()
        validate(cfg)  # a config built in code (a form) gets the file checks before anything is written
        toml_text = config_to_toml(cfg)
        cells_total = _cells_total(cfg)
        name = str(getattr(cfg, "name", "") or "run")
        self.root.mkdir(parents=True, exist_ok=True)
        host, boot, commit = liveness.hostname(), liveness.boot_id(), git_commit()
        for _ in range(100):
            now = time.time()
            run_id = new_run_id(name, now)
            final = self.root / run_id
            if final.exists():
                continue
            tmp = self.root / f".tmp-{run_id}"
            try:
                tmp.mkdir()
            except FileExistsError:
                continue
            try:
                paths = RunPaths(tmp)
                run_data = {
                    "format": RUN_FORMAT,
                    "id": run_id,
                    "name": name,
                    "created": iso_utc(now),
                    "host": host,
                    "boot_id": boot,
                    "git_commit": commit,
                    "versions": _versions(),
                    "hardware": _hardware(),
                    "lineage": {},
                    "sweep_id": sweep_id,
                    "config_path": os.path.abspath(config_path) if config_path is not None else None,
                }
                for key, value in (extra or {}).items():
                    run_data.setdefault(key, value)
                write_json_atomic(paths.run_json, run_data)
                write_text_atomic(paths.config_toml, toml_text)
                status_data: dict[str, Any] = {
                    "status": status, "reason": None, "pid": None, "pid_start": None,
                    "host": host, "boot_id": boot, "heartbeat": now, "started": None, "ended": None,
                    "stage": None, "cell": None, "cells_done": 0, "cells_total": cells_total, "cells": {},
                }
                write_json_atomic(paths.status, status_data)
                write_text_atomic(paths.events, "")
                paths.checkpoints.mkdir()
                paths.artifacts.mkdir()
                # rename() of a directory onto an existing empty one succeeds on Linux; the check above
                # plus the random suffix keeps that from clobbering another run in practice.
                if final.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                    continue
                fault_point("store.create_run.tmp_built")
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return RunPaths(final)
        raise BttuiError(f"Could not find a free run id in {self.root} after 100 tries; is the store writable?")

    # ------------------------------------------------------------ reading

    def run_dirs(self) -> Iterator[Path]:
        """Directories in the store that may be runs (hidden, .tmp-* and cache/ entries excluded), unsorted."""
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            try:
                if is_run_entry(entry.name) and entry.is_dir():
                    yield Path(entry.path)
            except OSError:
                continue

    def list_runs(self) -> list[RunRecord]:
        """Every run, newest first (ids start with their UTC creation time)."""
        now, host, boot = time.time(), liveness.hostname(), liveness.boot_id()
        records = []
        for run_dir in self.run_dirs():
            record = load_record(run_dir, now=now, host=host, boot=boot)
            if record is not None:
                records.append(record)
        records.sort(key=lambda r: r.id, reverse=True)
        return records

    def get(self, run_id: str) -> RunRecord:
        """The run with exactly this id; BttuiError if there is none."""
        if not is_run_entry(run_id):
            raise BttuiError(f"{run_id!r} is not a valid run id (run ids look like 20241125-210405-my-run-3fa2 "
                             f"and name a folder directly inside the store {self.root}).")
        record = load_record(self.root / run_id)
        if record is None:
            raise BttuiError(f"No run {run_id!r} in the store {self.root} (no folder with a readable run.json). "
                             f"List runs with `bttui list`.")
        return record

    def resolve(self, ref: str) -> RunRecord:
        """The run `ref` names: an exact id, a unique id prefix, a unique run name, or a unique name slug.

        "latest" (or "last") names the newest run when no run is called that.
        """
        ref = str(ref).strip()
        if not ref:
            raise BttuiError(f"An empty run reference names no run; give a run id, an id prefix or a run name "
                             f"from the store {self.root}.")
        if is_run_entry(ref) and (self.root / ref / "run.json").is_file():
            record = load_record(self.root / ref)
            if record is not None:
                return record
        runs = self.list_runs()
        by_prefix = [r for r in runs if r.id.startswith(ref)]
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise BttuiError(self._ambiguous(ref, "is a prefix of", by_prefix))
        by_name = [r for r in runs if r.name == ref]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise BttuiError(self._ambiguous(ref, "is the name of", by_name))
        # Names as typed differently ("My Run" for "my-run"): the slug of the name in the id.
        by_slug = [r for r in runs if slugify(r.name) == slugify(ref)]
        if len(by_slug) == 1:
            return by_slug[0]
        if len(by_slug) > 1:
            raise BttuiError(self._ambiguous(ref, "matches the names of", by_slug))
        if ref in ("latest", "last") and runs:
            return runs[0]
        candidates = sorted({r.id for r in runs} | {r.name for r in runs})
        close = difflib.get_close_matches(ref, candidates, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        if not runs:
            hint = " The store has no runs yet."
        raise BttuiError(f"No run matches {ref!r} in the store {self.root}: a reference must be a run id, a unique "
                         f"id prefix or a unique run name.{hint} List runs with `bttui list`.")

    def _ambiguous(self, ref: str, relation: str, matches: list[RunRecord]) -> str:
        shown = ", ".join(f"{r.id} ({r.name})" for r in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        return (f"{ref!r} {relation} {len(matches)} runs in the store {self.root}: {shown}{more}. "
                f"Give a longer id prefix or the full run id.")
