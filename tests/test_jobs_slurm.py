"""Slurm round trip with fake `sbatch`/`squeue`/`scancel` on PATH that record their arguments."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bttui.cli import app
from bttui.runs import slurm
from bttui.runs.store import Store

FAKES = {
    # sbatch prints the job id (--parsable); FAKE_SBATCH_FAIL makes it refuse like a bad partition does.
    "sbatch": """#!/bin/sh
echo "sbatch $*" >> "$FAKE_SLURM/calls"
if [ -n "$FAKE_SBATCH_FAIL" ]; then echo "sbatch: error: invalid partition specified: nope" >&2; exit 1; fi
echo 4242
echo PENDING > "$FAKE_SLURM/job_4242"
""",
    # squeue -h -j ID -o %T: the state from the job file; a forgotten job gives real Slurm's error.
    "squeue": """#!/bin/sh
echo "squeue $*" >> "$FAKE_SLURM/calls"
while [ $# -gt 0 ]; do case "$1" in -j) shift; job="$1";; esac; shift; done
if [ -f "$FAKE_SLURM/job_$job" ]; then cat "$FAKE_SLURM/job_$job"; exit 0; fi
if [ -n "$FAKE_SQUEUE_FORGETS" ]; then echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi
exit 0
""",
    "scancel": """#!/bin/sh
echo "scancel $*" >> "$FAKE_SLURM/calls"
for last; do :; done
rm -f "$FAKE_SLURM/job_$last"
""",
}


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "slurm"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.setenv("BTTUI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(slurm, "SQUEUE_CACHE_S", 0.0)
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "exp.toml"
    config.write_text(f'name = "cluster"\n[data]\nroot = "{data}"\n[finetune]\ninit = ["random"]\n')
    return state, config, Store(tmp_path / "store")


def calls(state: Path) -> list[str]:
    f = state / "calls"
    return f.read_text().splitlines() if f.exists() else []


def submit(config: Path, *extra: str):
    result = CliRunner().invoke(app, ["run", str(config), "--slurm", *extra])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_submit_writes_script_and_records_job(fake_slurm):
    state, config, store = fake_slurm
    run_id = submit(config, "--partition", "gpu", "--time", "02:00:00", "--gpus", "2")
    run_dir = store.root / run_id
    script = (run_dir / "slurm.sbatch").read_text()
    assert calls(state) == [f"sbatch --parsable {run_dir / 'slurm.sbatch'}"]
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=02:00:00", "#SBATCH --gpus-per-node=2",
                 f"#SBATCH --output={run_dir / 'slurm.out'}"):
        assert line in script.splitlines()
    assert "torch.distributed.run --standalone --nproc-per-node=2 -m bttui.train " + str(run_dir) in script
    assert script.splitlines()[-1].startswith("exec ")
    job = json.loads((run_dir / "slurm.json").read_text())
    assert job["job_id"] == "4242" and job["partition"] == "gpu" and job["gpus"] == 2
    assert store.get(run_id).status == "queued"


def test_one_gpu_runs_the_trainer_directly(fake_slurm):
    _, config, store = fake_slurm
    run_id = submit(config, "--gpus", "1")
    script = (store.root / run_id / "slurm.sbatch").read_text()
    assert "torch.distributed.run" not in script and "-m bttui.train" in script
    assert "#SBATCH --gpus-per-node=1" in script and "--partition" not in script


@pytest.mark.parametrize("forgets", [False, True])
def test_job_gone_without_final_status_is_crashed(fake_slurm, monkeypatch, forgets):
    state, config, store = fake_slurm
    if forgets:
        monkeypatch.setenv("FAKE_SQUEUE_FORGETS", "1")
    run_id = submit(config)
    (state / "job_4242").write_text("RUNNING\n")
    assert store.get(run_id).status == "queued"
    (state / "job_4242").unlink()  # time limit / node failure: Slurm dropped the job
    record = store.get(run_id)
    assert record.status == "crashed" and "Slurm job 4242" in record.reason
    listed = json.loads(CliRunner().invoke(app, ["ls", "--json"]).stdout)
    assert [r["status"] for r in listed] == ["crashed"]
    assert any(c.startswith("squeue -h -j 4242") for c in calls(state))
    wait = CliRunner().invoke(app, ["wait", run_id])
    assert wait.exit_code == 1 and "crashed" in wait.stdout


def test_final_status_written_by_the_trainer_wins(fake_slurm):
    state, config, store = fake_slurm
    run_id = submit(config)
    paths = store.get(run_id).paths
    data = json.loads(paths.status.read_text())
    data.update(status="completed")
    paths.status.write_text(json.dumps(data))
    (state / "job_4242").unlink()
    assert store.get(run_id).status == "completed"
    assert CliRunner().invoke(app, ["wait", run_id]).exit_code == 0


def test_stop_cancels_the_job_and_logs_show_slurm_output(fake_slurm):
    state, config, store = fake_slurm
    run_id = submit(config)
    (store.root / run_id / "slurm.out").write_text("epoch 1 loss 3.2\n")
    logs = CliRunner().invoke(app, ["logs", run_id])
    assert logs.exit_code == 0 and logs.stdout == "epoch 1 loss 3.2\n"
    result = CliRunner().invoke(app, ["stop", run_id])
    assert result.exit_code == 0, result.output
    assert "scancel 4242" in calls(state)
    record = store.get(run_id)
    assert record.status == "stopped" and "cancelled before it started" in record.reason
    assert not (state / "job_4242").exists()


def test_force_stop_of_a_started_job(fake_slurm):
    state, config, store = fake_slurm
    run_id = submit(config)
    paths = store.get(run_id).paths
    data = json.loads(paths.status.read_text())
    data.update(status="running", pid=999999, host="node7", boot_id="other", heartbeat=__import__("time").time())
    paths.status.write_text(json.dumps(data))
    (state / "job_4242").write_text("RUNNING\n")
    assert store.get(run_id).status == "running"
    result = CliRunner().invoke(app, ["stop", "--force", run_id])
    assert result.exit_code == 0, result.output
    assert "scancel --signal=KILL 4242" in calls(state)
    record = store.get(run_id)
    assert record.status == "stopped" and "killed" in record.reason


def test_refused_submission_fails_the_run(fake_slurm, monkeypatch):
    _, config, store = fake_slurm
    monkeypatch.setenv("FAKE_SBATCH_FAIL", "1")
    result = CliRunner().invoke(app, ["run", str(config), "--slurm", "--partition", "nope"])
    assert result.exit_code == 2 and "invalid partition" in result.stderr
    (record,) = store.list_runs()
    assert record.status == "failed" and "sbatch refused" in record.reason


def test_slurm_options_need_slurm(fake_slurm):
    _, config, store = fake_slurm
    result = CliRunner().invoke(app, ["run", str(config), "--partition", "gpu"])
    assert result.exit_code == 2 and "--slurm" in result.stderr and store.list_runs() == []
