"""The runs table's GPU column (from status.json `device`/`gpus`, written by the trainer) and the
Compare screen's per-class difference table."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable

from bttui.gpus import FakeGpuSampler
from bttui.tui.app import BttuiApp
from bttui.tui.screens.compare import CompareScreen, per_class_accuracies, per_class_groups, per_class_rows
from bttui.tui.sources import SAMPLE_NOW, FakeClock, RunRow, StoreSource, row_from_parts, write_sample_store

LIVE = "20241125-124800-crc-bt-paper-a1b2"
DONE = "20241124-140000-organs-xdomain-e5f6"
STOPPED = "20241123-140000-quick-start-9f9f"
QUEUED = "20241125-154000-crc-sweep-lr-3-c3d4"


# ----------------------------------------------------------------- the trainer's record


@pytest.mark.parametrize("device, visible, world, index, expected", [
    ("cpu", "0,1", 1, None, []),
    ("cuda", None, 1, None, ["0"]),
    ("cuda", None, 1, 3, ["3"]),
    ("cuda", "", 1, None, ["0"]),
    ("cuda", "2", 1, 0, ["2"]),  # the reservation's physical GPU, not torch's renumbered cuda:0
    ("cuda", "5,7", 1, 1, ["7"]),
    ("cuda", "3,1", 2, 0, ["3", "1"]),  # torchrun: every rank's GPU
    ("cuda", "3, 1, 6", 2, 0, ["3", "1"]),
    ("cuda", None, 4, 0, ["0", "1", "2", "3"]),
    ("cuda", "GPU-1a2b,GPU-3c4d", 1, 0, ["GPU-1a2b"]),
])
def test_gpu_ids_are_the_machines_ids(device, visible, world, index, expected):
    from bttui.train.runner import gpu_ids

    assert gpu_ids(device, visible, world, index) == expected


# ----------------------------------------------------------------- rows and filter


def test_row_reads_device_and_gpus_from_status():
    def row(status: dict) -> RunRow:
        return row_from_parts("r", {"name": "r"}, status, status.get("status", "running"), None, None)

    assert row({"device": "cuda", "gpus": ["1", "2"]}).gpu_text == "1,2"
    assert row({"device": "cuda", "gpus": [0]}).gpus == ("0",)
    assert row({"device": "cpu", "gpus": []}).gpu_text == "cpu"
    assert row({"status": "queued"}).gpu_text == "-"
    # Hand-edited or foreign files: wrong types read as "not recorded", never crash the table.
    assert row({"device": 3, "gpus": "0"}).gpu_text == "-"


def test_gpu_filter_token():
    on_gpus = RunRow(id="a", name="a", status="running", device="cuda", gpus=("1", "2"))
    on_cpu = RunRow(id="b", name="b", status="running", device="cpu")
    waiting = RunRow(id="c", name="c", status="queued")
    assert on_gpus.matches("gpu:2") and on_gpus.matches("gpu:0,1") and not on_gpus.matches("gpu:0")
    assert not on_gpus.matches("gpu:cpu") and on_cpu.matches("gpu:cpu") and not on_cpu.matches("gpu:0")
    assert not waiting.matches("gpu:0") and not waiting.matches("gpu:cpu")
    assert on_gpus.matches("a status:run gpu:1")


# ----------------------------------------------------------------- screens


@pytest.fixture
def store(tmp_path):
    return write_sample_store(tmp_path / "runs")


def make_app(store):
    clock = FakeClock(SAMPLE_NOW)
    return BttuiApp(StoreSource(store, clock=clock, label="~/runs"), clock, FakeGpuSampler(),
                    refresh_interval=60.0, follow_interval=60.0)


async def settle(app, pilot):
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


@pytest.mark.parametrize("width, shown", [(120, True), (80, False)])
async def test_runs_table_gpu_column(store, width, shown):
    app = make_app(store)
    async with app.run_test(size=(width, 30)) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#runs", DataTable)
        keys = [c.value for c in table.columns]
        assert ("gpu" in keys) is shown
        if shown:
            assert table.get_cell(DONE, "gpu").plain == "1,2"
            assert table.get_cell(LIVE, "gpu").plain == "0"
            assert table.get_cell(STOPPED, "gpu").plain == "cpu"
            assert table.get_cell(QUEUED, "gpu").plain == "-"
        await pilot.press("slash", *"gpu:1", "enter")
        await settle(app, pilot)
        assert sorted(rk.value for rk in table.rows) == sorted([DONE, "20241125-110000-crc-bt-bs512-0a0b"])


# ----------------------------------------------------------------- per-class differences


def result(cell: str, init: str, fraction: float, per_class: list[float], names=("liver", "spleen", "kidney"),
           dataset: str = "organs_sagittal", seed: int = 0) -> dict:
    return {"cell": cell, "dataset": dataset, "init": init, "strategy": "linear", "label_fraction": fraction,
            "seed": seed, "status": "completed", "test_accuracy": sum(per_class) / len(per_class),
            "per_class_accuracy": per_class, "class_names": list(names)}


def test_per_class_rows_average_seeds_and_subtract_first_from_last():
    a = per_class_accuracies([result("x/s0", "random", 1.0, [0.5, 0.6, 0.7]),
                              result("x/s1", "random", 1.0, [0.7, 0.8, 0.9], seed=1)])
    b = per_class_accuracies([result("x/s0", "random", 1.0, [0.9, 0.5, 0.7]),
                              result("y/s0", "random", 0.1, [0.1, 0.2, 0.3])])
    per_class = {"A": a, "B": b}
    groups = per_class_groups(per_class)
    # The group both runs have comes first.
    assert groups == [("organs_sagittal", "random", "linear", 1.0), ("organs_sagittal", "random", "linear", 0.1)]
    rows = per_class_rows(per_class, ["A", "B"], groups[0])
    assert [r.name for r in rows] == ["liver", "spleen", "kidney"]
    assert rows[0].values == pytest.approx([60.0, 90.0]) and rows[0].delta == pytest.approx(30.0)
    assert rows[1].delta == pytest.approx(-20.0) and rows[2].delta == pytest.approx(-10.0)
    assert all(r.paper is None for r in rows)  # the paper has no per-class numbers for random init
    only_b = per_class_rows(per_class, ["A", "B"], groups[1])
    assert only_b[0].values == [None, pytest.approx(10.0)] and only_b[0].delta is None


def test_per_class_rows_bring_the_papers_numbers():
    names = ("adipose", "background", "debris")
    per_class = {"A": per_class_accuracies([result("c", "barlow_twins", 1.0, [0.9, 1.0, 0.5], names, "crc")])}
    rows = per_class_rows(per_class, ["A"], ("crc", "barlow_twins", "linear", 1.0))
    assert [r.paper for r in rows] == pytest.approx([99.54, 99.83, 97.08])
    assert rows[0].delta is None  # one run: no difference


async def test_compare_screen_per_class_table(store):
    # A second finished run with the same cells, and a different per-class profile.
    summary = json.loads((store / DONE / "summary.json").read_text())
    for r in summary["results"]:
        r["per_class_accuracy"] = [min(1.0, a + 0.1) for a in r["per_class_accuracy"]]
    twin = store / "20241124-150000-organs-twin-aa00"
    twin.mkdir()
    for name in ("run.json", "status.json", "config.toml"):
        if (store / DONE / name).exists():
            (twin / name).write_text((store / DONE / name).read_text())
    run_data = json.loads((twin / "run.json").read_text())
    run_data.update(id=twin.name, name="organs-twin")
    (twin / "run.json").write_text(json.dumps(run_data))
    (twin / "summary.json").write_text(json.dumps(summary))

    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        app.push_screen(CompareScreen([DONE, twin.name]))
        await settle(app, pilot)
        screen = app.screen
        table = screen.query_one("#compare-per-class", DataTable)
        groups = screen.data.groups
        assert len(groups) >= 2 and screen.group == groups[0]
        keys = [c.value for c in table.columns]
        assert keys[:4] == ["class", DONE, twin.name, "delta"]
        first = [rk.value for rk in table.rows][0]
        done_pct = float(table.get_cell(first, DONE).plain)
        twin_pct = float(table.get_cell(first, twin.name).plain)
        assert twin_pct == pytest.approx(min(100.0, done_pct + 10.0), abs=0.11)
        assert float(table.get_cell(first, "delta").plain) == pytest.approx(twin_pct - done_pct, abs=0.11)
        title = str(table.border_title)
        await pilot.press("p")
        assert screen.group == groups[1] and str(table.border_title) != title
        assert f"2/{len(groups)}" in str(table.border_subtitle)


async def test_compare_screen_without_per_class_results(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.push_screen(CompareScreen([LIVE, STOPPED]))
        await settle(app, pilot)
        table = app.screen.query_one("#compare-per-class", DataTable)
        assert table.row_count == 0 and "n/a" in str(table.border_subtitle)
        await pilot.press("p")  # nothing to cycle: no error


def test_runs_with_the_same_name_are_told_apart():
    from bttui.tui.screens.compare import distinct_names, fit

    names = distinct_names({"20261129-071134-quickstart-4834": "quickstart",
                            "20261129-071441-quickstart-9cde": "quickstart", "20241124-x-e5f6": "organs"})
    assert names == {"20261129-071134-quickstart-4834": "quickstart·4834",
                     "20261129-071441-quickstart-9cde": "quickstart·9cde", "20241124-x-e5f6": "organs"}
    assert fit("quickstart·4834", 12).endswith("…·4834") and len(fit("quickstart·4834", 12)) == 12
    assert fit("organs-xdomain", 12) == "organs-xdom…" and fit("short", 12) == "short"
