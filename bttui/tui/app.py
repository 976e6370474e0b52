"""The bttui Textual app: holds the injected data sources and starts on the runs screen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding

# The store modules the workers use, imported here on the main thread: two workers importing
# bttui.runs submodules for the first time at once can hit CPython's import-deadlock
# avoidance and fail with KeyError('bttui.runs'). They are stdlib-only and cheap.
import bttui.runs.control  # noqa: E402,F401
import bttui.runs.events  # noqa: E402,F401
import bttui.runs.queue  # noqa: E402,F401
import bttui.runs.status  # noqa: E402,F401
import bttui.runs.store  # noqa: E402,F401

from bttui.gpus import GpuSamplerProtocol, default_sampler
from bttui.tui.commands import RunCommands, ScreenKeys
from bttui.tui.controls import StoreControls
from bttui.tui.messages import QueueDrained
from bttui.tui.screens.runs import RunsScreen
from bttui.tui.sources import Clock, RunSource, SystemClock


class BttuiApp(App[None]):
    """Browse and follow runs. Data comes only from ``source``, time from ``clock``, GPUs from ``gpus``."""

    CSS_PATH = "theme.tcss"
    TITLE = "bttui"
    # Screens get the -narrow / -wide class, so layouts stack on an 80-column terminal.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]
    COMMANDS = App.COMMANDS | {ScreenKeys, RunCommands}

    def __init__(self, source: RunSource, clock: Clock | None = None, gpus: GpuSamplerProtocol | None = None,
                 *, controls: Any = None, refresh_interval: float = 2.0, follow_interval: float = 1.0,
                 experiments_dir: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                 reservations: Any = None, queue_interval: float | None = 10.0, theme: str | None = None) -> None:
        super().__init__()
        # A Textual theme name (bttui.tui.pick_theme); None keeps Textual's default (textual-dark).
        self.start_theme = theme
        self.source = source
        self.gpus = gpus if gpus is not None else default_sampler()
        # Stop/resume/delete/launch/start_ready; the real one imports bttui.runs.control only when used.
        self.controls = controls if controls is not None else StoreControls(source.root, sampler=self.gpus)
        self.control_log: list[Any] = []
        # Where "save as" writes new experiment files and shipped experiments are read from.
        self.experiments_dir = Path(experiments_dir) if experiments_dir is not None else Path.cwd() / "experiments"
        self.data_root = Path(data_root) if data_root is not None else None
        # GPU slot reservations (bttui.runs.reserve) for "held by"; None: the machine's, read lazily.
        self.reservations = reservations
        self.clock = clock or SystemClock()
        self.refresh_interval = refresh_interval
        self.follow_interval = follow_interval
        # Queued runs start when a trainer ends; the open TUI also starts them (None: never, for tests).
        self.queue_interval = queue_interval
        self._queue_error: str | None = None

    def on_mount(self) -> None:
        if self.start_theme:
            self.theme = self.start_theme
        self.push_screen(RunsScreen())
        if self.queue_interval is not None and hasattr(self.controls, "start_ready"):
            self.start_queued()
            self.set_interval(self.queue_interval, self.start_queued)

    @work(thread=True, exclusive=True, group="queue")
    def start_queued(self) -> None:
        """Ask the store to start queued runs whose GPUs (or CPU slots) are free, off the UI thread."""
        from bttui.errors import BttuiError

        try:
            started = list(self.controls.start_ready() or [])
        except BttuiError as exc:
            self.post_message(QueueDrained([], str(exc)))
            return
        except Exception as exc:  # the queue must never take the TUI down; say what happened
            self.post_message(QueueDrained([], f"starting queued runs failed: {type(exc).__name__}: {exc}"))
            return
        self.post_message(QueueDrained(started))

    def on_queue_drained(self, message: QueueDrained) -> None:
        from bttui.tui.widgets.formatting import clean

        if message.error:
            # Said once, not every 10 s, until it changes or the queue works again.
            if message.error != self._queue_error:
                self.notify(clean(message.error), severity="error", markup=False, timeout=8)
            self._queue_error = message.error
            return
        self._queue_error = None
        if message.started:
            n = len(message.started)
            self.notify(f"started {n} queued run{'s' if n != 1 else ''}: {', '.join(message.started)}",
                        markup=False, timeout=6)
