"""Pilot tests of the TUI's filter tokens, incremental runs table, live GPU/fine-tuning panels,
embedding scatter and lineage, NO_COLOR rendering, and that files are read off the UI thread only."""

from __future__ import annotations

import json
import re
import threading

import pytest
from textual.widgets import DataTable, Static

from bttui.tui.screens.detail import CellsTable, RunDetailScreen, gauge, progress_of
from bttui.tui.screens.results import ResultsScreen, _init_label, lineage_text
from bttui.tui.sources import SAMPLE_NOW, FakeClock, RunRow, StoreSource, write_sample_store
from bttui.tui.widgets.cell_chart import CellChart, cell_curves
from bttui.tui.widgets.embedding_plot import EmbeddingPlot
from bttui.tui.widgets.loss_chart import LossChart
from test_tui_pilot import make_app as make_pilot_app, plain, settle, started, table_keys

LIVE = "20241125-124800-crc-bt-paper-a1b2"
DONE = "20241124-140000-organs-xdomain-e5f6"
QUEUED = "20241125-154000-crc-sweep-lr-3-c3d4"
CRASHED = "20241125-110000-crc-bt-bs512-0a0b"
STOPPED = "20241123-140000-quick-start-9f9f"


@pytest.fixture
def store(tmp_path):
    return write_sample_store(tmp_path / "runs")


def make_app(store, source=None):
    # Refresh and follow hourly and no queue polling: only the first refresh runs unless a test asks for more.
    return make_pilot_app(store, source=source, interval=3600.0, queue_interval=None)


def text_of(widget: Static) -> str:
    return plain(widget, width=120)


async def type_filter(pilot, text: str) -> None:
    """Open the filter box, put ``text`` in it (as a paste would) and press enter."""
    from textual.widgets import Input

    await pilot.press("slash")
    pilot.app.screen.query_one("#filter", Input).value = text
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()


# ---------------------------------------------------------------- runs table


async def test_filter_tokens_in_the_runs_table(store):
    app = make_app(store)
    async with started(app) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        # datasets come from each run's config.toml and are shown in their own column at 120 columns
        assert table.get_cell(LIVE, "datasets").plain == "crc,organs_sagittal"
        await type_filter(pilot, "status:running dataset:crc")
        assert table_keys(table) == [LIVE]
        await type_filter(pilot, "sweep:crc-lr")
        assert table_keys(table) == [QUEUED]
        await type_filter(pilot, "dataset:axial")
        assert table_keys(table) == [STOPPED]
        await type_filter(pilot, "dataset:crc crc-bt")
        assert sorted(table_keys(table)) == sorted([LIVE, CRASHED])
        assert "2/5 runs" in text_of(app.screen.query_one("#home-header", Static))


async def test_refresh_redraws_only_changed_rows(store):
    app = make_app(store)
    async with started(app) as pilot:
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        drawn: list[str] = []
        original = screen.cells_for

        def counting(row):
            drawn.append(row.id)
            return original(row)

        screen.cells_for = counting
        cleared = []
        table_clear = table.clear
        table.clear = lambda *a, **k: (cleared.append(1), table_clear(*a, **k))[1]
        screen.refresh_runs()
        await settle(app, pilot)
        assert drawn == [] and cleared == []  # nothing changed on disk, the clock is frozen
        status_path = store / STOPPED / "status.json"
        data = json.loads(status_path.read_text())
        data.update(epoch=4)
        status_path.write_text(json.dumps(data))
        screen.refresh_runs()
        await settle(app, pilot)
        assert drawn == [STOPPED] and cleared == []
        assert table.get_cell(STOPPED, "progress").plain == "4/10 ep"


def test_store_source_rereads_only_changed_runs(store):
    source = StoreSource(store, clock=FakeClock(SAMPLE_NOW))
    first = {r.id: r for r in source.list_runs()}
    second = {r.id: r for r in source.list_runs()}
    assert all(second[k] is first[k] for k in first)  # nothing changed on disk: the same parsed rows
    # a running run is liveness-checked on every call: its heartbeat ages with the clock
    source.clock.advance(3600)
    third = {r.id: r for r in source.list_runs()}
    assert third[LIVE].status == "crashed" and third[STOPPED] is first[STOPPED]


# ---------------------------------------------------------------- live dashboard


