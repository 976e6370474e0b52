"""Status glyphs and colours shared by the CLI and the TUI: the glyph and word carry the meaning, colour only helps."""

from __future__ import annotations

from rich.text import Text

from bttui.render.format import clean

# Run statuses (queued running completed failed stopped crashed) and cell
# statuses (pending running completed failed skipped) share one table: the
# glyphs differ wherever the meaning differs, so a monochrome terminal or a
# colour-blind reader loses nothing.
STATUS_GLYPH: dict[str, str] = {
    "queued": "◌",
    "running": "●",
    "completed": "✓",
    "failed": "✗",
    "stopped": "■",
    "crashed": "✗!",
    "pending": "·",
    "skipped": "–",
}

STATUS_STYLE: dict[str, str] = {
    "queued": "cyan",
    "running": "bold blue",
    "completed": "green",
    "failed": "bold red",
    "stopped": "yellow",
    "crashed": "bold magenta",
    "pending": "dim",
    "skipped": "dim",
}

UNKNOWN_GLYPH = "?"


def status_glyph(status: str | None) -> str:
    """The glyph of a run or cell status, ``?`` for an unknown one."""
    return STATUS_GLYPH.get(status or "", UNKNOWN_GLYPH)


def status_style(status: str | None) -> str:
    """The Rich style of a run or cell status (empty for an unknown one)."""
    return STATUS_STYLE.get(status or "", "")


def status_text(status: str | None, reason: str | None = None) -> Text:
    """Glyph and word (``✓ completed``), styled; with ``reason`` appended literally after a colon."""
    word = clean(status, single_line=True) if status else "unknown"
    text = Text(f"{status_glyph(status)} {word}", style=status_style(status))
    if reason:
        text.append(": ")
        text.append(clean(reason, single_line=True), style="dim")
    return text
