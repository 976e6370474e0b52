"""The live run dashboard: header, loss chart, throughput, Barlow Twins health, log tail, cells."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from bttui.runs.status import ACTIVE_STATUSES
from bttui.tui.messages import EventsAppended, RunControlled
from bttui.tui.screens.control import RunControlMixin
from bttui.tui.sources import RunRow
from bttui.tui.widgets.formatting import (
    clean, fmt_accuracy, fmt_duration, fmt_loss, fmt_rate, literal, short_time, status_text,
)
from bttui.tui.widgets.cell_chart import CellChart
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.widgets.heatmap import bar, xcorr_heatmap
from bttui.tui.widgets.loss_chart import LossChart

# Bounded histories: a 1000-epoch run logs ~10^5 steps; the chart thins to 300 points anyway.
MAX_STEPS_KEPT = 20_000
LOG_LINES_SHOWN = 6
# Per-step numbers kept for the sparklines (they show the last few dozen; older points only cost memory).
MAX_SERIES_KEPT = 600
SERIES_KEYS = ("lr", "images_per_s", "data_wait", "rss_mb", "gpu_mem_allocated_mb", "gpu_mem_reserved_mb",
               "gpu_mem_peak_mb", "gpu_mem_used_mb", "gpu_mem_total_mb", "gpu_util")
# From this many columns the loss chart and the fine-tuning charts are shown side by side.
BOTH_CHARTS_FROM = 160

# Health keys accepted in `epoch`/`health`/`step` events (first present wins).
HEALTH_KEYS = {
    "emb_std": ("emb_std", "embedding_std", "std"),
    "effective_rank": ("effective_rank", "eff_rank", "rank"),
    "knn_accuracy": ("knn_accuracy", "knn_acc", "probe_accuracy"),
    "cross_correlation": ("cross_correlation", "xcorr", "cc_matrix"),
}


def _first(ev: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        if ev.get(n) is not None:
            return ev[n]
    return None


def timeline_line(ev: dict) -> str | None:
    """One Log-panel line for the events worth a line (None for the rest: steps, health, config…)."""
    kind = ev.get("type")
    stage = ev.get("stage")
    if kind == "log" and ev.get("message") is not None:
        level = str(ev.get("level") or "info")
        return (f"[{level}] " if level in ("warning", "error") else "") + str(ev["message"])
    if kind == "stage_start":
        if stage == "pretrain":
            return (f"pretraining: {ev.get('epochs', '?')} epochs, {ev.get('images', '?')} images, "
                    f"batch {ev.get('batch_size', '?')} on {ev.get('device', '?')}")
        return f"{stage or 'stage'} started"
    if kind == "epoch" and stage in (None, "pretrain") and isinstance(ev.get("loss"), (int, float)):
        line = f"epoch {ev.get('epoch', '?')} loss {fmt_loss(ev['loss'])}"
        knn = ev.get("knn_accuracy")
        return line + (f"  kNN {100 * knn:.1f}%" if isinstance(knn, (int, float)) else "")
    if kind == "checkpoint" and ev.get("path"):
        return f"checkpoint {str(ev['path']).rsplit('/', 1)[-1]}"
    if kind == "stage_end":
        return f"{stage or 'stage'} {ev.get('status') or 'ended'}"
    if kind == "cell_end" and ev.get("cell"):
        result = ev.get("result") if isinstance(ev.get("result"), dict) else ev
        acc = result.get("test_accuracy")
        return f"{ev['cell']}: {result.get('status') or 'ended'}" + (
            f" {100 * acc:.1f}%" if isinstance(acc, (int, float)) else "")
    if kind == "status" and ev.get("status"):
        return f"run {ev['status']}" + (f" ({ev['reason']})" if ev.get("reason") else "")
    return None


class LiveState:
    """Everything the dashboard shows, folded from events (UI thread only; plain data)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.loss: list[float] = []
        self.on_diag: list[float] = []
        self.off_diag: list[float] = []
        self.epoch_x: list[float] = []
        self.epoch_loss: list[float] = []
        self.last_step: dict = {}
        self.health: dict[str, Any] = {}
        self.health_history: dict[str, list[float]] = {"emb_std": [], "effective_rank": [], "knn_accuracy": []}
        self.rank_dim: int | None = None
        self.cell_results: dict[str, dict] = {}
        self.cell_epochs: dict[str, dict] = {}
        self.cell_order: list[str] = []
        # What happened, in order: (event time, line) for the Log panel (log messages, stage and
        # epoch ends, checkpoints, cell results, the final status).
        self.messages: list[tuple[float | None, str]] = []
        self.alarm: str | None = None
        # Per cell: epoch -> (train_loss, val_loss, train_accuracy, val_accuracy), for fine-tuning-only runs.
        self.cell_curves: dict[str, list[dict]] = {}
        self.torn = 0
        self.n_events = 0
        # Step-event numbers over time (lr, images/s, GPU memory...), for sparklines and gauges.
        self.series: dict[str, list[float]] = {k: [] for k in SERIES_KEYS}

    def feed(self, events: list[dict]) -> None:
        for ev in events:
            self.n_events += 1
            kind = ev.get("type")
            if kind == "step":
                if ev.get("loss") is not None:
                    self.steps.append(float(ev.get("step") or len(self.steps)))
                    self.loss.append(float(ev["loss"]))
                    self.on_diag.append(float(ev.get("on_diag") or 0.0))
                    self.off_diag.append(float(ev.get("off_diag") or 0.0))
                self.last_step = ev
                for key in SERIES_KEYS:
                    v = ev.get(key)
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                        self.series[key].append(float(v))
            elif kind == "epoch" and ev.get("loss") is not None and ev.get("stage", "pretrain") == "pretrain":
                self.epoch_x.append(float(ev.get("epoch") or len(self.epoch_x) + 1))
                self.epoch_loss.append(float(ev["loss"]))
            elif kind == "cell_start" and ev.get("cell"):
                if ev["cell"] not in self.cell_order:
                    self.cell_order.append(ev["cell"])
            elif kind == "cell_epoch" and ev.get("cell"):
                self.cell_epochs[ev["cell"]] = ev
                self.cell_curves.setdefault(ev["cell"], []).append(ev)
                if ev["cell"] not in self.cell_order:
                    self.cell_order.append(ev["cell"])
            elif kind == "cell_end" and ev.get("cell"):
                result = ev.get("result") if isinstance(ev.get("result"), dict) else ev
                self.cell_results[ev["cell"]] = result
                if ev["cell"] not in self.cell_order:
                    self.cell_order.append(ev["cell"])
            elif kind == "log" and ev.get("message") is not None:
                if ev.get("alarm") == "collapse":
                    self.alarm = str(ev["message"])
            line = timeline_line(ev)
            if line is not None:
                t = ev.get("t")
                self.messages.append((float(t) if isinstance(t, (int, float)) else None, line))
            if kind in ("epoch", "health", "step"):
                for key, names in HEALTH_KEYS.items():
                    value = _first(ev, names)
                    if value is not None:
                        self.health[key] = value
                        if key in self.health_history and isinstance(value, (int, float)):
                            self.health_history[key].append(float(value))
                if ev.get("rank_dim") is not None:
                    self.rank_dim = int(ev["rank_dim"])
        if len(self.steps) > MAX_STEPS_KEPT:
            cut = len(self.steps) - MAX_STEPS_KEPT
            for series in (self.steps, self.loss, self.on_diag, self.off_diag):
                del series[:cut]
        del self.messages[:-50]
        for values in self.series.values():
            del values[:-MAX_SERIES_KEPT]

    def chart_series(self) -> tuple[dict[str, tuple[list[float], list[float]]], str]:
        if self.steps:
            return {"total": (self.steps, self.loss), "on-diag": (self.steps, self.on_diag),
                    "off-diag·λ": (self.steps, self.off_diag)}, "step"
        if self.epoch_x:
            return {"total": (self.epoch_x, self.epoch_loss)}, "epoch"
        return {}, "step"

    @property
    def has_pretrain(self) -> bool:
        return bool(self.steps or self.epoch_x)


