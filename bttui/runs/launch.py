"""Start the trainer for a run directory (plain, or under torchrun for several GPUs): attached or detached.

Output (stdout and stderr) is appended to the run's train.log; stdin is
/dev/null so a trainer never waits on a terminal. A detached trainer gets a
new session (setsid): closing the terminal (SIGHUP to its process group) does
not reach it, nor does Ctrl-C, which reaches only a `bttui` process following
it (that one then asks: stop or detach). Its session id (= its pid) is
recorded as `pgid` in status.json so `bttui stop` signals torchrun and its
workers together. An attached trainer stays in the caller's process group and
dies with the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from bttui.faults import fault_point
from bttui.runs import liveness
from bttui.runs.layout import RunPaths, iso_utc
from bttui.runs.status import QUEUED, read_status, write_status


def trainer_argv(run_dir: str | os.PathLike, resume: bool = False) -> list[str]:
    """`[python, -m, bttui.train, RUN_DIR]` (+ `--resume`), with the interpreter running bttui now."""
    argv = [sys.executable, "-m", "bttui.train", str(run_dir)]
    if resume:
        argv.append("--resume")
    return argv


def torchrun_argv(run_dir: str | os.PathLike, nproc: int, resume: bool = False) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m bttui.train RUN_DIR` (+ `--resume`)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
            "-m", "bttui.train", str(run_dir)]
    if resume:
        argv.append("--resume")
    return argv


def argv_for(run_dir: str | os.PathLike, gpus: Sequence[int] = (), resume: bool = False) -> list[str]:
    """The command for a run on the reserved `gpus`: torchrun with one process per GPU when more than one."""
    if len(gpus) > 1:
        return torchrun_argv(run_dir, len(gpus), resume)
    return trainer_argv(run_dir, resume)


def _record_pid(paths: RunPaths, pid: int, pgid: int | None = None) -> None:
    # A trainer that dies before its first status write (import error, bad CUDA) would leave the run
    # "queued" forever; with the pid recorded the store sees it is gone. Only a still-queued,
    # pid-less status is touched: the trainer's own writes (a second or more after exec) always win.
    data = read_status(paths)
    if data.get("status") != QUEUED or data.get("pid"):
        return
    data.update(pid=pid, pid_start=liveness.process_start_time(pid), pgid=pgid, host=liveness.hostname(),
                boot_id=liveness.boot_id())
    write_status(paths, data)


def launch(paths: RunPaths | str | os.PathLike, detach: bool, resume: bool = False,
           env: Mapping[str, str] | None = None, *, argv: Sequence[str] | None = None,
           cwd: str | os.PathLike | None = None, record_pid: bool = True) -> subprocess.Popen:
    """Start the trainer for `paths` and return its Popen (the caller decides whether to wait).

    `env` entries are added to this process's environment (PYTHONUNBUFFERED=1
    always, so train.log is current). `argv` replaces the trainer command
    (tests, wrappers such as torchrun). With `record_pid`, a queued
    status.json gets the child's pid, start time, session id, host and boot id.
    """
    paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
    command = list(argv) if argv is not None else trainer_argv(paths.dir, resume)
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    child_env["PYTHONUNBUFFERED"] = "1"
    with open(paths.log, "ab") as log:
        # A marker line keeps the output of a resumed run apart from the first attempt's.
        log.write(f"--- {iso_utc()} bttui launch{' (resume)' if resume else ''}: {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=cwd,
            close_fds=True,
            start_new_session=detach,
        )
    fault_point("launch.spawned")
    if record_pid:
        try:
            _record_pid(paths, proc.pid, proc.pid if detach else None)
        except OSError:
            pass  # an unwritable status.json must not orphan a started trainer silently; it reports itself
    return proc
