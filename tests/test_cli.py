"""CLI tests: one CliRunner test (or more) per command, on hand-made run directories and a faked trainer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bttui.cli import app, main
from bttui.errors import BttuiError

CLASSES = ["liver", "spleen", "[bold]kidney[/bold]"]
MATRIX = [[9, 1, 0], [2, 7, 1], [0, 0, 10]]
QUICK_TOML = """\
name = "quick"

[data]
root = "{root}"
image_size = 32

[pretrain]
datasets = ["organs_axial"]
epochs = 2
batch_size = 16
projector = [64, 64]

[finetune]
datasets = ["organs_sagittal"]
init = ["barlow_twins", "random"]
strategy = ["linear"]
label_fractions = [0.5, 1.0]
epochs = 2
"""


@pytest.fixture()
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture()
def config_file(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "quick.toml"
    path.write_text(QUICK_TOML.format(root=data.as_posix()))
    return path


def result_item(fraction: float, acc: float | None, status: str = "completed") -> dict:
    return {
        "cell": f"organs_sagittal/barlow_twins/linear/{fraction:g}/s0", "dataset": "organs_sagittal",
        "task": "organ label", "init": "barlow_twins:20241125-205800-demo-ab12", "strategy": "linear",
        "label_fraction": fraction, "n_train": 30, "seed": 0, "status": status, "test_accuracy": acc,
        "per_class_accuracy": [0.9, 0.7, 1.0], "confusion_matrix": MATRIX if status == "completed" else None,
        "class_names": CLASSES, "lineage": {"backbone_from": "20241125-205800-demo-ab12"},
        "test_accuracy_ci": [0.75, 0.93] if acc is not None else None,
    }


def make_run(root: Path, run_id: str, name: str, *, status: str = "completed", reason: str | None = None,
             results: list | None = None, created: str = "2024-11-25T20:58:00+00:00") -> Path:
    """A run directory written by hand, as a copied run looks to the store."""
    from bttui.config.load import config_to_toml, loads_config

    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    cfg = loads_config(QUICK_TOML.format(root="/nonexistent/data"), check_paths=False)
    cfg.name = name
    (run_dir / "config.toml").write_text(config_to_toml(cfg))
    (run_dir / "run.json").write_text(json.dumps({
        "format": 1, "id": run_id, "name": name, "created": created, "host": "box", "boot_id": "b00t",
        "git_commit": None, "versions": {"python": "3.11"}, "hardware": {}, "lineage": {"parent": None},
        "sweep_id": None, "config_path": "/somewhere/quick.toml",
    }))
    (run_dir / "status.json").write_text(json.dumps({
        "status": status, "reason": reason, "pid": None, "pid_start": None, "host": "box", "boot_id": "b00t",
        "heartbeat": 1732568280.0, "started": 1732568280.0, "ended": 1732568380.0, "stage": None,
        "cell": None, "cells_done": len(results or []), "cells_total": 2, "best_accuracy": 0.8,
    }))
    if results is not None:
        (run_dir / "summary.json").write_text(json.dumps({"pretrain": {"epochs": 2, "final_loss": 812.4},
                                                         "results": results}))
    (run_dir / "events.jsonl").write_text("")
    return run_dir


def invoke(runner, args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def assert_user_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "bttui: error:" in result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


# ----------------------------------------------------------------- ls


def test_ls_empty_store(runner, store):
    result = invoke(runner, ["--store", store, "ls"])
    assert result.exit_code == 0, result.output
    assert "no runs" in result.stdout
    result = invoke(runner, ["ls", "--json", "--store", store])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_ls_json_newest_first_with_documented_keys(runner, store):
    make_run(store, "20241125-205800-old-aaaa", "old", results=[result_item(0.5, 0.8)])
    make_run(store, "20241126-090000-new-bbbb", "new", status="failed", reason="loss is nan",
             created="2024-11-26T09:00:00+00:00")
    result = invoke(runner, ["--store", store, "ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["20241126-090000-new-bbbb", "20241125-205800-old-aaaa"]
    assert set(rows[0]) >= {"id", "name", "status", "status_reason", "created", "stage", "progress",
                            "best_accuracy", "sweep_id"}
    assert rows[0]["status"] == "failed" and rows[0]["status_reason"] == "loss is nan"
    assert rows[1]["status"] == "completed" and rows[1]["name"] == "old"

    human = invoke(runner, ["--store", store, "ls"])
    assert "✗ failed" in human.stdout and "✓ completed" in human.stdout and "loss is nan" in human.stdout

    only_failed = invoke(runner, ["--store", store, "ls", "--json", "--status", "failed"])
    assert [r["id"] for r in json.loads(only_failed.stdout)] == ["20241126-090000-new-bbbb"]
    assert_user_error(invoke(runner, ["--store", store, "ls", "--status", "finished"]), "finished", "completed")


def test_ls_pages_and_no_command_lists_runs(runner, store, monkeypatch):
    for i in range(22):
        make_run(store, f"20241125-2058{i:02d}-r{i}-{i:04x}", f"r{i}", created=f"2024-11-25T20:58:{i:02d}+00:00")
    result = invoke(runner, ["--store", store, "ls"])
    assert result.exit_code == 0
    assert "2 more; use --all" in result.stdout
    assert "r21" in result.stdout and "-r1-" not in result.stdout
    everything = invoke(runner, ["--store", store, "ls", "--all"])
    assert "more; use --all" not in everything.stdout and "-r1-" in everything.stdout
    # BTTUI_STORE is honoured, and plain `bttui` prints the run list.
    monkeypatch.setenv("BTTUI_STORE", str(store))
    bare = invoke(runner, [])
    assert bare.exit_code == 0 and "r21" in bare.stdout and "2 more; use --all" in bare.stdout


def test_index_rebuild(runner, store):
    make_run(store, "20241125-205800-a-aaaa", "a")
    make_run(store, "20241125-205801-b-bbbb", "b")
    result = invoke(runner, ["index", "rebuild", "--store", store])
    assert result.exit_code == 0, result.output
    assert "indexed 2 runs" in result.stdout
    assert (store / ".bttui" / "index.sqlite").exists()


# ----------------------------------------------------------------- show


def test_show_json(runner, store):
    results = [result_item(0.5, 0.8), result_item(1.0, None, status="failed")]
    make_run(store, "20241125-205800-demo-ab12", "demo", results=results)
    result = invoke(runner, ["--store", store, "show", "20241125-205800-demo", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown) == {"id", "name", "status", "status_reason", "created", "lineage", "config", "results",
                          "pretrain", "sweep_id"}
    assert shown["id"] == "20241125-205800-demo-ab12" and shown["status"] == "completed"
    assert shown["results"] == results
    assert shown["pretrain"] == {"epochs": 2, "final_loss": 812.4}
    assert shown["config"]["pretrain"]["epochs"] == 2
    assert shown["lineage"] == {"parent": None}
    # A unique name resolves too.
    by_name = invoke(runner, ["--store", store, "show", "demo", "--json"])
    assert json.loads(by_name.stdout)["id"] == "20241125-205800-demo-ab12"


def test_show_human_has_results_and_confusion_matrix(runner, store):
    make_run(store, "20241125-205800-demo-ab12", "demo", results=[result_item(0.5, 0.8)])
    result = invoke(runner, ["--store", store, "show", "demo"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "demo" in out and "✓ completed" in out
    assert "80.0% (75.0–93.0)" in out
    assert "liver" in out and "spleen" in out
    # Class names are data: shown literally, never as markup.
    assert "[bold]kidney[/bold]" in out
    assert "90.0" in out and "% of each row" in out  # liver row: 9 of 10 right


def test_show_unknown_and_ambiguous_run(runner, store):
    make_run(store, "20241125-205800-demo-ab12", "demo")
    make_run(store, "20241125-205900-demo-cd34", "demo2")
    assert_user_error(invoke(runner, ["--store", store, "show", "nope"]), "nope")
    ambiguous = invoke(runner, ["--store", store, "show", "20241125-20"])
    assert_user_error(ambiguous, "20241125-20")


def test_markup_and_ansi_in_run_name_printed_literally(runner, store):
    name = "[red]evil[/red] \x1b[2Jname"
    make_run(store, "20241125-205800-evil-ab12", name, status="failed", reason="[bold]why[/bold]",
             results=[result_item(0.5, 0.8)])
    for args in (["ls"], ["show", "20241125-205800-evil-ab12"]):
        result = invoke(runner, ["--store", store, *args], color=True)
        assert result.exit_code == 0, result.output
        assert "[red]evil[/red]" in result.stdout
        assert "\x1b[2J" not in result.stdout and "\\e[2Jname" in result.stdout
        assert "[bold]why[/bold]" in result.stdout


# ----------------------------------------------------------------- config


def test_config_show_sources_and_toml(runner, config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, ["config", "show", "quick.toml", "--set", "finetune.epochs=7"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()

    def row(key):
        found = [line for line in lines if line.split() and line.split()[0] == key]
        assert found, f"{key} not in output"
        return found[0]

    assert "2" in row("pretrain.epochs") and "quick.toml:" in row("pretrain.epochs")
    assert "7" in row("finetune.epochs") and "--set" in row("finetune.epochs")
    assert "default" in row("pretrain.lambd") and "0.0051" in row("pretrain.lambd")

    as_toml = invoke(runner, ["config", "show", config_file, "--toml"])
    assert as_toml.exit_code == 0
    out = tmp_path / "resolved.toml"
    out.write_text(as_toml.stdout)
    from bttui.config.load import load_config

    assert load_config(out) == load_config(config_file)


def test_bad_config_exits_2_without_traceback(runner, config_file, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(config_file.read_text().replace("epochs = 2\nbatch_size", "epohcs = 2\nbatch_size"))
    assert_user_error(invoke(runner, ["config", "show", bad]), "epohcs")
    assert_user_error(invoke(runner, ["run", bad, "--store", tmp_path / "s"]), "epohcs")
    assert_user_error(invoke(runner, ["config", "show", tmp_path / "missing.toml"]), "missing.toml")


def test_main_turns_errors_into_one_paragraph(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["config", "show", str(tmp_path / "[bold]missing[/bold].toml")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bttui: error:") and "[bold]missing[/bold].toml" in err and "Traceback" not in err

    def boom(*_a, **_k):
        raise BttuiError("outside [red]any[/red] command", exit_code=3)

    monkeypatch.setattr(sys.modules["bttui.cli"], "app", boom)
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 3
    assert "outside [red]any[/red] command" in capsys.readouterr().err


# ----------------------------------------------------------------- data


def test_data_synth_writes_datasets(runner, tmp_path):
    root = tmp_path / "mimeta"
    result = invoke(runner, ["data", "synth", root, "--per-class", 4, "--image-size", 16,
                             "--datasets", "organs_axial,organs_sagittal"])
    assert result.exit_code == 0, result.output
    assert "organs_axial" in result.stdout and "organs_sagittal" in result.stdout
    from bttui.data.reader import list_datasets

    assert sorted(d.id for d in list_datasets(root)) == ["organs_axial", "organs_sagittal"]
    again = invoke(runner, ["data", "synth", root, "--per-class", 4, "--image-size", 16, "--datasets", "organs_axial"])
    assert_user_error(again, "already exists")
    assert_user_error(invoke(runner, ["data", "synth", root, "--datasets", "organs_axil"]), "organs_axil")


# ----------------------------------------------------------------- run (faked trainer)


class FakeTrainer:
    """Stands in for the trainer process: each poll() writes the next chunk of a run's files."""

    def __init__(self, paths, final_status="completed", reason=None, steps=4):
        from bttui.runs.events import EventWriter

        self.paths = paths
        self.pid = os.getpid()
        self.final_status = final_status
        self.reason = reason
        self.steps = steps
        self.calls = 0
        self.signals: list[int] = []
        self.events = EventWriter(paths.events)

    def _status(self, **fields):
        from bttui.runs.atomic import write_json_atomic

        base = {"status": "running", "reason": None, "pid": None, "host": "box", "heartbeat": 0.0,
                "cells_total": 4}
        base.update(fields)
        write_json_atomic(self.paths.status, base)

    def poll(self):
        self.calls += 1
        ev = self.events
        if self.calls == 1:
            ev.write("config", config={})
            ev.write("stage_start", stage="pretrain")
            for epoch in (1, 2):
                ev.write("epoch", stage="pretrain", epoch=epoch, loss=812.4 / epoch)
            self._status(stage="pretrain", epoch=2, epochs=2, loss=406.2)
            return None
        if self.calls == 2:
            ev.write("stage_start", stage="finetune")
            for fraction, acc in ((0.5, 0.7), (1.0, 0.8)):
                item = result_item(fraction, acc)
                ev.write("cell_start", stage="finetune", cell=item["cell"])
                ev.write("cell_end", stage="finetune", cell=item["cell"], result=item)
            return None
        if self.final_status == "completed":
            summary = {"pretrain": {"epochs": 2}, "results": [result_item(0.5, 0.7), result_item(1.0, 0.8)]}
            from bttui.runs.atomic import write_json_atomic

            write_json_atomic(self.paths.summary, summary)
        self._status(status=self.final_status, reason=self.reason, ended=1.0)
        self.events.close()
        return 0 if self.final_status == "completed" else 1

    def send_signal(self, sig):
        self.signals.append(sig)

    def kill(self):
        self.signals.append(9)


