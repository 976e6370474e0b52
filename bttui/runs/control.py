"""Job control of runs: stop (graceful or forced), resume, delete, wait. Stdlib only.

Stopping sends SIGTERM to the trainer's session (torchrun and its workers
included): the trainer checkpoints at the next step and writes `stopped`.
`--force` sends SIGKILL and writes `stopped` itself, since the trainer cannot.
A queued run that has not started is taken out of the queue and marked stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from bttui.errors import BttuiError
from bttui.runs import liveness
from bttui.runs.atomic import read_json
from bttui.runs.status import (
    COMPLETED,
    FINAL_STATUSES,
    QUEUED,
    RUNNING,
    STOPPED,
    read_status,
    write_status,
)
from bttui.runs.store import RunRecord, Store, load_record

GRACEFUL_TIMEOUT_S = 300.0  # a checkpoint of a big model on a slow disk; after that, --force is the answer
FORCE_TIMEOUT_S = 10.0


def _reload(record: RunRecord) -> RunRecord:
    again = load_record(record.paths.dir)
    if again is None:
        raise BttuiError(f"Run {record.id} disappeared from {record.paths.dir} (deleted meanwhile?).")
    return again


def _slurm_job(record: RunRecord) -> dict | None:
    data = read_json(record.paths.dir / "slurm.json", default=None)
    return data if isinstance(data, dict) and data.get("job_id") else None


def _has_live_pid(record: RunRecord) -> bool:
    data = record.status_data
    return (record.status in (RUNNING, QUEUED) and bool(data.get("pid"))
            and liveness.pid_alive(data.get("pid"), data.get("pid_start")))


def _signal(record: RunRecord, sig: int) -> None:
    data = record.status_data
    pid = int(data["pid"])
    pgid = data.get("pgid")
    try:
        # The launcher made the trainer a session leader and recorded it; the group check guards
        # against a recycled group id.
        if isinstance(pgid, int) and pgid > 1 and os.getpgid(pid) == pgid and pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise BttuiError(f"Not allowed to signal process {pid} of run {record.id} (another user's run?).") from None


def _mark_stopped(record: RunRecord, reason: str) -> None:
    data = read_status(record.paths)
    data.update(status=STOPPED, reason=reason, ended=time.time(), stage=None, heartbeat=time.time())
    write_status(record.paths, data)


def _release(record: RunRecord) -> None:
    try:
        from bttui.runs.reserve import Reservations

        Reservations.from_settings().release_run(record.id)
    except Exception:  # freeing slots early is a courtesy: stale slots are reclaimed anyway
        pass


def stop_run(store: Store, record: RunRecord, *, force: bool = False, timeout: float | None = None,
             sleep: Callable[[float], None] = time.sleep) -> str:
    """Stop a run; returns its effective status afterwards ("running" if it is still checkpointing at `timeout`)."""
    from bttui.runs.queue import Queue

    if record.status in FINAL_STATUSES:
        raise BttuiError(f"Run {record.id} is not running (it is {record.status}); nothing to stop.")
    job = _slurm_job(record)
    if job is not None:
        from bttui.runs import slurm

        return slurm.cancel(record, force=force)
    if record.status == QUEUED and not record.status_data.get("pid"):
        Queue(store).remove(record.id)
        _mark_stopped(record, "stopped before it started (removed from the queue)")
        return STOPPED
    if not _has_live_pid(record):
        return _reload(record).status
    _signal(record, signal.SIGKILL if force else signal.SIGTERM)
    limit = timeout if timeout is not None else (FORCE_TIMEOUT_S if force else GRACEFUL_TIMEOUT_S)
    deadline = time.monotonic() + limit
    pid, start = record.status_data.get("pid"), record.status_data.get("pid_start")
    while liveness.pid_alive(pid, start) and time.monotonic() < deadline:
        sleep(0.1)
    now = _reload(record)
    if force and not liveness.pid_alive(pid, start) and now.stored_status in (RUNNING, QUEUED):
        _mark_stopped(now, "killed by `bttui stop --force` (resume continues from the last checkpoint)")
        _release(now)
        now = _reload(now)
    return now.status


def is_stranded(record: RunRecord) -> bool:
    """True for a run that says `queued` but that nothing will ever start: no trainer pid, no queue row, no Slurm
    job, made on this host (a store shared over NFS has one queue per host). A `bttui run --detach` killed between
    creating the run and queueing it leaves one."""
    from bttui.runs.queue import Queue

    if record.stored_status != QUEUED or record.status_data.get("pid") or _slurm_job(record) is not None:
        return False
    host = record.status_data.get("host")
    if host and host != liveness.hostname():
        return False
    return Queue(record.paths.dir.parent).position(record.id) is None


def prepare_resume(record: RunRecord) -> None:
    """Check a run can be resumed (stopped, failed or crashed, or queued but stranded outside the queue) and mark
    it queued again, pid cleared."""
    if record.status == COMPLETED:
        raise BttuiError(f"Run {record.id} already completed; nothing to resume. Start a new run to train again.")
    if record.status == RUNNING or _has_live_pid(record):
        raise BttuiError(f"Run {record.id} is still running (pid {record.status_data.get('pid')}); stop it first "
                         f"with `bttui stop {record.id}` or follow it with `bttui attach {record.id}`.")
    stranded = record.status == QUEUED and is_stranded(record)
    if record.status == QUEUED and not stranded:
        raise BttuiError(f"Run {record.id} is already queued; it starts when its resources are free.")
    if _slurm_job(record) is not None:
        raise BttuiError(f"Run {record.id} ran under Slurm; resume it by submitting again with "
                         f"`bttui run --slurm` (resuming Slurm runs in place is not supported).")
    data = read_status(record.paths)
    reason = "re-queued: it had left the queue before it started" if stranded else f"resuming after {record.status}"
    data.update(status=QUEUED, reason=reason, pid=None, pid_start=None, pgid=None, ended=None, heartbeat=time.time())
    write_status(record.paths, data)


def resume_run(store: Store, record: RunRecord, *, detach: bool = True, sampler: Any = None,
               settings: Any = None) -> subprocess.Popen | None:
    """Relaunch `python -m bttui.train DIR --resume` for a stopped, failed or crashed run.

    Goes through the queue like any launch. Detached: returns the Popen if it
    started now, None if it waits in the queue. `detach=False` waits for its
    turn and returns the attached Popen (its slots free when it exits).
    """
    from bttui.runs import queue

    prepare_resume(record)
    if detach:
        started = queue.submit(store, record.paths, resume=True, sampler=sampler, settings=settings)
        return started.get(record.id)
    proc, _claim = queue.run_when_ready(store, record.paths, resume=True, sampler=sampler, settings=settings)
    return proc


def delete_run(store: Store, record: RunRecord) -> None:
    """Delete a run folder (refused while its trainer runs); a queued run leaves the queue first."""
    from bttui.runs.queue import Queue

    record = _reload(record)
    if record.status == RUNNING or _has_live_pid(record):
        raise BttuiError(f"Run {record.id} is running; stop it first (`bttui stop {record.id}`), then delete it.")
    if _slurm_job(record) is not None and record.status not in FINAL_STATUSES:
        raise BttuiError(f"Run {record.id} has a Slurm job that may still run; `bttui stop {record.id}` first.")
    Queue(store).remove(record.id)
    # Rename first: listings skip hidden entries, so the run vanishes at once even if rmtree takes long or fails.
    doomed = record.paths.dir.parent / f".deleting-{record.id}"
    try:
        os.rename(record.paths.dir, doomed)
    except OSError as err:
        raise BttuiError(f"Cannot delete {record.paths.dir}: {err.strerror}.") from None
    shutil.rmtree(doomed, ignore_errors=True)
    _release(record)


def wait_run(store: Store, record: RunRecord, poll: float = 1.0, timeout: float | None = None,
             sleep: Callable[[float], None] = time.sleep) -> str:
    """Block until the run reaches a final status and return it (the current status if `timeout` passes first)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = _slurm_job(record)
    while True:
        if job is not None:
            from bttui.runs import slurm

            slurm.sync_status(record)
        current = load_record(Path(record.paths.dir))
        if current is None:
            raise BttuiError(f"Run {record.id} was deleted while waiting for it.")
        if current.status in FINAL_STATUSES:
            return current.status
        if deadline is not None and time.monotonic() >= deadline:
            return current.status
        sleep(poll)
