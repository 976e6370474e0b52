"""Compare runs: overlaid loss curves, accuracy vs label fraction (with the paper's curves), a per-class
difference table and the config diff."""

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
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker
from bttui.tui.widgets.footer import AdaptiveFooter
from bttui.tui.widgets.formatting import clean, literal
from bttui.tui.widgets.loss_chart import LossChart
from bttui.tui.widgets.plot import Chart

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
    from bttui.results import aggregate_results

    curves: dict[tuple[str, str, str], dict[float, float]] = {}
    for row in aggregate_results(results):
        if row.get("mean") is not None and row.get("label_fraction") is not None:
            curves.setdefault((row["dataset"], row["init"], row["strategy"]), {})[
                float(row["label_fraction"])] = 100.0 * float(row["mean"])
    return curves


# (dataset, init, strategy, label fraction): one aggregated group of fine-tuning cells.
Group = tuple[str, str, str, float]


def per_class_accuracies(results: list[dict]) -> dict[Group, tuple[list[str], list[float | None]]]:
    """Group -> (class names, per-class test accuracy in % averaged over seeds) for groups that report them."""
    from bttui.results import aggregate_results

    out: dict[Group, tuple[list[str], list[float | None]]] = {}
    for row in aggregate_results(results):
        names, accs = row.get("class_names"), row.get("per_class_accuracy")
        if names and accs and row.get("label_fraction") is not None:
            key = (str(row["dataset"]), str(row["init"]), str(row["strategy"]), float(row["label_fraction"]))
            out[key] = (list(names), [None if a is None else 100.0 * float(a) for a in accs])
    return out


def per_class_groups(per_class: dict[str, dict[Group, Any]]) -> list[Group]:
    """Groups with per-class accuracies: those most runs share first, then by dataset, init, strategy,
    largest label fraction first."""
    counts: dict[Group, int] = {}
    for groups in per_class.values():
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
    return sorted(counts, key=lambda g: (-counts[g], g[0], g[1], g[2], -g[3]))


@dataclass
class PerClassRow:
    name: str
    values: list[float | None]  # % per compared run (None: the run has no such class or group)
    delta: float | None  # last run minus first (points)
    paper: float | None  # the paper's % for this class, init, strategy and fraction


def per_class_rows(per_class: dict[str, dict[Group, Any]], run_ids: list[str], group: Group) -> list[PerClassRow]:
    """One row per class (in the first run's class order, others' extra classes after) for `group`."""
    from bttui.paper import canonical_class, paper_per_class

    names: list[str] = []
    by_run: list[dict[str, float | None]] = []
    for run_id in run_ids:
        cls, accs = per_class.get(run_id, {}).get(group, ([], []))
        by_run.append(dict(zip(cls, accs)))
        names += [c for c in cls if c not in names]
    paper = paper_per_class(*group) or {}
    rows = []
    for name in names:
        values = [accs.get(name) for accs in by_run]
        first, last = values[0], values[-1]
        delta = last - first if len(values) > 1 and first is not None and last is not None else None
        rows.append(PerClassRow(name, values, delta, paper.get(canonical_class(name))))
    return rows


def group_label(group: Group) -> str:
    ds, init, strategy, fraction = group
    return f"{ds} {INIT_SHORT.get(init.split(':')[0], init.split(':')[0])}/{strategy} {fraction * 100:g}% labels"


@dataclass
class CompareData:
    names: dict[str, str]
    losses: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    curves: dict[str, dict[tuple[str, str, str], dict[float, float]]] = field(default_factory=dict)
    paper: dict[tuple[str, str, str], dict[float, float]] = field(default_factory=dict)
    diff: list[tuple[str, list[Any]]] = field(default_factory=list)
    per_class: dict[str, dict[Group, tuple[list[str], list[float | None]]]] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)


@dataclass
class CompareLoaded(Message):
    """Events, summaries and configs of the compared runs were read."""

    data: CompareData


def distinct_names(names: dict[str, str]) -> dict[str, str]:
    """Run names, each one that is shared by several runs suffixed with its run id's last 4 characters."""
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {run_id: f"{name}·{run_id[-4:]}" if counts[name] > 1 else name for run_id, name in names.items()}


def fit(name: str, width: int) -> str:
    """``name`` in ``width`` characters, one line; a ``·xxxx`` run-id suffix survives the cut."""
    name = clean(name, single_line=True)
    if len(name) <= width:
        return name
    base, dot, suffix = name.rpartition("·")
    if dot and len(suffix) <= 4 and width > len(suffix) + 3:
        return base[:width - len(suffix) - 2] + "…·" + suffix
    return name[:max(1, width - 1)] + "…"


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
        data.per_class[run_id] = per_class_accuracies(results)
        datasets.update(k[0] for k in data.curves[run_id])
        configs.append(source.read_config(run_id))
    data.diff = config_diff(configs)
    data.groups = per_class_groups(data.per_class)
    data.names.update(distinct_names(data.names))
    from bttui.paper import PAPER

    for ds in sorted(datasets):
        table = PAPER.get(ds)
        if table is not None:
            for (init, strategy), curve in table.curves.items():
                data.paper[(ds, init, strategy)] = dict(curve)
    return data