def sparkline(values: list[float], width: int = 12) -> str:
    if len(values) < 2:
        return ""
    vals = values[-width:]
    lo, hi = min(vals), max(vals)
    ticks = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return ticks[3] * len(vals)
    return "".join(ticks[int((v - lo) / (hi - lo) * (len(ticks) - 1))] for v in vals)


def progress_of(row: RunRow | None) -> tuple[float, str] | None:
    """(fraction done, what is counted) for the header's bar: steps, else epochs, of the stage; cells when fine-tuning."""
    if row is None:
        return None
    if row.status == "completed":
        return 1.0, "done"
    if row.stage == "finetune" and row.cells_total:
        return (row.cells_done or 0) / row.cells_total, f"cells {row.cells_done or 0}/{row.cells_total}"
    if row.step is not None and row.steps:
        return min(1.0, row.step / row.steps), f"step {row.step:,}/{row.steps:,}"
    if row.epoch is not None and row.epochs:
        return min(1.0, row.epoch / row.epochs), f"epoch {row.epoch}/{row.epochs}"
    return None


def gauge(fraction: float | None, width: int = 10) -> str:
    """A bar plus percent that reads without colour: ``████░░░░░░  40%``."""
    if fraction is None:
        return "n/a"
    return f"{bar(fraction, width)} {100 * max(0.0, min(1.0, fraction)):3.0f}%"


