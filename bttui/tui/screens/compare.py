"""Compare runs: overlaid loss curves, accuracy vs label fraction (with the paper's curves), config diff."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from bttui.tui.widgets.formatting import clean, literal
from bttui.tui.widgets.loss_chart import LossChart

INIT_SHORT = {"barlow_twins": "BT", "imagenet": "IN", "random": "rand"}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def config_diff(configs: list[dict | None]) -> list[tuple[str, list[Any]]]:
    """(dotted key, value per config) for every key whose values differ (a missing key counts as different)."""
    flats = [flatten(c or {}) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    missing = object()
    rows = []
    for key in keys:
        values = [f.get(key, missing) for f in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, [None if v is missing else v for v in values]))
    return rows


def accuracy_curves(results: list[dict]) -> dict[tuple[str, str, str], dict[float, float]]:
    """(dataset, init, strategy) -> {label fraction: mean test accuracy in %} over seeds."""
    try:
        from bttui.results import aggregate_results
    except ImportError:
        aggregate_results = None
    curves: dict[tuple[str, str, str], dict[float, float]] = {}
    if aggregate_results is not None:
        for row in aggregate_results(results):
            if row.get("mean") is not None and row.get("label_fraction") is not None:
                curves.setdefault((row["dataset"], row["init"], row["strategy"]), {})[
                    float(row["label_fraction"])] = 100.0 * float(row["mean"])
        return curves
    acc: dict[tuple[str, str, str, float], list[float]] = {}
    for r in results:
        if isinstance(r.get("test_accuracy"), (int, float)) and r.get("label_fraction") is not None:
            k = (str(r.get("dataset")), str(r.get("init")), str(r.get("strategy")), float(r["label_fraction"]))
            acc.setdefault(k, []).append(float(r["test_accuracy"]))
    for (ds, init, strat, frac), vals in acc.items():
        curves.setdefault((ds, init, strat), {})[frac] = 100.0 * sum(vals) / len(vals)
    return curves


@dataclass
class CompareData:
    names: dict[str, str]
    losses: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[tuple[str, str, str], dict[float, float]]] = field(default_factory=dict)
    paper: dict[tuple[str, str, str], dict[float, float]] = field(default_factory=dict)
    diff: list[tuple[str, list[Any]]] = field(default_factory=list)


@dataclass
class CompareLoaded(Message):
    """Events, summaries and configs of the compared runs were read."""

    data: CompareData


def load_compare(source: Any, run_ids: list[str], cancelled: Any = lambda: False) -> CompareData:
    names = {}
    data = CompareData(names)
    configs = []
    datasets = set()
    for run_id in run_ids:
        if cancelled():
            break
        row = source.get_run(run_id)
        names[run_id] = row.name if row else run_id
        xs: list[float] = []
        ys: list[float] = []
        offset = 0
        while not cancelled():
            chunk = source.read_events(run_id, offset)
            for ev in chunk.events:
                if ev.get("type") == "step" and isinstance(ev.get("loss"), (int, float)):
                    xs.append(float(ev.get("step") or len(xs)))
                    ys.append(float(ev["loss"]))
            if chunk.offset == offset:
                break
            offset = chunk.offset
        if xs:
            data.losses[run_id] = (xs, ys)
        results = [r for r in ((source.read_summary(run_id) or {}).get("results") or []) if isinstance(r, dict)]
        data.curves[run_id] = accuracy_curves(results)
        datasets.update(k[0] for k in data.curves[run_id])
        configs.append(source.read_config(run_id))
    data.diff = config_diff(configs)
    try:
        from bttui.paper import PAPER
    except ImportError:
        PAPER = {}
    for ds in sorted(datasets):
        table = PAPER.get(ds)
        if table is not None:
            for (init, strategy), curve in table.curves.items():
                data.paper[(ds, init, strategy)] = dict(curve)
    return data


class AccuracyChart(PlotextPlot):
    """Test accuracy (%) vs label fraction (log x): one line per run and (init, strategy); paper dashed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: CompareData | None = None

    def set_data(self, data: CompareData) -> None:
        self.data = data
        self.replot()

    def on_mount(self) -> None:
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("Test accuracy vs label fraction")
        d = self.data
        drawn = False
        if d is not None:
            for run_id, curves in d.curves.items():
                for (ds, init, strategy), curve in sorted(curves.items()):
                    fr = sorted(curve)
                    label = f"{clean(d.names.get(run_id, run_id), single_line=True)[:14]} {INIT_SHORT.get(init, init)}/{strategy}"
                    plt.plot(fr, [curve[f] for f in fr], label=label, marker="braille")
                    drawn = True
            if drawn:
                # Only the paper's curves for combinations the runs have, so the chart stays readable.
                shown = {k for curves in d.curves.values() for k in curves}
                for (ds, init, strategy), curve in sorted(d.paper.items()):
                    if (ds, init, strategy) not in shown:
                        continue
                    fr = sorted(curve)
                    plt.plot(fr, [curve[f] for f in fr], label=f"paper {INIT_SHORT.get(init, init)}/{strategy}",
                             marker="dot", color="gray")
        if drawn:
            plt.xscale("log")
            plt.xlabel("label fraction")
        else:
            plt.title("Accuracy: n/a (no fine-tuning results)")
        self.refresh()


class CompareScreen(Screen[None]):
    """Reads the runs in a worker; esc goes back."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("l", "toggle_log", "Log scale"),
                Binding("question_mark", "help", "Help"), Binding("q", "app.quit", "Quit")]
    HELP = [("esc", "back to the runs"), ("l", "log scale of the loss chart"), ("↑/↓", "scroll the config diff"),
            ("?", "this help"), ("q", "quit")]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)
        self.data: CompareData | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="compare-header")
        with Vertical(id="compare-body"):
            with Horizontal(id="compare-charts"):
                yield LossChart(id="compare-loss")
                yield AccuracyChart(id="compare-acc")
            diff = DataTable(id="config-diff", cursor_type="row")
            diff.border_title = "Config diff"
            yield diff
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare-header", Static).update(Text(f" Compare {len(self.run_ids)} runs  loading…"))
        self.load()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        worker = get_current_worker()
        data = load_compare(self.app.source, self.run_ids, lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.post_message(CompareLoaded(data))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.data = d = message.data
        header = Text(f" Compare {len(self.run_ids)} runs: ", style="bold")
        for i, run_id in enumerate(self.run_ids):
            if i:
                header.append(", ")
            header.append(literal(d.names.get(run_id, run_id)))
        self.query_one("#compare-header", Static).update(header)
        series = {clean(d.names.get(r, r), single_line=True): d.losses[r] for r in self.run_ids if r in d.losses}
        self.query_one("#compare-loss", LossChart).set_series(series, "step")
        self.query_one("#compare-acc", AccuracyChart).set_data(d)
        table = self.query_one("#config-diff", DataTable)
        table.clear(columns=True)
        table.add_column("key", key="key")
        for run_id in self.run_ids:
            table.add_column(clean(d.names.get(run_id, run_id), single_line=True)[:24], key=run_id)
        for key, values in d.diff:
            table.add_row(Text(key), *[literal("-" if v is None else v) for v in values], key=key)
        table.border_subtitle = f"{len(d.diff)} keys differ" if d.diff else "configs identical"
        table.focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_log(self) -> None:
        chart = self.query_one("#compare-loss", LossChart)
        chart.log_scale = not chart.log_scale

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("compare", self.HELP))
