"""CLI tests of logs, attach and queue on hand-made runs (CliRunner, no trainer)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bttui.cli import app
from bttui.runs.events import EventWriter
from bttui.runs.store import Store


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("BTTUI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "120")
    return Store(tmp_path / "store")


def finished_run(store: Store, status: str = "completed"):
    from bttui.config.load import loads_config

    cfg = loads_config('name = "done"\n[data]\nroot = "/x"\n[finetune]\ninit = ["random"]\n', check_paths=False)
    paths = store.create_run(cfg)
    with EventWriter(paths.events) as ev:
        ev.write("stage_start", stage="pretrain")
        for epoch in (1, 2):
            ev.write("epoch", stage="pretrain", epoch=epoch, loss=100.0 / epoch)
    data = json.loads(paths.status.read_text())
    data.update(status=status, reason=None if status == "completed" else "boom")
    paths.status.write_text(json.dumps(data))
    paths.log.write_text("line one\nline two\n")
    return paths


def test_logs_prints_train_log(store):
    paths = finished_run(store)
    result = CliRunner().invoke(app, ["logs", paths.id, "-f"])
    assert result.exit_code == 0 and result.stdout == "line one\nline two\n"


@pytest.mark.parametrize("status, code", [("completed", 0), ("failed", 1)])
def test_attach_to_finished_run_replays_and_exits_with_status(store, status, code):
    paths = finished_run(store, status)
    result = CliRunner().invoke(app, ["attach", "done"])
    assert result.exit_code == code, result.output
    assert "attached to" in result.stdout and paths.id in result.stdout
    assert f"run {paths.id}" in result.stdout and status in result.stdout


def test_stop_queued_run_removes_it_from_the_queue(store):
    from bttui.runs.queue import Queue

    paths = finished_run(store, "queued")
    Queue(store).add(paths.id)
    result = CliRunner().invoke(app, ["stop", paths.id])
    assert result.exit_code == 0 and "stopped" in result.stdout
    assert Queue(store).entries() == [] and store.get(paths.id).status == "stopped"
    again = CliRunner().invoke(app, ["stop", paths.id])
    assert again.exit_code == 2 and "not running" in again.stderr