class CellsTable(DataTable):
    """The cells table; ``picked`` turns true once the user moves its cursor (key or mouse), so the
    fine-tuning charts follow the user's cell instead of the running one."""

    picked = False

    def on_key(self, event) -> None:
        if event.key in ("up", "down", "pageup", "pagedown", "home", "end"):
            self._pick()

    def on_click(self) -> None:
        self._pick()

    def _pick(self) -> None:
        if not self.picked:
            self.picked = True
            # The cursor may not move (home on the first row): redraw the charts for it anyway.
            redraw = getattr(self.screen, "render_cell_charts", None)
            if redraw is not None:
                self.call_after_refresh(redraw)


def eta_seconds(row: RunRow, now: float) -> float | None:
    """Remaining time from progress so far (steps when known, else epochs)."""
    if row.status != "running" or not row.started:
        return None
    elapsed = now - row.started
    for done, total in ((row.step, row.steps), (row.epoch, row.epochs)):
        if done and total and done > 0 and elapsed > 0:
            return elapsed / done * max(0, total - done)
    return None


class _Tailer:
    """Byte offset into events.jsonl; a lock makes polls strictly sequential across worker threads."""

    def __init__(self) -> None:
        self.offset = 0
        self.lock = threading.Lock()
        self.last_log: list[str] | None = None
        self.last_row: RunRow | None = None