async def test_dashboard_gpu_throughput_and_progress(store):
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(LIVE)):
        screen = app.screen
        numbers = text_of(screen.query_one("#numbers", Static))
        assert "9.6 GiB" in numbers or "9.7 GiB" in numbers  # allocated ~9,800-9,880 MB
        assert "10.2 GiB" in numbers and "11.0 GiB" in numbers  # reserved 10,400 MB, peak 11,300 MB
        assert "37.3/80 GiB" in numbers  # device used/total (38,200 of 81,920 MB at the last step)
        assert re.search(r"█+░+\s+47%", numbers)  # device memory gauge, no colour needed
        assert re.search(r"device util\s+█+░*\s+9\d%", numbers)
        assert re.search(r"lr\s+\S+ [▁▂▃▄▅▆▇█]{8}", numbers)  # lr sparkline over the last steps
        assert len(screen.state.series["gpu_util"]) == 48 and len(screen.state.series["lr"]) == 48
        header = text_of(screen.query_one("#detail-header", Static))
        assert "12%" in header and "ETA" in header  # step 480/4000
        # no fine-tuning epochs yet: the loss chart is shown, the fine-tuning charts are not
        assert screen.query_one(LossChart).display and not screen.query_one("#cell-charts").display


async def test_dashboard_without_gpu_says_na_and_narrow_strips(store):
    app = make_app(store)
    async with started(app, (80, 24), screen=RunDetailScreen(CRASHED)):
        screen = app.screen
        assert text_of(screen.query_one("#gpu-line", Static)).split() == ["GPU", "mem", "n/a", "util", "n/a",
                                                                         "run", "n/a"]
        assert "n/a" in text_of(screen.query_one("#numbers", Static))
        assert screen.query_one("#gpu-line").display and screen.query_one("#cell-line").has_class("-empty")


async def test_finetuning_curves_follow_the_picked_cell(store):
    app = make_app(store)
    async with started(app, screen=RunDetailScreen(DONE)) as pilot:
        screen = app.screen
        # fine-tuning only: its charts replace the (empty) loss chart; the last cell with epochs is drawn
        assert not screen.query_one(LossChart).display and screen.query_one("#cell-charts").display
        loss, acc = screen.query(CellChart)
        assert loss.cell == "organs_sagittal/imagenet/linear/1/s0"
        assert loss.curves["train_loss"] == ([1.0, 2.0, 3.0], [1.5, 0.75, 0.5])
        assert acc.curves["val_accuracy"][1] == pytest.approx([55.0, 65.0, 75.0])
        table = screen.query_one("#cells", CellsTable)
        table.focus()
        await pilot.press("home")
        await settle(app, pilot)
        assert table.picked and loss.cell == "organs_sagittal/barlow_twins/linear/0.1/s0"
        await pilot.press("down")
        await settle(app, pilot)
        assert loss.cell == "organs_sagittal/barlow_twins/linear/1/s0"
        await pilot.press("f")  # force the pretraining loss chart back
        assert screen.query_one(LossChart).display and not screen.query_one("#cell-charts").display


async def test_both_charts_side_by_side_when_wide(store):
    # the live run gets fine-tuning epochs for its first cell while its pretraining curve exists
    with open(store / LIVE / "events.jsonl", "a") as fh:
        for ep in (1, 2):
            fh.write(json.dumps({"t": SAMPLE_NOW - 5, "type": "cell_epoch", "cell": "organs_sagittal/barlow_twins/linear/1/s0",
                                 "epoch": ep, "train_loss": 1.0 / ep, "val_loss": 1.2 / ep,
                                 "train_accuracy": 0.5 * ep, "val_accuracy": 0.4 * ep}) + "\n")
    app = make_app(store)
    async with started(app, (200, 50), screen=RunDetailScreen(LIVE)):
        screen = app.screen
        assert screen.query_one(LossChart).display and screen.query_one("#cell-charts").display
        assert screen.query(CellChart).first().curves["val_loss"] == ([1.0, 2.0], [1.2, 0.6])


def test_progress_gauge_and_curves_helpers():
    assert progress_of(RunRow(id="a", name="a", status="running", stage="pretrain", step=100, steps=400)) == (
        0.25, "step 100/400")
    assert progress_of(RunRow(id="a", name="a", status="running", stage="finetune", cells_done=1, cells_total=4,
                              epoch=3, epochs=10))[0] == 0.25
    assert progress_of(RunRow(id="a", name="a", status="queued")) is None
    assert gauge(0.5, 10) == "█████░░░░░  50%" and gauge(None) == "n/a"
    curves = cell_curves([{"epoch": 1, "train_loss": 2.0, "val_accuracy": 0.5}, {"epoch": 2, "train_loss": 1.0}])
    assert curves == {"train_loss": ([1.0, 2.0], [2.0, 1.0]), "val_accuracy": ([1.0], [50.0])}


# ---------------------------------------------------------------- results


