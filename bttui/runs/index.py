"""A SQLite cache of the run list (<store>/.bttui/index.sqlite) for fast browsing; rebuildable from the run folders.

`refresh()` re-reads only runs whose status.json, summary.json or run.json
changed (by mtime and size), drops vanished runs, and re-checks liveness of
queued and running rows every time, so the stored status is the effective one.
The file is a cache: a corrupt one is deleted and rebuilt; a read-only store
gets an in-memory index.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Iterable

from bttui.faults import fault_point
from bttui.runs import liveness
from bttui.runs.atomic import read_json
from bttui.runs.layout import RunPaths
from bttui.runs.status import ACTIVE_STATUSES, effective_status, progress
from bttui.runs.store import Store, db_dir, load_record, slurm_adjusted

SCHEMA_VERSION = 1
COLUMNS = ("id", "name", "created", "status", "reason", "stage", "progress", "best_accuracy", "datasets",
           "sweep_id", "updated", "sig")
_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT,
    created TEXT,
    status TEXT,
    reason TEXT,
    stage TEXT,
    progress REAL,
    best_accuracy REAL,
    datasets TEXT,
    sweep_id TEXT,
    updated REAL,
    sig TEXT
)
"""
_SIG_FILES = ("status.json", "summary.json", "run.json")


