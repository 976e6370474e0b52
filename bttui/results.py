"""Plain-data views of fine-tuning result items: seeds aggregated per combination (stdlib only)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any


def init_key(init: Any) -> str:
    """An init as a grouping key: ``barlow_twins:<run id>@epoch=5`` -> ``barlow_twins@epoch=5``.

    Each run of a sweep pretrains its own backbone, so its id must not split the
    group; ``run:<id>`` and ``checkpoint:<path>`` name one shared backbone and stay whole.
    """
    text = "" if init is None else str(init)
    if text.startswith("barlow_twins:"):
        rest = text[len("barlow_twins:"):]
        return "barlow_twins" + (rest[rest.index("@"):] if "@" in rest else "")
    return text


def group_key(result: Mapping[str, Any]) -> tuple[str, str, str, float]:
    """(dataset, init without run id, strategy, label_fraction) of a result item."""
    fraction = result.get("label_fraction")
    return (str(result.get("dataset") or ""), init_key(result.get("init")), str(result.get("strategy") or ""),
            float(fraction) if isinstance(fraction, (int, float)) else math.nan)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def aggregate_results(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, init, strategy, label_fraction): test accuracy over seeds (and runs).

    Row keys: dataset, init, strategy, label_fraction, n (completed cells), seeds,
    mean, std (sample std; 0 for one cell), min, max, ci (mean of the cells'
    bootstrap intervals, or None), balanced_accuracy and macro_f1 (means),
    per_class_accuracy (per-class means), class_names, n_test, failed (cells
    without an accuracy), runs (run ids when the items carry ``run``).
    Rows keep the order in which their first cell appears.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in results:
        if isinstance(r, Mapping):
            groups.setdefault(group_key(r), []).append(r)
    rows = []
    for (dataset, init, strategy, fraction), items in groups.items():
        done = [r for r in items if isinstance(r.get("test_accuracy"), (int, float))]
        accs = [float(r["test_accuracy"]) for r in done]
        row: dict[str, Any] = {"dataset": dataset, "init": init, "strategy": strategy, "label_fraction": fraction,
                               "n": len(done), "seeds": sorted({r.get("seed") for r in done if r.get("seed") is not None}),
                               **_stats(accs), "failed": len(items) - len(done)}
        cis = [r["test_accuracy_ci"] for r in done if isinstance(r.get("test_accuracy_ci"), (list, tuple))
               and len(r["test_accuracy_ci"]) == 2]
        row["ci"] = [statistics.fmean(float(c[0]) for c in cis), statistics.fmean(float(c[1]) for c in cis)] if cis else None
        for key in ("balanced_accuracy", "macro_f1"):
            vals = [float(r[key]) for r in done if isinstance(r.get(key), (int, float))]
            row[key] = statistics.fmean(vals) if vals else None
        names = next((list(r["class_names"]) for r in done if r.get("class_names")), None)
        per_class = None
        if names:
            per_class = []
            for c in range(len(names)):
                vals = [float(r["per_class_accuracy"][c]) for r in done
                        if isinstance(r.get("per_class_accuracy"), list) and len(r["per_class_accuracy"]) == len(names)
                        and isinstance(r["per_class_accuracy"][c], (int, float))]
                per_class.append(statistics.fmean(vals) if vals else None)
        row["class_names"], row["per_class_accuracy"] = names, per_class
        n_test = [int(r["n_test"]) for r in done if isinstance(r.get("n_test"), int)]
        row["n_test"] = max(n_test) if n_test else None
        probes: dict[str, list[float]] = {}
        for r in done:
            for stage, acc in (r.get("layer_probe") or {}).items():
                if isinstance(acc, (int, float)):
                    probes.setdefault(stage, []).append(float(acc))
        row["layer_probe"] = {s: statistics.fmean(v) for s, v in probes.items()} or None
        row["runs"] = sorted({str(r["run"]) for r in items if r.get("run")})
        rows.append(row)
    return rows


def cell_artifacts_dir(run_dir: Any, result: Mapping[str, Any]) -> Any:
    """The ``artifacts/cells/<slug>`` folder of a result item (from its ``artifacts`` key or its cell id)."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if isinstance(result.get("artifacts"), str):
        return run_dir / result["artifacts"]
    from bttui.config.cells import CellSpec

    parts = str(result.get("cell") or "").split("/")
    if len(parts) < 5:
        return run_dir / "artifacts" / "cells" / "_unknown_"
    # The init may itself hold slashes (checkpoint:/a/b.pt); the other four parts never do.
    spec = CellSpec(parts[0], None, "/".join(parts[1:-3]), parts[-3], float(parts[-2]), int(parts[-1].lstrip("s") or 0))
    return run_dir / "artifacts" / "cells" / spec.slug
