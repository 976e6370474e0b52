"""A one-line text question in a modal box (the file name for "save as")."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the text on enter, None on esc."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, title: str, question: str, value: str = "") -> None:
        super().__init__()
        self.prompt_title = title
        self.question = question
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box") as box:
            box.border_title = self.prompt_title
            box.border_subtitle = "enter ok  esc cancel"
            yield Static(Text(self.question), id="prompt-text")
            yield Input(self.value, id="prompt-input", select_on_focus=False)

    def on_mount(self) -> None:
        self.query_one("#prompt-input", Input).focus()

    @on(Input.Submitted, "#prompt-input")
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
