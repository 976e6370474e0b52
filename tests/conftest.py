"""Test-session isolation: no test reads the user's machine settings or shares /tmp GPU slots."""

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
