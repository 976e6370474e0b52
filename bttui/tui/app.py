"""The bttui Textual app: holds the injected data sources and starts on the runs screen."""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from bttui.gpus import GpuSamplerProtocol, default_sampler
from bttui.tui.screens.runs import RunsScreen
from bttui.tui.sources import Clock, RunSource, SystemClock


class BttuiApp(App[None]):
    """Browse and follow runs. Data comes only from ``source``, time from ``clock``, GPUs from ``gpus``."""

    CSS_PATH = "theme.tcss"
    TITLE = "bttui"
    # Screens get the -narrow / -wide class, so layouts stack on an 80-column terminal.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(self, source: RunSource, clock: Clock | None = None, gpus: GpuSamplerProtocol | None = None,
                 *, refresh_interval: float = 2.0, follow_interval: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.clock = clock or SystemClock()
        self.gpus = gpus if gpus is not None else default_sampler()
        self.refresh_interval = refresh_interval
        self.follow_interval = follow_interval

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())
