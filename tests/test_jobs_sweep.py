"""Sweeps: grid parsing, validation before creation, one queued run per point, resume of unfinished points, show.

Trainers are a tiny stand-in script (real subprocesses through the real queue) that writes a result whose
accuracy depends on the point, so `sweep show` has something to show.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bttui.cli import app
from bttui.errors import BttuiError
from bttui.runs import sweep as sw
from bttui.runs.queue import Queue
from bttui.runs.store import Store

launch_module = importlib.import_module("bttui.runs.launch")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "exp.toml"
    config.write_text(f'name = "grid"\n[data]\nroot = "{data}"\n[finetune]\ninit = ["random"]\n')
    store = Store(tmp_path / "store")
    monkeypatch.setenv("BTTUI_STORE", str(store.root))
    monkeypatch.setenv("COLUMNS", "160")
    return store, config


@pytest.fixture()
def fake_trainer(monkeypatch, tmp_path):
    """A trainer that 'completes' with test accuracy = finetune.lr + seed / 100 (or fails when lr > 0.5)."""
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys, time, tomllib
        run = sys.argv[1]
        time.sleep(0.2)  # like a real trainer's start-up: the launcher records the pid of a queued run first
        with open(os.path.join(run, "launches.txt"), "a") as fh:  # before the final status: the test reads it then
            fh.write(" ".join(sys.argv[2:]) + "\\n")
        cfg = tomllib.load(open(os.path.join(run, "config.toml"), "rb"))
        lr, seed = cfg["finetune"]["lr"], cfg["seed"]
        status = json.load(open(os.path.join(run, "status.json")))
        ok = lr <= 0.5
        json.dump({"pretrain": None, "results": [{"cell": "c", "test_accuracy": lr + seed / 100}]},
                  open(os.path.join(run, "summary.json"), "w"))
        status.update(status="completed" if ok else "failed", reason=None if ok else "lr too high",
                      pid=os.getpid(), ended=time.time())
        with open(os.path.join(run, "status.tmp"), "w") as fh:
            json.dump(status, fh)
        os.replace(os.path.join(run, "status.tmp"), os.path.join(run, "status.json"))
    """))
    monkeypatch.setattr(launch_module, "trainer_argv",
                        lambda run_dir, resume=False: [sys.executable, str(script), str(run_dir)]
                        + (["--resume"] if resume else []))


def test_parse_grid_and_points():
    grid = sw.parse_grid(["finetune.lr=[1e-3, 1e-4]", "seed=[0, 1, 2]", "name=['a b']"])
    assert grid == {"finetune.lr": [1e-3, 1e-4], "seed": [0, 1, 2], "name": ["a b"]}
    points = sw.grid_points(grid)
    assert len(points) == 6 and points[0] == {"finetune.lr": 1e-3, "seed": 0, "name": "a b"}
    assert points[1]["seed"] == 1 and points[3]["finetune.lr"] == 1e-4  # first key varies slowest
    assert sw.point_overrides(points[0]) == ["finetune.lr=0.001", "seed=0", 'name="a b"']
    for bad in ["seed=3", "seed=[]", "seed", "=[1]", "seed=[1, 1]"]:
        with pytest.raises(BttuiError):
            sw.parse_grid([bad])
    with pytest.raises(BttuiError, match="twice"):
        sw.parse_grid(["seed=[1]", "seed=[2]"])


def test_new_sweep_id_format():
    assert sw.new_sweep_id("My Grid!", 0).startswith("sw-19700101-000000-my-grid-")
    import re

    assert re.fullmatch(r"sw-\d{8}-\d{6}-[a-z0-9-]+-[0-9a-f]{4}", sw.new_sweep_id("x"))


def test_invalid_point_creates_nothing(env):
    store, config = env
    with pytest.raises(BttuiError, match=r"finetune.lr=-1.*no run of the sweep was created"):
        sw.create_sweep(store, config, sw.parse_grid(["finetune.lr=[0.001, -1.0]"]), submit=False)
    assert store.list_runs() == [] and not sw.sweeps_dir(store).exists()


