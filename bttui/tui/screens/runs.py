"""The home screen: every run in the store, live, filterable and sortable."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static
from textual.worker import get_current_worker

from bttui.gpus import gpu_summary
from bttui.tui.messages import RunControlled, RunsRefreshed
from bttui.tui.screens.control import RunControlMixin
from bttui.tui.sources import RunRow
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.widgets.formatting import fmt_accuracy, fmt_duration, literal, short_time, status_text

SORTS = ("newest", "name", "status", "best", "progress", "oldest")
# Most urgent first when sorting by status.
STATUS_ORDER = {"running": 0, "crashed": 1, "failed": 2, "queued": 3, "stopped": 4, "completed": 5}
# Fixed widths: columns never jump while data streams in; the name takes what is left.
# "sel" marks multi-selected rows (space).
COLUMNS = (("sel", "", 1), ("status", "Status", 11), ("name", "Name", 0), ("stage", "Stage", 8),
           ("datasets", "Datasets", 16), ("progress", "Progress", 10), ("best", "Best", 6), ("gpu", "GPU", 5),
           ("started", "Started", 8),
           ("duration", "Time", 7))
# Dropped below this many columns, so the name keeps room at 80x24.
OPTIONAL_BELOW = {"started": 100, "gpu": 100, "datasets": 118}
NAME_MIN, NAME_MAX = 12, 48
# Above this many runs the filter waits for a pause in typing (each refilter redraws every matching row).
DEBOUNCE_ABOVE = 300
FILTER_DEBOUNCE_S = 0.15


def progress_text(row: RunRow) -> str:
    # A run that has ended (stage cleared) reports its cells, not the last cell's epoch counter.
    if row.cells_total and (row.stage == "finetune" or row.stage is None):
        return f"{row.cells_done or 0}/{row.cells_total} cells"
    if row.epoch is not None and row.epochs:
        return f"{row.epoch}/{row.epochs} ep"
    return "-"


def progress_fraction(row: RunRow) -> float:
    """0-1 done (cells when the run has them, else epochs); -1 when unknown, so those sort last."""
    if row.status == "completed":
        return 1.0
    if row.cells_total and (row.stage == "finetune" or row.stage is None):
        return (row.cells_done or 0) / row.cells_total
    if row.epoch is not None and row.epochs:
        return row.epoch / row.epochs
    return -1.0


def datasets_text(row: RunRow) -> str:
    return ",".join(row.datasets) if row.datasets else "-"


def sort_rows(rows: list[RunRow], mode: str) -> list[RunRow]:
    if mode == "oldest":
        return sorted(rows, key=lambda r: (r.created or 0.0, r.id))
    if mode == "progress":
        return sorted(rows, key=lambda r: (-progress_fraction(r), -(r.created or 0.0), r.id))
    if mode == "name":
        return sorted(rows, key=lambda r: (r.name.lower(), r.id))
    if mode == "status":
        return sorted(rows, key=lambda r: (STATUS_ORDER.get(r.status, 9), -(r.created or 0.0)))
    if mode == "best":
        return sorted(rows, key=lambda r: (r.best_accuracy is None, -(r.best_accuracy or 0.0), r.id))
    return sorted(rows, key=lambda r: (r.created or 0.0, r.id), reverse=True)


class RunsScreen(RunControlMixin, Screen[None]):
    """DataTable of runs, refreshed by a thread worker every ``app.refresh_interval`` seconds."""

    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("enter", "open", "Open"),
        Binding("space", "toggle_select", "Select", show=False),
        Binding("n", "new", "New"),
        Binding("c", "compare", "Compare"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Del"),
        Binding("g", "gpus", "GPUs"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("q", "app.quit", "Quit"),
    ]
    HELP = [("↑/↓ pgup/pgdn", "move"), ("enter", "open the run (live dashboard)"), ("/", "filter: words match name, id or status"),
            ("  status:run,queued", "only these statuses (also s:)"), ("  dataset:crc", "runs using a dataset (ds:)"),
            ("  sweep:sw-…", "members of a sweep"), ("  stage:finetune", "current stage"),
            ("  gpu:0", "runs on GPU 0 (gpu:cpu for CPU runs)"),
            ("esc", "clear the filter, then the selection"), ("s", "cycle sort: " + ", ".join(SORTS)),
            ("space", "select / unselect (x r d c act on the selection)"),
            ("n", "new experiment (from the one selected run's config, if any)"),
            ("c", "compare the selected runs"), ("x", "stop (asks first)"), ("r", "resume a stopped/crashed run"),
            ("d", "delete (asks first)"), ("g", "GPUs and the queue"),
            ("ctrl+p", "command palette: any key by name, open run <name>"),
            ("?", "this help"), ("q", "quit (background runs keep going)")]

    def __init__(self) -> None:
        super().__init__()
        self.all_rows: list[RunRow] = []
        self.shown: list[RunRow] = []
        self.filter_text = ""
        self.sort_mode = SORTS[0]
        self.gpu_line = "GPUs: …"
        self.loaded = False
        self.selected: set[str] = set()
        self.columns: tuple = COLUMNS
        # What each shown row was drawn from; a refresh redraws only rows whose key changed.
        self._drawn: dict[str, tuple] = {}
        self._cell_cache: dict[str, tuple[tuple, list[Text]]] = {}
        self._filter_timer = None

    def compose(self) -> ComposeResult:
        yield Static(id="home-header")
        table: DataTable = DataTable(id="runs", cursor_type="row", zebra_stripes=False)
        table.border_title = "Runs"
        yield table
        yield Input(placeholder="filter: words or status: dataset: sweep: stage: gpu: (enter keeps, esc clears)", id="filter")
        yield AdaptiveFooter()

    def on_mount(self) -> None:
        self.name_width = 0
        self.setup_columns()
        table = self.query_one("#runs", DataTable)
        self.query_one("#filter", Input).display = False
        self.update_header()
        self.refresh_runs()
        self.set_interval(self.app.refresh_interval, self.refresh_if_shown)
        table.focus()

    def refresh_if_shown(self) -> None:
        # Hidden under a dashboard, re-reading the store is wasted CPU; on_screen_resume catches up.
        if self.is_current:
            self.refresh_runs()

    def on_screen_resume(self) -> None:
        if self.loaded:
            self.refresh_runs()

    # ---------------------------------------------------------------- data
    @work(thread=True, exclusive=True, group="refresh")
    def refresh_runs(self) -> None:
        """Read the index and sample GPUs off the UI thread."""
        worker = get_current_worker()
        rows = self.app.source.list_runs()
        if worker.is_cancelled:
            return
        gpus = self.app.gpus.sample()
        if not worker.is_cancelled:
            self.post_message(RunsRefreshed(rows, gpus, bool(self.app.gpus.available)))

    def on_runs_refreshed(self, message: RunsRefreshed) -> None:
        self.all_rows = message.rows
        self.gpu_line = gpu_summary(message.gpus, message.gpus_available)
        self.loaded = True
        self.apply_view()

    def apply_view(self) -> None:
        rows = [r for r in self.all_rows if r.matches(self.filter_text)]
        self.shown = sort_rows(rows, self.sort_mode)
        self.fill_table()
        self.update_empty_hint()
        self.update_header()

    def update_empty_hint(self) -> None:
        """An empty table says why: nothing in the store yet (and how to start), or nothing matches."""
        table = self.query_one("#runs", DataTable)
        if self.shown or not self.loaded:
            table.border_subtitle = ""
        elif self.all_rows:
            table.border_subtitle = f"no run matches {self.filter_text.strip()!r} (esc clears the filter)"
        else:
            table.border_subtitle = "no runs yet: press n for a new experiment, or bttui run experiments/quickstart.toml"

    def cells_for(self, row: RunRow) -> list[Text]:
        clock = self.app.clock
        now = clock.now()
        start = row.started or row.created
        end = row.ended if row.ended else (now if row.status == "running" else row.heartbeat)
        duration = fmt_duration(end - start) if (start and end) else "-"
        values = {
            "sel": Text("✔" if row.id in self.selected else " ", style="bold"),
            "status": status_text(row.status), "name": literal(row.name), "stage": literal(row.stage or "-"),
            "datasets": literal(datasets_text(row)),
            "progress": Text(progress_text(row), justify="right"),
            "best": Text(fmt_accuracy(row.best_accuracy), justify="right"),
            "gpu": literal(row.gpu_text),
            "started": Text(short_time(start, clock, now)), "duration": Text(duration, justify="right"),
        }
        return [values[key] for key, _, _ in self.columns]

    def _table_width(self) -> int:
        table = self.query_one("#runs", DataTable)
        return table.size.width or (self.size.width or 80) - 2

    def wanted_columns(self) -> tuple:
        width = self._table_width() + 2
        return tuple(c for c in COLUMNS if width >= OPTIONAL_BELOW.get(c[0], 0))

    def wanted_name_width(self, columns: tuple | None = None) -> int:
        columns = columns or self.columns
        # 2 cells of padding per column and 2 spare for a vertical scrollbar (size excludes the border).
        fixed = sum(w for _, _, w in columns) + 2 * len(columns) + 2
        avail = self._table_width() - fixed
        return max(NAME_MIN, min(NAME_MAX, avail))

    def setup_columns(self) -> None:
        table = self.query_one("#runs", DataTable)
        self.columns = self.wanted_columns()
        self.name_width = self.wanted_name_width(self.columns)
        table.clear(columns=True)
        for key, label, width in self.columns:
            table.add_column(label, key=key, width=width or self.name_width)

    def on_resize(self) -> None:
        columns = self.wanted_columns()
        if columns != self.columns or self.wanted_name_width(columns) != self.name_width:
            self._cell_cache.clear()
            self.setup_columns()
            self.fill_table(force=True)

    def draw_key(self, row: RunRow, now: float) -> tuple:
        """Everything a row's cells depend on: the row, its mark, and the clock for running runs."""
        ticking = row.status == "running" and not row.ended
        return (row, row.id in self.selected, int(now) if ticking else None,
                self.app.clock.localtime(now).tm_yday)

    def fill_table(self, force: bool = False) -> None:
        table = self.query_one("#runs", DataTable)
        keys = [r.id for r in self.shown]
        now = self.app.clock.now()
        if not force and len(keys) == table.row_count and keys == list(self._drawn):
            # Same rows in the same order: redraw only rows whose data changed, so nothing jumps
            # and a store of thousands of idle runs costs one comparison per run.
            for r in self.shown:
                key = self.draw_key(r, now)
                if self._drawn.get(r.id) == key:
                    continue
                self._drawn[r.id] = key
                for (col, _, _), value in zip(self.columns, self.cells_for(r)):
                    if table.get_cell(r.id, col) != value:
                        table.update_cell(r.id, col, value)
            return
        selected = self.selected_run_id()
        table.clear()
        self._drawn = {}
        cache = self._cell_cache
        for r in self.shown:
            key = self.draw_key(r, now)
            hit = cache.get(r.id)
            # Refiltering or resorting reuses the cells drawn before; only changed runs are re-rendered.
            cells = hit[1] if hit is not None and hit[0] == key else self.cells_for(r)
            cache[r.id] = (key, cells)
            table.add_row(*cells, key=r.id)
            self._drawn[r.id] = key
        if len(cache) > len(self.all_rows) + 100:
            live = {r.id for r in self.all_rows}
            self._cell_cache = {k: v for k, v in cache.items() if k in live}
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)

    def update_header(self) -> None:
        src = self.app.source
        n = len(self.all_rows)
        count = f"{len(self.shown)}/{n} runs" if self.filter_text else f"{n} runs"
        # The store path goes last: a long path is cut, the counts and GPUs stay visible at 80 columns.
        line = Text.assemble((" bttui ", "bold"), " ", count, "  ", self.gpu_line, "  sort: ", self.sort_mode)
        if self.filter_text:
            line.append("  filter: ")
            line.append(literal(self.filter_text, "bold"))
        if self.selected:
            line.append(f"  {len(self.selected)} selected", style="bold")
        line.append("  store: ")
        line.append(literal(src.label))
        self.query_one("#home-header", Static).update(line)

    def selected_run_id(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None

    # ---------------------------------------------------------------- actions
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
        if len(self.all_rows) > DEBOUNCE_ABOVE:
            # Thousands of runs: refilter once typing pauses, not on every key.
            self._filter_timer = self.set_timer(FILTER_DEBOUNCE_S, self.apply_view)
        else:
            self.apply_view()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, _event: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
            self.apply_view()
        if not box.value:
            box.display = False
        self.query_one("#runs", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if not self.filter_text and not box.display and self.selected:
            self.selected.clear()
            self.fill_table(force=True)
            self.update_header()
            return
        box.value = ""
        box.display = False
        self.filter_text = ""
        self.apply_view()
        self.query_one("#runs", DataTable).focus()

    def action_cycle_sort(self) -> None:
        self.sort_mode = SORTS[(SORTS.index(self.sort_mode) + 1) % len(SORTS)]
        self.apply_view()

    def action_open(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            from bttui.tui.screens.detail import RunDetailScreen

            self.app.push_screen(RunDetailScreen(run_id))

    @on(DataTable.RowSelected, "#runs")
    def row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("runs", self.HELP))

    # ---------------------------------------------------------------- selection and run control
    def target_rows(self) -> list[RunRow]:
        """The selected runs (in table order), else the one under the cursor."""
        if self.selected:
            return [r for r in self.all_rows if r.id in self.selected]
        run_id = self.selected_run_id()
        return [r for r in self.all_rows if r.id == run_id]

    def action_toggle_select(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            return
        self.selected.symmetric_difference_update({run_id})
        table = self.query_one("#runs", DataTable)
        row = next((r for r in self.all_rows if r.id == run_id), None)
        if row is not None:
            table.update_cell(run_id, "sel", self.cells_for(row)[0])
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)
        self.update_header()

    def action_stop(self) -> None:
        self.ask_then("Stop", self.target_rows(), "stop")

    def action_delete(self) -> None:
        self.ask_then("Delete", self.target_rows(), "delete")

    def action_resume(self) -> None:
        rows = self.target_rows()
        if not rows:
            self.notify("no run under the cursor", severity="warning")
            return
        self.run_control("resume", [r.id for r in rows])

    def on_run_controlled(self, message: RunControlled) -> None:
        if message.run_id is None:
            # The batch is done: the selection has been acted on, show the new state.
            self.selected.clear()
            self.refresh_runs()
            return
        self.show_controlled(message)

    # ---------------------------------------------------------------- other screens
    def action_gpus(self) -> None:
        from bttui.tui.screens.gpus import GpusScreen

        self.app.push_screen(GpusScreen())

    def action_compare(self) -> None:
        rows = [r for r in self.all_rows if r.id in self.selected]
        if len(rows) < 2:
            self.notify("select two or more runs with space, then press c", severity="warning")
            return
        from bttui.tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen([r.id for r in rows]))

    def action_new(self) -> None:
        from bttui.tui.screens.new import NewExperimentScreen

        # One run marked with space: start from its config; the run under the cursor is offered in the form.
        marked = [r.id for r in self.all_rows if r.id in self.selected]
        from_run = marked[0] if len(marked) == 1 else None
        self.app.push_screen(NewExperimentScreen(from_run=from_run, offer_run=from_run or self.selected_run_id()))