async def test_results_embedding_lineage_and_method_toggle(store):
    app = make_app(store)
    async with started(app, screen=ResultsScreen(DONE)) as pilot:
        screen = app.screen
        plot = screen.query_one(EmbeddingPlot)
        assert plot.embedding is not None and len(plot.embedding["coords"]) == 5 * 12
        assert plot.embedding["class_names"][1] == "l. lung [L]" and plot.embedding["method"] == "tsne"
        assert "lineage barlow_twins" in text_of(screen.query_one("#lineage", Static))
        await pilot.press("e")  # only t-SNE was written: the method stays, the user is told
        await settle(app, pilot)
        assert screen.method == "tsne" and plot.embedding is not None
        await pilot.press("down", "down")  # the ImageNet cell wrote no embedding
        await settle(app, pilot)
        assert plot.embedding is None and "n/a" in plot.note


def test_lineage_and_init_labels():
    item = {"init": "barlow_twins:20261125-230152-quickstart-8dd1",
            "lineage": {"backbone_from": "run:20261125-230152-quickstart-8dd1",
                        "checkpoint": "/x/runs/r/checkpoints/pretrain_final.pt", "epoch": 20, "step": 180}}
    assert _init_label(item["init"]) == "BT" and _init_label("imagenet") == "ImageNet"
    assert lineage_text(item).plain == ("lineage run:20261125-230152-quickstart-8dd1  checkpoint "
                                        "pretrain_final.pt  epoch 20 (step 180)")
    assert lineage_text({}).plain == "lineage n/a"


# ---------------------------------------------------------------- NO_COLOR and the UI thread


async def test_no_color_keeps_glyphs_and_words(store, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(store)
    async with started(app):
        assert app.no_color
        svg = app.export_screenshot()
    text = svg.replace("&#160;", " ")
    for words in ("● running", "◌ queued", "✓ completed", "✗! crashed", "■ stopped"):
        assert words in text
    # Textual's monochrome filter: every colour in the picture is a grey (r = g = b within rounding)
    # (less the SVG window's three title-bar buttons, which are not the app's)
    colours = set(re.findall(r"#([0-9a-f]{6})", svg)) - {"ff5f57", "febc2e", "28c840"}
    greys = {c for c in colours if max(abs(int(c[i:i + 2], 16) - int(c[0:2], 16)) for i in (2, 4)) <= 4}
    assert colours and colours == greys


class ThreadRecordingSource(StoreSource):
    """Records, for every read of the store, whether it ran on the UI (main) thread."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.on_main: list[str] = []

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("list_runs", "get_run", "read_events", "read_summary", "read_log_tail", "read_config",
                    "read_embedding"):
            def wrapped(*a, **k):
                if threading.current_thread() is threading.main_thread():
                    self.on_main.append(name)
                return attr(*a, **k)
            return wrapped
        return attr


async def test_store_is_read_off_the_ui_thread_only(store):
    clock = FakeClock(SAMPLE_NOW)
    source = ThreadRecordingSource(store, clock=clock, label="~/runs")
    app = make_app(store, source=source)
    async with started(app, keys=("down", "enter")) as pilot:  # the live dashboard
        assert isinstance(app.screen, RunDetailScreen)
        await pilot.press("escape", "down", "down", "enter", "r")  # the finished sweep's results
        await settle(app, pilot)
        assert isinstance(app.screen, ResultsScreen) and app.screen.embedding is not None
        await pilot.press("escape", "escape", "g")  # GPUs
        await settle(app, pilot)
    assert source.on_main == []


async def test_command_palette_opens_a_run_by_name(store):
    app = make_app(store)
    async with started(app, keys=("ctrl+p",)) as pilot:
        for ch in "open run organs":
            await pilot.press({" ": "space"}.get(ch, ch))
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == DONE


def test_filter_aliases_and_alternatives():
    row = RunRow(id="r1", name="crc bt", status="queued", stage="pretrain", sweep_id="sw-1-lr",
                 datasets=("crc", "organs_axial"))
    assert row.matches("s:running,queued") and not row.matches("s:running,failed")
    assert row.matches("ds:axial") and row.matches("ds:derm,crc") and not row.matches("ds:derm")
    assert row.matches("stage:pre") and not row.matches("stage:finetune")
    assert row.matches("foo:bar") is False and RunRow(id="x", name="foo:bar", status="queued").matches("foo:bar")


def test_xcorr_statistics_use_the_full_matrix():
    from bttui.tui.widgets.heatmap import xcorr_heatmap

    identity = [[1.0 if i == j else 0.0 for j in range(32)] for i in range(32)]
    # drawn as 12x12 block averages, but the numbers under it are the 32x32 matrix's
    assert xcorr_heatmap(identity, max_size=12).plain.splitlines()[-1] == "diag 1.00  |off| 0.00"