@pytest.fixture()
def fake_launch(monkeypatch):
    import importlib

    # bttui.runs re-exports the function `launch`, which shadows the module of that name.
    launch_module = importlib.import_module("bttui.runs.launch")

    launched = {}

    def install(**kwargs):
        def fake(paths, detach, resume=False):
            trainer = FakeTrainer(paths, **kwargs)
            launched.update(paths=paths, detach=detach, trainer=trainer)
            return trainer

        monkeypatch.setattr(launch_module, "launch", fake)
        return launched

    monkeypatch.setattr("bttui.cli.run_cmd.POLL_S", 0.0)
    return install


def test_run_foreground_follows_progress_and_prints_results(runner, store, config_file, fake_launch):
    launched = fake_launch()
    result = invoke(runner, ["run", config_file, "--store", store, "--set", "name=quick-test"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pretrain epoch 1/2 loss 812.4" in out
    assert "pretrain epoch 2/2 loss 406.2" in out
    assert "cell 1/4 organs_sagittal/barlow_twins/linear/0.5/s0 acc 70.0%" in out
    assert "cell 2/4 organs_sagittal/barlow_twins/linear/1/s0 acc 80.0%" in out
    assert "✓ completed" in out and "liver" in out
    assert launched["detach"] is False
    run_dir = Path(launched["paths"].dir)
    assert run_dir.parent == store and "quick-test" in run_dir.name
    assert (run_dir / "config.toml").exists()


def test_run_failed_exits_1_with_reason(runner, store, config_file, fake_launch):
    fake_launch(final_status="failed", reason="pretraining loss became nan at step 3")
    result = invoke(runner, ["run", config_file, "--store", store])
    assert result.exit_code == 1, result.output
    assert "✗ failed" in result.stdout and "pretraining loss became nan at step 3" in result.stdout


def test_run_detach_prints_id_and_returns(runner, store, config_file, fake_launch):
    launched = fake_launch()
    result = invoke(runner, ["--store", store, "run", config_file, "--detach"])
    assert result.exit_code == 0, result.output
    run_id = Path(launched["paths"].dir).name
    assert result.stdout.strip() == run_id
    assert f"bttui attach {run_id}" in result.stderr and f"bttui logs {run_id}" in result.stderr
    assert launched["detach"] is True and launched["trainer"].calls == 0


# ----------------------------------------------------------------- run (real trainer)


@pytest.mark.slow
def test_run_end_to_end_with_the_real_trainer(tmp_path):
    """`bttui run` in a subprocess on tiny synthetic data: progress lines, results, exit 0, then `show --json`."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "2", "COLUMNS": "100"}
    env.pop("BTTUI_STORE", None)
    bttui = [sys.executable, "-m", "bttui"]
    data = tmp_path / "data"
    synth = subprocess.run([*bttui, "data", "synth", str(data), "--per-class", "6", "--image-size", "32",
                            "--datasets", "organs_axial,organs_sagittal"], env=env, capture_output=True, text=True)
    assert synth.returncode == 0, synth.stderr
    config = tmp_path / "e2e.toml"
    config.write_text(QUICK_TOML.format(root=data.as_posix()).replace("epochs = 2\nbatch_size", "epochs = 1\nbatch_size")
                      + "embeddings = []\n")
    store = tmp_path / "store"
    proc = subprocess.run([*bttui, "--store", str(store), "run", str(config), "--set", "finetune.epochs=1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pretrain epoch 1/1 loss" in proc.stdout
    assert "cell 4/4 organs_sagittal/random/linear/1/s0 acc" in proc.stdout
    assert "✓ completed" in proc.stdout and "rows: true class" in proc.stdout
    shown = subprocess.run([*bttui, "--store", str(store), "show", "quick", "--json"], env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] == "completed" and len(run["results"]) == 4
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in run["results"])
