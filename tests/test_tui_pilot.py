"""Pilot tests of the TUI screens against a hand-written store, a frozen clock and a fake GPU sampler."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

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


def make_app(store, gpus=None, *, source=None, interval=60.0, **kw):
    """The app on the sample store (or on ``source``) at a frozen clock, with a fake GPU sampler.

    Refresh and follow run every ``interval`` seconds: long, so only the first refresh runs unless a test asks for
    more. Other keywords (controls, reservations, queue_interval) go to BttuiApp as they are.
    """
    clock = FakeClock(SAMPLE_NOW)
    return BttuiApp(source or StoreSource(store, clock=clock, label="~/runs"), clock, gpus or FakeGpuSampler(),
                    refresh_interval=interval, follow_interval=interval, **kw)


async def settle(app, pilot):
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


@asynccontextmanager
async def started(app, size=(120, 36), *, screen=None, keys=()):
    """Run ``app`` in a ``size`` terminal and let its first refresh land; then push ``screen`` or press ``keys``
    (when given) and let that settle too. Yields the pilot."""
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        if screen is not None:
            app.push_screen(screen)
        if keys:
            await pilot.press(*keys)
        if screen is not None or keys:
            await settle(app, pilot)
        yield pilot


def table_keys(table: DataTable) -> list[str]:
    return [rk.value for rk in table.rows]


def plain(widget: Static, width: int = 100) -> str:
    """The text of what the screen last gave the Static (a Rich Text, or a renderable drawn ``width`` wide)."""
    content = widget.content
    if hasattr(content, "plain"):
        return content.plain
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    console.print(content)
    return console.export_text()


async def test_runs_screen_lists_runs_with_liveness(store):
    app = make_app(store)
    async with started(app):
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
    async with started(app) as pilot:
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
    async with started(app) as pilot:
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
        assert screen.sort_mode == "progress"
        # completed (100%) first, then the stopped run at 3/10 epochs, the unknown-progress queued run last
        assert table_keys(table)[0] == DONE and table_keys(table)[-1] == "20241125-154000-crc-sweep-lr-3-c3d4"
        await pilot.press("s")
        assert screen.sort_mode == "oldest"
        assert table_keys(table)[0] == "20241123-140000-quick-start-9f9f"
        await pilot.press("s")
        assert screen.sort_mode == "newest"


async def test_gpu_summary_and_refresh(store):
    gpus = FakeGpuSampler([GpuSample(0, "H100", 38 * GIB, 80 * GIB, 97, ((1, GIB),))])
    app = make_app(store, gpus=gpus)
    async with started(app) as pilot:
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
    async with started(app, (80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert any(k == "/" for k, _ in app.screen.keys)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_open_live_run_shows_dashboard(store):
    app = make_app(store)
    async with started(app, (120, 40), keys=("down", "enter")) as pilot:  # second row: the live pretraining run
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
    async with started(app, keys=("down", "down", "down", "enter")) as pilot:
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
        {"type": "log", "level": "warning", "message": "slow data", "t": 60.0},
        {"type": "checkpoint", "path": "/r/checkpoints/pretrain_epoch0001.pt"},
        {"type": "status", "status": "failed", "reason": "nan loss"},
    ])
    series, x = state.chart_series()
    assert x == "step" and series["total"] == ([10.0], [5.0])
    assert state.health["emb_std"] == 0.3 and state.health_history["emb_std"] == [0.3]
    assert state.cell_results["a/b/c/1/s0"]["test_accuracy"] == 0.5
    # The Log panel's story: epoch ends, cell results, log messages, checkpoints, the final status.
    assert [text for _, text in state.messages] == [
        "epoch 1 loss 4", "a/b/c/1/s0: completed 50.0%", "[red]hi", "[warning] slow data",
        "checkpoint pretrain_epoch0001.pt", "run failed (nan loss)"]
    assert state.messages[3][0] == 60.0 and state.messages[0][0] is None


class FakeControls:
    """Records calls; refuses what the real store refuses (a completed run cannot be resumed)."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse = refuse or {}

    def _do(self, action: str, run_id: str) -> str:
        from bttui.errors import BttuiError

        self.calls.append((action, run_id))
        if run_id in self.refuse:
            raise BttuiError(self.refuse[run_id])
        return f"{run_id}: {action} done"

    def stop(self, run_id, force=False):
        return self._do("stop", run_id)

    def resume(self, run_id):
        return self._do("resume", run_id)

    def delete(self, run_id):
        return self._do("delete", run_id)


