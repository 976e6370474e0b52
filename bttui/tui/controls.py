"""Run control for the TUI: stop, resume, delete, launch and queue draining through the run store (injected; tests pass fakes).

Every method is blocking and is called from a thread worker, never on the UI
thread. Refusals (a running run cannot be deleted, a completed one cannot be
resumed) raise ``BttuiError`` with the store's own message, which the TUI shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

# The TUI does not wait for a long graceful checkpoint: it asks, waits this long, then reports "stopping".
STOP_WAIT_S = 5.0


class Controls(Protocol):
    def stop(self, run_id: str, force: bool = False) -> str: ...

    def resume(self, run_id: str) -> str: ...

    def delete(self, run_id: str) -> str: ...

    def launch(self, cfg: Any, config_path: str | None = None) -> str: ...

    def start_ready(self) -> list[str]: ...

    def export(self, run_id: str) -> str: ...


class StoreControls:
    """The real controls: ``bttui.runs.control`` and ``bttui.runs.queue`` on the store at ``root``."""

    def __init__(self, root: str | os.PathLike, sampler: Any = None) -> None:
        self.root = Path(root)
        # The app's GPU sampler, so the queue sees the same devices the screens show (None: NVML default).
        self.sampler = sampler

    def _store_and_record(self, run_id: str) -> tuple[Any, Any]:
        from bttui.runs.store import Store

        store = Store(self.root)
        return store, store.get(run_id)

    def stop(self, run_id: str, force: bool = False) -> str:
        from bttui.runs.control import stop_run

        store, record = self._store_and_record(run_id)
        status = stop_run(store, record, force=force, timeout=STOP_WAIT_S)
        if status == "running":
            return f"{record.name}: stopping (checkpointing; press x again with force if it hangs)"
        return f"{record.name}: {status}"

    def resume(self, run_id: str) -> str:
        from bttui.runs.control import resume_run

        store, record = self._store_and_record(run_id)
        proc = resume_run(store, record, detach=True)
        if proc is None:
            return f"{record.name}: queued to resume (waiting for a free slot)"
        return f"{record.name}: resumed (pid {proc.pid})"

    def delete(self, run_id: str) -> str:
        from bttui.runs.control import delete_run

        store, record = self._store_and_record(run_id)
        delete_run(store, record)
        return f"{record.name}: deleted"

    def launch(self, cfg: Any, config_path: str | None = None) -> str:
        """Create the run and start it detached exactly like ``bttui run --detach``; returns the run id."""
        from bttui.runs import queue
        from bttui.runs.disk import check_free_space
        from bttui.runs.store import Store

        store = Store(self.root)
        check_free_space(store.root)  # like the CLI: refuse before writing anything on a full disk
        paths = store.create_run(cfg, config_path=config_path)
        queue.submit(store, paths, sampler=self.sampler)
        return Path(paths.dir).name

    def export(self, run_id: str, out: str | os.PathLike | None = None) -> str:
        """Results as csv, json and png into ``out`` (default ./<run id>-export, like ``bttui export``)."""
        from bttui.export import EXPORT_FORMATS, export_tables

        _, record = self._store_and_record(run_id)
        dest = Path(out) if out is not None else Path.cwd() / f"{record.id}-export"
        try:
            files = export_tables(record, dest, EXPORT_FORMATS)
        except OSError as exc:
            from bttui.errors import BttuiError

            raise BttuiError(f"export of {record.name} to {dest} failed: {exc.strerror or exc}"
                             f"{f' ({exc.filename})' if exc.filename else ''}") from None
        return f"{record.name}: wrote {len(files)} file{'s' if len(files) != 1 else ''} under {dest}"

    def start_ready(self) -> list[str]:
        """Start queued runs whose resources are free (what a finishing trainer does); returns the ids started."""
        from bttui.runs import queue

        return list(queue.start_ready(self.root, sampler=self.sampler))
