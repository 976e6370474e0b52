"""`bttui compare` (runs side by side, optionally with the paper's numbers) and `bttui export` (tables, plots, backbone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bttui.errors import BttuiError
from bttui.export import EXPORT_FORMATS, comparison_curves, export_tables

# Same option as bttui.cli.app's (annotations are resolved in this module's globals).
StoreOption = Annotated[
    Optional[Path],
    typer.Option("--store", metavar="DIR", show_default=False,
                 help="Run store directory (default: $BTTUI_STORE, the settings file's `store`, or ./runs)."),
]


# ----------------------------------------------------------------- gathering runs
def gather_records(store: Any, refs: Sequence[str]) -> list[Any]:
    """Run records for RUN arguments: a run id / prefix / name, or a sweep id (every run of the sweep)."""
    records: list[Any] = []
    seen: set[str] = set()
    for ref in refs:
        try:
            found = [store.resolve(ref)]
        except BttuiError:
            found = [r for r in store.list_runs()
                     if isinstance(r.run_data, Mapping) and r.run_data.get("sweep_id") == ref]
            if not found:
                raise
        for record in found:
            if record.id not in seen:
                seen.add(record.id)
                records.append(record)
    return records


def tagged_results(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Every result item of the runs, each with ``run`` (its run id) and ``sweep_id`` added."""
    out = []
    for record in records:
        summary = record.summary() if callable(getattr(record, "summary", None)) else {}
        run_data = record.run_data if isinstance(record.run_data, Mapping) else {}
        for r in (summary or {}).get("results") or []:
            if isinstance(r, Mapping):
                out.append({**r, "run": record.id, "sweep_id": run_data.get("sweep_id")})
    return out


# ----------------------------------------------------------------- compare
def comparison(records: Sequence[Any], paper: str | None) -> dict[str, Any]:
    """The plain data `compare` prints: aggregated rows, the paper's table, per-class differences, notes."""
    from bttui.paper import paper_table, protocol_differences
    from bttui.results import aggregate_results

    rows = aggregate_results(tagged_results(records))
    out: dict[str, Any] = {"runs": [r.id for r in records], "rows": rows, "paper": None, "per_class": [], "notes": []}
    if paper is None:
        return out
    try:
        table = paper_table(paper)
    except KeyError:
        raise BttuiError(f"Unknown --paper {paper!r}; valid: crc, organs_sagittal (or organs).") from None
    out["paper"] = {"dataset": table.dataset, "task": table.task,
                    "curves": [{"init": i, "strategy": s, "points": {f"{f:g}": v for f, v in sorted(c.items())}}
                               for (i, s), c in table.curves.items()],
                    "notes": list(table.notes)}
    mine = [r for r in rows if r["dataset"] == table.dataset]
    if not mine:
        out["notes"].append(f"none of these runs has results on {table.dataset}; only the paper's numbers are shown.")
    # Protocol differences: a sentence true of every run is said once, others name their runs.
    by_sentence: dict[str, list[str]] = {}
    for record in records:
        n_test = max((r.get("n_test") or 0 for r in mine if record.id in r["runs"]), default=0) or None
        for sentence in protocol_differences(table, record.config_dict() or {}, n_test):
            by_sentence.setdefault(sentence, []).append(record.id)
    for sentence, ids in by_sentence.items():
        out["notes"].append(sentence if len(ids) == len(records) else f"{', '.join(ids)}: {sentence}")
    from bttui.paper import canonical_class, paper_per_class

    for row in mine:
        wanted = paper_per_class(table.dataset, row["init"], row["strategy"], row["label_fraction"])
        if not wanted or not row.get("class_names") or not row.get("per_class_accuracy"):
            continue
        for name, acc in zip(row["class_names"], row["per_class_accuracy"]):
            paper_acc = wanted.get(canonical_class(name))
            ours = None if acc is None else acc * 100
            out["per_class"].append({"init": row["init"], "strategy": row["strategy"],
                                     "label_fraction": row["label_fraction"], "class": name, "run": ours,
                                     "paper": paper_acc,
                                     "diff": None if ours is None or paper_acc is None else ours - paper_acc})
    return out


