"""The run queue: a crash-safe SQLite table of runs waiting for a GPU or CPU slot, drained without a daemon.

`<store>/.bttui/queue.sqlite` (WAL, 30 s busy timeout, every change in a
`BEGIN IMMEDIATE` transaction) holds one row per waiting run, in submission
order. Nobody watches it: every launch, every finishing trainer (its exit hook
calls `after_run`) and the TUI call `start_ready`, which walks the queue in
order and starts each run whose resources can be reserved (bttui.runs.reserve),
stopping at the first that cannot (first come, first served).

A foreground `bttui run` puts its run in the same queue with itself as owner
and starts it itself when its turn comes (`take_turn`); if the owner dies, the
run is started detached by the next drain. A row is deleted only after its
trainer has been spawned (and its pid recorded in status.json) or when its run
is no longer waiting, so a crash at any point loses no queued run and starts
none twice. A run created but never queued (its launcher killed in between) is
put in the queue by the next drain once it is a minute old (`adopt_stranded`),
or at once by `bttui resume`.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from bttui.errors import BttuiError
from bttui.faults import fault_point
from bttui.runs import liveness
from bttui.runs.layout import RunPaths
from bttui.runs.reserve import Claim, Reservations, request_for
from bttui.runs.status import QUEUED
from bttui.runs.store import Store, db_dir, load_record

BUSY_TIMEOUT_MS = 30_000
# A run that says `queued` with no trainer and no queue row for this long was stranded (its `bttui run --detach`
# died between creating and queueing it); the next drain puts it in the queue. A live launcher queues its run
# within milliseconds of creating it, so this never races one.
STRANDED_AFTER_S = 60.0
QUEUE_FILE = "queue.sqlite"
_CREATE = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    resume INTEGER NOT NULL DEFAULT 0,
    owner_pid INTEGER,
    owner_start INTEGER,
    created REAL NOT NULL
)
"""


def _launch_module() -> Any:
    # `bttui.runs.launch` the attribute is the function (re-exported by bttui.runs); the module is needed so
    # tests can replace `launch` on it.
    return importlib.import_module("bttui.runs.launch")


def queue_path(store_root: str | os.PathLike) -> Path:
    return db_dir(store_root) / QUEUE_FILE  # local disk when the store is on NFS (WAL is unsafe there)


@dataclass(frozen=True)
class Entry:
    seq: int
    run_id: str
    resume: bool
    owner_pid: int | None
    owner_start: int | None
    created: float

    def owner_alive(self) -> bool:
        return self.owner_pid is not None and liveness.pid_alive(self.owner_pid, self.owner_start)


class Queue:
    """The queue table of one store."""

    def __init__(self, store: Store | str | os.PathLike) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.path = queue_path(self.store.root)

    def exists(self) -> bool:
        return self.path.is_file()

    def connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise BttuiError(f"Cannot open the run queue {self.path} ({err}); the store folder must be writable.") from None
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # a queued run must survive a power cut, not just a crash
        conn.execute(_CREATE)
        return conn

    def _tx(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    @staticmethod
    def _entries(conn: sqlite3.Connection) -> list[Entry]:
        rows = conn.execute("SELECT seq, run_id, resume, owner_pid, owner_start, created FROM queue ORDER BY seq")
        return [Entry(seq, run_id, bool(resume), owner_pid, owner_start, created)
                for seq, run_id, resume, owner_pid, owner_start, created in rows]

    def add(self, run_id: str, *, resume: bool = False, owner_pid: int | None = None) -> None:
        """Append a run (again at the end if it is there already)."""
        start = liveness.process_start_time(owner_pid) if owner_pid else None

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
            conn.execute("INSERT INTO queue (run_id, resume, owner_pid, owner_start, created) VALUES (?, ?, ?, ?, ?)",
                         (run_id, int(resume), owner_pid, start, time.time()))
            fault_point("queue.add.mid_transaction")

        self._tx(work)

    def remove(self, run_id: str) -> bool:
        if not self.exists():
            return False
        return bool(self._tx(lambda conn: conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,)).rowcount))

    def disown(self, run_id: str) -> None:
        """Let any drain start the run detached (its foreground owner detached before the run began)."""
        self._tx(lambda conn: conn.execute("UPDATE queue SET owner_pid = NULL, owner_start = NULL WHERE run_id = ?",
                                           (run_id,)))

    def entries(self) -> list[Entry]:
        if not self.exists():
            return []
        conn = self.connect()
        try:
            return self._entries(conn)
        finally:
            conn.close()

    def position(self, run_id: str) -> int | None:
        """1-based place of the run in the queue, None if it is not queued."""
        for i, entry in enumerate(self.entries(), 1):
            if entry.run_id == run_id:
                return i
        return None


# ------------------------------------------------------------------ draining


