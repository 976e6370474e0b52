"""The bttui terminal UI; ``run_app(store_root)`` opens it (textual is imported only when called)."""

from __future__ import annotations

import os
from pathlib import Path


def run_app(store_root: str | os.PathLike | Path) -> None:
    """Open the TUI on the run store at ``store_root``; returns when the user quits (runs keep going)."""
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock

    clock = SystemClock()
    BttuiApp(StoreSource(store_root, clock=clock), clock=clock).run()
