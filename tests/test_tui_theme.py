"""Theme choice: --theme, $BTTUI_THEME and the terminal's $COLORFGBG; the app starts in the chosen theme."""

from __future__ import annotations

import pytest

from bttui.tui import pick_theme


@pytest.mark.parametrize("choice, env, expected", [
    ("dark", {"COLORFGBG": "0;15"}, "textual-dark"),  # an explicit choice wins
    ("light", {}, "textual-light"),
    ("LIGHT", {}, "textual-light"),
    ("auto", {}, "textual-dark"),
    (None, {}, "textual-dark"),
    ("auto", {"COLORFGBG": "0;15"}, "textual-light"),
    ("auto", {"COLORFGBG": "0;default;7"}, "textual-light"),  # rxvt's three-field form
    ("auto", {"COLORFGBG": "15;0"}, "textual-dark"),
    ("auto", {"COLORFGBG": "garbage"}, "textual-dark"),
    ("auto", {"BTTUI_THEME": "light", "COLORFGBG": "15;0"}, "textual-light"),
    ("auto", {"BTTUI_THEME": "dark", "COLORFGBG": "0;15"}, "textual-dark"),
    ("auto", {"BTTUI_THEME": "neon", "COLORFGBG": "0;15"}, "textual-light"),  # unknown: ignored
    ("ansi", {}, "ansi-dark"),
    ("ansi", {"COLORFGBG": "0;15"}, "ansi-light"),
    ("auto", {"BTTUI_THEME": "ansi", "COLORFGBG": "15;0"}, "ansi-dark"),
])
def test_pick_theme(choice, env, expected):
    assert pick_theme(choice, env) == expected


def test_pick_theme_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid are auto, dark, light, ansi"):
        pick_theme("pink", {})


def test_cli_rejects_an_unknown_theme(runner):
    from bttui.cli import app

    result = runner.invoke(app, ["--theme", "pink", "ls"])
    assert result.exit_code == 2
    assert "'pink' is not a theme; valid: auto, dark, light, ansi" in result.output
    assert "Traceback" not in result.output


async def test_app_starts_in_the_chosen_theme(tmp_path):
    from bttui.gpus import FakeGpuSampler
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import SAMPLE_NOW, FakeClock, StoreSource, write_sample_store

    store = write_sample_store(tmp_path / "runs")
    clock = FakeClock(SAMPLE_NOW)
    app = BttuiApp(StoreSource(store, clock=clock), clock, FakeGpuSampler(), refresh_interval=60.0,
                   follow_interval=60.0, queue_interval=None, theme="textual-light")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == "textual-light" and not app.current_theme.dark


async def test_palette_theme_command_switches_the_theme_live(tmp_path):
    """The README's `ctrl+p` → "Theme": Textual's own theme picker is in bttui's palette."""
    from test_tui_pilot import make_app, settle

    from bttui.tui.sources import write_sample_store

    app = make_app(write_sample_store(tmp_path / "runs"), queue_interval=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+p", *"theme")
        await settle(app, pilot)
        await pilot.press("enter")  # the "Theme" command opens the theme list
        await settle(app, pilot)
        await pilot.press(*"solarized-light")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.theme == "solarized-light" and not app.current_theme.dark