class AccuracyChart(Chart):
    """Test accuracy (%) vs label fraction (log x): one line per run and (init, strategy); paper dashed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: CompareData | None = None

    def set_data(self, data: CompareData) -> None:
        self.data = data
        self.replot()

    def draw(self, plt: Any) -> str | None:
        plt.title("Test accuracy vs label fraction")
        d = self.data
        drawn = False
        if d is not None:
            for run_id, curves in d.curves.items():
                for (ds, init, strategy), curve in sorted(curves.items()):
                    fr = sorted(curve)
                    label = f"{fit(d.names.get(run_id, run_id), 16)} {INIT_SHORT.get(init, init)}/{strategy}"
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
        if not drawn:
            return "Accuracy: n/a (no fine-tuning results)"
        plt.xscale("log")
        plt.xlabel("label fraction")
        return None


class CompareScreen(Screen[None]):
    """Reads the runs in a worker; esc goes back."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("l", "toggle_log", "Log scale"),
                Binding("p", "next_group", "Per-class group"),
                Binding("question_mark", "help", "Help"), Binding("q", "app.quit", "Quit")]
    HELP = [("esc", "back to the runs"), ("l", "log scale of the loss chart"),
            ("p", "per-class table: next (dataset, init, strategy, fraction)"),
            ("Δ", "last compared run minus the first, in points"),
            ("tab", "move between the per-class table and the config diff"), ("↑/↓", "scroll a table"),
            ("?", "this help"), ("q", "quit")]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)
        self.data: CompareData | None = None
        self.group_index = 0

    def compose(self) -> ComposeResult:
        yield Static(id="compare-header")
        with Vertical(id="compare-body"):
            with Horizontal(id="compare-charts"):
                yield LossChart(id="compare-loss")
                yield AccuracyChart(id="compare-acc")
            with Horizontal(id="compare-tables"):
                per_class = DataTable(id="compare-per-class", cursor_type="row")
                per_class.border_title = "Per-class accuracy %"
                yield per_class
                diff = DataTable(id="config-diff", cursor_type="row")
                diff.border_title = "Config diff"
                yield diff
        yield AdaptiveFooter()

    def on_mount(self) -> None:
        self.query_one("#compare-header", Static).update(Text(f" {self.title_text()}  loading…"))
        self.load()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        worker = get_current_worker()
        data = load_compare(self.app.source, self.run_ids, lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.post_message(CompareLoaded(data))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.data = d = message.data
        header = Text(f" {self.title_text()}: ", style="bold")
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
            table.add_column(fit(d.names.get(run_id, run_id), 24), key=run_id)
        for key, values in d.diff:
            table.add_row(Text(key), *[literal("-" if v is None else v) for v in values], key=key)
        table.border_subtitle = f"{len(d.diff)} keys differ" if d.diff else "configs identical"
        self.group_index = 0
        self.fill_per_class()
        table.focus()

    def title_text(self) -> str:
        n = len(self.run_ids)
        return f"Compare {n} runs" if n != 1 else "Against the paper"

    @property
    def group(self) -> Group | None:
        groups = self.data.groups if self.data is not None else []
        return groups[self.group_index % len(groups)] if groups else None

    def fill_per_class(self) -> None:
        """The per-class table of the current group: each run's %, the last run minus the first, the paper."""
        d = self.data
        table = self.query_one("#compare-per-class", DataTable)
        table.clear(columns=True)
        group = self.group
        if d is None or group is None:
            table.border_title = "Per-class accuracy %"
            table.border_subtitle = "n/a (no per-class results)"
            return
        rows = per_class_rows(d.per_class, self.run_ids, group)
        show_paper = any(r.paper is not None for r in rows)
        table.add_column("class", key="class")
        for run_id in self.run_ids:
            table.add_column(fit(d.names.get(run_id, run_id), 15), key=run_id)
        if len(self.run_ids) > 1:
            table.add_column("Δ", key="delta")
        if show_paper:
            table.add_column("paper", key="paper")

        def pct(v: float | None) -> Text:
            return Text("-" if v is None else f"{v:.1f}", justify="right")

        for r in rows:
            cells = [literal(r.name), *[pct(v) for v in r.values]]
            if len(self.run_ids) > 1:
                style = "" if r.delta is None or abs(r.delta) < 0.05 else ("green" if r.delta > 0 else "red")
                cells.append(Text("-" if r.delta is None else f"{r.delta:+.1f}", style=style, justify="right"))
            if show_paper:
                cells.append(pct(r.paper))
            table.add_row(*cells, key=r.name)
        table.border_title = f"Per-class %: {group_label(group)}"
        n = len(d.groups)
        table.border_subtitle = f"p: next ({self.group_index % n + 1}/{n})" if n > 1 else ""

    def action_next_group(self) -> None:
        if self.data is not None and self.data.groups:
            self.group_index = (self.group_index + 1) % len(self.data.groups)
            self.fill_per_class()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_log(self) -> None:
        chart = self.query_one("#compare-loss", LossChart)
        chart.log_scale = not chart.log_scale

    def action_help(self) -> None:
        from bttui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen("compare", self.HELP))
