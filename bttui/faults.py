"""Deterministic fault injection: `fault_point(name)` kills this process when $BTTUI_FAULT names the point.

The reliability suite (tests/faults/) sets ``BTTUI_FAULT`` in the environment
of a real trainer or CLI process to crash it at one chosen place, instead of
racing it with timed ``kill -9``. Grammar of the variable::

    NAME            SIGKILL at the first hit of the point NAME
    NAME@N          SIGKILL at the N-th hit (1-based) in this process
    NAME[@N]:ACTION another action at that hit:
                      kill   SIGKILL (the default)
                      stop   SIGSTOP this process; it carries on after SIGCONT (a test changes the
                             world meanwhile, e.g. deletes a data file or fills a disk)
                      oom    raise torch.cuda.OutOfMemoryError (a CUDA OOM on machines without a GPU)
                      enospc raise OSError(ENOSPC) (a full disk at exactly this write)

The variable is read once, at import: with it unset a point costs one string
comparison, so points stay in production code. Point names are listed in
``POINTS`` (docs/reliability.md says where each one sits).
"""

from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "BTTUI_FAULT"
ACTIONS = ("kill", "stop", "oom", "enospc")

POINTS: dict[str, str] = {
    # run store (stdlib side: CLI, TUI and trainer all pass here)
    "atomic.temp_written": "write_bytes_atomic: temp file written and fsynced, before os.replace",
    "atomic.replaced": "write_bytes_atomic: after os.replace, before the directory fsync",
    "events.torn": "EventWriter.write: half of the encoded line written, then the kill (a torn line)",
    "events.written": "EventWriter.write: after a whole line was appended",
    "store.create_run.tmp_built": "Store.create_run: .tmp-<id> complete, before the rename into place",
    "index.refresh.mid_transaction": "Index refresh: rows inserted/updated/deleted inside the open transaction",
    "index.rebuild.cleared": "Index.rebuild: every row deleted (committed), before the re-read",
    "launch.spawned": "launch: trainer spawned, before its pid is recorded in status.json",
    "queue.add.mid_transaction": "Queue.add: row inserted inside the BEGIN IMMEDIATE transaction, before COMMIT",
    "queue.drain.spawned": "queue drain: a queued run's trainer spawned, before its row is deleted (same transaction)",
    # trainer
    "runner.started": "Runner: status running written and config loaded, before any training",
    "runner.summary.before": "Runner.write_summary: before summary.json is replaced",
    "runner.summary.after": "Runner.write_summary: after summary.json is replaced",
    "runner.cell.recorded": "Runner: a cell's result written to summary.json, status and events",
    "runner.final_status": "Runner: training done, before the final status is written",
    "pretrain.step.after_backward": "pretraining step: gradients computed, before the optimizer step",
    "pretrain.epoch.end": "pretraining: epoch event written, before the epoch's checkpoint",
    "pretrain.checkpoint.temp_written": "save_atomic: checkpoint temp file written, before os.replace",
    "pretrain.checkpoint.saved": "pretraining: periodic checkpoint in place, before pruning old ones",
    "pretrain.final.saved": "pretraining: pretrain_final.pt in place, before stage_end",
    "finetune.step.after_backward": "fine-tuning (SGD readout / full): gradients computed, before the step",
    "finetune.epoch": "fine-tuning: cell_epoch event written (mid-cell)",
    "data.cache.temp_written": "pixel cache: temp .npy filled, before os.replace",
}


def _parse(spec: str | None) -> tuple[str | None, int, str]:
    """(point name, hit number, action) of a $BTTUI_FAULT value; (None, 0, "kill") when unset or blank."""
    if not spec or not spec.strip():
        return None, 0, "kill"
    spec = spec.strip()
    name, _, action = spec.partition(":")
    action = action.strip() or "kill"
    if action not in ACTIONS:
        raise ValueError(f"{ENV}={spec!r}: unknown action {action!r}; valid: {', '.join(ACTIONS)}")
    name, at, nth = name.partition("@")
    hit = 1
    if at:
        if not nth.isdigit() or int(nth) < 1:
            raise ValueError(f"{ENV}={spec!r}: the hit after '@' must be a whole number >= 1")
        hit = int(nth)
    return name.strip(), hit, action


_NAME, _HIT, _ACTION = _parse(os.environ.get(ENV))
_hits = 0
_lock = threading.Lock()


def _due(name: str) -> bool:
    global _hits
    with _lock:
        _hits += 1
        return _hits == _HIT


def _act(name: str) -> None:
    if _ACTION == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _ACTION == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif _ACTION == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by {ENV}={name}:oom)")
    elif _ACTION == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (simulated by {ENV}={name}:enospc)")


def fault_point(name: str) -> None:
    """Act (SIGKILL by default) if $BTTUI_FAULT names this point and this is the chosen hit; else nothing."""
    if name != _NAME:
        return
    if _due(name):
        _act(name)


def fault_torn_write(name: str, fd: int, data: bytes) -> None:
    """At the chosen hit of `name`, write the first half of `data` to `fd` and then act (a torn record)."""
    if name != _NAME:
        return
    if _due(name):
        os.write(fd, data[: max(1, len(data) // 2)])
        _act(name)


def armed() -> str | None:
    """The point this process is armed for (None when $BTTUI_FAULT was unset at import)."""
    return _NAME
