"""Liveness (pid + start time + boot id), status.json writing, crash detection and launching trainers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bttui.runs import liveness
from bttui.runs.launch import launch, trainer_argv
from bttui.runs.layout import RunPaths
from bttui.runs.status import (
    COMPLETED, CRASHED, QUEUED, RUNNING, StatusFile, effective_status, format_duration, progress, read_status,
    write_status,
)

linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def wait_for(predicate, timeout=10.0, interval=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- liveness


@linux
def test_boot_id_and_own_start_time():
    assert liveness.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    start = liveness.process_start_time(os.getpid())
    assert isinstance(start, int) and start > 0
    assert liveness.process_start_time(os.getpid()) == start
    assert liveness.pid_alive(os.getpid(), start)
    assert liveness.pid_alive(os.getpid())
    assert not liveness.pid_alive(os.getpid(), start + 1)  # same pid, other start: a reused pid
    assert liveness.hostname()


@linux
def test_dead_and_invalid_pids():
    pid = dead_pid()
    assert liveness.process_start_time(pid) is None  # pids are handed out in order; reuse this soon is not a worry
    for bad in (None, 0, -1, True, "12"):
        assert not liveness.pid_alive(bad)
        assert liveness.process_start_time(bad) is None


@linux
def test_zombie_counts_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited: stays a zombie after exiting
    try:
        assert wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
        assert liveness.process_start_time(proc.pid) is None
        assert not liveness.pid_alive(proc.pid)
    finally:
        proc.wait()


# ---------------------------------------------------------------- status file


def test_status_file_merges_and_heartbeats(tmp_path):
    paths = RunPaths(tmp_path)
    write_status(paths, {"status": QUEUED, "cells_total": 4})
    clock = [1000.0]
    sf = StatusFile(paths, clock=lambda: clock[0])
    sf.update(status=RUNNING, pid=12, stage="pretrain")
    data = read_status(paths)
    assert data == {"status": RUNNING, "cells_total": 4, "pid": 12, "stage": "pretrain", "heartbeat": 1000.0}
    clock[0] = 1003.0
    assert sf.heartbeat(min_interval=5.0) is False
    assert read_status(paths)["heartbeat"] == 1000.0
    clock[0] = 1006.0
    assert sf.heartbeat(min_interval=5.0) is True
    assert read_status(paths)["heartbeat"] == 1006.0
    sf.update(loss=float("nan"))
    assert json.loads(paths.status.read_text())["loss"] == "nan"
    assert os.listdir(tmp_path) == ["status.json"]


def test_read_status_missing_is_empty(tmp_path):
    assert read_status(RunPaths(tmp_path)) == {}


def test_format_duration_and_progress():
    assert [format_duration(s) for s in (5, 303, 7500, 3 * 86400 + 4 * 3600)] == ["5s", "5m03s", "2h05m", "3d04h"]
    assert progress({"status": RUNNING, "stage": "pretrain", "step": 120, "steps": 400}) == 0.3
    assert progress({"status": RUNNING, "stage": "finetune", "cells_done": 2, "cells_total": 8}) == 0.25
    assert progress({"status": COMPLETED}) == 1.0
    assert progress({"status": QUEUED}) is None


# ---------------------------------------------------------------- effective status


@linux
def test_effective_status_same_host():
    host, boot = "box", "boot-1"
    me = {"status": RUNNING, "pid": os.getpid(), "pid_start": liveness.process_start_time(os.getpid()),
          "host": host, "boot_id": boot, "heartbeat": 0.0}
    # alive with the right start time: running even with an old heartbeat (a slow step is not a crash)
    assert effective_status(me, now=1e9, host=host, boot=boot) == (RUNNING, None)
    assert effective_status({**me, "pid_start": me["pid_start"] + 7}, host=host, boot=boot) == (
        CRASHED, f"process {os.getpid()} is gone (pid reused)")
    pid = dead_pid()
    status, reason = effective_status({**me, "pid": pid}, host=host, boot=boot)
    if liveness.process_start_time(pid) is None:  # unless the pid was reused already
        assert (status, reason) == (CRASHED, f"process {pid} is gone")
    assert effective_status(me, host=host, boot="boot-2") == (CRASHED, "machine rebooted")
    # queued with a pid: launched, the trainer has not reported yet
    assert effective_status({**me, "status": QUEUED}, host=host, boot=boot) == (QUEUED, None)
    assert effective_status({**me, "status": QUEUED, "pid": pid}, host=host, boot=boot)[0] == CRASHED
    # queued without a pid waits for the queue; final statuses are never second-guessed
    assert effective_status({"status": QUEUED, "host": host}, host=host, boot=boot) == (QUEUED, None)
    assert effective_status({**me, "pid": pid, "status": COMPLETED}, host=host, boot=boot) == (COMPLETED, None)
    assert effective_status({"status": "failed", "reason": "collapse"}, host=host, boot=boot) == ("failed", "collapse")


def test_effective_status_other_host_uses_heartbeat():
    run = {"status": RUNNING, "pid": 1, "pid_start": 1, "host": "gpu-box", "boot_id": "b", "heartbeat": 1000.0}
    assert effective_status(run, now=1100.0, host="laptop", boot="x") == (RUNNING, None)
    assert effective_status(run, now=1000.0 + 7500, host="laptop", boot="x") == (CRASHED, "no heartbeat for 2h05m")
    assert effective_status({"status": RUNNING, "host": "gpu-box"}, now=5e9, host="laptop") == (RUNNING, None)


def test_effective_status_without_status_word():
    status, reason = effective_status({})
    assert status == QUEUED and "status.json" in reason


# ---------------------------------------------------------------- launch


def test_trainer_argv(tmp_path):
    assert trainer_argv(tmp_path) == [sys.executable, "-m", "bttui.train", str(tmp_path)]
    assert trainer_argv(tmp_path, resume=True)[-1] == "--resume"


FAKE_TRAINER = r"""
import json, os, sys, time
run = sys.argv[1]
time.sleep(0.2)  # let the launcher record the pid first, as the real trainer's imports do
print("out line", os.environ.get("PYTHONUNBUFFERED"), os.environ.get("BTTUI_TEST"))
print("err line", file=sys.stderr)
print("stdin:", repr(sys.stdin.read()))
with open(os.path.join(run, "status.json")) as fh:
    seen = json.load(fh)