class RunDetailScreen(RunControlMixin, Screen[None]):
    """Follows one run: polls its events incrementally every ``app.follow_interval`` seconds."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("l", "toggle_log", "Log scale"),
        Binding("f", "toggle_chart", "Loss/FT chart"),
        Binding("r", "results", "Results"),
        Binding("p", "pause", "Pause"),
        Binding("x", "stop", "Stop"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    HELP = [("esc", "back to the runs"), ("l", "toggle log scale of the loss chart"),
            ("f", "chart: pretraining loss or the cell's fine-tuning\n   loss/accuracy (both from 160 columns)"),
            ("r", "results: cells, confusion matrices"),
            ("p", "pause / resume following (the run keeps going;\n   the screen stops updating)"),
            ("x", "stop the run (asks first; it checkpoints)"),
            ("↑/↓", "pick a cell: its curves (enter: its results)"),
            ("?", "this help"), ("q", "quit (the run keeps going)")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.state = LiveState()
        self.row: RunRow | None = None
        self.log_lines: list[str] = []
        self._tailer = _Tailer()
        self._cells_key: tuple | None = None
        # "auto": fine-tuning charts when there is no pretraining or the user picked a cell; "loss"/"cells": forced.
        self.chart_view = "auto"
        # Paused: the poll timer keeps ticking but reads nothing, so the screen holds still for reading.
        self.paused = False

    def compose(self) -> ComposeResult:
        yield Static(id="detail-header")
        # Wide: chart beside a numbers panel, then health | cross-correlation | log, then cells.
        # Narrow (-narrow screen class): chart, then one-line strips (throughput/GPU, health, last log).
        with Vertical(id="detail-body"):
            with Horizontal(id="detail-top"):
                chart = LossChart(id="loss-chart")
                yield chart
                with Horizontal(id="cell-charts"):
                    yield CellChart("loss", id="cell-loss")
                    yield CellChart("accuracy", id="cell-acc")
                numbers = Static(id="numbers")
                numbers.border_title = "Throughput · GPU"
                yield numbers
            yield Static(id="strip", classes="oneline")
            yield Static(id="gpu-line", classes="oneline")
            yield Static(id="cell-line", classes="oneline")
            yield Static(id="health-line", classes="oneline")
            yield Static(id="log-line", classes="oneline")
            with Horizontal(id="detail-mid"):
                health = Static(id="health")
                health.border_title = "Health"
                yield health
                xcorr = Static(id="xcorr")
                xcorr.border_title = "Cross-correlation"
                yield xcorr
                log = Static(id="log")
                log.border_title = "Log"
                yield log
            cells = CellsTable(id="cells", cursor_type="row")
            cells.border_title = "Cells"
            yield cells
        yield AdaptiveFooter()

    def on_mount(self) -> None:
        cells = self.query_one("#cells", DataTable)
        cells.add_column("Cell", key="cell")
        cells.add_column("Status", key="status")
        cells.add_column("Epoch", key="epoch")
        cells.add_column("Accuracy", key="acc")
        # The run's files are read by the poll worker only; until it answers the header says "loading".
        self.render_all()
        self.poll()
        self.set_interval(self.app.follow_interval, self.poll)

    # ---------------------------------------------------------------- worker
    @work(thread=True, exclusive=True, group="tail")
    def poll(self) -> None:
        """Read what was appended since the last poll; post only when something changed."""
        if self.paused:
            return
        worker = get_current_worker()
        source = self.app.source
        t = self._tailer
        with t.lock:
            if worker.is_cancelled:
                return
            events: list[dict] = []
            torn = 0
            # A long backlog (opening a finished run) is read in chunks so cancellation stays prompt.
            while not worker.is_cancelled:
                chunk = source.read_events(self.run_id, t.offset)
                if chunk.offset == t.offset:
                    break
                events.extend(chunk.events)
                torn += chunk.torn
                t.offset = chunk.offset
                if len(events) > 50_000:
                    break
            row = source.get_run(self.run_id)
            log = source.read_log_tail(self.run_id, 40)
            if not events and log == t.last_log and row == t.last_row:
                return
            t.last_log, t.last_row = log, row
            # Posted under the lock so messages arrive in offset order.
            self.post_message(EventsAppended(self.run_id, events, t.offset, torn, row, log))

    def on_events_appended(self, message: EventsAppended) -> None:
        if message.run_id != self.run_id:
            return
        if message.run is not None:
            self.row = message.run
        self.log_lines = message.log_lines
        self.state.torn += message.torn
        self.state.feed(message.events)
        self.render_all(chart=bool(message.events))

    # ---------------------------------------------------------------- rendering
    def render_all(self, chart: bool = True) -> None:
        self.render_header()
        if chart:
            series, x_label = self.state.chart_series()
            self.query_one(LossChart).set_series(series, x_label)
        self.render_numbers()
        self.render_health()
        self.render_log()
        self.render_strips()
        self.render_cells()
        self.render_cell_charts()

    def render_header(self) -> None:
        row = self.row
        # Two lines, never wrapped: a long status reason is cut, not pushed onto a third line.
        header = Text(" ", no_wrap=True, overflow="ellipsis")
        if row is None:
            header.append(literal(self.run_id, "bold"))
            if self._tailer.last_log is None:
                header.append("  loading…", style="dim")
            else:
                header.append("  run not found", style="red")
            self.query_one("#detail-header", Static).update(header)
            return
        clock = self.app.clock
        now = clock.now()
        header.append(literal(row.name, "bold"))
        header.append("  ")
        header.append(status_text(row.status))
        header.append(f"  {clean(row.stage or '-', single_line=True)}")
        # An ended run (stage cleared) keeps the last cell's epoch counter: its cells say more.
        ended_with_cells = row.stage is None and bool(row.cells_total)
        if row.epoch is not None and not ended_with_cells:
            header.append(f"  epoch {row.epoch}/{row.epochs or '?'}")
        if row.step is not None and not ended_with_cells:
            header.append(f"  step {row.step:,}" + (f"/{row.steps:,}" if row.steps else ""))
        if row.cells_total and (row.stage == "finetune" or ended_with_cells):
            header.append(f"  cells {row.cells_done or 0}/{row.cells_total}")
        eta = eta_seconds(row, now)
        if eta is not None:
            header.append(f"  ETA {fmt_duration(eta)}")
        started = row.started or row.created
        progress = progress_of(row)
        second = " "
        if progress is not None:
            second += f"{gauge(progress[0], 16)}  "
        second += f"{clean(row.id)}  started {short_time(started, clock, now)}"
        if started:
            end = row.ended or (now if row.status == "running" else row.heartbeat)
            if end:
                second += f"  elapsed {fmt_duration(end - started)}"
        if row.reason:
            second += f"  ({clean(row.reason, single_line=True)})"
        if self.paused:
            header.append("  ⏸ paused (p)", style="bold")
        header.append("\n")
        header.append(second, style="dim")
        self.query_one("#detail-header", Static).update(header)

    def _step_value(self, key: str) -> Any:
        v = self.state.last_step.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def gpu_parts(self) -> tuple[str, str, str]:
        """(this process, device, host) memory strings from the last step event; n/a when not reported."""
        alloc, peak = self._step_value("gpu_mem_allocated_mb"), self._step_value("gpu_mem_peak_mb")
        used, total = self._step_value("gpu_mem_used_mb"), self._step_value("gpu_mem_total_mb")
        util, rss = self._step_value("gpu_util"), self._step_value("rss_mb")
        proc = f"{alloc / 1024:.1f}/{peak / 1024:.1f} GiB" if alloc is not None and peak is not None else "n/a"
        dev = f"{used / 1024:.1f}/{total / 1024:.0f} GiB" if used is not None and total is not None else "n/a"
        if util is not None:
            dev += f" {util:.0f}%"
        host = f"{rss / 1024:.1f} GiB" if rss is not None else "n/a"
        return proc, dev, host

    def spark(self, key: str, width: int = 8) -> str:
        return sparkline(self.state.series.get(key, []), width)

    def render_numbers(self) -> None:
        """Loss terms, throughput, lr, GPU memory (this process and the device) and host RSS, each with
        its sparkline over the last steps; gauges for device memory and utilisation."""
        ev = self.state.last_step
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(no_wrap=True)
        loss = ev.get("loss", self.row.loss if self.row else None)
        t.add_row("loss", fmt_loss(loss), "")
        t.add_row("on-diag", fmt_loss(ev.get("on_diag")), "")
        t.add_row("off-diag·λ", fmt_loss(ev.get("off_diag")), "")
        t.add_row("img/s", self._rate(), self.spark("images_per_s"))
        wait = self._step_value("data_wait")
        t.add_row("data wait", f"{100 * float(wait):.0f}%" if wait is not None else "n/a", self.spark("data_wait"))
        lr = self._step_value("lr")
        t.add_row("lr", f"{float(lr):.3g}" if lr is not None else "n/a", self.spark("lr"))
        gib = self._gib
        t.add_row("GPU alloc", gib("gpu_mem_allocated_mb"), self.spark("gpu_mem_allocated_mb"))
        t.add_row("  reserved", gib("gpu_mem_reserved_mb"), self.spark("gpu_mem_reserved_mb"))
        t.add_row("  peak", gib("gpu_mem_peak_mb"), "")
        used, total = self._step_value("gpu_mem_used_mb"), self._step_value("gpu_mem_total_mb")
        dev = f"{used / 1024:.1f}/{total / 1024:.0f} GiB" if used is not None and total else "n/a"
        t.add_row("device mem", dev, self.spark("gpu_mem_used_mb"))
        t.add_row("", gauge(used / total if used is not None and total else None), "")
        util = self._step_value("gpu_util")
        t.add_row("device util", gauge(util / 100 if util is not None else None), self.spark("gpu_util"))
        t.add_row("host RSS", gib("rss_mb"), self.spark("rss_mb"))
        numbers = self.query_one("#numbers", Static)
        numbers.update(t)
        # These come from pretraining's step events: once the run is past them, say whose they are.
        stale = bool(ev) and self.row is not None and self.row.stage != "pretrain"
        numbers.border_title = "Throughput · GPU" + (" (last pretraining step)" if stale else "")

    def _rate(self) -> str:
        v = self._step_value("images_per_s")
        return fmt_rate(v, unit="").strip() if v is not None else "n/a"

    def _gib(self, key: str) -> str:
        v = self._step_value(key)
        return f"{v / 1024:.1f} GiB" if v is not None else "n/a"

    def collapse_text(self) -> Text:
        if self.state.alarm:
            return Text("collapse: YES", style="bold red")
        if self.state.health:
            return Text("collapse: no", style="green")
        return Text("collapse: n/a", style="dim")

    def render_health(self) -> None:
        h = self.state.health
        hist = self.state.health_history
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(no_wrap=True)
        std = h.get("emb_std")
        t.add_row("emb std", f"{float(std):.3g}" if isinstance(std, (int, float)) else "n/a",
                  sparkline(hist["emb_std"]))
        t.add_row("eff. rank", self.rank_string(), sparkline(hist["effective_rank"]))
        t.add_row("kNN acc", fmt_accuracy(h.get("knn_accuracy")) if h.get("knn_accuracy") is not None else "n/a",
                  sparkline(hist["knn_accuracy"]))
        t.add_row("collapse", self.collapse_text().plain.split(": ", 1)[1], "")
        self.query_one("#health", Static).update(t)
        matrix = self.xcorr_matrix()
        self.query_one("#xcorr", Static).update(xcorr_heatmap(matrix, max_size=12))

    def rank_string(self) -> str:
        rank = self.state.health.get("effective_rank")
        if not isinstance(rank, (int, float)):
            return "n/a"
        return f"{rank:,.0f}" + (f"/{self.state.rank_dim:,}" if self.state.rank_dim else "")

    def xcorr_matrix(self) -> list | None:
        matrix = self.state.health.get("cross_correlation")
        ok = isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix)
        return matrix if ok else None

    def log_tail(self) -> list[str]:
        """The run's story from its events (time-stamped), then what the trainer printed to train.log
        beyond the launch headers (warnings, tracebacks), the newest last."""
        clock = self.app.clock
        lines = [(time.strftime("%H:%M:%S", clock.localtime(t)) + " " if t is not None else "") + text
                 for t, text in self.state.messages]
        printed = [line for line in self.log_lines if line.strip() and not line.startswith("--- ")]
        # Printed lines are few and matter (the end of a traceback) but must not push the events out.
        printed = printed[-(LOG_LINES_SHOWN // 2 if lines else LOG_LINES_SHOWN):]
        return (lines + printed)[-LOG_LINES_SHOWN:]

    def render_log(self) -> None:
        lines = self.log_tail()
        text = Text(no_wrap=True, overflow="ellipsis")
        if not lines:
            text.append("no log yet", style="dim")
        for i, line in enumerate(lines):
            if i:
                text.append("\n")
            text.append(clean(line, single_line=True))
        self.query_one("#log", Static).update(text)

    def render_strips(self) -> None:
        """The one-line versions of the panels, shown on narrow terminals."""
        wait = self._step_value("data_wait")
        lr = self._step_value("lr")
        proc, dev, host = self.gpu_parts()
        strip = Text(no_wrap=True, overflow="ellipsis")
        strip.append(" img/s ", style="dim")
        strip.append(self._rate())
        strip.append("  data ", style="dim")
        strip.append(f"{100 * wait:.0f}%" if wait is not None else "n/a")
        strip.append("  lr ", style="dim")
        strip.append(f"{lr:.3g}" if lr is not None else "n/a")
        strip.append(" " + self.spark("images_per_s", 6))
        strip.append("  RSS ", style="dim")
        strip.append(host)
        self.query_one("#strip", Static).update(strip)

        used, total = self._step_value("gpu_mem_used_mb"), self._step_value("gpu_mem_total_mb")
        util = self._step_value("gpu_util")
        gpu = Text(no_wrap=True, overflow="ellipsis")
        gpu.append(" GPU mem ", style="dim")
        gpu.append(gauge(used / total, 8) if used is not None and total else "n/a")
        gpu.append(" util ", style="dim")
        gpu.append(gauge(util / 100, 8) if util is not None else "n/a")
        gpu.append("  run ", style="dim")
        gpu.append(proc)
        self.query_one("#gpu-line", Static).update(gpu)

        h = self.state.health
        line = Text(no_wrap=True, overflow="ellipsis")
        std = h.get("emb_std")
        line.append(" std ", style="dim")
        line.append(f"{float(std):.3g}" if isinstance(std, (int, float)) else "n/a")
        line.append(" " + sparkline(self.state.health_history["emb_std"], 6))
        line.append("  rank ", style="dim")
        line.append(self.rank_string())
        line.append("  kNN ", style="dim")
        line.append(fmt_accuracy(h.get("knn_accuracy")) if h.get("knn_accuracy") is not None else "n/a")
        matrix = self.xcorr_matrix()
        if matrix is not None:
            n = len(matrix)
            diag = sum(float(matrix[i][i]) for i in range(n) if i < len(matrix[i])) / n
            line.append("  diag ", style="dim")
            line.append(f"{diag:.2f}")
        line.append("  ")
        line.append(self.collapse_text())
        self.query_one("#health-line", Static).update(line)

        lines = self.log_tail()
        last = Text(no_wrap=True, overflow="ellipsis")
        last.append(" log ", style="dim")
        last.append(clean(lines[-1], single_line=True) if lines else "no log yet")
        self.query_one("#log-line", Static).update(last)

    def render_cells(self) -> None:
        row = self.row
        statuses = dict(row.cells) if row else {}
        order = list(statuses) + [c for c in self.state.cell_order if c not in statuses]
        data = []
        for cell in order:
            result = self.state.cell_results.get(cell, {})
            status = statuses.get(cell) or result.get("status") or ("running" if cell == (row and row.cell) else "pending")
            ep = self.state.cell_epochs.get(cell, {}).get("epoch")
            acc = result.get("test_accuracy")
            data.append((cell, status, "-" if ep is None else str(ep), fmt_accuracy(acc)))
        key = tuple(data)
        if key == self._cells_key:
            return
        self._cells_key = key
        table = self.query_one("#cells", DataTable)
        table.clear()
        for cell, status, ep, acc in data:
            table.add_row(literal(cell), status_text(status), Text(ep, justify="right"), Text(acc, justify="right"),
                          key=cell)
        table.display = bool(data)

    def chart_cell(self) -> str | None:
        """The cell whose fine-tuning curves are drawn: the user's pick in the cells table, else the
        running cell, else the last cell that reported epochs."""
        table = self.query_one("#cells", CellsTable)
        if table.picked and table.row_count:
            try:
                return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:
                pass
        row = self.row
        curves = self.state.cell_curves
        if row is not None and row.cell and (row.status == "running" or row.cell in curves):
            return row.cell
        return next((c for c in reversed(self.state.cell_order) if curves.get(c)), None)

    def show_cell_charts(self) -> tuple[bool, bool]:
        """(loss chart shown, fine-tuning charts shown) for the current width, data and view."""
        has_cells = bool(self.state.cell_curves)
        has_pre = self.state.has_pretrain
        if not has_cells:
            return True, False
        if self.chart_view == "loss":
            return True, False
        if self.chart_view == "cells":
            return False, True
        if has_pre and self.size.width >= BOTH_CHARTS_FROM:
            return True, True
        picked = self.query_one("#cells", CellsTable).picked
        cells = not has_pre or picked or (self.row is not None and self.row.stage == "finetune")
        return not cells, cells

    def render_cell_charts(self) -> None:
        show_loss, show_cells = self.show_cell_charts()
        self.query_one(LossChart).display = show_loss
        self.query_one("#cell-charts").display = show_cells
        cell = self.chart_cell()
        events = self.state.cell_curves.get(cell, []) if cell else []
        if show_cells:
            for chart in self.query(CellChart):
                chart.set_cell(cell, events)
            self.query_one("#cell-loss").border_title = clean(cell or "no cell yet", single_line=True)
        line = Text(no_wrap=True, overflow="ellipsis")
        last = events[-1] if events else None
        widget = self.query_one("#cell-line", Static)
        # A class, not .display: the one-line strips are shown by the -narrow CSS only.
        widget.set_class(last is None, "-empty")
        if last is None:
            return
        line.append(" cell ", style="dim")
        line.append(literal(cell))
        line.append(f"  ep {last.get('epoch', '?')}")
        for side in ("train", "val"):
            loss, acc = last.get(f"{side}_loss"), last.get(f"{side}_accuracy")
            line.append(f"  {side} ", style="dim")
            line.append(f"{fmt_loss(loss)} {fmt_accuracy(acc)}")
        vals = [float(e["val_accuracy"]) for e in events if isinstance(e.get("val_accuracy"), (int, float))]
        line.append(" " + sparkline(vals, 8))
        widget.update(line)

    def on_resize(self) -> None:
        self.render_cell_charts()

    @on(DataTable.RowHighlighted, "#cells")
    def cell_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.render_cell_charts()

    # ---------------------------------------------------------------- actions
    def action_toggle_chart(self) -> None:
        show_loss, show_cells = self.show_cell_charts()
        if show_loss and show_cells:
            self.chart_view = "loss" if self.chart_view != "loss" else "cells"
        else:
            self.chart_view = "cells" if show_loss else "loss"
        if not self.state.cell_curves:
            self.notify("no fine-tuning epochs yet: the loss chart stays", timeout=3)
        self.render_cell_charts()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_log(self) -> None:
        chart = self.query_one(LossChart)
        chart.log_scale = not chart.log_scale

    def action_results(self) -> None:
        from bttui.tui.screens.results import ResultsScreen

        self.app.push_screen(ResultsScreen(self.run_id))

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.render_header()
        if not self.paused:
            self.poll()  # catch up at once, not at the next tick

    def action_stop(self) -> None:
        row = self.row
        if row is None:
            self.notify("the run is not loaded yet", severity="warning")
        elif row.status not in ACTIVE_STATUSES:
            self.notify(f"{clean(row.name, single_line=True)} is {row.status}: nothing to stop", severity="warning")
        else:
            self.ask_then("Stop", [row], "stop")

    def on_run_controlled(self, message: RunControlled) -> None:
        if message.run_id is None:
            self.poll()  # show the new status now
        else:
            self.show_controlled(message)

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("run", self.HELP))

    @on(DataTable.RowSelected, "#cells")
    def cell_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_results()
