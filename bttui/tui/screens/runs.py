"""The home screen: every run in the store, live, filterable and sortable."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from bttui.gpus import gpu_summary
from bttui.tui.messages import RunsRefreshed
from bttui.tui.sources import RunRow
from bttui.tui.widgets.formatting import fmt_accuracy, fmt_duration, literal, short_time, status_text

SORTS = ("newest", "name", "status", "best")
# Most urgent first when sorting by status.
STATUS_ORDER = {"running": 0, "crashed": 1, "failed": 2, "queued": 3, "stopped": 4, "completed": 5}
# Fixed widths: columns never jump while data streams in; the name takes what is left.
COLUMNS = (("status", "Status", 11), ("name", "Name", 0), ("stage", "Stage", 8), ("progress", "Progress", 10),
           ("best", "Best", 6), ("started", "Started", 7), ("duration", "Time", 6))
NAME_MIN, NAME_MAX = 12, 48


def progress_text(row: RunRow) -> str:
    if row.stage == "finetune" and row.cells_total:
        return f"{row.cells_done or 0}/{row.cells_total} cells"
    if row.epoch is not None and row.epochs:
        return f"{row.epoch}/{row.epochs} ep"
    if row.cells_total and row.status == "completed":
        return f"{row.cells_done or 0}/{row.cells_total} cells"
    return "-"


def sort_rows(rows: list[RunRow], mode: str) -> list[RunRow]:
    if mode == "name":
        return sorted(rows, key=lambda r: (r.name.lower(), r.id))
    if mode == "status":
        return sorted(rows, key=lambda r: (STATUS_ORDER.get(r.status, 9), -(r.created or 0.0)))
    if mode == "best":
        return sorted(rows, key=lambda r: (r.best_accuracy is None, -(r.best_accuracy or 0.0), r.id))
    return sorted(rows, key=lambda r: (r.created or 0.0, r.id), reverse=True)


class RunsScreen(Screen[None]):
    """DataTable of runs, refreshed by a thread worker every ``app.refresh_interval`` seconds."""

    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("enter", "open", "Open"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("q", "app.quit", "Quit"),
    ]
    HELP = [("↑/↓ pgup/pgdn", "move"), ("enter", "open the run (live dashboard)"), ("/", "filter by name, id, status"),
            ("esc", "clear the filter"), ("s", "cycle sort: newest, name, status, best accuracy"),
            ("?", "this help"), ("q", "quit (background runs keep going)")]

    def __init__(self) -> None:
        super().__init__()
        self.all_rows: list[RunRow] = []
        self.shown: list[RunRow] = []
        self.filter_text = ""
        self.sort_mode = SORTS[0]
        self.gpu_line = "GPUs: …"
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(id="home-header")
        table: DataTable = DataTable(id="runs", cursor_type="row", zebra_stripes=False)
        table.border_title = "Runs"
        yield table
        yield Input(placeholder="filter: name, id or status (enter keeps, esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.name_width = 0
        self.setup_columns()
        table = self.query_one("#runs", DataTable)
        self.query_one("#filter", Input).display = False
        self.update_header()
        self.refresh_runs()
        self.set_interval(self.app.refresh_interval, self.refresh_runs)
        table.focus()

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
        self.update_header()

    def cells_for(self, row: RunRow) -> list[Text]:
        clock = self.app.clock
        now = clock.now()
        start = row.started or row.created
        end = row.ended if row.ended else (now if row.status == "running" else row.heartbeat)
        duration = fmt_duration(end - start) if (start and end) else "-"
        stage = row.stage or "-"
        best = fmt_accuracy(row.best_accuracy)
        return [status_text(row.status), literal(row.name), literal(stage), Text(progress_text(row), justify="right"),
                Text(best, justify="right"), Text(short_time(start, clock, now)), Text(duration, justify="right")]

    def wanted_name_width(self) -> int:
        table = self.query_one("#runs", DataTable)
        # 2 cells of padding per column and 2 spare for a vertical scrollbar (size excludes the border).
        fixed = sum(w for _, _, w in COLUMNS) + 2 * len(COLUMNS) + 2
        avail = (table.size.width or (self.size.width or 80) - 2) - fixed
        return max(NAME_MIN, min(NAME_MAX, avail))

    def setup_columns(self) -> None:
        table = self.query_one("#runs", DataTable)
        self.name_width = self.wanted_name_width()
        table.clear(columns=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width or self.name_width)

    def on_resize(self) -> None:
        if self.wanted_name_width() != self.name_width:
            self.setup_columns()
            self.fill_table(force=True)

    def fill_table(self, force: bool = False) -> None:
        table = self.query_one("#runs", DataTable)
        keys = [r.id for r in self.shown]
        current = [rk.value for rk in table.rows]
        if keys == current and not force:
            # Same rows in the same order: update changed cells only, so nothing jumps.
            for r in self.shown:
                for (col, _, _), value in zip(COLUMNS, self.cells_for(r)):
                    if table.get_cell(r.id, col) != value:
                        table.update_cell(r.id, col, value)
            return
        selected = self.selected_run_id()
        table.clear()
        for r in self.shown:
            table.add_row(*self.cells_for(r), key=r.id)
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)
        if not self.shown:
            table.border_subtitle = "no runs match" if self.all_rows else "no runs yet: bttui run <config.toml>"
        else:
            table.border_subtitle = ""

    def update_header(self) -> None:
        src = self.app.source
        n = len(self.all_rows)
        count = f"{len(self.shown)}/{n} runs" if self.filter_text else f"{n} runs"
        line = Text.assemble((" bttui ", "bold"), " store: ", literal(src.label), "  ", self.gpu_line,
                             "   ", count, "  sort: ", self.sort_mode)
        if self.filter_text:
            line.append("  filter: ")
            line.append(literal(self.filter_text, "bold"))
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
        self.apply_view()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, _event: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.display = False
        self.query_one("#runs", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
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
