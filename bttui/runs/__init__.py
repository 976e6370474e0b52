"""The run store (stdlib only): run directories, event logs, status and liveness, the SQLite index, launching."""

from __future__ import annotations

from bttui.runs.atomic import read_json, write_json_atomic, write_text_atomic
from bttui.runs.events import EventLog, EventWriter, read_events
from bttui.runs.index import Index
from bttui.runs.launch import launch, trainer_argv
from bttui.runs.layout import RunPaths, new_run_id, slugify
from bttui.runs.liveness import boot_id, hostname, pid_alive, process_start_time
from bttui.runs.status import (
    CELL_STATUSES,
    COMPLETED,
    CRASHED,
    FAILED,
    FINAL_STATUSES,
    PENDING,
    QUEUED,
    RUN_STATUSES,
    RUNNING,
    SKIPPED,
    STOPPED,
    StatusFile,
    effective_status,
    read_status,
    write_status,
)
from bttui.runs.store import RunRecord, Store, resolve_store_root

__all__ = [
    "CELL_STATUSES", "COMPLETED", "CRASHED", "FAILED", "FINAL_STATUSES", "PENDING", "QUEUED", "RUN_STATUSES",
    "RUNNING", "SKIPPED", "STOPPED", "EventLog", "EventWriter", "Index", "RunPaths", "RunRecord", "StatusFile",
    "Store", "boot_id", "effective_status", "hostname", "launch", "new_run_id", "pid_alive",
    "process_start_time", "read_events", "read_json", "read_status", "resolve_store_root", "slugify",
    "trainer_argv", "write_json_atomic", "write_status", "write_text_atomic",
]
