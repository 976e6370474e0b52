"""Results of a run: the cells table, the selected cell's confusion matrix and per-class accuracy bars."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Static

from bttui.render.confusion import confusion_table
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.messages import EmbeddingLoaded, RunControlled, SummaryLoaded
from bttui.tui.screens.control import RunControlMixin
from bttui.tui.sources import RunRow
from bttui.tui.widgets.formatting import clean, fmt_accuracy, fmt_ci, fmt_fraction, literal, status_text
from bttui.tui.widgets.embedding_plot import LEGEND_INSIDE_MAX, EmbeddingPlot, legend_text
from bttui.tui.widgets.heatmap import per_class_bars

EMBEDDING_METHODS = ("tsne", "umap")


def _init_label(init: str | None) -> str:
    """Short init name: ``barlow_twins:<run id>`` -> BT (the run is shown in the lineage line)."""
    kind = (init or "").split(":", 1)[0]
    return {"barlow_twins": "BT", "imagenet": "ImageNet", "random": "random", "run": "run",
            "checkpoint": "ckpt"}.get(kind, init or "-")


def lineage_text(result: dict) -> Text:
    """Where the cell's backbone came from: run / checkpoint file / epoch (step), or n/a."""
    lin = result.get("lineage") if isinstance(result.get("lineage"), dict) else {}
    text = Text("lineage ", style="bold")
    src = lin.get("backbone_from") or result.get("init")
    text.append(literal(src or "n/a"))
    ckpt = lin.get("checkpoint")
    if isinstance(ckpt, str) and ckpt:
        text.append("  checkpoint ", style="dim")
        text.append(literal(ckpt.rsplit("/", 1)[-1]))
    if lin.get("epoch") is not None:
        text.append("  epoch ", style="dim")
        text.append(literal(lin.get("epoch")))
        if lin.get("step") is not None:
            text.append(f" (step {clean(lin.get('step'))})", style="dim")
    return text


def embedding_methods(result: dict) -> list[str]:
    """Methods the trainer says it wrote (``embeddings``), else every known one (absent files say n/a)."""
    listed = result.get("embeddings")
    if isinstance(listed, list) and listed:
        return [str(m) for m in listed]
    return list(EMBEDDING_METHODS)


