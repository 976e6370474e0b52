"""Run control from any screen: ask (stop, delete), then call the app's controls in a worker and report."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.worker import get_current_worker

from bttui.tui.messages import RunControlled
from bttui.tui.widgets.formatting import clean


class RunControlMixin:
    """For Screens: ``ask_then`` confirms, ``run_control`` acts off the UI thread, outcomes come back as
    RunControlled messages (one per run, then one with ``run_id`` None for the batch) and are shown."""

    app: Any

    def ask_then(self, verb: str, rows: list[Any], action: str) -> None:
        """``verb`` N runs? (names listed, eight at most) and on yes ``run_control(action, ids)``."""
        if not rows:
            self.notify("no run under the cursor", severity="warning")  # type: ignore[attr-defined]
            return
        from bttui.tui.screens.confirm import ConfirmScreen

        names = [f"  {clean(r.name, single_line=True)}  ({r.status})" for r in rows[:8]]
        if len(rows) > 8:
            names.append(f"  … and {len(rows) - 8} more")
        lines = [f"{verb} {len(rows)} run{'s' if len(rows) != 1 else ''}?", *names]

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_control(action, [r.id for r in rows])

        self.app.push_screen(ConfirmScreen(verb, lines), answered)

    @work(thread=True, exclusive=False, group="control")
    def run_control(self, action: str, run_ids: list[str]) -> None:
        """Stop/resume/delete/export off the UI thread; each outcome (or refusal) comes back as a message."""
        from bttui.errors import BttuiError

        worker = get_current_worker()
        controls = self.app.controls
        for run_id in run_ids:
            if worker.is_cancelled:
                return
            try:
                text = getattr(controls, action)(run_id)
                ok = True
            except BttuiError as exc:
                text, ok = str(exc), False
            except Exception as exc:  # a control failure must not kill the TUI; say what happened
                text, ok = f"{action} {run_id} failed: {type(exc).__name__}: {exc}", False
            self.post_message(RunControlled(action, run_id, ok, text))  # type: ignore[attr-defined]
        self.post_message(RunControlled(action, None, True, ""))  # type: ignore[attr-defined]

    def show_controlled(self, message: RunControlled) -> None:
        """Log one run's outcome and say it in a notification (errors in red)."""
        self.app.control_log.append(message)
        if message.text:
            self.notify(clean(message.text), severity="information" if message.ok else "error",  # type: ignore[attr-defined]
                        markup=False, timeout=6)
