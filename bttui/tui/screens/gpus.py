"""The GPUs screen: each device's memory and utilisation, the runs holding it, and the run queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from bttui.gpus import GpuSample, format_gib
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.sources import RunRow, RunSource
from bttui.tui.widgets.formatting import clean, fmt_duration, literal, status_text
from bttui.tui.widgets.heatmap import bar


@dataclass
class QueueItem:
    position: int
    run_id: str
    name: str
    resume: bool
    waiting_s: float | None
    wants: str


@dataclass
class GpuView:
    """Everything the screen shows, gathered off the UI thread."""

    available: bool
    error: str | None
    samples: list[GpuSample]
    holders: dict[int, list[str]] = field(default_factory=dict)  # device index -> run names
    gpu_runs: list[tuple[RunRow, str, str]] = field(default_factory=list)  # (run, asked for, held)
    queue: list[QueueItem] | None = None  # None: no queue module
    queue_error: str | None = None


def _wants(config: dict | None) -> str:
    res = (config or {}).get("resources") or {}
    device = res.get("device", "auto")
    if device == "cpu":
        return "cpu"
    gpus = res.get("gpus", "auto")
    count = res.get("devices", 1)
    if isinstance(gpus, list):
        return "GPU " + ",".join(str(g) for g in gpus)
    return f"{count} GPU auto" if device != "cuda" else f"{count} GPU (cuda)"


def gather(source: RunSource, sampler: Any, reservations: Any, now: float) -> GpuView:
    """Sample the devices and work out which runs hold them (reservation slots, then NVML process ids)."""
    samples = list(sampler.sample())
    view = GpuView(bool(getattr(sampler, "available", False)), getattr(sampler, "error", None), samples)
    rows = source.list_runs()
    by_id = {r.id: r for r in rows}
    held: dict[str, set[int]] = {}
    if reservations is not None:
        try:
            slots = reservations.held()
        except Exception:  # an unreadable reservation folder must not hide the devices
            slots = []
        for slot in slots:
            name, run_id = str(slot.get("slot", "")), slot.get("run_id")
            if name.startswith("gpu") and "." in name and run_id:
                try:
                    held.setdefault(run_id, set()).add(int(name[3:name.index(".")]))
                except ValueError:
                    pass
    by_pid = {r.pid: r for r in rows if r.pid and r.status == "running"}
    for s in samples:
        for pid, _mem in s.processes:
            if pid in by_pid:
                held.setdefault(by_pid[pid].id, set()).add(s.index)
    for run_id, indices in held.items():
        for i in indices:
            row = by_id.get(run_id)
            view.holders.setdefault(i, []).append(row.name if row else run_id)
    for r in rows:
        if r.status in ("running", "queued"):
            indices = held.get(r.id, set())
            view.gpu_runs.append((r, _wants(source.read_config(r.id)),
                                  ",".join(map(str, sorted(indices))) if indices else "-"))
    from bttui.runs.queue import Queue

    try:
        entries = Queue(source.root).entries()
    except Exception as exc:  # a locked or damaged queue file: say so, keep the rest
        view.queue, view.queue_error = [], str(exc)
        return view
    view.queue = []
    for pos, e in enumerate(entries, 1):
        row = by_id.get(e.run_id)
        view.queue.append(QueueItem(pos, e.run_id, row.name if row else e.run_id, bool(e.resume),
                                    now - e.created if e.created else None,
                                    _wants(source.read_config(e.run_id))))
    return view


@dataclass
class GpusSampled(Message):
    """The devices, their holders and the queue were read."""

    view: GpuView


class GpusScreen(Screen[None]):
    """Refreshes every ``app.refresh_interval`` seconds in a thread worker."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("question_mark", "help", "Help"),
                Binding("q", "app.quit", "Quit")]
    HELP = [("esc", "back to the runs"), ("?", "this help"), ("q", "quit")]

    def __init__(self) -> None:
        super().__init__()
        self.view: GpuView | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="gpus-header")
        devices = DataTable(id="devices", cursor_type="row")
        devices.border_title = "Devices"
        yield devices
        holders = DataTable(id="gpu-runs", cursor_type="row")
        holders.border_title = "Active runs"
        yield holders
        queue = DataTable(id="queue", cursor_type="row")
        queue.border_title = "Queue"
        yield queue
        yield AdaptiveFooter()

    def on_mount(self) -> None:
        devices = self.query_one("#devices", DataTable)
        for key, label in (("idx", "#"), ("name", "Device"), ("mem", "Memory"), ("bar", ""), ("util", "Util"),
                           ("procs", "Procs"), ("runs", "Held by")):
            devices.add_column(label, key=key)
        runs = self.query_one("#gpu-runs", DataTable)
        for key, label in (("status", "Status"), ("name", "Run"), ("wants", "Asks for"), ("held", "Holds GPU")):
            runs.add_column(label, key=key)
        queue = self.query_one("#queue", DataTable)
        for key, label in (("pos", "#"), ("name", "Run"), ("kind", "Kind"), ("wants", "Asks for"), ("wait", "Waiting")):
            queue.add_column(label, key=key)
        self.query_one("#gpus-header", Static).update(Text(" GPUs  sampling…", style="dim"))
        self.sample()
        self.set_interval(self.app.refresh_interval, self.sample)
        devices.focus()

    def _reservations(self) -> Any:
        res = getattr(self.app, "reservations", None)
        if res is not None:
            return res
        try:
            from bttui.runs.reserve import Reservations

            return Reservations.from_settings()
        except Exception:
            return None

    @work(thread=True, exclusive=True, group="gpus")
    def sample(self) -> None:
        worker = get_current_worker()
        view = gather(self.app.source, self.app.gpus, self._reservations(), self.app.clock.now())
        if not worker.is_cancelled:
            self.post_message(GpusSampled(view))

    def on_gpus_sampled(self, message: GpusSampled) -> None:
        self.view = v = message.view
        header = Text(" GPUs  ", style="bold")
        if not v.available:
            header.append("n/a", style="bold")
        else:
            used = sum(s.memory_used for s in v.samples)
            total = sum(s.memory_total for s in v.samples)
            header.append(f"{len(v.samples)} device{'s' if len(v.samples) != 1 else ''}  "
                          f"{format_gib(used)}/{format_gib(total)} GiB used")
        header.append("   queue: ")
        header.append("n/a" if v.queue is None else f"{len(v.queue)} waiting")
        if not v.available:
            header.append(f"   (NVML: {clean(v.error or 'not available', single_line=True)}; runs train on CPU)",
                          style="dim")
        self.query_one("#gpus-header", Static).update(header)

        devices = self.query_one("#devices", DataTable)
        devices.clear()
        for s in v.samples:
            util = f"{s.utilization}%" if s.utilization is not None else "n/a"
            holders = ", ".join(clean(n, single_line=True) for n in v.holders.get(s.index, [])) or "-"
            devices.add_row(Text(str(s.index)), literal(s.name),
                            Text(f"{format_gib(s.memory_used)}/{format_gib(s.memory_total)} GiB", justify="right"),
                            Text(bar(s.memory_fraction, 16), style="green" if s.memory_fraction < 0.8 else "yellow"),
                            Text(util, justify="right"), Text(str(len(s.processes)), justify="right"),
                            Text(holders), key=str(s.index))
        devices.border_subtitle = "" if v.samples else ("no GPU" if v.available else "GPUs: n/a")

        runs = self.query_one("#gpu-runs", DataTable)
        runs.clear()
        for row, wants, held in v.gpu_runs:
            runs.add_row(status_text(row.status), literal(row.name), Text(wants), Text(held), key=row.id)
        runs.border_subtitle = "" if v.gpu_runs else "no running or queued runs"

        queue = self.query_one("#queue", DataTable)
        queue.clear()
        for item in v.queue or []:
            queue.add_row(Text(str(item.position), justify="right"), literal(item.name),
                          Text("resume" if item.resume else "new"), Text(item.wants),
                          Text(fmt_duration(item.waiting_s), justify="right"), key=item.run_id)
        if v.queue is None:
            queue.border_subtitle = "queue: n/a"
        elif v.queue_error:
            queue.border_subtitle = f"queue unreadable: {clean(v.queue_error, single_line=True)}"
        else:
            queue.border_subtitle = "" if v.queue else "empty"

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("GPUs", self.HELP))