def _fmt_cell(row: Mapping[str, Any] | None) -> str:
    if not row or row.get("mean") is None:
        return "-"
    text = f"{row['mean'] * 100:.1f}"
    if row["n"] > 1:
        text += f" ±{row['std'] * 100:.1f} (n={row['n']})"
    elif row.get("ci"):
        text += f" [{row['ci'][0] * 100:.0f}-{row['ci'][1] * 100:.0f}]"
    return text


def comparison_tables(data: Mapping[str, Any]) -> list[Any]:
    """Rich tables: per dataset, rows (init, strategy) x columns label fraction; the paper's rows below the runs'."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from bttui.render.format import clean

    paper = data.get("paper")
    datasets = list(dict.fromkeys(r["dataset"] for r in data["rows"]))
    if paper and paper["dataset"] not in datasets:
        datasets.append(paper["dataset"])
    tables = []
    for ds in datasets:
        rows = [r for r in data["rows"] if r["dataset"] == ds]
        fractions = {r["label_fraction"] for r in rows}
        is_paper = bool(paper and paper["dataset"] == ds)
        if is_paper:
            fractions |= {float(f) for c in paper["curves"] for f in c["points"]}
        fractions_sorted = sorted(f for f in fractions if f == f)
        table = Table(title=Text(f"{clean(ds, single_line=True)}: test accuracy % by label fraction"
                                 + (" (mean ±std over seeds, [95% CI] for one seed)" if rows else "")),
                      box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("init", overflow="fold", max_width=30)
        table.add_column("strategy", overflow="fold")
        for f in fractions_sorted:
            table.add_column(f"{f * 100:g}%", justify="right")
        groups: dict[tuple[str, str], dict[float, Mapping[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r["init"], r["strategy"]), {})[r["label_fraction"]] = r
        for (init, strategy), by_f in groups.items():
            table.add_row(Text(clean(init, single_line=True)), Text(clean(strategy, single_line=True)),
                          *[Text(_fmt_cell(by_f.get(f))) for f in fractions_sorted])
        if is_paper:
            for c in paper["curves"]:
                pts = {float(k): v for k, v in c["points"].items()}
                table.add_row(Text(f"paper: {c['init']}", style="cyan"), Text(c["strategy"], style="cyan"),
                              *[Text("-" if f not in pts else f"{pts[f]:.2f}", style="cyan") for f in fractions_sorted])
        tables.append(table)
    return tables


def print_comparison(console: Any, data: Mapping[str, Any]) -> None:
    """Tables, a line chart per dataset, per-class differences and protocol notes."""
    from rich.table import Table
    from rich.text import Text

    from bttui.render.format import clean
    from bttui.render.plots import accuracy_chart

    for table in comparison_tables(data):
        console.print(table)
        console.print()
    datasets = list(dict.fromkeys([r["dataset"] for r in data["rows"]]
                                  + ([data["paper"]["dataset"]] if data.get("paper") else [])))
    for ds in datasets:
        curves = comparison_curves(data, ds)
        if curves:
            text = accuracy_chart(curves, title=f"{ds}: accuracy vs label fraction", width=min(console.width, 100),
                                  height=20, color=console.color_system is not None)
            console.print(Text.from_ansi(text))
            console.print()
    if data.get("per_class"):
        table = Table(title="per-class accuracy % vs the paper", box=None, pad_edge=False)
        for col in ("init", "strategy", "labels", "class", "run", "paper", "diff"):
            table.add_column(col, justify="right" if col in ("run", "paper", "diff") else "left")
        for p in data["per_class"]:
            diff = p["diff"]
            style = "" if diff is None else ("green" if diff >= 0 else "red")
            table.add_row(clean(p["init"], single_line=True), p["strategy"], f"{p['label_fraction'] * 100:g}%",
                          clean(p["class"], single_line=True), "-" if p["run"] is None else f"{p['run']:.2f}",
                          "-" if p["paper"] is None else f"{p['paper']:.2f}",
                          Text("-" if diff is None else f"{diff:+.2f}", style=style))
        console.print(table)
        console.print()
    notes = list(data.get("notes") or [])
    if notes:
        console.print(Text("protocol differences", style="bold yellow"))
        for n in notes:
            console.print(Text(f"  - {clean(n, single_line=True)}"))
    if data.get("paper"):
        console.print(Text("where the paper's numbers come from", style="bold"))
        for n in data["paper"]["notes"]:
            console.print(Text(f"  - {n}", style="dim"))


# ----------------------------------------------------------------- export
def export_backbone(record: Any, dest: Path, epoch: int | None = None) -> dict[str, Any]:
    """Write the run's pretrained backbone as a plain torchvision ResNet state dict (no ``fc``); returns facts about it."""
    try:
        import torch
    except ImportError:
        raise BttuiError("bttui export --backbone needs PyTorch (torch), which is not installed in this "
                         "environment; install torch or run the export where the run was trained.") from None
    from bttui.train.finetune import backbone_state_dict, pretrain_checkpoint_in

    path = pretrain_checkpoint_in(Path(record.paths.dir), epoch, f"run {record.id}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BttuiError(f"Cannot read checkpoint {path}: {type(exc).__name__}: {exc}.") from exc
    sd, meta = backbone_state_dict(obj, f"Checkpoint {path}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    torch.save({k: v.contiguous() for k, v in sd.items()}, tmp)
    tmp.replace(dest)
    return {"path": str(dest), "checkpoint": str(path), "backbone": meta.get("backbone", "resnet18"),
            "epoch": meta.get("epoch"), "tensors": len(sd)}


# ----------------------------------------------------------------- commands
def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `compare` and `export` to the app."""
    from bttui.cli.app import console, open_store, print_json

    @app.command("compare")
    def compare_command(
        ctx: typer.Context,
        runs: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN...]", show_default=False,
                                                            help="Run ids / prefixes / names, or sweep ids.")] = None,
        paper: Annotated[Optional[str], typer.Option("--paper", metavar="crc|organs_sagittal",
                                                     help="Show the paper's numbers beside the runs'.",
                                                     show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
        store: StoreOption = None,
    ) -> None:
        """Compare runs: accuracy by label fraction (seeds aggregated), a chart, and the paper's numbers."""
        if not runs and paper is None:
            raise BttuiError("bttui compare needs at least one RUN (id, prefix, name or sweep id), or --paper "
                             "crc|organs_sagittal to print the paper's numbers alone.")
        records = gather_records(open_store(ctx, store), runs) if runs else []
        data = comparison(records, paper)
        if as_json:
            print_json(data)
            return
        print_comparison(console(), data)

    @app.command("export")
    def export_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique id prefix, or unique run name.",
                                           show_default=False)],
        formats: Annotated[Optional[list[str]], typer.Option("--format", "-f", metavar="csv|json|png",
                                                             help="What to write (repeatable or comma-separated).",
                                                             show_default=False)] = None,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR",
                                                    help="Output folder (default: ./<run id>-export).",
                                                    show_default=False)] = None,
        backbone: Annotated[Optional[Path], typer.Option("--backbone", metavar="FILE.pt",
                                                         help="Write the pretrained backbone as a torchvision "
                                                              "ResNet state dict.", show_default=False)] = None,
        epoch: Annotated[Optional[int], typer.Option("--epoch", help="With --backbone: a periodic checkpoint's epoch.",
                                                     show_default=False)] = None,
        store: StoreOption = None,
    ) -> None:
        """Export a run's results (csv, json), plots (png) or pretrained backbone (--backbone)."""
        from rich.text import Text

        record = open_store(ctx, store).resolve(run)
        wanted = [f.strip().lower() for item in formats or [] for f in item.split(",") if f.strip()]
        bad = [f for f in wanted if f not in EXPORT_FORMATS]
        if bad:
            raise BttuiError(f"Unknown --format {bad[0]!r}; valid: {', '.join(EXPORT_FORMATS)}.")
        if not wanted and backbone is None:
            wanted = ["csv", "json"]
        out_console = console()
        if wanted:
            dest = out or Path(f"{record.id}-export")
            files = export_tables(record, dest, wanted)
            out_console.print(Text(f"wrote {len(files)} file{'s' if len(files) != 1 else ''} under {dest}"))
        if backbone is not None:
            facts = export_backbone(record, backbone, epoch)
            out_console.print(Text(f"wrote the {facts['backbone']} backbone ({facts['tensors']} tensors, from "
                                   f"{facts['checkpoint']}) to {facts['path']}"))
