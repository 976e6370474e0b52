"""Shared by the CLI and the TUI: a run's results as files (csv, json, png) and its `show --json` object.

numpy (and the png writer) are imported only by what needs them; no torch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any

EXPORT_FORMATS = ("csv", "json", "png")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as "nan"/"inf"/"-inf" (as the event log writes them), paths and times as text."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    return obj


def _record_summary(record: Any) -> dict[str, Any]:
    summary = record.summary()
    return summary if isinstance(summary, Mapping) else {}


def run_json(record: Any) -> dict[str, Any]:
    """The `show --json` object of a run (docs/design.md; results are summary.json's result items)."""
    run_data = record.run_data if isinstance(record.run_data, Mapping) else {}
    summary = _record_summary(record)
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "status_reason": record.reason,
        "created": record.created,
        "lineage": run_data.get("lineage"),
        "config": record.config_dict(),
        "results": list(summary.get("results") or []),
        "pretrain": summary.get("pretrain"),
        "sweep_id": run_data.get("sweep_id"),
    }


def comparison_curves(data: Mapping[str, Any], dataset: str) -> list[Any]:
    """Chart curves for one dataset: the runs' (mean, CI) then the paper's (dashed)."""
    from bttui.render.plots import Curve

    curves = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in data["rows"]:
        if r["dataset"] == dataset and r.get("mean") is not None and r["label_fraction"] > 0:
            groups.setdefault((r["init"], r["strategy"]), []).append(r)
    for (init, strategy), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["label_fraction"])
        cis = []
        for r in rs:
            if r["n"] > 1:
                cis.append(((r["mean"] - r["std"]) * 100, (r["mean"] + r["std"]) * 100))
            elif r.get("ci"):
                cis.append((r["ci"][0] * 100, r["ci"][1] * 100))
            else:
                cis.append(None)
        curves.append(Curve(f"{init} {strategy}", [r["label_fraction"] for r in rs], [r["mean"] * 100 for r in rs], cis))
    paper = data.get("paper")
    if paper and paper["dataset"] == dataset:
        for c in paper["curves"]:
            pts = sorted((float(k), v) for k, v in c["points"].items())
            curves.append(Curve(f"paper {c['init']} {c['strategy']}", [p[0] for p in pts], [p[1] for p in pts],
                                dashed=True))
    return curves


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


RESULT_COLUMNS = ("cell", "dataset", "task", "init", "strategy", "label_fraction", "n_train", "seed", "status",
                  "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high", "balanced_accuracy", "macro_f1",
                  "probe", "best_epoch", "val_accuracy", "n_test", "error")
AGGREGATE_COLUMNS = ("dataset", "init", "strategy", "label_fraction", "n", "mean", "std", "min", "max", "failed")


def _cell_file_stem(result: Mapping[str, Any], run_dir: Path) -> str:
    from bttui.results import cell_artifacts_dir

    return Path(cell_artifacts_dir(run_dir, result)).name


def export_tables(record: Any, out: Path, formats: Sequence[str]) -> list[Path]:
    """Write results, seed aggregates, confusion matrices (csv/json) and plots (png) of one run into ``out``."""
    from bttui.results import aggregate_results, cell_artifacts_dir

    summary = record.summary() or {}
    results = [r for r in summary.get("results") or [] if isinstance(r, Mapping)]
    rows = aggregate_results(results)
    run_dir = Path(record.paths.dir)
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    if "json" in formats:
        (out / "run.json").write_text(json.dumps(json_safe(run_json(record)), indent=2, ensure_ascii=False) + "\n")
        (out / "aggregated.json").write_text(json.dumps(json_safe(rows), indent=2, ensure_ascii=False) + "\n")
        written += [out / "run.json", out / "aggregated.json"]
    if "csv" in formats:
        def item(r: Mapping[str, Any], key: str) -> Any:
            ci = r.get("test_accuracy_ci") or [None, None]
            return {"test_accuracy_ci_low": ci[0], "test_accuracy_ci_high": ci[1]}.get(key, r.get(key))

        written.append(_write_csv(out / "results.csv", RESULT_COLUMNS, [[item(r, k) for k in RESULT_COLUMNS] for r in results]))
        written.append(_write_csv(out / "aggregated.csv", AGGREGATE_COLUMNS, [[r.get(k) for k in AGGREGATE_COLUMNS] for r in rows]))
        for r in results:
            matrix, names = r.get("confusion_matrix"), r.get("class_names")
            if matrix and names:
                stem = _cell_file_stem(r, run_dir)
                written.append(_write_csv(out / "confusion" / f"{stem}.csv", ["true \\ predicted", *names],
                                          [[names[i], *row] for i, row in enumerate(matrix)]))
        probes = [(r, s, a) for r in results for s, a in (r.get("layer_probe") or {}).items()]
        if probes:
            written.append(_write_csv(out / "layer_probe.csv", ["cell", "stage", "test_accuracy"],
                                      [[r.get("cell"), s, a] for r, s, a in probes]))
    if "png" in formats:
        from bttui.render.plots import accuracy_png, scatter_png, write_png

        data = {"rows": rows, "paper": None}
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            curves = comparison_curves(data, ds)
            if curves:
                written.append(accuracy_png(out / f"accuracy_{ds}.png", curves, title=f"{ds}: accuracy vs label fraction"))
        for r in results:
            stem = _cell_file_stem(r, run_dir)
            if r.get("confusion_matrix"):
                written.append(write_png(out / "confusion" / f"{stem}.png", confusion_raster(r["confusion_matrix"])))
            cell_dir = Path(cell_artifacts_dir(run_dir, r))
            for emb in sorted(cell_dir.glob("embedding_*.npz")) if cell_dir.is_dir() else []:
                e = read_embedding_file(emb)
                written.append(scatter_png(out / "embeddings" / f"{stem}--{e['method']}.png", e["coords"], e["labels"],
                                           e["class_names"], title=f"{r.get('cell')} {e['method']}"))
    return written


def confusion_raster(matrix: Sequence[Sequence[int]], cell_px: int = 24) -> Any:
    """A row-normalised confusion matrix as an RGB image: white (0%) to dark blue (100%) per cell."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    low, high = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    rgb = (low + (high - low) * frac[..., None]).astype(np.uint8)
    img = np.repeat(np.repeat(rgb, cell_px, axis=0), cell_px, axis=1)
    img[::cell_px, :] = 200  # grid lines
    img[:, ::cell_px] = 200
    return img


def read_embedding_file(path: Path) -> dict[str, Any]:
    """An ``embedding_<method>.npz`` as coords, labels, class names and method (numpy only)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {"coords": z["coords"], "labels": z["labels"], "class_names": [str(c) for c in z["class_names"]],
                "method": str(z["method"]) if "method" in z.files else path.stem.split("_", 1)[-1]}
