"""Slurm: submit a run as an sbatch job (torchrun inside), cancel it, and tell a vanished job from a live one.

`<run>/slurm.sbatch` is the script, `<run>/slurm.json` records the job
(`job_id`, partition, time, gpus, output file, submitted), `<run>/slurm.out`
gets the trainer's stdout/stderr. The trainer writes status.json on the
compute node as usual; what the store cannot see from there is a job that
Slurm ended (time limit, node failure, scancel before start) without a final
status: `adjust_status` asks `squeue` about active runs with a slurm.json and
reports those as crashed. Stdlib only; `sbatch`, `squeue` and `scancel` are
found on PATH.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from bttui.errors import BttuiError
from bttui.runs.atomic import read_json, write_json_atomic, write_text_atomic
from bttui.runs.layout import RunPaths, iso_utc, slugify
from bttui.runs.status import ACTIVE_STATUSES, CRASHED, FINAL_STATUSES, STOPPED, read_status, write_status

SLURM_JSON = "slurm.json"
SCRIPT = "slurm.sbatch"
OUTPUT = "slurm.out"
COMMAND_TIMEOUT_S = 30.0  # slurmctld can be slow under load; longer than this and something is wrong
SQUEUE_CACHE_S = 5.0  # one command resolves and reloads a run several times; ask squeue once
CANCEL_WAIT_S = 30.0  # how long `bttui stop` waits for a cancelled job's trainer to write its final status
_squeue_cache: dict[str, tuple[float, str | None]] = {}


def job_info(run_dir: str | os.PathLike) -> dict | None:
    """slurm.json of a run (None when it is not a Slurm run)."""
    data = read_json(Path(run_dir) / SLURM_JSON, default=None)
    return data if isinstance(data, dict) and data.get("job_id") else None


def log_path(record: Any) -> Path:
    """Where a run's output is: slurm.out for a Slurm run, train.log otherwise."""
    info = job_info(record.paths.dir)
    if info is not None:
        return Path(info.get("output") or Path(record.paths.dir) / OUTPUT)
    return Path(record.paths.log)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BttuiError(f"`{argv[0]}` is not on PATH; Slurm runs need the Slurm client commands (sbatch, squeue, "
                         f"scancel) on this machine.") from None
    except subprocess.TimeoutExpired:
        raise BttuiError(f"`{shlex.join(argv)}` did not answer within {COMMAND_TIMEOUT_S:.0f} s; is the Slurm "
                         f"controller reachable?") from None


# ---------------------------------------------------------------- submit


def trainer_command(run_dir: str | os.PathLike, gpus: int, resume: bool = False) -> list[str]:
    """torchrun with one process per GPU (plain `python -m bttui.train` for one GPU or none)."""
    from bttui.runs.launch import torchrun_argv, trainer_argv

    return torchrun_argv(run_dir, gpus, resume) if gpus > 1 else trainer_argv(run_dir, resume)


