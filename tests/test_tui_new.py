"""Pilot tests of the New experiment form, the queue worker and the narrow footer (fake controls, no launches)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Input, Select, SelectionList, Static, Switch

from bttui.config import config_from_dict, config_to_toml, load_config
from bttui.config.load import FIELDS
from bttui.config.settings import MachineSettings
from bttui.data.synth import synthesize
from bttui.gpus import GIB, FakeGpuSampler, GpuSample
from bttui.tui.app import BttuiApp
from bttui.tui.form import config_values, form_dict, merge_picked, parse_value, toml_array
from bttui.tui.screens.confirm import ConfirmScreen
from bttui.tui.screens.new import VALIDATE_DELAY_S, NewExperimentScreen, fid, pick_id
from bttui.tui.screens.prompt import PromptScreen
from bttui.tui.screens.runs import RunsScreen
from bttui.tui.sources import SAMPLE_NOW, FakeClock, StoreSource, write_sample_store
from bttui.tui.widgets.footer import AdaptiveFooter

REPO = Path(__file__).resolve().parents[1]
LIVE = "20241125-124800-crc-bt-paper-a1b2"
SYNTH_IDS = ["crc", "organs_axial", "organs_coronal", "organs_sagittal"]


class FakeControls:
    """Records launches and queue drains; launches nothing."""

    def __init__(self, started: list[list[str]] | None = None, fail: str | None = None) -> None:
        self.launched: list[tuple[object, str | None]] = []
        self.drains = 0
        self.started = list(started or [])
        self.fail = fail

    def launch(self, cfg, config_path=None):
        self.launched.append((cfg, config_path))
        return "20241125-160000-launched-0001"

    def start_ready(self):
        from bttui.errors import BttuiError

        self.drains += 1
        if self.fail:
            raise BttuiError(self.fail)
        return self.started.pop(0) if self.started else []

    def stop(self, run_id, force=False):
        return "stopped"

    def resume(self, run_id):
        return "resumed"

    def delete(self, run_id):
        return "deleted"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with the shipped experiments, synthetic MIMeta data and a sample store."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    synthesize(tmp_path / "data" / "synthetic", per_class=4, image_size=16)
    write_sample_store(tmp_path / "runs")
    return tmp_path


def make_app(workdir: Path, controls=None, **kw) -> BttuiApp:
    clock = FakeClock(SAMPLE_NOW)
    gpus = FakeGpuSampler([GpuSample(0, "H100", 38 * GIB, 80 * GIB, 97, ((1, 9 * GIB),)),
                           GpuSample(1, "H100", 0, 80 * GIB, 0, ())])
    kw.setdefault("queue_interval", None)
    return BttuiApp(StoreSource(workdir / "runs", clock=clock, label="~/runs"), clock, gpus,
                    controls=controls if controls is not None else FakeControls(), refresh_interval=3600.0,
                    follow_interval=3600.0, experiments_dir=workdir / "experiments", **kw)


async def settle(app, pilot, delay: float = 0.0):
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause(delay)


async def edited(app, pilot):
    """Past the form's validation debounce, with the pickers' messages handled."""
    await pilot.pause(VALIDATE_DELAY_S + 0.1)
    await app.workers.wait_for_complete()
    await pilot.pause()


async def open_form(app, pilot, *keys: str) -> NewExperimentScreen:
    await settle(app, pilot)
    await pilot.press(*keys, "n")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, NewExperimentScreen)
    return screen


def status_text(screen) -> str:
    return screen.query_one("#new-status", Static).content.plain


# ------------------------------------------------------------------ the form model (no Textual)


def test_form_model_round_trips_every_shipped_experiment(workdir):
    files = sorted((workdir / "experiments").rglob("*.toml"))
    assert len(files) >= 2
    settings = MachineSettings()
    for path in files:
        cfg = load_config(path, settings=settings, check_paths=False)
        values, enabled = config_values(cfg, workdir)
        assert set(values) == set(FIELDS)
        again = config_from_dict(form_dict(values, enabled), "form", settings=settings, check_paths=False)
        assert again == cfg, path


def test_form_model_values():
    info = FIELDS["finetune.label_fractions"]
    assert parse_value(info, "[0.1, 1.0]") == (True, [0.1, 1.0])
    assert parse_value(FIELDS["resources.gpus"], "auto") == (True, "auto")
    assert parse_value(FIELDS["resources.gpus"], "[0, 2]") == (True, [0, 2])
    assert parse_value(FIELDS["finetune.task"], "  ") == (False, None)  # unset optional string
    assert parse_value(FIELDS["pretrain.epochs"], "12") == (True, 12)
    assert parse_value(FIELDS["pretrain.epochs"], "") == (True, "")  # the loader names the problem
    assert toml_array(["a", 'b"c']) == '["a", "b\\"c"]'
    assert merge_picked(["b", "zzz"], ["a", "b", "c"], ["c", "b"]) == ["b", "zzz", "c"]


# ------------------------------------------------------------------ the form on screen


async def test_form_renders_every_section_and_field(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        for name in ("general", "data", "pretrain", "finetune", "resources", "health"):
            assert screen.query_one(f"#sec-{name}")
        for key, info in FIELDS.items():
            widget = screen.query_one("#" + fid(key))
            expected = Switch if info.kind == "bool" else Select if info.choices else Input
            assert isinstance(widget, expected), key
            assert screen.query_one("#doc-" + fid(key), Static).content.plain.startswith(info.doc)
        assert screen.query_one("#enable-pretrain", Switch).value is True
        # Defaults: the first shipped experiment, paths shown relative to the working directory.
        assert screen.choice.endswith("quickstart.toml")
        assert screen.widget_value("name") == "quickstart"
        assert screen.widget_value("data.root") == "data/synthetic"
        assert screen.widget_value("finetune.label_fractions") == "[0.1, 1.0]"
        assert status_text(screen).startswith("✓ valid")
        assert len(screen.cells) == 8
        preview = screen.query_one("#new-preview", Static)
        assert preview.border_title == "Cells (8)"
        assert "organs_sagittal/barlow_twins/linear/0.1/s0" in preview.content.plain
        # Pickers: dataset ids from the data root, GPUs from the sampler.
        picker = screen.query_one("#" + pick_id("pretrain.datasets"), SelectionList)
        options = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        assert options == SYNTH_IDS
        assert sorted(picker.selected) == ["organs_axial", "organs_coronal", "organs_sagittal"]
        gpus = screen.query_one("#" + pick_id("resources.gpus"), SelectionList)
        assert gpus.option_count == 2 and gpus.selected == []
        assert "42 GiB free" in str(gpus.get_option_at_index(0).prompt)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_invalid_value_shows_the_cli_message(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(app, pilot)
        await edited(app, pilot)  # a check the opening scheduled has fired (a loaded machine may be late)
        before = screen.validations
        box = screen.query_one("#" + fid("finetune.label_fractions"), Input)
        box.value = "[1.5"
        box.value = "[1.5]"
        await edited(app, pilot)  # past the debounce
        assert screen.validations == before + 1  # two edits, one check
        text = status_text(screen)
        assert text.startswith("✗ ")
        assert "finetune.label_fractions[0] must be in (0, 1]" in text and "got 1.5" in text
        assert screen.cfg is None
        # The same message as the CLI gives for that value in a file.
        with pytest.raises(Exception) as err:
            config_from_dict({"finetune": {"label_fractions": [1.5]}}, "form", settings=MachineSettings())
        assert str(err.value) in text
        box.value = "[0.1, oops"
        await edited(app, pilot)
        assert "is not a TOML value" in status_text(screen)
        box.value = "[0.5]"
        await edited(app, pilot)
        assert status_text(screen).startswith("✓") and len(screen.cells) == 4
        # Switching [pretrain] off leaves barlow_twins init without a backbone: the loader's cross-field rule.
        screen.query_one("#enable-pretrain", Switch).value = False
        await edited(app, pilot)
        assert not screen.query_one("#body-pretrain").display
        assert "no [pretrain] section" in status_text(screen)
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert app.controls.launched == []  # an invalid form is never launched


async def test_picking_a_shipped_experiment_fills_the_form(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        path = workdir / "experiments" / "paper" / "organs.toml"
        screen.query_one("#new-from", Select).value = f"file:{path}"
        await edited(app, pilot)
        expected = load_config(path, check_paths=False)
        values, enabled = config_values(expected, workdir)
        assert screen.form_values() == values
        assert screen.enabled == enabled
        assert screen.widget_value("name") == expected.name
        # Back to the schema defaults.
        screen.query_one("#new-from", Select).value = "defaults"
        await edited(app, pilot)
        assert screen.widget_value("pretrain.epochs") == "1000"


async def test_preset_fills_its_keys(workdir):
    from bttui.config import PRESETS

    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        screen.query_one("#" + fid("preset"), Select).value = "paper"
        await edited(app, pilot)
        for key, value in PRESETS["paper"].items():
            assert screen.form_dict()[key.split(".")[0]][key.split(".")[1]] == value, key


async def test_dataset_and_gpu_pickers_follow_the_inputs(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        picker = screen.query_one("#" + pick_id("finetune.datasets"), SelectionList)
        picker.select("crc")
        await edited(app, pilot)
        assert screen.widget_value("finetune.datasets") == '["organs_sagittal", "crc"]'
        screen.query_one("#" + fid("finetune.datasets"), Input).value = '["organs_axial"]'
        await edited(app, pilot)
        assert picker.selected == ["organs_axial"]
        gpus = screen.query_one("#" + pick_id("resources.gpus"), SelectionList)
        gpus.select(1)
        await edited(app, pilot)
        assert screen.widget_value("resources.gpus") == "[1]"
        gpus.deselect(1)
        await edited(app, pilot)
        assert screen.widget_value("resources.gpus") == "auto"
        # A data root without datasets says so.
        screen.query_one("#" + fid("data.root"), Input).value = "nowhere"
        await edited(app, pilot)
        note = screen.query_one("#note-" + pick_id("pretrain.datasets"), Static).content.plain
        assert note == "no MIMeta data at nowhere"


async def test_launch_calls_controls_with_the_form_config(workdir):
    controls = FakeControls()
    app = make_app(workdir, controls)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        screen.query_one("#" + fid("name"), Input).value = "my-run"
        await edited(app, pilot)
        form_cfg = config_from_dict(screen.form_dict(), "form")
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert len(controls.launched) == 1
        cfg, config_path = controls.launched[0]
        assert cfg == form_cfg and cfg.name == "my-run"
        assert cfg.data.root == str(workdir / "data" / "synthetic")
        assert config_path is None  # not saved: no file to name
        assert isinstance(app.screen, RunsScreen)  # back on the runs list


async def test_save_writes_a_toml_that_loads_back_equal(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        screen.query_one("#" + fid("finetune.seeds"), Input).value = "[0, 1]"
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        assert app.screen.query_one("#prompt-input", Input).value == "quickstart.toml"
        app.screen.query_one("#prompt-input", Input).value = "mine"
        await pilot.press("enter")
        await settle(app, pilot)
        path = workdir / "experiments" / "mine.toml"
        assert path.is_file()
        assert load_config(path) == screen.cfg
        assert load_config(path).finetune.seeds == [0, 1]
        first = path.read_text()
        # Saving over an existing file asks; "n" keeps it.
        screen.query_one("#" + fid("finetune.seeds"), Input).value = "[3]"
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#prompt-input", Input).value = "mine.toml"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert path.read_text() == first
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#prompt-input", Input).value = "mine.toml"
        await pilot.press("enter", "y")
        await settle(app, pilot)
        assert load_config(path).finetune.seeds == [3]
        # A saved, unchanged config is launched under its file's name.
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert app.controls.launched[-1][1] == str(path)


async def test_new_from_the_selected_run(workdir):
    cfg = load_config(workdir / "experiments" / "quickstart.toml", ["name=from-a-run", "finetune.seeds=[4]"])
    (workdir / "runs" / LIVE / "config.toml").write_text(config_to_toml(cfg))
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = await open_form(app, pilot, "down", "space")  # mark the live run, then n
        assert screen.choice == f"run:{LIVE}"
        assert screen.widget_value("name") == "from-a-run"
        assert screen.widget_value("finetune.seeds") == "[4]"
        assert config_from_dict(screen.form_dict(), "form") == cfg
        await pilot.press("escape")
        # Without a marked run the cursor's run is offered, but the form starts from a shipped experiment.
        screen = await open_form(app, pilot, "escape", "up")
        assert screen.choice.startswith("file:")
        assert f"run:{LIVE}" in [value for _, value in screen.choices]


# ------------------------------------------------------------------ queue and footer


async def test_queue_worker_starts_ready_runs(workdir):
    controls = FakeControls(started=[["20241125-154000-crc-sweep-lr-3-c3d4"]])
    app = make_app(workdir, controls, queue_interval=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert controls.drains >= 1
        assert any("started 1 queued run" in n.message for n in app._notifications)
        await pilot.pause(0.5)
        assert controls.drains >= 2  # every queue_interval


async def test_queue_errors_are_said_once(workdir):
    controls = FakeControls(fail="queue.sqlite is locked")
    app = make_app(workdir, controls, queue_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, 0.3)
        await settle(app, pilot, 0.3)
        assert controls.drains >= 2
        said = [n for n in app._notifications if "locked" in n.message]
        assert len(said) == 1


async def test_no_queue_worker_without_start_ready(workdir):
    app = make_app(workdir, controls=object(), queue_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, 0.2)
        assert app.is_running and isinstance(app.screen, RunsScreen)


async def test_footer_is_compact_at_80_columns(workdir):
    app = make_app(workdir)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        footer = app.screen.query_one(AdaptiveFooter)
        assert footer.compact is True and footer.show_command_palette is False
        await pilot.resize_terminal(140, 36)
        await settle(app, pilot)
        assert footer.compact is False and footer.show_command_palette is True


async def test_tab_goes_from_the_source_picker_straight_to_the_first_field(workdir):
    """The form's scroll container takes no focus of its own: one tab reaches `name`, typing edits it."""
    app = make_app(workdir)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_form(app, pilot)
        assert app.focused.id == "new-from"
        await pilot.press("tab")
        assert app.focused.id == "f-name"
        await pilot.press("ctrl+u", *"tabbed")
        await edited(app, pilot)
        assert screen.cfg is not None and screen.cfg.name == "tabbed"
