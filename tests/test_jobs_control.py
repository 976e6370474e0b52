"""Job control with real processes: detached runs survive their parent and SIGHUP, stop/resume keep the step count,
kill -9 shows as crashed, `wait` exit codes, and the Ctrl-C question in the foreground follower."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bttui.runs.events import read_events
from bttui.runs.store import Store

CONFIG = """
name = "jobs"
[data]
root = "{root}"
image_size = 32
[pretrain]
datasets = ["organs_sagittal"]
batch_size = 8
epochs = 500
projector = [32, 32]
log_every = 1
knn_every = 0
checkpoint_every = 1
warmup_epochs = 1
"""


@pytest.fixture()
def env(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'reservations_dir = "{tmp_path / "reservations"}"\n')
    e = {**os.environ, "OMP_NUM_THREADS": "1", "BTTUI_CONFIG": str(settings), "BTTUI_STORE": str(tmp_path / "store"),
         "COLUMNS": "120"}
    e.pop("BTTUI_FAULT", None)
    return e


@pytest.fixture()
def config(tmp_path):
    from bttui.data.synth import synthesize

    root = tmp_path / "data"
    synthesize(root, datasets=["organs_sagittal"], per_class=6, image_size=32)
    path = tmp_path / "jobs.toml"
    path.write_text(CONFIG.format(root=root.as_posix()))
    return path


def bttui(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "bttui", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def steps(run_dir: Path) -> list[int]:
    return [e["step"] for e in read_events(run_dir / "events.jsonl").events if e.get("type") == "step"]


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def alive(pid: int) -> bool:
    from bttui.runs.liveness import pid_alive

    return pid_alive(pid)


def test_detach_survives_sighup_stop_resume_kill9_wait(env, config, tmp_path):
    store = Store(tmp_path / "store")
    # The launching shell sits in its own session, like a login shell over SSH; after `bttui run --detach`
    # returns, the whole session is hung up (SIGHUP), as when the SSH connection drops.
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -m bttui run "{config}" --detach > "{tmp_path}/id.txt"; '
                                          f"sleep 60"], env=env, start_new_session=True)
    run_id = wait_for(lambda: (tmp_path / "id.txt").read_text().strip() if (tmp_path / "id.txt").exists() else "",
                      what="run id")
    run_dir = store.root / run_id
    wait_for(lambda: len(steps(run_dir)) >= 2, what="first steps")
    os.killpg(shell.pid, signal.SIGHUP)
    shell.wait(timeout=10)
    trainer = status(run_dir)["pid"]
    before = len(steps(run_dir))
    wait_for(lambda: len(steps(run_dir)) > before + 1, what="steps after SIGHUP")
    assert alive(trainer) and store.get(run_id).status == "running"
    assert trainer != shell.pid and os.getsid(trainer) == trainer  # its own session

    stop = bttui(env, "stop", run_id)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped" in stop.stdout
    assert not alive(trainer) and store.get(run_id).status == "stopped"
    last = max(steps(run_dir))
    assert (run_dir / "checkpoints" / "pretrain_interrupted.pt").exists()
    assert bttui(env, "wait", run_id).returncode == 1

    resume = bttui(env, "resume", run_id, "--detach")
    assert resume.returncode == 0, resume.stderr
    n = len(steps(run_dir))
    wait_for(lambda: len(steps(run_dir)) > n + 1, what="steps after resume")
    after = steps(run_dir)[n:]
    assert after[0] == last + 1 and after == sorted(after)  # step numbering continues, no restart from 1
    assert store.get(run_id).status == "running"

    pid = status(run_dir)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what="kill -9")
    record = store.get(run_id)
    assert record.status == "crashed" and "gone" in record.reason
    listed = json.loads(bttui(env, "ls", "--status", "crashed", "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    waited = bttui(env, "wait", run_id)
    assert waited.returncode == 1 and "crashed" in waited.stdout
    assert bttui(env, "rm", run_id, "--yes").returncode == 0
    assert not run_dir.exists()


def make_run(root: Path, name: str, status: str = "completed") -> Path:
    from bttui.config.load import loads_config

    cfg = loads_config(f'name = "{name}"\n[data]\nroot = "{root}"\n[finetune]\ninit = [\"random\"]\n', base_dir=root)
    paths = Store(root).create_run(cfg)
    data = json.loads(paths.status.read_text())
    data["status"] = status
    paths.status.write_text(json.dumps(data))
    return paths.dir


def test_wait_exit_code_and_rm_refuses_running(env, tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    make_run(root, "done")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run_dir = make_run(root, "live", status="running")
        from bttui.runs import liveness

        data = status(run_dir)
        data.update(pid=sleeper.pid, pid_start=liveness.process_start_time(sleeper.pid), host=liveness.hostname(),
                    boot_id=liveness.boot_id())
        (run_dir / "status.json").write_text(json.dumps(data))
        assert bttui(env, "wait", "done").returncode == 0
        timed = bttui(env, "wait", "live", "--timeout", "0.5")
        assert timed.returncode == 3 and "running" in timed.stdout
        refused = bttui(env, "rm", "live", "--yes")
        assert refused.returncode == 2 and "stop it first" in refused.stderr
        assert run_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


class _Proc:
    def __init__(self):
        self.signals = []
        self.pid = 1

    def poll(self):
        return 0 if self.signals else None

    def send_signal(self, sig):
        self.signals.append(sig)

    def kill(self):
        self.signals.append(9)


def _interrupting_sleep():
    calls = {"n": 0}

    def sleep(_s):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    return sleep


@pytest.mark.parametrize("answer, expect", [("d", "detached"), ("s", None)])
def test_foreground_ctrl_c_asks_stop_or_detach(tmp_path, answer, expect):
    from rich.console import Console

    from bttui.cli.run_cmd import follow
    from bttui.runs.layout import RunPaths

    paths = RunPaths(tmp_path)
    (tmp_path / "events.jsonl").write_text("")
    proc = _Proc()
    out = Console(file=open(os.devnull, "w"))
    asked = []
    outcome = follow(paths, proc, out, poll_s=0, sleep=_interrupting_sleep(),
                     ask=lambda: asked.append(1) or answer)
    assert outcome == expect and asked == [1]
    assert proc.signals == ([] if answer == "d" else [signal.SIGTERM])


def test_foreground_ctrl_c_without_terminal_stops(tmp_path):
    from rich.console import Console

    from bttui.cli.run_cmd import follow
    from bttui.runs.layout import RunPaths

    (tmp_path / "events.jsonl").write_text("")
    proc = _Proc()
    out = Console(file=open(os.devnull, "w"))
    assert follow(RunPaths(tmp_path), proc, out, poll_s=0, sleep=_interrupting_sleep()) is None
    assert proc.signals == [signal.SIGTERM]
