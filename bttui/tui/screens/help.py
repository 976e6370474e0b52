"""The help overlay: the keys of the screen underneath."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """Lists (key, action) pairs; any of esc, ?, q or enter closes it."""

    BINDINGS = [("escape", "close", "Close"), ("question_mark", "close", "Close"),
                ("q", "close", "Close"), ("enter", "close", "Close")]

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.help_title = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, what in self.keys:
            table.add_row(Text(key), Text(what))
        with Vertical(id="help-box") as box:
            box.border_title = f"Keys: {self.help_title}"
            box.border_subtitle = "esc close"
            yield Static(table, id="help-keys")

    def action_close(self) -> None:
        self.dismiss(None)
