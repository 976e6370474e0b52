"""The run queue and GPU reservations: racing launches, in-order draining, crash safety, torchrun command lines.

NVML is faked (FakeGpuSampler); trainers are stand-in sleeper processes so slots live and die with real pids.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bttui.config.settings import MachineSettings
from bttui.gpus import GIB, FakeGpuSampler, GpuSample
from bttui.runs import queue as q
from bttui.runs.reserve import Request, Reservations, request_for
from bttui.runs.store import Store

launch_module = importlib.import_module("bttui.runs.launch")


def gpus(*free_gib: float, total: float = 80.0, procs=None) -> FakeGpuSampler:
    procs = procs or {}
    return FakeGpuSampler([GpuSample(i, "H100", int((total - f) * GIB), int(total * GIB), 0, tuple(procs.get(i, ())))
                           for i, f in enumerate(free_gib)])


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    return MachineSettings(reservations_dir=str(tmp_path / "res"), max_runs_per_gpu=1, max_cpu_runs=1)


@pytest.fixture()
def sleeper_trainer(monkeypatch, tmp_path):
    """Real launches whose 'trainer' writes CUDA_VISIBLE_DEVICES to started.txt and sleeps until killed."""
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        with open(os.path.join(sys.argv[1], "started.txt"), "w") as fh:
            fh.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-"))
        time.sleep(60)
    """))
    monkeypatch.setattr(launch_module, "trainer_argv", lambda run_dir, resume=False: [sys.executable, str(script),
                                                                                       str(run_dir)])
    procs: list[subprocess.Popen] = []
    real = launch_module.launch

    def launch(*args, **kwargs):
        proc = real(*args, **kwargs)
        procs.append(proc)
        return proc

    monkeypatch.setattr(launch_module, "launch", launch)
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def new_run(store: Store, name: str, resources: str = "") -> object:
    from bttui.config.load import loads_config

    text = f'name = "{name}"\n[data]\nroot = "/nonexistent"\n[finetune]\ninit = ["random"]\n[resources]\n{resources}'
    return store.create_run(loads_config(text, check_paths=False))


def started_on(paths) -> str | None:
    f = Path(paths.dir) / "started.txt"
    return f.read_text() if f.exists() else None


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


# ----------------------------------------------------------------- reservations


def test_request_from_resources():
    two = gpus(70, 10).sample()
    assert request_for({"device": "cpu"}, two) == Request(cpu=True)
    assert request_for({}, []) == Request(cpu=True)
    assert request_for({"devices": 2}, two) == Request(cpu=False, count=2)
    assert request_for({"gpus": [1]}, two) == Request(cpu=False, count=1, indices=(1,))
    from bttui.errors import BttuiError

    with pytest.raises(BttuiError, match="GPU 5"):
        request_for({"gpus": [5]}, two)
    with pytest.raises(BttuiError, match="no GPU"):
        request_for({"device": "cuda"}, [])


def test_claim_prefers_free_memory_and_skips_busy_gpus(tmp_path):
    res = Reservations(tmp_path, max_runs_per_gpu=1)
    sampler = gpus(10, 60, 40, procs={2: [(999999, 1)]})  # GPU 2 runs a process bttui does not know
    claim = res.claim("a", tmp_path, Request(cpu=False), sampler.sample())
    assert claim.gpus == [1] and claim.env() == {"CUDA_VISIBLE_DEVICES": "1"}
    second = res.claim("b", tmp_path, Request(cpu=False), sampler.sample())
    assert second.gpus == [0]  # 1 is reserved, 2 is taken by a foreign process
    assert res.claim("c", tmp_path, Request(cpu=False), sampler.sample()) is None
    second.release()
    assert res.claim("c", tmp_path, Request(cpu=False, count=2), sampler.sample()) is None  # only GPU 0 is free
    pair = Reservations(tmp_path / "other", max_runs_per_gpu=2).claim("d", tmp_path, Request(cpu=False, count=2),
                                                                      sampler.sample())
    assert pair.gpus == [1, 2]  # two runs per GPU: the foreign process leaves room on GPU 2


def test_stale_reservations_are_reclaimed(tmp_path):
    res = Reservations(tmp_path / "res")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim = res.claim("a", tmp_path, Request(cpu=True), [])
    claim.set_pid(dead.pid)  # its trainer has exited
    again = res.claim("b", tmp_path, Request(cpu=True), [])
    assert again is not None and json.loads(again.files[0].read_text())["run_id"] == "b"


RACER = """
import json, os, sys, time
from bttui.gpus import GIB, GpuSample
from bttui.runs.reserve import Request, Reservations
go = float(sys.argv[2])
while time.time() < go:
    pass
samples = [GpuSample(i, "H100", 0, 80 * GIB, 0) for i in range(2)]
claim = Reservations(sys.argv[1]).claim(f"run{os.getpid()}", sys.argv[1], Request(cpu=False), samples)
print(json.dumps(claim.gpus if claim else None), flush=True)
time.sleep(3)  # hold the slot while the others try
"""


def test_racing_launches_get_different_gpus(tmp_path):
    """Four processes released at the same instant ask for one GPU each on a 2-GPU machine."""
    go = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "res"), str(go)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.kill()
        p.wait()
    got = sorted(r[0] for r in results if r)
    assert got == [0, 1] and results.count(None) == 2


# ----------------------------------------------------------------- queue


