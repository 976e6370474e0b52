"""The bttui terminal UI; ``run_app(store_root)`` opens it (textual is imported only when called)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

THEMES = {"dark": "textual-dark", "light": "textual-light"}
THEME_CHOICES = ("auto", "dark", "light")


def pick_theme(choice: str | None = "auto", env: Mapping[str, str] | None = None) -> str:
    """The Textual theme for ``--theme`` (auto, dark or light).

    ``auto`` (or None) takes $BTTUI_THEME when it says dark or light, else the terminal's
    background from $COLORFGBG ("fg;bg", set by rxvt, Konsole, iTerm2 and others; background
    colour 7 or 15 is a light terminal), else dark. NO_COLOR is honoured by Textual itself.
    """
    env = os.environ if env is None else env
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        wanted = env.get("BTTUI_THEME", "").strip().lower()
        if wanted in THEMES:
            return THEMES[wanted]
        bg = env.get("COLORFGBG", "").split(";")[-1].strip()
        return THEMES["light"] if bg in ("7", "15") else THEMES["dark"]
    if choice not in THEMES:
        raise ValueError(f"theme {choice!r}: valid are {', '.join(THEME_CHOICES)}")
    return THEMES[choice]


def run_app(store_root: str | os.PathLike | Path, theme: str | None = "auto") -> None:
    """Open the TUI on the run store at ``store_root``; returns when the user quits (runs keep going)."""
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock

    clock = SystemClock()
    BttuiApp(StoreSource(store_root, clock=clock), clock=clock, theme=pick_theme(theme)).run()