def sbatch_script(paths: RunPaths, *, gpus: int, partition: str | None = None, time_limit: str | None = None,
                  cpus: int | None = None, resume: bool = False) -> str:
    """The batch script of a run: #SBATCH lines, then the trainer (exec'd, so scancel's SIGTERM reaches it)."""
    run_dir = Path(paths.dir)
    lines = ["#!/bin/bash", f"#SBATCH --job-name=bttui-{slugify(run_dir.name)[:40]}",
             f"#SBATCH --output={run_dir / OUTPUT}", "#SBATCH --open-mode=append",
             "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    if gpus > 0:
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    if cpus:
        lines.append(f"#SBATCH --cpus-per-task={cpus}")
    # SIGTERM 120 s before the time limit: the trainer checkpoints and writes `stopped` (resumable).
    lines.append("#SBATCH --signal=TERM@120")
    lines += ["", "set -eu", f"cd {shlex.quote(os.getcwd())}", "export PYTHONUNBUFFERED=1",
              'export BTTUI_SLURM_JOB="$SLURM_JOB_ID"',
              'echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) bttui slurm job $SLURM_JOB_ID on $(hostname)"',
              "exec " + shlex.join(trainer_command(run_dir, gpus, resume)), ""]
    return "\n".join(lines)


def _check_option(name: str, value: str | None) -> None:
    if value is not None and (not value.strip() or any(c in value for c in "\n\r")):
        raise BttuiError(f"--{name} {value!r} is not a valid Slurm value (one line, not empty).")


def submit(paths: RunPaths, *, gpus: int, partition: str | None = None, time_limit: str | None = None,
           cpus: int | None = None, resume: bool = False) -> dict:
    """Write slurm.sbatch, `sbatch --parsable` it, record slurm.json; returns the record. A refused submission
    marks the run failed (with sbatch's message) and raises BttuiError."""
    _check_option("partition", partition)
    _check_option("time", time_limit)
    if gpus < 0:
        raise BttuiError(f"--gpus {gpus} must be 0 or more.")
    script = Path(paths.dir) / SCRIPT
    write_text_atomic(script, sbatch_script(paths, gpus=gpus, partition=partition, time_limit=time_limit,
                                            cpus=cpus, resume=resume))
    os.chmod(script, 0o755)
    proc = _run(["sbatch", "--parsable", str(script)])
    out = proc.stdout.strip().splitlines()
    job = out[-1].split(";")[0].strip() if out else ""
    if proc.returncode != 0 or not job.isdigit() and not job.replace("_", "").isdigit():
        message = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")[:500]
        data = read_status(paths)
        data.update(status="failed", reason=f"sbatch refused the job: {message}", ended=time.time())
        write_status(paths, data)
        raise BttuiError(f"sbatch refused the job for run {paths.id} ({message}); the script is {script}. "
                         f"Check --partition, --time and --gpus against `sinfo`.")
    record = {"job_id": job, "cluster": out[-1].split(";")[1] if ";" in out[-1] else None,
              "partition": partition, "time": time_limit, "gpus": gpus, "script": str(script),
              "output": str(Path(paths.dir) / OUTPUT), "submitted": iso_utc()}
    write_json_atomic(Path(paths.dir) / SLURM_JSON, record)
    return record


def run_slurm(store_value: Any, config_path: Path, overrides: list[str], *, partition: str | None,
              time_limit: str | None, gpus: int | None) -> int:
    """`bttui run CONFIG --slurm`: create the run, submit it, print the run id (stdout) and the job (stderr)."""
    from rich.console import Console
    from rich.text import Text

    from bttui.config.load import load_config
    from bttui.runs.disk import check_free_space
    from bttui.runs.store import Store, resolve_store_root

    cfg = load_config(config_path, overrides)
    store = Store(resolve_store_root(store_value))
    check_free_space(store.root, cfg)
    n_gpus = int(gpus) if gpus is not None else int(cfg.resources.devices)
    if cfg.resources.device == "cpu":
        n_gpus = 0
    paths = store.create_run(cfg, config_path=str(config_path))
    job = submit(paths, gpus=n_gpus, partition=partition, time_limit=time_limit)
    print(paths.id, flush=True)
    Console(stderr=True, highlight=False).print(Text(
        f"submitted to Slurm as job {job['job_id']}; follow it with `bttui logs -f {paths.id}`, "
        f"stop it with `bttui stop {paths.id}`", style="dim"), soft_wrap=True)
    return 0


# ---------------------------------------------------------------- status


def squeue_state(job_id: str, *, now: float | None = None) -> str | None:
    """The job's state word from squeue ("PENDING", "RUNNING", ...), "" when Slurm no longer lists it, None when
    squeue cannot say (not installed, controller down)."""
    now = time.monotonic() if now is None else now
    cached = _squeue_cache.get(job_id)
    if cached is not None and now - cached[0] < SQUEUE_CACHE_S:
        return cached[1]
    try:
        proc = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        state: str | None = None
    else:
        if proc.returncode == 0:
            state = proc.stdout.strip().splitlines()[0].strip() if proc.stdout.strip() else ""
        elif "invalid job id" in (proc.stderr or "").lower():
            state = ""  # Slurm forgot the job (finished more than MinJobAge ago)
        else:
            state = None
    _squeue_cache[job_id] = (now, state)
    return state


def adjust_status(run_dir: str | os.PathLike, status: str, reason: str | None) -> tuple[str, str | None]:
    """For a Slurm run still queued/running on disk: crashed when squeue no longer lists its job."""
    if status not in ACTIVE_STATUSES:
        return status, reason
    info = job_info(run_dir)
    if info is None:
        return status, reason
    state = squeue_state(str(info["job_id"]))
    if state == "":
        # The trainer may have written its final status just before the job left the queue.
        current = read_json(Path(run_dir) / "status.json", default=None)
        if isinstance(current, dict) and current.get("status") in FINAL_STATUSES:
            return current["status"], current.get("reason")
        return CRASHED, f"Slurm job {info['job_id']} ended without a final status (see {info.get('output', OUTPUT)})"
    return status, reason


def sync_status(record: Any) -> str:
    """Re-check a Slurm run (used by wait); returns its effective status."""
    from bttui.runs.store import load_record

    _squeue_cache.pop(str((job_info(record.paths.dir) or {}).get("job_id")), None)
    current = load_record(record.paths.dir)
    return current.status if current is not None else record.status


def cancel(record: Any, *, force: bool = False, wait_s: float = CANCEL_WAIT_S,
           poll: float = 0.5) -> str:
    """`scancel` the run's job (SIGTERM: the trainer checkpoints; `force`: SIGKILL); returns the effective status.

    A job cancelled before its trainer started, or killed, cannot write its own
    final status: that is written here as stopped.
    """
    from bttui.runs.store import load_record

    info = job_info(record.paths.dir)
    if info is None:
        raise BttuiError(f"Run {record.id} has no {SLURM_JSON}; it is not a Slurm run.")
    job = str(info["job_id"])
    started = bool(record.status_data.get("pid"))
    # Plain scancel: SIGTERM to the job (the batch shell exec'd the trainer, which checkpoints), SIGKILL after
    # Slurm's KillWait.
    proc = _run(["scancel", "--signal=KILL", job] if force else ["scancel", job])
    if proc.returncode != 0:
        raise BttuiError(f"scancel {job} failed for run {record.id}: {(proc.stderr or proc.stdout).strip()[:300]}")
    deadline = time.monotonic() + (wait_s if started and not force else 0.0)
    while True:
        _squeue_cache.pop(job, None)
        current = load_record(record.paths.dir)
        if current is None:
            raise BttuiError(f"Run {record.id} disappeared from {record.paths.dir} while stopping it.")
        if current.stored_status in FINAL_STATUSES:
            return current.status
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if started and not force and current.status in ACTIVE_STATUSES:
        return current.status  # still checkpointing: the caller says so (and offers --force)
    data = read_status(RunPaths(Path(record.paths.dir)))
    if data.get("status") in ACTIVE_STATUSES:
        started = bool(data.get("pid"))
        data.update(status=STOPPED, ended=time.time(),
                    reason=(f"Slurm job {job} cancelled" + (" (killed)" if force else "")
                            + ("; resume continues from the last checkpoint" if started else " before it started")))
        write_status(RunPaths(Path(record.paths.dir)), data)
    current = load_record(record.paths.dir)
    return current.status if current is not None else STOPPED

