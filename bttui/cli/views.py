"""What the CLI shows about runs: list rows and the human run report (`show --json` objects: bttui.export)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bttui.export import _record_summary


def _first(mappings: Sequence[Mapping[str, Any]], *keys: str) -> Any:
    for key in keys:
        for m in mappings:
            if isinstance(m, Mapping) and m.get(key) is not None:
                return m[key]
    return None


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `ls` row with the documented keys: id, name, status, status_reason, created, stage, progress, best_accuracy, sweep_id.

    Accepts index rows (``reason``, ``progress`` as a 0-1 fraction) and dicts
    carrying status.json under "status_data"; "progress" is the fraction done
    of the current stage (bttui.runs.status.progress) or None.
    """
    nested = [row]
    status_data = row.get("status_data")
    if isinstance(status_data, Mapping):
        nested.append(status_data)
    progress = row.get("progress")
    if progress is None and isinstance(status_data, Mapping):
        from bttui.runs.status import progress as stage_progress

        progress = stage_progress(dict(status_data))
    created = _first(nested, "created")
    return {
        "id": _first(nested, "id", "run_id"),
        "name": _first(nested, "name"),
        "status": _first(nested, "status"),
        "status_reason": _first(nested, "status_reason", "reason"),
        "created": created.isoformat() if isinstance(created, datetime) else created,
        "stage": _first(nested, "stage"),
        "progress": progress,
        "best_accuracy": _first(nested, "best_accuracy"),
        "sweep_id": _first(nested, "sweep_id"),
    }


def record_row(record: Any) -> dict[str, Any]:
    """An `ls` row from a store RunRecord (status fields from status.json, best accuracy included)."""
    status_data = record.status_data if isinstance(record.status_data, Mapping) else {}
    run_data = record.run_data if isinstance(record.run_data, Mapping) else {}
    return normalize_row({
        "id": record.id, "name": record.name, "status": record.status, "status_reason": record.reason,
        "created": record.created, "sweep_id": run_data.get("sweep_id"), "status_data": status_data,
    })


def _sort_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (str(row.get("created") or ""), str(row.get("id") or ""))


def list_rows(store: Any) -> list[dict[str, Any]]:
    """Every run in the store as `ls` rows, newest first (from the SQLite index, refreshed incrementally)."""
    import sqlite3

    from bttui.runs.index import Index

    try:
        raw = Index(store).refresh()
    except (sqlite3.Error, OSError):
        # The index is only a cache (e.g. a read-only copied store cannot hold
        # one): list straight from the run directories instead.
        raw = [record_row(r) for r in store.list_runs()]
    rows = [normalize_row(r) for r in raw]
    rows.sort(key=_sort_key, reverse=True)
    return rows


def _join(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) for v in values)
    return "" if values is None else str(values)