async def test_stop_asks_then_acts_on_the_selection(store):
    from bttui.tui.screens.confirm import ConfirmScreen

    controls = FakeControls()
    app = make_app(store, controls=controls)
    async with started(app) as pilot:
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        # Space selects and moves down: rows 2 and 4 (the live run and the completed sweep).
        await pilot.press("down", "space", "down", "space")
        assert screen.selected == {LIVE, DONE}
        assert table.get_cell(LIVE, "sel").plain == "✔"
        assert "2 selected" in plain(screen.query_one("#home-header", Static))
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Stop 2 runs?" in app.screen.lines[0]
        await pilot.press("n")  # no: nothing happens
        await settle(app, pilot)
        assert controls.calls == [] and isinstance(app.screen, RunsScreen)
        await pilot.press("x", "y")
        await settle(app, pilot)
        assert sorted(controls.calls) == sorted([("stop", LIVE), ("stop", DONE)])
        assert screen.selected == set()  # acted on: the selection is cleared
        assert [m.ok for m in app.control_log] == [True, True]


async def test_resume_and_delete_under_cursor_with_refusal(store):
    controls = FakeControls(refuse={DONE: f"Run {DONE} already completed; nothing to resume."})
    app = make_app(store, controls=controls)
    async with started(app) as pilot:
        await pilot.press("down", "down", "down")  # the completed sweep
        assert app.screen.selected_run_id() == DONE
        await pilot.press("r")
        await settle(app, pilot)
        assert controls.calls == [("resume", DONE)]
        assert app.control_log[-1].ok is False and "already completed" in app.control_log[-1].text
        assert app.is_running  # a refusal is a notification, not a crash
        await pilot.press("d")
        await pilot.press("escape")  # esc answers no
        await settle(app, pilot)
        assert controls.calls == [("resume", DONE)]
        await pilot.press("d", "y")
        await settle(app, pilot)
        assert controls.calls[-1] == ("delete", DONE)


async def test_store_controls_against_real_store(tmp_path):
    """The default controls go through bttui.runs.control: deleting a stopped run removes its folder."""
    from bttui.errors import BttuiError
    from bttui.tui.controls import StoreControls

    root = write_sample_store(tmp_path / "runs")
    controls = StoreControls(root)
    stopped = "20241123-140000-quick-start-9f9f"
    with pytest.raises(BttuiError, match="completed"):
        controls.resume(DONE)
    assert "deleted" in controls.delete(stopped)
    assert not (root / stopped).exists()


async def test_gpus_screen_with_devices_holders_and_queue(store):
    from bttui.tui.screens.gpus import GpusScreen

    class Slots:
        def held(self):
            return [{"slot": "gpu0.0", "run_id": LIVE, "pid": 1}]

    gpus = FakeGpuSampler([GpuSample(0, "H100 [80GB]", 38 * GIB, 80 * GIB, 97, ((999999, 9 * GIB),)),
                           GpuSample(1, "H100", 0, 80 * GIB, 0, ())])
    app = make_app(store, gpus, controls=FakeControls(), reservations=Slots())
    async with started(app, keys=("g",)) as pilot:
        screen = app.screen
        assert isinstance(screen, GpusScreen)
        devices = screen.query_one("#devices", DataTable)
        assert devices.row_count == 2
        assert devices.get_cell("0", "name").plain == "H100 [80GB]"
        assert devices.get_cell("0", "mem").plain == "38/80 GiB" and devices.get_cell("0", "util").plain == "97%"
        assert devices.get_cell("0", "runs").plain == "crc-bt-paper"
        assert devices.get_cell("1", "runs").plain == "-"
        header = plain(screen.query_one("#gpus-header", Static))
        assert "2 devices" in header and "38/160 GiB used" in header and "queue: 0 waiting" in header
        runs = screen.query_one("#gpu-runs", DataTable)
        assert runs.get_cell(LIVE, "held").plain == "0"
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_gpus_screen_without_nvml(store):
    from bttui.tui.screens.gpus import GpusScreen

    app = make_app(store, controls=FakeControls(), reservations=type("R", (), {"held": lambda self: []})())
    async with started(app, (80, 24), keys=("g",)):
        assert isinstance(app.screen, GpusScreen)
        assert app.screen.query_one("#devices", DataTable).row_count == 0
        assert plain(app.screen.query_one("#gpus-header", Static)).startswith(" GPUs  n/a")