def _waiting(store: Store, run_id: str) -> tuple[bool, dict]:
    """(still waiting to start, its config dict): queued in status.json, no trainer spawned yet."""
    record = load_record(store.root / run_id)
    if record is None:
        return False, {}
    data = record.status_data
    if record.status != QUEUED or data.get("pid"):
        return False, {}
    return True, record.config_dict()


def launch_claimed(paths: RunPaths, claim: Claim, *, detach: bool, resume: bool = False) -> subprocess.Popen:
    """Start the trainer on the claimed slots (torchrun for several GPUs) and hand the slots to it."""
    module = _launch_module()
    kwargs: dict[str, Any] = {}
    if claim.gpus:
        kwargs["env"] = claim.env()
        if len(claim.gpus) > 1:
            kwargs["argv"] = module.argv_for(paths.dir, claim.gpus, resume)
    if resume:
        kwargs["resume"] = True
    proc = module.launch(paths, detach=detach, **kwargs)
    try:
        claim.set_pid(proc.pid)
    except OSError:
        pass  # the claimer's pid stays in the file: the slot frees when this process exits
    return proc


def _drain(store: Store, *, want: str | None, sampler: Any,
           reservations: Reservations) -> tuple[dict[str, subprocess.Popen], Claim | None]:
    """Start every queued run that fits, in order; for `want` (owned by this process) return its claim instead."""
    queue = Queue(store)
    me = os.getpid()
    started: dict[str, subprocess.Popen] = {}
    mine: list[Claim] = []
    samples_cache: list[Sequence[Any]] = []

    def samples() -> Sequence[Any]:
        if not samples_cache:
            samples_cache.append(sampler.sample() if sampler is not None else [])
        return samples_cache[0]

    def work(conn: sqlite3.Connection) -> None:
        for entry in Queue._entries(conn):
            waiting, config = _waiting(store, entry.run_id)
            if not waiting:
                conn.execute("DELETE FROM queue WHERE seq = ?", (entry.seq,))
                continue
            if entry.owner_pid not in (None, me) and entry.owner_alive():
                break  # an attached `bttui run` starts this one itself; later runs wait behind it
            if entry.owner_pid == me and entry.run_id != want:
                break
            try:
                request = request_for(config.get("resources"), samples(), run=f"run {entry.run_id}")
            except BttuiError:
                request = None
            if request is None:
                # It can never run here (asks for GPUs this machine lacks): leave it for the user to see.
                continue
            claim = reservations.claim(entry.run_id, store.root / entry.run_id, request, samples())
            if claim is None:
                break
            if entry.run_id == want:
                mine.append(claim)  # the owner spawns it and removes the row afterwards
                continue
            paths = RunPaths(store.root / entry.run_id)
            try:
                proc = launch_claimed(paths, claim, detach=True, resume=entry.resume)
            except OSError:
                claim.release()
                raise
            fault_point("queue.drain.spawned")
            conn.execute("DELETE FROM queue WHERE seq = ?", (entry.seq,))
            started[entry.run_id] = proc

    queue._tx(work)
    return started, (mine[0] if mine else None)


def adopt_stranded(store: Store, *, now: float | None = None, min_age: float = STRANDED_AFTER_S) -> list[str]:
    """Queue every run of this host that says `queued` but has no trainer, no queue row and no Slurm job, and
    was last written over `min_age` seconds ago; returns their ids. Reads only status.json of each run."""
    from bttui.runs.atomic import read_json

    now = time.time() if now is None else now
    host = liveness.hostname()
    candidates: list[tuple[float, str, bool]] = []
    for run_dir in store.run_dirs():
        status = read_json(run_dir / "status.json", default=None)
        if not isinstance(status, dict) or status.get("status") != QUEUED or status.get("pid"):
            continue
        if status.get("host") not in (None, host) or (run_dir / "slurm.json").exists():
            continue
        try:
            written = (run_dir / "status.json").stat().st_mtime
            events = (run_dir / "events.jsonl").stat().st_size if (run_dir / "events.jsonl").exists() else 0
        except OSError:
            continue
        if now - written < min_age:
            continue
        candidates.append((written, run_dir.name, events > 0))
    if not candidates:
        return []
    queue = Queue(store)
    queued = {e.run_id for e in queue.entries()}
    adopted = []
    for _written, run_id, resume in sorted(candidates):  # oldest first: the order they were meant to start in
        if run_id in queued:
            continue

        def work(conn: sqlite3.Connection, run_id: str = run_id, resume: bool = resume) -> bool:
            # Checked again under the write lock: a launcher may have queued it since the read above.
            if conn.execute("SELECT 1 FROM queue WHERE run_id = ?", (run_id,)).fetchone():
                return False
            conn.execute("INSERT INTO queue (run_id, resume, owner_pid, owner_start, created) VALUES (?, ?, ?, ?, ?)",
                         (run_id, int(resume), None, None, time.time()))
            return True

        if queue._tx(work):
            adopted.append(run_id)
    return adopted