with open(os.path.join(run, "seen.json"), "w") as fh:
    json.dump(seen, fh)
"""


@linux
def test_launch_foreground_logs_and_records_pid(tmp_path):
    paths = RunPaths(tmp_path)
    write_status(paths, {"status": QUEUED, "pid": None})
    proc = launch(paths, detach=False, env={"BTTUI_TEST": "yes"},
                  argv=[sys.executable, "-c", FAKE_TRAINER, str(tmp_path)])
    assert proc.wait(timeout=30) == 0
    log = paths.log.read_text()
    assert "bttui launch" in log.splitlines()[0]
    assert "out line 1 yes" in log and "err line" in log and "stdin: ''" in log
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["pid"] == proc.pid and seen["status"] == QUEUED
    assert seen["host"] == liveness.hostname() and isinstance(seen["pid_start"], int)
    # a second launch (resume) appends to the same log
    launch(paths, detach=True, resume=True, argv=[sys.executable, "-c", "print('second')"]).wait(timeout=30)
    log = paths.log.read_text()
    assert "out line" in log and log.rstrip().endswith("second") and "(resume)" in log


@linux
def test_launch_does_not_overwrite_a_running_status(tmp_path):
    paths = RunPaths(tmp_path)
    write_status(paths, {"status": RUNNING, "pid": 1, "pid_start": 2})
    launch(paths, detach=False, argv=[sys.executable, "-c", "pass"]).wait(timeout=30)
    assert read_status(paths) == {"status": RUNNING, "pid": 1, "pid_start": 2}


PARENT = r"""
import sys, time
from bttui.runs.launch import launch
from bttui.runs.layout import RunPaths
run, detach, beat = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
child = "import sys, time\nwhile True:\n    open(sys.argv[1], 'a').write('x')\n    time.sleep(0.05)\n"
proc = launch(RunPaths(run), detach=detach, argv=[sys.executable, "-c", child, beat])
print(proc.pid, flush=True)
time.sleep(60)
"""


def _hangup_parent(tmp_path: Path, detach: bool) -> tuple[int, int, Path]:
    """Start a parent that launches a heartbeat child, then SIGHUP the parent's process group (a closed terminal)."""
    beat = tmp_path / "beat"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), "1" if detach else "0", str(beat)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child_pid = int(parent.stdout.readline())
    start = liveness.process_start_time(child_pid)
    assert wait_for(lambda: beat.exists() and beat.stat().st_size > 0)
    os.killpg(parent.pid, signal.SIGHUP)
    assert parent.wait(timeout=10) == -signal.SIGHUP
    return child_pid, start, beat


def _kill_if_ours(pid: int, start: int) -> None:
    if liveness.pid_alive(pid, start):  # never signal a reused pid
        os.kill(pid, signal.SIGKILL)


@linux
def test_detached_child_survives_parent_exit_and_sighup(tmp_path):
    child_pid, start, beat = _hangup_parent(tmp_path, detach=True)
    try:
        size = beat.stat().st_size
        assert wait_for(lambda: beat.stat().st_size > size + 3, timeout=5)
        assert liveness.pid_alive(child_pid, start)
        assert os.getsid(child_pid) == child_pid  # its own session: no terminal can hang it up
    finally:
        _kill_if_ours(child_pid, start)
    assert wait_for(lambda: not liveness.pid_alive(child_pid), timeout=5)


@linux
def test_attached_child_dies_with_the_terminal(tmp_path):
    child_pid, start, beat = _hangup_parent(tmp_path, detach=False)
    try:
        assert wait_for(lambda: not liveness.pid_alive(child_pid, start), timeout=5)
    finally:
        _kill_if_ours(child_pid, start)