class ResultsScreen(RunControlMixin, Screen[None]):
    """Reads summary.json in a worker; highlighting a cell shows its confusion matrix."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "toggle_normalize", "Counts/%"),
        Binding("e", "cycle_embedding", "t-SNE/UMAP"),
        Binding("p", "paper", "vs paper"),
        Binding("x", "export", "Export"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]
    HELP = [("↑/↓", "pick a cell"), ("m", "confusion matrix: row % or counts"),
            ("e", "embedding scatter: t-SNE or UMAP (when the run wrote it)"),
            ("p", "against the paper: accuracy vs label fraction and\n   per-class accuracy beside the paper's numbers"),
            ("x", "export csv, json and png to ./<run id>-export\n   (like bttui export RUN -f csv,json,png)"),
            ("tab", "focus the right panel; ↑/↓ scroll to the bars and the scatter"), ("esc", "back"),
            ("?", "this help"), ("q", "quit")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.row: RunRow | None = None
        self.results: list[dict] = []
        self.normalize = True
        self.current: dict | None = None
        self.loaded = False
        self.current_index = -1
        self.method = EMBEDDING_METHODS[0]
        self.embedding: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="results-header")
        with Horizontal(id="results-body"):
            table = DataTable(id="result-cells", cursor_type="row")
            table.border_title = "Cells"
            yield table
            with VerticalScroll(id="results-side"):
                yield Static(id="lineage")
                yield Static(id="confusion")
                yield Static(id="per-class")
                yield EmbeddingPlot(id="embedding")
                yield Static(id="embedding-legend")
        yield AdaptiveFooter()

    def on_mount(self) -> None:
        table = self.query_one("#result-cells", DataTable)
        for key, label in (("init", "Init"), ("strategy", "Strategy"), ("fraction", "Frac"), ("acc", "Acc"),
                           ("ci", "95% CI"), ("n", "n train")):
            table.add_column(label, key=key)
        self.query_one("#confusion", Static).update(Text("loading…", style="dim"))
        self.load()
        table.focus()

    @work(thread=True, exclusive=True, group="summary")
    def load(self) -> None:
        source = self.app.source
        self.post_message(SummaryLoaded(self.run_id, source.get_run(self.run_id), source.read_summary(self.run_id)))

    def on_summary_loaded(self, message: SummaryLoaded) -> None:
        self.row = message.run
        results = (message.summary or {}).get("results") or []
        self.results = [r for r in results if isinstance(r, dict)]
        self.loaded = True
        self.render_header()
        table = self.query_one("#result-cells", DataTable)
        table.clear()
        for i, r in enumerate(self.results):
            status = r.get("status") or "completed"
            acc = fmt_accuracy(r.get("test_accuracy")) if status == "completed" else status_text(status)
            table.add_row(literal(_init_label(r.get("init"))), literal(r.get("strategy") or "-"),
                          Text(fmt_fraction(r.get("label_fraction")), justify="right"),
                          Text(acc, justify="right") if isinstance(acc, str) else acc,
                          Text(fmt_ci(r.get("test_accuracy_ci")) or "-", justify="right"),
                          Text(str(r.get("n_train", "-")), justify="right"), key=str(i))
        if self.results:
            table.move_cursor(row=0, animate=False)
            self.show_cell(0)
            # The side panel's width is known only after the first layout; draw the matrix again for it.
            self.call_after_refresh(self.render_confusion)
        else:
            self.current = None
            self.query_one("#confusion", Static).update(
                Text("no results yet: fine-tuning cells write them when they finish", style="dim"))
            self.query_one("#per-class", Static).update("")

    def render_header(self) -> None:
        row = self.row
        header = Text(" ")
        header.append(literal(row.name if row else self.run_id, "bold"))
        if row is not None:
            header.append("  ")
            header.append(status_text(row.status, row.reason))
        first = self.results[0] if self.results else {}
        if first:
            n_classes = len(first.get("class_names") or [])
            header.append("   task: ")
            header.append(literal(first.get("task") or "-"))
            header.append(f" ({n_classes} classes)")
            cm = first.get("confusion_matrix")
            if isinstance(cm, list):
                header.append(f"   test n={sum(sum(r) for r in cm if isinstance(r, list))}")
        self.query_one("#results-header", Static).update(header)

    @on(DataTable.RowHighlighted, "#result-cells")
    def cell_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show_cell(int(event.row_key.value))

    def show_cell(self, index: int) -> None:
        if not 0 <= index < len(self.results):
            return
        self.current = self.results[index]
        self.current_index = index
        self.render_confusion()
        self.query_one("#lineage", Static).update(lineage_text(self.current))
        methods = embedding_methods(self.current)
        if self.method not in methods:
            self.method = methods[0]
        self.query_one(EmbeddingPlot).show(None, f"{self.method}: loading…")
        self.load_embedding(index, self.current, self.method)

    @work(thread=True, exclusive=True, group="embedding")
    def load_embedding(self, index: int, result: dict, method: str) -> None:
        """numpy reads the npz off the UI thread; the answer names its cell so a stale one is dropped."""
        reader = getattr(self.app.source, "read_embedding", None)
        data = reader(self.run_id, result, method) if reader is not None else None
        self.post_message(EmbeddingLoaded(self.run_id, index, method, data))

    def on_embedding_loaded(self, message: EmbeddingLoaded) -> None:
        if self.current is None or self.current_index != message.index or message.method != self.method:
            return
        self.embedding = message.embedding
        note = "" if message.embedding else f"{message.method}: n/a (not written for this cell)"
        self.query_one(EmbeddingPlot).show(message.embedding, note)
        names = (message.embedding or {}).get("class_names") or []
        legend = self.query_one("#embedding-legend", Static)
        legend.display = len(names) > LEGEND_INSIDE_MAX
        legend.update(legend_text(names) if legend.display else "")

    def action_cycle_embedding(self) -> None:
        if self.current is None:
            return
        methods = embedding_methods(self.current)
        i = methods.index(self.method) if self.method in methods else -1
        nxt = methods[(i + 1) % len(methods)]
        if nxt == self.method:
            self.notify(f"only {self.method} was written for this cell (finetune.embeddings)", timeout=3)
            return
        self.method = nxt
        self.query_one(EmbeddingPlot).show(None, f"{self.method}: loading…")
        self.load_embedding(self.current_index, self.current, self.method)

    def render_confusion(self) -> None:
        r = self.current
        conf = self.query_one("#confusion", Static)
        bars = self.query_one("#per-class", Static)
        if r is None:
            return
        title = f"{_init_label(r.get('init'))} / {r.get('strategy') or '-'} / {fmt_fraction(r.get('label_fraction'))}"
        cm = r.get("confusion_matrix")
        names = r.get("class_names") or []
        if isinstance(cm, list) and cm:
            width = max(30, self.query_one("#results-side").size.width - 2)
            try:
                conf.update(confusion_table(cm, names, normalize=self.normalize, title=title, width=width))
            except ValueError as exc:
                conf.update(Text(f"confusion matrix unreadable: {clean(exc)}", style="red"))
        else:
            conf.update(Text(f"{clean(title)}: no confusion matrix", style="dim"))
        per_class = r.get("per_class_accuracy")
        if not per_class and isinstance(cm, list) and cm:
            per_class = [row[i] / sum(row) if sum(row) else 0.0 for i, row in enumerate(cm)]
        bars_text = Text("Per-class accuracy\n", style="bold")
        bars_text.append(per_class_bars(names or [str(i) for i in range(len(per_class or []))], per_class or []))
        bars.update(bars_text)

    def on_resize(self) -> None:
        self.call_after_refresh(self.render_confusion)

    def action_toggle_normalize(self) -> None:
        self.normalize = not self.normalize
        self.render_confusion()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_paper(self) -> None:
        from bttui.tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen([self.run_id]))

    def action_export(self) -> None:
        if not self.results:
            self.notify("no results to export yet", severity="warning")
            return
        self.notify("exporting…", timeout=2)
        self.run_control("export", [self.run_id])

    def on_run_controlled(self, message: RunControlled) -> None:
        if message.run_id is not None:
            self.show_controlled(message)

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("results", self.HELP))
