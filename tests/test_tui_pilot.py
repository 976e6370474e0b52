"""Pilot tests of the TUI screens against a hand-written store, a frozen clock and a fake GPU sampler."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Static

from bttui.gpus import GIB, FakeGpuSampler, GpuSample
from bttui.tui.app import BttuiApp
from bttui.tui.screens.detail import LiveState, RunDetailScreen
from bttui.tui.screens.help import HelpScreen
from bttui.tui.screens.results import ResultsScreen
from bttui.tui.screens.runs import RunsScreen
from bttui.tui.sources import SAMPLE_NOW, FakeClock, StoreSource, write_sample_store
from bttui.tui.widgets.loss_chart import LossChart

LIVE = "20241125-124800-crc-bt-paper-a1b2"
DONE = "20241124-140000-organs-xdomain-e5f6"


@pytest.fixture
def store(tmp_path):
    return write_sample_store(tmp_path / "runs")


def make_app(store, gpus=None, follow_interval=60.0):
    clock = FakeClock(SAMPLE_NOW)
    # Long intervals: only the first refresh runs unless a test asks for more.
    return BttuiApp(StoreSource(store, clock=clock, label="~/runs"), clock, gpus or FakeGpuSampler(),
                    refresh_interval=60.0, follow_interval=follow_interval)


async def settle(app, pilot):
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def table_keys(table: DataTable) -> list[str]:
    return [rk.value for rk in table.rows]


def content_of(widget: Static):
    """What the screen last gave the Static (a Rich renderable or Text)."""
    return widget.content


def plain(widget: Static) -> str:
    content = content_of(widget)
    if hasattr(content, "plain"):
        return content.plain
    from rich.console import Console

    console = Console(width=100, record=True, color_system=None)
    console.print(content)
    return console.export_text()


async def test_runs_screen_lists_runs_with_liveness(store):
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 5
        by_id = {r.id: r for r in screen.all_rows}
        assert by_id[LIVE].status == "running"  # heartbeat 4 s old at the frozen time
        assert by_id["20241125-110000-crc-bt-bs512-0a0b"].status == "crashed"  # heartbeat 2 h old
        assert table_keys(table)[0] == "20241125-154000-crc-sweep-lr-3-c3d4"  # newest first
        header = plain(screen.query_one("#home-header", Static))
        assert "store: ~/runs" in header and "GPUs: n/a" in header and "5 runs" in header
        # The markup-looking name is shown literally.
        names = [table.get_cell(k, "name").plain for k in table_keys(table)]
        assert "quick[bold]start" in names


async def test_filter_narrows_and_clears(store):
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#runs", DataTable)
        await pilot.press("slash")
        for ch in "crc":
            await pilot.press(ch)
        await pilot.pause()
        assert table.row_count == 3
        await pilot.press("enter")
        assert table.has_focus
        assert table.row_count == 3
        await pilot.press("slash", "ctrl+a", "ctrl+k")  # retype: select nothing else
        for ch in "quick":  # "q" goes into the box, it does not quit
            await pilot.press(ch)
        await pilot.pause()
        assert app.is_running
        assert table_keys(table) == ["20241123-140000-quick-start-9f9f"]
        await pilot.press("escape")
        await pilot.pause()
        assert table.row_count == 5
        await pilot.press("slash", "c", "r", "a", "s", "h")
        await pilot.pause()
        assert table_keys(table) == ["20241125-110000-crc-bt-bs512-0a0b"]  # status word matches


async def test_sort_cycles(store):
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        await pilot.press("s")
        assert screen.sort_mode == "name"
        assert table.get_cell(table_keys(table)[0], "name").plain == "crc-bt-bs512"
        await pilot.press("s")
        assert screen.sort_mode == "status"
        assert table_keys(table)[0] == LIVE
        await pilot.press("s")
        assert table_keys(table)[0] == DONE  # best accuracy first
        await pilot.press("s")
        assert screen.sort_mode == "newest"


async def test_gpu_summary_and_refresh(store):
    gpus = FakeGpuSampler([GpuSample(0, "H100", 38 * GIB, 80 * GIB, 97, ((1, GIB),))])
    app = make_app(store, gpus=gpus)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert "GPUs: 0 38/80 GiB 97%" in plain(screen.query_one("#home-header", Static))
        # A new run appears on the next refresh.
        new = store / "20241125-155900-late-0001"
        new.mkdir()
        (new / "run.json").write_text(json.dumps({"id": new.name, "name": "late", "created": "2024-11-25T15:59:00Z"}))
        screen.refresh_runs()
        await settle(app, pilot)
        assert screen.query_one("#runs", DataTable).row_count == 6
        assert gpus.calls == 2


async def test_help_overlay(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert any(k == "/" for k, _ in app.screen.keys)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_open_live_run_shows_dashboard(store):
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("down", "enter")  # second row: the live pretraining run
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        assert screen.run_id == LIVE
        header = plain(screen.query_one("#detail-header", Static))
        assert "crc-bt-paper" in header and "running" in header and "epoch 12/100" in header
        assert "ETA" in header
        state = screen.state
        assert len(state.steps) == 12 * 4 and state.health["effective_rank"] == 900 + 60 * 12
        health = plain(screen.query_one("#health", Static))
        assert "1,620/2,048" in health and "84.0%" in health
        xcorr = plain(screen.query_one("#xcorr", Static))
        assert "diag" in xcorr and "█" in xcorr
        log = plain(screen.query_one("#log", Static))
        assert "[not markup]" in log  # log lines shown literally
        chart = screen.query_one(LossChart)
        assert set(chart.series) == {"total", "on-diag", "off-diag·λ"}
        assert chart.log_scale is False
        await pilot.press("l")
        assert chart.log_scale is True
        # Appending events is picked up incrementally by the next poll.
        before = state.n_events
        with open(store / LIVE / "events.jsonl", "a") as fh:
            fh.write(json.dumps({"t": SAMPLE_NOW, "type": "step", "step": 481, "loss": 400.0, "on_diag": 300.0,
                                 "off_diag": 100.0}) + "\n")
            fh.write('{"t": 1, "type": "ste')  # torn line: waits for the rest
        screen.poll()
        await settle(app, pilot)
        assert state.n_events == before + 1
        assert state.steps[-1] == 481
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_results_confusion_toggle(store):
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        await pilot.press("down", "down", "down", "enter")
        await settle(app, pilot)
        assert app.screen.run_id == DONE
        await pilot.press("r")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        table = screen.query_one("#result-cells", DataTable)
        assert table.row_count == 3
        assert screen.current["cell"] == "organs_sagittal/barlow_twins/linear/0.1/s0"
        confusion = screen.query_one("#confusion", Static)

        def confusion_text() -> str:
            return plain(confusion)

        as_percent = confusion_text()
        assert "% of each row" in as_percent
        await pilot.press("m")
        as_counts = confusion_text()
        assert as_counts != as_percent and "counts" in as_counts
        await pilot.press("down")
        await pilot.pause()
        assert screen.current["cell"] == "organs_sagittal/barlow_twins/linear/1/s0"
        bars = plain(screen.query_one("#per-class", Static))
        assert "l. lung [L]" in bars and "85.0%" in bars
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("q")
        assert not app.is_running


def test_live_state_folds_events():
    state = LiveState()
    state.feed([
        {"type": "step", "step": 10, "loss": 5.0, "on_diag": 3.0, "off_diag": 2.0, "lr": 0.1},
        {"type": "epoch", "epoch": 1, "loss": 4.0, "emb_std": 0.3, "cross_correlation": [[1.0, 0.1], [0.1, 1.0]]},
        {"type": "cell_end", "cell": "a/b/c/1/s0", "result": {"test_accuracy": 0.5, "status": "completed"}},
        {"type": "log", "message": "[red]hi"},
    ])
    series, x = state.chart_series()
    assert x == "step" and series["total"] == ([10.0], [5.0])
    assert state.health["emb_std"] == 0.3 and state.health_history["emb_std"] == [0.3]
    assert state.cell_results["a/b/c/1/s0"]["test_accuracy"] == 0.5
    assert state.messages == ["[red]hi"]
