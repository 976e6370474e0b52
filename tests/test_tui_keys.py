"""Keys from the UI sketch beyond navigation: stop and pause-follow on the live dashboard, the paper
comparison and export from Results."""

from __future__ import annotations

import csv
import json

import pytest
from textual.widgets import DataTable, Static

from test_tui_pilot import DONE, LIVE, FakeControls, make_app, plain, settle, started

from bttui.tui.screens.compare import CompareScreen
from bttui.tui.screens.confirm import ConfirmScreen
from bttui.tui.screens.detail import RunDetailScreen
from bttui.tui.screens.results import ResultsScreen


@pytest.fixture
def store(tmp_path):
    from bttui.tui.sources import write_sample_store

    return write_sample_store(tmp_path / "runs")


def append_step(store, step: int, loss: float) -> None:
    event = {"t": 0.0, "type": "step", "stage": "pretrain", "epoch": 12, "step": step, "loss": loss}
    with open(store / LIVE / "events.jsonl", "a") as fh:
        fh.write(json.dumps(event) + "\n")


async def test_pause_holds_the_dashboard_and_resume_catches_up(store):
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(LIVE)) as pilot:
        screen = app.screen
        steps_before = len(screen.state.steps)
        await pilot.press("p")
        assert screen.paused and "paused" in plain(screen.query_one("#detail-header", Static))
        append_step(store, 100_000, 123.0)
        screen.poll()  # what the timer does: nothing is read while paused
        await settle(app, pilot)
        assert len(screen.state.steps) == steps_before
        await pilot.press("p")  # resume: reads at once, not at the next tick
        await settle(app, pilot)
        assert not screen.paused and "paused" not in plain(screen.query_one("#detail-header", Static))
        assert len(screen.state.steps) == steps_before + 1


async def test_stop_from_the_dashboard_asks_then_stops(store):
    controls = FakeControls()
    app = make_app(store, controls=controls)
    async with started(app, screen=RunDetailScreen(LIVE)) as pilot:
        await pilot.press("x")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # no: nothing happens
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and controls.calls == []
        await pilot.press("x")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        assert controls.calls == [("stop", LIVE)]
        assert app.control_log[-1].ok and app.control_log[-1].run_id == LIVE


async def test_stop_on_a_finished_run_says_there_is_nothing_to_stop(store):
    controls = FakeControls()
    app = make_app(store, controls=controls)
    async with started(app, screen=RunDetailScreen(DONE)) as pilot:
        await pilot.press("x")
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and controls.calls == []
        assert any("nothing to stop" in str(n.message) for n in app._notifications)


async def test_results_p_opens_the_paper_comparison_of_this_run(store):
    app = make_app(store)
    async with started(app, screen=ResultsScreen(DONE)) as pilot:
        await pilot.press("p")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.run_ids == [DONE]
        assert plain(screen.query_one("#compare-header", Static)).startswith(" Against the paper: ")
        assert ("organs_sagittal", "barlow_twins", "linear") in screen.data.paper  # the paper's curves are drawn
        table = screen.query_one("#compare-per-class", DataTable)
        assert table.row_count == 5 and "delta" not in [c.value for c in table.columns]  # one run: no difference


async def test_results_x_exports_like_the_cli(store, tmp_path, monkeypatch):
    from bttui.tui.controls import StoreControls

    monkeypatch.chdir(tmp_path)
    app = make_app(store, controls=StoreControls(store))
    async with started(app, screen=ResultsScreen(DONE)) as pilot:
        await pilot.press("x")
        await settle(app, pilot)
        outcome = app.control_log[-1]
        assert outcome.ok, outcome.text
        out = tmp_path / f"{DONE}-export"
        assert f"under {out}" in outcome.text
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {r["strategy"] for r in rows} == {"linear"}
    assert json.loads((out / "run.json").read_text())["id"] == DONE
    assert sorted(p.suffix for p in (out / "confusion").iterdir()) == [".csv"] * 3 + [".png"] * 3


async def test_export_failure_is_a_clear_error(store, tmp_path):
    from bttui.errors import BttuiError
    from bttui.tui.controls import StoreControls

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BttuiError, match=r"export of organs-xdomain to .*file/out failed"):
        StoreControls(store).export(DONE, out=blocker / "out")


async def test_an_ended_run_header_counts_cells_not_the_last_cells_epochs(store):
    # What the trainer leaves: stage cleared, the last cell's epoch counter still in status.json.
    path = store / DONE / "status.json"
    status = json.loads(path.read_text())
    status.update(stage=None, epoch=10, epochs=10, step=40, steps=40)
    path.write_text(json.dumps(status))
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(DONE)):
        header = plain(app.screen.query_one("#detail-header", Static)).splitlines()[0]
        assert "cells 3/3" in header and "epoch" not in header and "step" not in header


async def test_many_classes_put_the_scatter_legend_below_the_plot(store):
    """11 organ classes: a legend inside the plot would cover the points, so it is drawn beneath."""
    import numpy as np

    from bttui.tui.sources import embedding_path
    from bttui.tui.widgets.embedding_plot import EmbeddingPlot

    summary = json.loads((store / DONE / "summary.json").read_text())
    first = summary["results"][0]
    names = ["heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney", "right kidney",
             "bladder", "left femoral head", "right femoral head"]
    labels = np.repeat(np.arange(11), 3)
    coords = np.stack([labels * 1.0, (labels % 4) * 1.0], axis=1).astype(np.float32)
    np.savez(embedding_path(store / DONE, first, "tsne"), coords=coords, labels=labels,
             class_names=np.asarray(names), method=np.asarray("tsne"))
    app = make_app(store)
    async with started(app, screen=ResultsScreen(DONE)) as pilot:
        legend = app.screen.query_one("#embedding-legend", Static)
        assert legend.display
        assert plain(legend).startswith("0 heart  1 left lung") and "a right femoral head" in plain(legend)
        plot = app.screen.query_one(EmbeddingPlot)
        assert len(plot.embedding["class_names"]) == 11
        await pilot.press("down")  # the next cell's embedding has the sample's 5 classes: legend in the plot
        await settle(app, pilot)
        assert len(plot.embedding["class_names"]) == 5
        legend = app.screen.query_one("#embedding-legend", Static)
        assert not legend.display and plain(legend).strip() == ""


async def test_an_empty_table_says_why(tmp_path, store):
    from bttui.tui.screens.runs import RunsScreen

    (tmp_path / "empty").mkdir()
    app = make_app(tmp_path / "empty")
    async with started(app, size=(120, 30)):
        table = app.screen.query_one("#runs", DataTable)
        assert isinstance(app.screen, RunsScreen) and table.row_count == 0
        assert "no runs yet: press n for a new experiment" in str(table.border_subtitle)
    app = make_app(store)
    async with started(app, size=(120, 30), keys=("slash", *"zzz", "enter")) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        assert table.row_count == 0 and "no run matches 'zzz' (esc clears the filter)" in str(table.border_subtitle)
        await pilot.press("escape")
        await settle(app, pilot)
        assert table.row_count == 5 and str(table.border_subtitle) == ""


async def test_numbers_panel_says_when_its_figures_are_pretrainings(store):
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(LIVE)):  # pretraining now: live figures
        assert str(app.screen.query_one("#numbers", Static).border_title) == "Throughput · GPU"
    path = store / LIVE / "status.json"
    status = json.loads(path.read_text())
    status.update(stage="finetune", cell="organs_sagittal/barlow_twins/linear/1/s0")
    path.write_text(json.dumps(status))
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(LIVE)):
        assert "(last pretraining step)" in str(app.screen.query_one("#numbers", Static).border_title)
