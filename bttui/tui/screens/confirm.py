"""A yes/no question in a modal box (stop and delete ask before acting)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True on y, False on n or esc. The question is data-free; run names are shown literally."""

    BINDINGS = [("y", "answer(True)", "Yes"), ("n", "answer(False)", "No"), ("escape", "answer(False)", "No")]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self.question_title = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        body = Text()
        for i, line in enumerate(self.lines):
            if i:
                body.append("\n")
            body.append(line)
        body.append("\n\n")
        body.append("y", style="bold")
        body.append(" yes   ")
        body.append("n", style="bold")
        body.append("/")
        body.append("esc", style="bold")
        body.append(" no")
        with Vertical(id="confirm-box") as box:
            box.border_title = self.question_title
            yield Static(body, id="confirm-text")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