def signature(run_dir: Path) -> str:
    """inode:mtime_ns:size of status.json, summary.json and run.json ("-" if missing), joined by "|".

    The inode changes on every atomic rewrite, so two rewrites within one
    mtime tick with equal sizes still count as a change.
    """
    parts = []
    for name in _SIG_FILES:
        try:
            st = os.stat(run_dir / name)
        except OSError:
            parts.append("-")
        else:
            parts.append(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _best_accuracy(status_data: dict, summary: dict) -> float | None:
    best = _real(status_data.get("best_accuracy"))
    results = summary.get("results") if isinstance(summary, dict) else None
    if isinstance(results, list):
        for item in results:
            if isinstance(item, dict):
                acc = _real(item.get("test_accuracy"))
                if acc is not None and (best is None or acc > best):
                    best = acc
    return best


def _datasets(paths: RunPaths) -> list[str]:
    try:
        with open(paths.config_toml, "rb") as fh:
            config = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    found: list[str] = []
    for section in ("pretrain", "finetune"):
        names = config.get(section, {}).get("datasets") if isinstance(config.get(section), dict) else None
        if isinstance(names, list):
            found += [n for n in names if isinstance(n, str) and n not in found]
    return found


_CORRUPT_WORDS = ("not a database", "malformed", "encrypted", "no such table", "no such column")


def _is_corrupt(err: sqlite3.Error) -> bool:
    """True for errors that mean the file is damaged or of another schema (rebuild), not busy or read-only."""
    text = str(err).lower()
    return any(word in text for word in _CORRUPT_WORDS)


class Index:
    """The run index of one store; methods are safe to call from several threads."""

    def __init__(self, store: Store | str | os.PathLike) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.path = db_dir(self.store.root) / "index.sqlite"  # local disk when the store is on NFS
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self.last_changed: set[str] = set()
        """Ids added, changed or removed by the latest refresh."""
        self.in_memory = False
        """True when the file could not be used (read-only store) and the index lives in memory."""

    # ------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._open(str(self.path))
        except OSError:
            conn = self._open_memory()
        except sqlite3.DatabaseError as err:
            conn = None
            if _is_corrupt(err):
                try:
                    conn = self._replace_corrupt()
                except (OSError, sqlite3.Error):
                    conn = None
            # Read-only store (a copied run folder on a share) or a file we cannot open: browse uncached.
            conn = conn or self._open_memory()
        self._conn = conn
        return conn

    def _open_memory(self) -> sqlite3.Connection:
        self.in_memory = True
        return self._open(":memory:")

    def _open(self, target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=5.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            if target != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                with conn:
                    conn.execute("DROP TABLE IF EXISTS runs")
                    conn.execute(_CREATE)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute("SELECT id FROM runs LIMIT 1").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _replace_corrupt(self) -> sqlite3.Connection:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
        return self._open(str(self.path))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, work):
        # One retry after replacing a corrupt file: the index is only a cache.
        with self._lock:
            try:
                return work(self._connect())
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err) or self.in_memory:
                    raise
                self._conn = self._replace_corrupt()
                return work(self._conn)

    # ------------------------------------------------------------ public

    def refresh(self) -> list[dict]:
        """Bring the index up to date with the run folders; returns every row, newest first."""
        if not self.store.root.is_dir():
            self.last_changed = set()
            return []
        self._run(self._refresh)
        return self.rows()

    def rebuild(self) -> list[dict]:
        """Forget everything and re-read every run folder; returns every row, newest first."""
        if not self.store.root.is_dir():
            self.last_changed = set()
            return []

        def clear(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("DELETE FROM runs")

        self._run(clear)
        fault_point("index.rebuild.cleared")
        return self.refresh()

    def rows(self, status: str | Iterable[str] | None = None, limit: int | None = None,
             offset: int = 0) -> list[dict]:
        """Indexed runs newest first, optionally only those with `status` (one word or several)."""
        if not self.store.root.is_dir():
            return []
        sql = f"SELECT {', '.join(COLUMNS)} FROM runs"
        params: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            if not wanted:
                return []
            sql += f" WHERE status IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]

        def query(conn: sqlite3.Connection) -> list[dict]:
            return [self._row_dict(row) for row in conn.execute(sql, params)]

        return self._run(query)

    @staticmethod
    def _row_dict(row: tuple) -> dict:
        out = dict(zip(COLUMNS, row))
        try:
            out["datasets"] = json.loads(out["datasets"]) if out["datasets"] else []
        except ValueError:
            out["datasets"] = []
        return out

    # ------------------------------------------------------------ refresh work

    def _refresh(self, conn: sqlite3.Connection) -> None:
        now, host, boot = time.time(), liveness.hostname(), liveness.boot_id()
        known = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, sig, status FROM runs")}
        seen: set[str] = set()
        upserts: list[tuple] = []
        status_updates: list[tuple] = []
        for run_dir in self.store.run_dirs():
            if not (run_dir / "run.json").is_file():
                continue
            run_id = run_dir.name
            sig = signature(run_dir)
            old = known.get(run_id)
            if old is None or old[0] != sig:
                row = self._read_row(run_dir, sig, now, host, boot)
                if row is None:
                    continue  # unreadable run.json: not a run (it leaves the index if it was one)
                seen.add(run_id)
                upserts.append(row)
                continue
            seen.add(run_id)
            if old[1] in ACTIVE_STATUSES:
                # Unchanged files, but the process behind them may have died since the last refresh.
                data = read_json(run_dir / "status.json", default=None)
                data = data if isinstance(data, dict) else {}
                status, reason = slurm_adjusted(run_dir, *effective_status(data, now, host=host, boot=boot))
                if status != old[1]:
                    status_updates.append((status, reason, now, run_id))
        gone = [run_id for run_id in known if run_id not in seen]
        with conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
                upserts)
            conn.executemany("UPDATE runs SET status = ?, reason = ?, updated = ? WHERE id = ?", status_updates)
            conn.executemany("DELETE FROM runs WHERE id = ?", [(run_id,) for run_id in gone])
            fault_point("index.refresh.mid_transaction")
        self.last_changed = {row[0] for row in upserts} | {u[3] for u in status_updates} | set(gone)

    def _read_row(self, run_dir: Path, sig: str, now: float, host: str, boot: str | None) -> tuple | None:
        record = load_record(run_dir, now=now, host=host, boot=boot)
        if record is None:
            return None
        data = record.status_data
        stage = data.get("stage")
        sweep = record.run_data.get("sweep_id")
        return (
            record.id,
            record.name,
            record.created,
            record.status,
            record.reason,
            stage if isinstance(stage, str) else None,
            progress(data),
            _best_accuracy(data, record.summary()),
            json.dumps(_datasets(record.paths)),
            sweep if isinstance(sweep, str) else None,
            now,
            sig,
        )
