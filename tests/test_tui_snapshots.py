"""Snapshot tests of every TUI screen at 80x24 and 120x36, with a frozen clock and a fixed store."""

from __future__ import annotations

import pytest

from bttui.gpus import GIB, FakeGpuSampler, GpuSample
from bttui.tui.app import BttuiApp
from bttui.tui.sources import SAMPLE_NOW, FakeClock, StoreSource, write_sample_store

SIZES = [(80, 24), (120, 36)]


@pytest.fixture
def app(tmp_path):
    store = write_sample_store(tmp_path / "runs")
    clock = FakeClock(SAMPLE_NOW)
    gpus = FakeGpuSampler([GpuSample(0, "H100", 38 * GIB, 80 * GIB, 97, ((1, 9 * GIB),)),
                           GpuSample(1, "H100", 0, 80 * GIB, 0, ())])
    # The label hides tmp_path; long intervals keep timers from firing during a snapshot.
    slots = type("Slots", (), {"held": lambda self: [{"slot": "gpu0.0", "run_id": "20241125-124800-crc-bt-paper-a1b2"}]})()
    return BttuiApp(StoreSource(store, clock=clock, label="~/runs"), clock, gpus, controls=object(),
                    reservations=slots, refresh_interval=3600.0, follow_interval=3600.0)


def steps(*keys: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        await app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await app.workers.wait_for_complete()
            await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=steps())


def test_runs_filtered(snap_compare, app):
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("slash", "c", "r", "c", "enter"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_detail(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=steps("down", "enter"))


def test_run_detail_finetuning(snap_compare, app):
    """A fine-tuning sweep's dashboard: the last cell's train/val loss and accuracy curves."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("down", "down", "down", "enter"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_results(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=steps("down", "down", "down", "enter", "r", "down"))


def test_results_counts(snap_compare, app):
    assert snap_compare(app, terminal_size=(120, 36),
                        run_before=steps("down", "down", "down", "enter", "r", "m"))


def test_help(snap_compare, app):
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("question_mark"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gpus(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=steps("g"))


def test_confirm_stop(snap_compare, app):
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("down", "space", "down", "space", "x"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare(snap_compare, app, size):
    root = app.source.root
    (root / "20241125-124800-crc-bt-paper-a1b2" / "config.toml").write_text('name = "a"\n[pretrain]\nbatch_size = 256\n')
    (root / "20241124-140000-organs-xdomain-e5f6" / "config.toml").write_text('name = "b"\n[pretrain]\nbatch_size = 512\n')
    assert snap_compare(app, terminal_size=size, run_before=steps("down", "space", "down", "space", "c"))


@pytest.fixture
def form_app(tmp_path, monkeypatch):
    """The app in a working directory with the shipped experiments and synthetic data at data/synthetic.

    The form shows paths relative to the working directory, so nothing of tmp_path reaches the snapshot.
    """
    import shutil
    from pathlib import Path

    from bttui.data.synth import synthesize

    monkeypatch.chdir(tmp_path)
    shutil.copytree(Path(__file__).resolve().parents[1] / "experiments", tmp_path / "experiments")
    synthesize(tmp_path / "data" / "synthetic", per_class=4, image_size=16)
    store = write_sample_store(tmp_path / "runs")
    clock = FakeClock(SAMPLE_NOW)
    gpus = FakeGpuSampler([GpuSample(0, "H100", 38 * GIB, 80 * GIB, 97, ((1, 9 * GIB),)),
                           GpuSample(1, "H100", 0, 80 * GIB, 0, ())])
    return BttuiApp(StoreSource(store, clock=clock, label="~/runs"), clock, gpus, controls=object(),
                    experiments_dir=tmp_path / "experiments", refresh_interval=3600.0, follow_interval=3600.0,
                    queue_interval=None)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_experiment(snap_compare, form_app, size):
    assert snap_compare(form_app, terminal_size=size, run_before=steps("n"))


def test_new_experiment_invalid(snap_compare, form_app):
    async def run_before(pilot) -> None:
        await steps("n")(pilot)
        screen = pilot.app.screen
        screen.query_one("#f-finetune-label_fractions").value = "[1.5]"
        screen.validate_now()
        await pilot.pause()

    assert snap_compare(form_app, terminal_size=(80, 24), run_before=run_before)


def test_runs_screen_light(snap_compare, app):
    """The light theme (for light terminals): the same screen, readable on a white background."""
    app.start_theme = "textual-light"
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps())
