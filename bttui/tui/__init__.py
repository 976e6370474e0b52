"""The bttui terminal UI; ``run_app(store_root)`` opens it (textual is imported only when called)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

THEMES = {"dark": "textual-dark", "light": "textual-light"}
# "ansi": the terminal's own 16 colours and background (Textual's ansi-dark / ansi-light).
ANSI_THEMES = {"dark": "ansi-dark", "light": "ansi-light"}
THEME_CHOICES = ("auto", "dark", "light", "ansi")


def _terminal_is_light(env: Mapping[str, str]) -> bool:
    """$COLORFGBG ("fg;bg", set by rxvt, Konsole, iTerm2 and others): background colour 7 or 15 is light."""
    return env.get("COLORFGBG", "").split(";")[-1].strip() in ("7", "15")


def pick_theme(choice: str | None = "auto", env: Mapping[str, str] | None = None) -> str:
    """The Textual theme for ``--theme`` (auto, dark, light or ansi).

    ``auto`` (or None) takes $BTTUI_THEME when it names one of the others, else light on a
    light terminal ($COLORFGBG), else dark. ``ansi`` uses the terminal's own colours, in their
    light or dark variant by the same test. NO_COLOR is honoured by Textual itself.
    """
    env = os.environ if env is None else env
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        wanted = env.get("BTTUI_THEME", "").strip().lower()
        choice = wanted if wanted in THEME_CHOICES and wanted != "auto" else "auto"
    shade = "light" if _terminal_is_light(env) else "dark"
    if choice == "auto":
        return THEMES[shade]
    if choice == "ansi":
        return ANSI_THEMES[shade]
    if choice not in THEMES:
        raise ValueError(f"theme {choice!r}: valid are {', '.join(THEME_CHOICES)}")
    return THEMES[choice]


def run_app(store_root: str | os.PathLike | Path, theme: str | None = "auto") -> None:
    """Open the TUI on the run store at ``store_root``; returns when the user quits (runs keep going)."""
    from bttui.tui.app import BttuiApp
    from bttui.tui.sources import StoreSource, SystemClock

    clock = SystemClock()
    BttuiApp(StoreSource(store_root, clock=clock), clock=clock, theme=pick_theme(theme)).run()