def test_sweep_runs_points_then_show_and_resume(env, fake_trainer):
    store, config = env
    result = CliRunner().invoke(app, ["sweep", str(config), "--grid", "finetune.lr=[0.25, 0.75]",
                                      "--grid", "seed=[0, 1]", "--detach"])
    assert result.exit_code == 0, result.output
    sweep_id = result.stdout.strip().splitlines()[0]
    assert sweep_id.startswith("sw-") and sweep_id.endswith(tuple("0123456789abcdef"))
    runs = store.list_runs()
    assert len(runs) == 4 and {r.run_data["sweep_id"] for r in runs} == {sweep_id}
    assert sorted(json.dumps(r.run_data["sweep_point"], sort_keys=True) for r in runs) == sorted(
        json.dumps({"finetune.lr": lr, "seed": s}, sort_keys=True) for lr in (0.25, 0.75) for s in (0, 1))
    manifest = json.loads((store.root / ".bttui" / "sweeps" / f"{sweep_id}.json").read_text())
    assert manifest["grid"] == {"finetune.lr": [0.25, 0.75], "seed": [0, 1]}

    seen = []
    final = sw.follow_sweep(store, sweep_id, on_change=lambda p, old: seen.append(p.status), poll=0.05,
                            drain_every=0.0, timeout=60)
    statuses = [p.status for p in final.points]
    assert statuses == ["completed", "completed", "failed", "failed"], statuses
    assert [p.best_accuracy() for p in final.points][:2] == [0.25, 0.26]

    shown = CliRunner().invoke(app, ["sweep", "show", sweep_id[:12], "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["id"] == sweep_id and [p["status"] for p in data["points"]] == statuses
    assert data["points"][1]["point"] == {"finetune.lr": 0.25, "seed": 1} and data["points"][1]["best_accuracy"] == 0.26
    table = CliRunner().invoke(app, ["sweep", "show", sweep_id])
    assert table.exit_code == 0 and "finetune.lr" in table.stdout and "26.0%" in table.stdout
    assert "2 completed, 2 failed" in table.stdout

    # resume: only the two failed points go again (as resumes); completed ones are not touched.
    completed_ids = [p.record.id for p in final.points[:2]]
    res = CliRunner().invoke(app, ["sweep", "resume", sweep_id, "--detach"])
    assert res.exit_code == 0, res.output
    assert "2 resumed, 0 created, 0 re-queued, 2 left" in res.stdout
    final = sw.follow_sweep(store, sweep_id, on_change=lambda p, old: None, poll=0.05, drain_every=0.0, timeout=60)
    for p in final.points[2:]:
        assert (Path(p.record.paths.dir) / "launches.txt").read_text().splitlines() == ["", "--resume"]
    for run_id in completed_ids:
        assert (store.root / run_id / "launches.txt").read_text().splitlines() == [""]


def test_resume_recreates_missing_points_and_requeues_lost_ones(env, fake_trainer):
    store, config = env
    sweep = sw.create_sweep(store, config, sw.parse_grid(["seed=[0, 1, 2]"]), submit=False)
    assert [p.status for p in sweep.points] == ["queued"] * 3 and Queue(store).entries() == []
    from bttui.runs.control import delete_run

    delete_run(store, sweep.points[2].record)  # as if the creating process died before the third run
    assert sw.load_sweep(store, sweep.id).points[2].record is None

    calls = []
    done = sw.resume_sweep(store, sweep.id, resume=lambda *a, **k: calls.append(a))
    assert calls == [] and len(done["created"]) == 1 and len(done["requeued"]) == 2
    final = sw.follow_sweep(store, sweep.id, on_change=lambda p, old: None, poll=0.05, drain_every=0.0, timeout=60)
    assert [p.status for p in final.points] == ["completed"] * 3
    assert [p.point for p in final.points] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]


def test_foreground_sweep_exit_code(env, fake_trainer, monkeypatch):
    store, config = env
    from bttui.cli import sweep_cmd

    real = sw.follow_sweep
    monkeypatch.setattr(sw, "follow_sweep", lambda *a, **k: real(*a, **{**k, "poll": 0.05, "drain_every": 0.0}))
    ok = CliRunner().invoke(app, ["sweep", str(config), "--grid", "finetune.lr=[0.1, 0.2]"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.count("completed") >= 2 and "2 completed" in ok.stdout
    bad = CliRunner().invoke(app, ["sweep", "start", str(config), "-g", "finetune.lr=[0.1, 0.9]"])
    assert bad.exit_code == 1 and "1 completed, 1 failed" in bad.stdout
    assert sweep_cmd.SweepGroup is not None


def test_unknown_sweep_is_a_clear_error(env):
    result = CliRunner().invoke(app, ["sweep", "show", "sw-nope"])
    assert result.exit_code == 2 and "No sweep matches 'sw-nope'" in result.stderr