def _defaults(sampler: Any, settings: Any) -> tuple[Any, Reservations]:
    if sampler is None:
        from bttui.gpus import default_sampler

        sampler = default_sampler()
    return sampler, Reservations.from_settings(settings)


def start_ready(store_root: str | os.PathLike | Store, *, sampler: Any = None, settings: Any = None,
                finished: str | None = None) -> list[str]:
    """Start queued runs whose resources are free, in queue order; returns the ids started.

    `finished` names a run whose trainer is ending (the caller): its slots are
    released first so the next run can have them.
    """
    store = store_root if isinstance(store_root, Store) else Store(store_root)
    sampler, reservations = _defaults(sampler, settings)
    if finished:
        try:
            reservations.release_run(finished)
        except (OSError, BttuiError):
            pass
    try:
        adopt_stranded(store)
    except (OSError, sqlite3.Error, BttuiError):
        pass  # a read-only store: nothing can be queued or started anyway
    if not Queue(store).exists():
        return []
    started, _ = _drain(store, want=None, sampler=sampler, reservations=reservations)
    return list(started)


def after_run(run_dir: str | os.PathLike) -> None:
    """The trainer's exit hook: free this run's slots and start what waits. Never raises (a run must not fail here)."""
    try:
        if os.environ.get("RANK", "0") != "0":
            return  # torchrun: rank 0 alone speaks for the run
        if os.environ.get("BTTUI_SLURM_JOB"):
            return  # set by slurm.sbatch: the node's processes end with the job; queued runs must not start there
        run_dir = Path(run_dir)
        start_ready(run_dir.parent, finished=run_dir.name)
    except BaseException as exc:  # noqa: BLE001 - the run's outcome is already written; this is best effort
        import sys

        print(f"bttui.train: starting queued runs failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def submit(store: Store, paths: RunPaths, *, resume: bool = False, sampler: Any = None,
           settings: Any = None) -> dict[str, subprocess.Popen]:
    """Queue a run for a detached start and drain the queue; returns the runs started now (maybe this one)."""
    sampler, reservations = _defaults(sampler, settings)
    _check_request(paths, sampler)
    Queue(store).add(paths.id, resume=resume)
    try:
        adopt_stranded(store)
    except (OSError, sqlite3.Error, BttuiError):
        pass  # best effort: this run is queued either way
    started, _ = _drain(store, want=None, sampler=sampler, reservations=reservations)
    return started


def _check_request(paths: RunPaths, sampler: Any) -> None:
    """Refuse at submission a run that can never start on this machine (clear error instead of a stuck queue)."""
    record = load_record(paths.dir)
    config = record.config_dict() if record is not None else {}
    request_for(config.get("resources"), sampler.sample() if sampler is not None else [], run=f"run {paths.id}")


def take_turn(store: Store, run_id: str, *, sampler: Any, reservations: Reservations) -> Claim | None:
    """For a foreground owner: its claim once the run is first in line and fits (others ahead are started)."""
    _, claim = _drain(store, want=run_id, sampler=sampler, reservations=reservations)
    return claim


def run_when_ready(store: Store, paths: RunPaths, *, resume: bool = False, sampler: Any = None, settings: Any = None,
                   on_wait: Callable[[int | None], None] | None = None, poll: float = 1.0,
                   sleep: Callable[[float], None] = time.sleep, session: bool = False) -> tuple[subprocess.Popen, Claim]:
    """Queue the run owned by this process, wait for its turn, start it; returns (process, claim).

    The caller follows the process; `session` starts it in its own session
    (launch's detach) so the caller can later let go of it (Ctrl-C -> detach).

    KeyboardInterrupt while waiting leaves the row in the queue (owned by this
    process): the caller removes it (stop) or disowns it (detach).
    """
    sampler, reservations = _defaults(sampler, settings)
    _check_request(paths, sampler)
    queue = Queue(store)
    queue.add(paths.id, resume=resume, owner_pid=os.getpid())
    told = False
    while True:
        claim = take_turn(store, paths.id, sampler=sampler, reservations=reservations)
        if claim is not None:
            break
        if not _waiting(store, paths.id)[0]:
            queue.remove(paths.id)
            raise BttuiError(f"Run {paths.id} left the queue before it started (stopped or deleted by another "
                             f"bttui command); see `bttui show {paths.id}`.")
        if on_wait is not None and not told:
            on_wait(queue.position(paths.id))
            told = True
        sleep(poll)
    try:
        proc = launch_claimed(paths, claim, detach=session, resume=resume)
    except BaseException:
        claim.release()
        raise
    queue.remove(paths.id)
    return proc, claim