async def test_compare_screen(store):
    from bttui.tui.screens.compare import AccuracyChart, CompareScreen, config_diff

    (store / LIVE / "config.toml").write_text('name = "a"\n[pretrain]\nepochs = 100\nbatch_size = 256\n')
    (store / DONE / "config.toml").write_text('name = "b"\n[pretrain]\nepochs = 100\nbatch_size = 512\n')
    app = make_app(store, controls=FakeControls())
    async with started(app) as pilot:
        await pilot.press("c")  # nothing selected: a hint, no screen
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("down", "space", "down", "space", "c")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert screen.run_ids == [LIVE, DONE]
        d = screen.data
        assert len(d.losses[LIVE][0]) == 48 and DONE not in d.losses  # fine-tuning only: no pretrain loss
        curve = d.curves[DONE][("organs_sagittal", "barlow_twins", "linear")]
        assert curve == pytest.approx({0.1: 63.0, 1.0: 81.0})
        assert d.paper[("organs_sagittal", "barlow_twins", "linear")][0.1] == pytest.approx(63.41)
        assert screen.query_one(AccuracyChart).data is d
        table = screen.query_one("#config-diff", DataTable)
        assert table_keys(table) == ["name", "pretrain.batch_size"]
        assert table.get_cell("pretrain.batch_size", DONE).plain == "512"
    assert config_diff([{"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}]) == [("a.c", [None, 2])]


def test_filter_tokens_match_status_dataset_and_sweep():
    from bttui.tui.sources import RunRow

    row = RunRow(id="20241125-1-x-ab12", name="crc bt", status="running", sweep_id="sw-20241125-lr-aa11",
                 datasets=("organs_axial", "crc"))
    assert row.matches("status:run") and not row.matches("status:completed")
    assert row.matches("dataset:crc") and row.matches("dataset:organs") and not row.matches("dataset:sagittal")
    assert row.matches("sweep:lr") and not row.matches("sweep:other")
    assert row.matches("crc status:running dataset:axial") and not row.matches("crc status:failed")
    assert not RunRow(id="y", name="y", status="queued").matches("sweep:sw")


def test_store_source_reads_each_runs_datasets_once(tmp_path):
    from bttui.tui.sources import StoreSource

    run = tmp_path / "20241125-100000-x-ab12"
    run.mkdir()
    (run / "config.toml").write_text('[pretrain]\ndatasets = ["organs_axial", "crc"]\n[finetune]\ndatasets = ["crc"]\n')
    source = StoreSource(tmp_path)
    assert source._datasets("20241125-100000-x-ab12", run) == ("organs_axial", "crc")
    (run / "config.toml").unlink()  # cached: config.toml never changes after creation
    assert source._datasets("20241125-100000-x-ab12", run) == ("organs_axial", "crc")
    assert source._datasets("other", tmp_path / "missing") == ()


async def test_command_palette_offers_the_screens_keys(store):
    app = make_app(store)
    async with started(app) as pilot:
        screen = app.screen
        before = screen.sort_mode
        await pilot.press("ctrl+p")
        await settle(app, pilot)
        for ch in "sort":
            await pilot.press(ch)
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.screen is screen and screen.sort_mode != before
