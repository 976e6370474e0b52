"""TUI formatting: the shared bttui.render formatters plus clock-aware times (frozen in tests)."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from bttui.render.format import clean, fmt_accuracy, fmt_ci, fmt_duration, fmt_fraction, fmt_loss, fmt_rate
from bttui.render.glyphs import status_glyph, status_style
from bttui.render.glyphs import status_text as _status_text

__all__ = ["clean", "fmt_accuracy", "fmt_ci", "fmt_duration", "fmt_fraction", "fmt_loss", "fmt_rate",
           "status_glyph", "status_style", "status_text", "short_time", "literal"]


def status_text(status: str | None, reason: str | None = None) -> Text:
    """Glyph and word (colour only helps), the same as the CLI's."""
    return _status_text(status, reason)


def literal(value: Any, style: str = "") -> Text:
    """Data shown as-is: never parsed as markup, control characters made visible."""
    return Text(clean(value, single_line=True), style=style)


def short_time(ts: float | None, clock: Any, now: float | None = None) -> str:
    """'16:42' today, 'Nov 24' this year, 'Nov 2023' before (fits 8 columns), in the clock's time zone."""
    if ts is None:
        return "-"
    lt = clock.localtime(ts)
    ref = clock.localtime(now if now is not None else clock.now())
    if (lt.tm_year, lt.tm_yday) == (ref.tm_year, ref.tm_yday):
        return time.strftime("%H:%M", lt)
    if lt.tm_year == ref.tm_year:
        return time.strftime("%b %d", lt)
    return time.strftime("%b %Y", lt)
