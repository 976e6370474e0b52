"""Test-session isolation: no test reads the user's machine settings or shares /tmp GPU slots.
Also the in-process CLI runner the CLI tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_machine_settings(tmp_path_factory, monkeypatch):
    """Point $BTTUI_CONFIG at a settings file whose reservation directory is private to the test.

    Without this, a test would take the machine-wide CPU slot in /tmp/bttui-gpu-reservations and
    wait for (or block) a real run or a second pytest session on the same box.
    """
    home = tmp_path_factory.mktemp("settings")
    settings = home / "config.toml"
    settings.write_text(f'reservations_dir = "{home / "reservations"}"\n')
    monkeypatch.setenv("BTTUI_CONFIG", str(settings))
    monkeypatch.delenv("BTTUI_STORE", raising=False)
    monkeypatch.delenv("BTTUI_FAULT", raising=False)
    yield


@pytest.fixture(autouse=True, scope="session")
def _no_machine_wide_slots(tmp_path_factory):
    """Fail the session if any test (or a trainer it started) claimed a slot in the machine-wide
    reservation folder: tests must override $BTTUI_CONFIG only with a file that sets reservations_dir."""
    from pathlib import Path

    from bttui.config.settings import MachineSettings

    yield
    base = str(tmp_path_factory.getbasetemp())
    shared = Path(MachineSettings().reservations_dir)
    leaked = []
    for slot in shared.glob("*") if shared.is_dir() else []:
        try:
            if base in slot.read_text(errors="replace"):
                leaked.append(slot.name)
        except OSError:
            continue
    assert not leaked, f"tests claimed machine-wide slots {leaked} in {shared}"


@pytest.fixture()
def cli_columns() -> str:
    """The terminal width the ``runner`` fixture's CLI renders at (a module overrides this fixture to change it)."""
    return "120"


@pytest.fixture()
def runner(monkeypatch, tmp_path, cli_columns):
    """A typer CliRunner for the real CLI in-process, with no machine settings file and no $BTTUI_STORE."""
    from typer.testing import CliRunner

    # Isolate from the developer's machine settings and store.
    monkeypatch.delenv("BTTUI_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", cli_columns)
    return CliRunner()