def test_queue_drains_in_order_when_gpus_free(tmp_path, settings, sleeper_trainer):
    store = Store(tmp_path / "store")
    sampler = gpus(80)
    runs = [new_run(store, f"r{i}") for i in range(3)]
    started = q.submit(store, runs[0], sampler=sampler, settings=settings)
    assert list(started) == [runs[0].id]
    assert q.submit(store, runs[1], sampler=sampler, settings=settings) == {}
    assert q.submit(store, runs[2], sampler=sampler, settings=settings) == {}
    assert [e.run_id for e in q.Queue(store).entries()] == [runs[1].id, runs[2].id]
    wait_for(lambda: started_on(runs[0]) == "0")
    assert q.start_ready(store, sampler=sampler, settings=settings) == []  # GPU 0 still busy
    order = [runs[0].id]
    for i in (1, 2):
        sleeper_trainer[-1].kill()  # the running trainer ends ...
        sleeper_trainer[-1].wait()
        order += q.start_ready(store, sampler=sampler, settings=settings)  # ... and its exit hook drains
        wait_for(lambda: started_on(runs[i]) == "0")
    assert order == [r.id for r in runs]
    assert q.Queue(store).entries() == []
    status = json.loads(Path(runs[2].status).read_text())
    assert status["pid"] == sleeper_trainer[-1].pid and status["pgid"] == status["pid"]


def test_multi_gpu_runs_start_under_torchrun(tmp_path, settings, monkeypatch):
    store = Store(tmp_path / "store")
    paths = new_run(store, "ddp", "devices = 2\n")
    seen = {}

    def fake_launch(p, detach, resume=False, env=None, argv=None):
        seen.update(env=env, argv=argv, detach=detach)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    monkeypatch.setattr(launch_module, "launch", fake_launch)
    started = q.submit(store, paths, sampler=gpus(20, 70, 50), settings=settings)
    try:
        assert list(started) == [paths.id]
        assert seen["env"] == {"CUDA_VISIBLE_DEVICES": "1,2"} and seen["detach"] is True
        assert seen["argv"][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
        assert seen["argv"][6:] == ["bttui.train", str(paths.dir)]
    finally:
        for proc in started.values():
            proc.kill()
            proc.wait()


CRASHER = """
import importlib, os, signal, sys
from bttui.config.settings import MachineSettings
from bttui.gpus import GIB, FakeGpuSampler, GpuSample
from bttui.runs import queue as q
from bttui.runs.layout import RunPaths
from bttui.runs.store import Store
launch_module = importlib.import_module("bttui.runs.launch")
store, run_dir, res, when = Store(sys.argv[1]), RunPaths(sys.argv[2]), sys.argv[3], sys.argv[4]
real = launch_module.launch
def launch(*a, **k):
    if when == "before-spawn":
        os.kill(os.getpid(), signal.SIGKILL)
    proc = real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # after the spawn, before the queue row is gone
launch_module.launch = launch
launch_module.trainer_argv = lambda d, resume=False: [sys.executable, "-c", "import time; time.sleep(30)"]
q.submit(store, run_dir, sampler=FakeGpuSampler([GpuSample(0, "H100", 0, 80 * GIB, 0)]),
         settings=MachineSettings(reservations_dir=res))
"""


@pytest.mark.parametrize("when", ["before-spawn", "after-spawn"])
def test_launcher_crash_loses_no_queued_run_and_starts_none_twice(tmp_path, settings, sleeper_trainer, when):
    store = Store(tmp_path / "store")
    paths = new_run(store, "survivor")
    crash = subprocess.run([sys.executable, "-c", CRASHER, str(store.root), str(paths.dir), settings.reservations_dir,
                            when], capture_output=True, text=True)
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    assert [e.run_id for e in q.Queue(store).entries()] == [paths.id]  # the transaction never committed
    started = q.start_ready(store, sampler=gpus(80), settings=settings)
    status = json.loads(Path(paths.status).read_text())
    try:
        if when == "before-spawn":
            assert started == [paths.id]  # the next drain starts it (the dead launcher's slot is stale)
            wait_for(lambda: started_on(paths) == "0")
        else:
            assert started == [] and status["pid"]  # it did start: the row is dropped, not started twice
            assert started_on(paths) is None
        assert q.Queue(store).entries() == []
    finally:
        if status.get("pid"):
            try:
                os.kill(status["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_foreground_owner_blocks_others_until_it_dies(tmp_path, settings, sleeper_trainer):
    store = Store(tmp_path / "store")
    first, second = new_run(store, "attached"), new_run(store, "later")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        q.Queue(store).add(first.id, owner_pid=owner.pid)
        assert q.submit(store, second, sampler=gpus(80), settings=settings) == {}  # waits behind the attached run
        owner.kill()
        owner.wait()
        assert q.start_ready(store, sampler=gpus(80), settings=settings) == [first.id]  # orphan started detached
    finally:
        owner.kill()
        owner.wait()


def test_run_when_ready_waits_then_starts_attached(tmp_path, settings, sleeper_trainer):
    store = Store(tmp_path / "store")
    busy, mine = new_run(store, "busy"), new_run(store, "mine")
    q.submit(store, busy, sampler=gpus(80), settings=settings)
    positions = []

    def sleep(_s):
        sleeper_trainer[0].kill()  # the busy run ends while we wait
        sleeper_trainer[0].wait()

    proc, claim = q.run_when_ready(store, mine, sampler=gpus(80), settings=settings, on_wait=positions.append,
                                   sleep=sleep)
    assert positions == [1] and claim.gpus == [0] and proc is sleeper_trainer[1]
    assert q.Queue(store).entries() == []
    wait_for(lambda: started_on(mine) == "0")
