"""Rich tables of plain data: fine-tuning results, run lists, resolved config keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from bttui.render.format import (
    clean,
    fmt_accuracy,
    fmt_ci,
    fmt_fraction,
    fmt_loss,
    fmt_time,
    fmt_value,
)
from bttui.render.glyphs import status_text


def _t(value: Any, style: str = "") -> Text:
    """Data as literal single-line text: markup and control characters never take effect."""
    return Text(clean(value, single_line=True) if value is not None else "-", style=style)


def _num_text(value: Any) -> Text:
    return Text("-" if value is None else clean(value, single_line=True), justify="right")


# Below this many columns the optional metric columns are left out, so the
# identifying columns (dataset, init, strategy) keep room on an 80-column terminal.
WIDE_RESULTS = 110
# Below this many columns the accuracy's 95% interval is left out.
WITH_CI = 96


def init_label(init: Any) -> str:
    """A resolved init as shown in tables: ``barlow_twins:<this run's id>@epoch=5`` reads ``barlow_twins@epoch=5``.

    The run id adds nothing in the run's own report (it is this run); other
    kinds (``run:<id>``, ``checkpoint:<path>``) are shown whole.
    """
    text = clean(init, single_line=True) if init is not None else "-"
    if text.startswith("barlow_twins:"):
        rest = text[len("barlow_twins:"):]
        return "barlow_twins" + (rest[rest.index("@"):] if "@" in rest else "")
    return text


def results_table(results: Sequence[Mapping[str, Any]], title: str | None = None, width: int | None = None) -> Table:
    """One row per fine-tuning cell: dataset, init, strategy, labels, n (n_train), seed, status, test accuracy (+95% CI).

    Balanced accuracy and macro F1 get columns only when some result has them
    and ``width`` (default: the terminal's) is at least ``WIDE_RESULTS``; the
    interval needs ``WITH_CI`` columns.
    """
    import shutil

    width = width or shutil.get_terminal_size((100, 24)).columns
    wide = width >= WIDE_RESULTS
    has_bal = wide and any(r.get("balanced_accuracy") is not None for r in results)
    has_f1 = wide and any(r.get("macro_f1") is not None for r in results)
    # One space of padding plus the one-space separator: 2 columns between cells keeps 8 columns within 80.
    # Columns that hold one value for every row move into the title: at 80 columns every
    # character counts, and "organs_sagittal" must never fold.
    datasets = {str(r.get("dataset")) for r in results}
    seeds = {str(r.get("seed")) for r in results}
    one_dataset = len(datasets) == 1 and len(results) > 1
    one_seed = len(seeds) == 1 and len(results) > 1
    heading = [clean(title, single_line=True)] if title else []
    if one_dataset:
        heading.append(clean(next(iter(datasets)), single_line=True))
    if one_seed:
        heading.append(f"seed {clean(next(iter(seeds)), single_line=True)}")
    table = Table(title=Text("  ·  ".join(heading)) if heading else None, box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    if not one_dataset:
        table.add_column("dataset", overflow="ellipsis", no_wrap=True, min_width=10)
    table.add_column("init", overflow="fold", min_width=10, max_width=28)
    table.add_column("strategy", overflow="fold", min_width=8)
    table.add_column("labels", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    if not one_seed:
        table.add_column("seed", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("accuracy", justify="right", no_wrap=True)
    if has_bal:
        table.add_column("bal. acc", justify="right", no_wrap=True)
    if has_f1:
        table.add_column("macro F1", justify="right", no_wrap=True)
    for r in results:
        acc = Text(fmt_accuracy(r.get("test_accuracy")), style="bold" if r.get("test_accuracy") is not None else "dim")
        # each column moved into the title frees room for the interval
        ci = fmt_ci(r.get("test_accuracy_ci")) if width >= WITH_CI - 16 * (one_dataset + one_seed) else ""
        if ci:
            acc.append(f" ({ci})", style="dim")
        row = [] if one_dataset else [_t(r.get("dataset"))]
        row += [Text(init_label(r.get("init"))), _t(r.get("strategy")), Text(fmt_fraction(r.get("label_fraction"))),
                _num_text(r.get("n_train"))]
        if not one_seed:
            row.append(_num_text(r.get("seed")))
        row += [status_text(r.get("status")), acc]
        if has_bal:
            row.append(Text(fmt_accuracy(r.get("balanced_accuracy"))))
        if has_f1:
            f1 = r.get("macro_f1")
            row.append(Text("-" if f1 is None else f"{float(f1):.3f}"))
        table.add_row(*row)
    return table


def init_comparison_table(results: Sequence[Mapping[str, Any]]) -> Table | None:
    """Test accuracy side by side per init: one row per (dataset, strategy, labels), the best init marked.

    Answers the question the paper asks (does Barlow Twins init beat the others?) at a
    glance; None when the results hold a single init. Seeds are averaged.
    """
    from collections import defaultdict

    inits: list[str] = []
    cells: dict[tuple[str, str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        acc = r.get("test_accuracy")
        if r.get("status", "completed") != "completed" or acc is None:
            continue
        init = init_label(r.get("init"))
        if init not in inits:
            inits.append(init)
        key = (str(r.get("dataset")), str(r.get("strategy")), float(r.get("label_fraction") or 0.0))
        cells[key][init].append(float(acc))
    if len(inits) < 2:
        return None
    table = Table(title=Text("test accuracy by init (▲ best)"), box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, padding=(0, 1, 0, 0))
    multi_dataset = len({k[0] for k in cells}) > 1
    if multi_dataset:
        table.add_column("dataset", overflow="ellipsis", no_wrap=True)
    table.add_column("strategy", overflow="fold")
    table.add_column("labels", justify="right", no_wrap=True)
    for init in inits:
        table.add_column(clean(init, single_line=True), justify="right", no_wrap=True)
    for (dataset, strategy, fraction), by_init in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        means = {i: sum(v) / len(v) for i, v in by_init.items() if v}
        best = max(means.values()) if means else None
        row = [_t(dataset)] if multi_dataset else []
        row += [_t(strategy), Text(fmt_fraction(fraction))]
        for init in inits:
            if init not in means:
                row.append(Text("-", style="dim"))
                continue
            top = best is not None and means[init] == best and len(means) > 1
            row.append(Text(fmt_accuracy(means[init]) + (" ▲" if top else "  "), style="bold" if top else ""))
        table.add_row(*row)
    return table


def fmt_progress(row: Mapping[str, Any]) -> str:
    """A run's progress as words: ``pretrain 30%``, ``finetune 2/8`` style counts when given, or empty."""
    if row.get("status") in ("completed",):
        return ""
    p = row.get("progress")
    stage = clean(row.get("stage"), single_line=True) if row.get("stage") else ""
    if isinstance(p, Mapping):
        if p.get("epochs") and row.get("stage") == "pretrain":
            return f"pretrain {p.get('epoch') or 0}/{p['epochs']}"
        if p.get("cells_total"):
            return f"cells {p.get('cells_done') or 0}/{p['cells_total']}"
        return stage
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return f"{stage} {p * 100:.0f}%".strip()
    return stage


# From this width on, `runs_table` adds the name and created columns (the id
# already starts with the UTC creation time and carries the name's slug).
WIDE_RUNS = 110


def runs_table(rows: Iterable[Mapping[str, Any]], title: str | None = None, width: int | None = None) -> Table:
    """Runs, one row each: status (glyph and word), id, [name, created,] progress, best accuracy, reason.

    ``width`` (default: the terminal's) below ``WIDE_RUNS`` leaves out name and
    created so ids stay whole on an 80-column terminal; the reason column
    appears when some run has one.
    """
    import shutil

    rows = list(rows)
    width = width or shutil.get_terminal_size((100, 24)).columns
    wide = width >= WIDE_RUNS
    any_reason = any(r.get("status_reason") for r in rows)
    table = Table(title=Text(clean(title, single_line=True)) if title else None, box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("id", overflow="fold", min_width=16)
    if wide:
        table.add_column("name", overflow="ellipsis", no_wrap=True, min_width=6, max_width=30)
        table.add_column("created", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("best", justify="right", no_wrap=True)
    if any_reason:
        table.add_column("reason", overflow="ellipsis", no_wrap=True, min_width=6)
    for r in rows:
        cells = [status_text(r.get("status")), _t(r.get("id"))]
        if wide:
            cells += [_t(r.get("name")), Text(fmt_time(r.get("created")))]
        cells += [Text(fmt_progress(r), style="dim"), Text(fmt_accuracy(r.get("best_accuracy")))]
        if any_reason:
            cells.append(_t(r.get("status_reason") or "", "dim"))
        table.add_row(*cells)
    return table


def config_sources_table(items: Iterable[tuple[str, Any, str]], title: str | None = None) -> Table:
    """Resolved config keys: dotted key, value (TOML-like), and where the value came from."""
    table = Table(title=Text(clean(title, single_line=True)) if title else None, box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("key", no_wrap=True, style="bold")
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    for key, value, source in items:
        src_style = "dim" if source == "default" else "cyan"
        shown = value if isinstance(value, Text) else Text(fmt_value(value))
        table.add_row(_t(key), shown, _t(source, src_style))
    return table


def kv_table(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value grid (run headers, pretraining summaries), values shown literally."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in pairs:
        if isinstance(value, Text):
            table.add_row(_t(key), value)
        elif isinstance(value, float):
            table.add_row(_t(key), Text(fmt_loss(value)))
        else:
            table.add_row(_t(key), Text(fmt_value(value) if not isinstance(value, str) else clean(value)))
    return table
