"""Run and cell status words, the atomically rewritten status.json, and crash detection.

`crashed` is never written: `effective_status` derives it when status.json
says `running` (or `queued` with a pid) but the trainer is gone.
"""

from __future__ import annotations

import time
from typing import Any

from bttui.runs import liveness
from bttui.runs.atomic import read_json, write_json_atomic
from bttui.runs.layout import RunPaths

# Run statuses
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"
CRASHED = "crashed"
RUN_STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, STOPPED, CRASHED)
FINAL_STATUSES = frozenset({COMPLETED, FAILED, STOPPED, CRASHED})
ACTIVE_STATUSES = frozenset({QUEUED, RUNNING})

# Cell statuses (RUNNING, COMPLETED and FAILED are shared with runs)
PENDING = "pending"
SKIPPED = "skipped"
CELL_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, SKIPPED)

HEARTBEAT_TIMEOUT = 120.0
"""Seconds without a heartbeat after which a run on another host counts as crashed (the trainer beats every <= 10 s)."""


def read_status(paths: RunPaths) -> dict:
    """status.json as a dict ({} when missing or unreadable)."""
    data = read_json(paths.status, default=None)
    return data if isinstance(data, dict) else {}


def write_status(paths: RunPaths, status: dict) -> None:
    """Replace status.json with `status` atomically (as given: no heartbeat stamp)."""
    write_json_atomic(paths.status, status)


class StatusFile:
    """The trainer's (or launcher's) view of status.json: merge fields, stamp the heartbeat, rewrite atomically.

    Starts from the file's current content, so fields set by the launcher
    (e.g. `cells_total`) survive the trainer's first update.
    """

    def __init__(self, paths: RunPaths, *, clock=time.time) -> None:
        self.paths = paths
        self.data: dict[str, Any] = read_status(paths)
        self._clock = clock
        self._last_write: float | None = None

    def update(self, **fields: Any) -> dict:
        """Merge `fields`, set `heartbeat` to now and write; returns the new content."""
        self.data.update(fields)
        now = self._clock()
        self.data["heartbeat"] = now
        write_status(self.paths, self.data)
        self._last_write = now
        return self.data

    def heartbeat(self, min_interval: float = 5.0) -> bool:
        """Rewrite with a fresh heartbeat if the last write is older than `min_interval` seconds; True if written."""
        now = self._clock()
        if self._last_write is not None and now - self._last_write < min_interval:
            return False
        self.update()
        return True

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def format_duration(seconds: float) -> str:
    """Compact duration: 45s, 5m03s, 2h05m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _stale(status: dict, now: float) -> tuple[str, str | None] | None:
    beat = _number(status.get("heartbeat"))
    if beat is None:
        return None
    age = now - beat
    if age > HEARTBEAT_TIMEOUT:
        return CRASHED, f"no heartbeat for {format_duration(age)}"
    return None


def effective_status(status: dict, now: float | None = None, *, host: str | None = None,
                     boot: str | None = None) -> tuple[str, str | None]:
    """The status to show: stored status and reason, or ("crashed", why) when the trainer is gone.

    Only `running`, and `queued` with a pid (launched, trainer not yet
    reporting), are checked. `host` and `boot` default to this machine's.
    Same host and boot: the pid must be alive with the recorded start time.
    Same host, other boot: crashed at once. Other host (or pid unknown): the
    heartbeat must be under 120 s old.
    """
    stored = status.get("status")
    if not isinstance(stored, str) or not stored:
        # Only a damaged or hand-made run lacks a status; it has not started as far as we can tell.
        return QUEUED, "status.json is missing or has no status"
    reason = status.get("reason")
    reason = reason if isinstance(reason, str) and reason else None
    pid = status.get("pid")
    has_pid = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
    if not (stored == RUNNING or (stored == QUEUED and has_pid)):
        return stored, reason
    now = time.time() if now is None else now
    host = liveness.hostname() if host is None else host
    run_host = status.get("host")
    if run_host and run_host != host:
        return _stale(status, now) or (stored, reason)
    boot = liveness.boot_id() if boot is None else boot
    run_boot = status.get("boot_id")
    if run_host and run_boot and boot and run_boot != boot:
        return CRASHED, "machine rebooted"
    if not has_pid:
        return _stale(status, now) or (stored, reason)
    start = status.get("pid_start")
    start = start if isinstance(start, int) and not isinstance(start, bool) else None
    current = liveness.process_start_time(pid)
    if current is None:
        if not liveness.pid_alive(pid):
            return CRASHED, f"process {pid} is gone"
        return stored, reason  # alive but start time unknown (no /proc)
    if start is not None and current != start:
        return CRASHED, f"process {pid} is gone (pid reused)"
    return stored, reason


def progress(status: dict) -> float | None:
    """Fraction done of the current stage (0-1): steps in pretraining, cells in fine-tuning, 1 when completed."""
    if status.get("status") == COMPLETED:
        return 1.0
    stage = status.get("stage")
    if stage == "pretrain":
        done, total = _number(status.get("step")), _number(status.get("steps"))
    elif stage == "finetune":
        done, total = _number(status.get("cells_done")), _number(status.get("cells_total"))
    else:
        return None
    if done is None or not total or total <= 0:
        return None
    return min(1.0, max(0.0, done / total))