def config_summary(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The handful of config facts that identify an experiment, as (label, text) pairs."""
    pairs: list[tuple[str, str]] = []
    data = config.get("data") or {}
    if data:
        pairs.append(("data", f"{data.get('root', '-')} ({data.get('image_size', '-')} px, "
                              f"{data.get('split_policy', 'mimeta')} splits)"))
    pre = config.get("pretrain")
    if isinstance(pre, Mapping):
        pairs.append(("pretrain", f"{_join(pre.get('datasets'))}: {pre.get('backbone', 'resnet18')}, "
                                  f"{pre.get('epochs')} epochs, batch {pre.get('batch_size')}, "
                                  f"{pre.get('optimizer')} lr {pre.get('lr')}, lambda {pre.get('lambd')}, "
                                  f"{pre.get('augment')} views"))
    else:
        pairs.append(("pretrain", "none"))
    ft = config.get("finetune")
    if isinstance(ft, Mapping):
        fractions = ", ".join(f"{float(x):g}" for x in ft.get("label_fractions") or [])
        pairs.append(("finetune", f"{_join(ft.get('datasets'))}: init {_join(ft.get('init'))}; "
                                  f"strategy {_join(ft.get('strategy'))}; labels {fractions}; "
                                  f"seeds {_join(ft.get('seeds'))}; {ft.get('epochs')} epochs"))
    else:
        pairs.append(("finetune", "none"))
    return pairs


def progress_words(status: Mapping[str, Any]) -> str:
    """Where a live run is, from status.json: ``pretrain epoch 3/10 step 120/400 loss 812.4`` or ``finetune cell 2/8 <id> epoch 4/100``."""
    from bttui.render.format import clean, fmt_loss

    parts: list[str] = []
    stage = status.get("stage")
    if stage:
        parts.append(clean(stage, single_line=True))
    if stage == "finetune" and status.get("cells_total"):
        parts.append(f"cell {int(status.get('cells_done') or 0) + 1}/{status['cells_total']}")
        if status.get("cell"):
            parts.append(clean(status["cell"], single_line=True))
    if status.get("epoch") is not None and status.get("epochs"):
        parts.append(f"epoch {status['epoch']}/{status['epochs']}")
    if stage == "pretrain" and status.get("step") is not None and status.get("steps"):
        parts.append(f"step {status['step']}/{status['steps']}")
    if status.get("loss") is not None:
        parts.append(f"loss {fmt_loss(status['loss'])}")
    return " ".join(parts)


def _pretrain_pairs(pretrain: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Scalar facts of summary.json's "pretrain" block (nested values are left to --json)."""
    return [(str(k), v) for k, v in pretrain.items() if isinstance(v, (str, int, float, bool)) or v is None]


def print_results(console: Any, results: Sequence[Mapping[str, Any]]) -> None:
    """The results table, then the confusion matrix of every completed cell that has one."""
    from rich.text import Text

    from bttui.render.confusion import confusion_table
    from bttui.render.format import clean, fmt_accuracy
    from bttui.render.tables import init_comparison_table, results_table

    if not results:
        console.print(Text("no fine-tuning results yet", style="dim"))
        return
    console.print(results_table(results, width=console.width))
    comparison = init_comparison_table(results)
    if comparison is not None:
        console.print()
        console.print(comparison)
    print_seed_summary(console, results)
    print_layer_probes(console, results)
    for r in results:
        matrix = r.get("confusion_matrix")
        if r.get("status", "completed") != "completed" or not matrix:
            continue
        title = f"{clean(r.get('cell') or '', single_line=True)}  test accuracy {fmt_accuracy(r.get('test_accuracy'))}"
        console.print()
        console.print(confusion_table(matrix, r.get("class_names") or [], title=title, width=console.width))


def print_seed_summary(console: Any, results: Sequence[Mapping[str, Any]]) -> None:
    """Mean ± std of test accuracy per (dataset, init, strategy, labels) when some combination has several seeds."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from bttui.render.format import clean, fmt_fraction
    from bttui.results import aggregate_results

    rows = aggregate_results(results)
    if not any(r["n"] > 1 for r in rows):
        return
    table = Table(title="over seeds", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("dataset", "init", "strategy", "labels", "n", "mean", "std", "min", "max"):
        table.add_column(col, justify="right" if col in ("labels", "n", "mean", "std", "min", "max") else "left")
    pct = lambda v: "-" if v is None else f"{v * 100:.1f}"  # noqa: E731
    for r in rows:
        table.add_row(Text(clean(r["dataset"], single_line=True)), Text(clean(r["init"], single_line=True)),
                      Text(clean(r["strategy"], single_line=True)), fmt_fraction(r["label_fraction"]), str(r["n"]),
                      Text(pct(r["mean"]), style="bold"), pct(r["std"]), pct(r["min"]), pct(r["max"]))
    console.print()
    console.print(table)


def print_layer_probes(console: Any, results: Sequence[Mapping[str, Any]]) -> None:
    """Layer-wise linear probe accuracies (finetune.probe_layers), one row per cell that has them."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from bttui.render.format import clean

    have = [r for r in results if isinstance(r.get("layer_probe"), Mapping) and r["layer_probe"]]
    if not have:
        return
    stages = list(dict.fromkeys(s for r in have for s in r["layer_probe"]))
    table = Table(title="layer-wise linear probes (test accuracy %)", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("cell", overflow="fold")
    for s in stages:
        table.add_column(s, justify="right")
    for r in have:
        table.add_row(Text(clean(r.get("cell") or "", single_line=True)),
                      *[("-" if not isinstance(r["layer_probe"].get(s), (int, float)) else f"{r['layer_probe'][s] * 100:.1f}")
                        for s in stages])
    console.print()
    console.print(table)


def print_embeddings(console: Any, record: Any, method: str = "tsne") -> int:
    """Each completed cell's stored ``embedding_<method>.npz`` as a coloured terminal scatter; returns how many."""
    from pathlib import Path

    from rich.text import Text

    from bttui.render.scatter import embedding_scatter
    from bttui.results import cell_artifacts_dir

    from bttui.export import read_embedding_file

    summary = _record_summary(record)
    shown = 0
    for r in summary.get("results") or []:
        if not isinstance(r, Mapping) or r.get("status", "completed") != "completed":
            continue
        path = Path(cell_artifacts_dir(record.paths.dir, r)) / f"embedding_{method}.npz"
        if not path.is_file():
            continue
        e = read_embedding_file(path)
        text = embedding_scatter(e["coords"], [int(v) for v in e["labels"]], e["class_names"],
                                 title=f"{r.get('cell')}  {method}", width=min(console.width, 100), height=24,
                                 color=console.color_system is not None)
        console.print(Text.from_ansi(text))
        shown += 1
    if not shown:
        console.print(Text(f"no {method} embeddings stored in this run (finetune.embeddings lists the methods "
                           "computed per cell)", style="dim"))
    return shown


def print_run(console: Any, record: Any) -> None:
    """The human `show` report: header, config summary, progress, pretraining summary, results, confusion matrices."""
    from rich.text import Text

    from bttui.render.format import clean, fmt_time
    from bttui.render.glyphs import status_text
    from bttui.render.tables import kv_table

    header = Text(clean(record.name, single_line=True), style="bold")
    header.append("  ")
    header.append_text(status_text(record.status, record.reason))
    console.print(header)

    run_data = record.run_data if isinstance(record.run_data, Mapping) else {}
    config = record.config_dict() or {}
    pairs: list[tuple[str, Any]] = [("id", str(record.id)), ("created", fmt_time(record.created))]
    if run_data.get("host"):
        pairs.append(("host", str(run_data["host"])))
    if run_data.get("sweep_id"):
        pairs.append(("sweep", str(run_data["sweep_id"])))
    if run_data.get("config_path"):
        pairs.append(("config", str(run_data["config_path"])))
    if config.get("description"):
        pairs.append(("description", str(config["description"])))
    pairs.extend(config_summary(config))
    status_data = record.status_data if isinstance(record.status_data, Mapping) else {}
    if record.status in ("running", "queued") and status_data:
        progress = progress_words(status_data)
        if progress:
            pairs.append(("progress", progress))
    console.print(kv_table(pairs))

    summary = _record_summary(record)
    pretrain = summary.get("pretrain")
    if isinstance(pretrain, Mapping) and pretrain:
        console.print()
        console.print(Text("pretraining", style="bold"))
        console.print(kv_table(_pretrain_pairs(pretrain)))
    console.print()
    print_results(console, list(summary.get("results") or []))


def config_items(cfg: Any, sources: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """Every resolved key of a config dataclass as (dotted key, value, source), sections in schema order.

    An absent optional section (no [pretrain] / [finetune]) is one row whose value reads "absent".
    """
    from rich.text import Text

    from bttui.config.schema import SECTIONS

    items: list[tuple[str, Any, str]] = []

    def walk(obj: Any, prefix: str) -> None:
        for fld in dataclasses.fields(obj):
            key = f"{prefix}{fld.name}"
            value = getattr(obj, fld.name)
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif value is None and not prefix and fld.name in SECTIONS:
                items.append((key, Text(f"absent (no [{key}] section)", style="dim"), sources.get(key, "default")))
            else:
                items.append((key, value, sources.get(key, "default")))

    walk(cfg, "")
    return items
