"""The fine-tuning chart: one cell's train/val loss and train/val accuracy per epoch, side by side."""

from __future__ import annotations

from typing import Any

from bttui.tui.widgets.plot import Chart

# (event key, label, plotext marker): the marker keeps train and val apart without colour (NO_COLOR).
LOSS_SERIES = (("train_loss", "train", "dot"), ("val_loss", "val", "braille"))
ACC_SERIES = (("train_accuracy", "train", "dot"), ("val_accuracy", "val", "braille"))


def cell_curves(events: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``cell_epoch`` events of one cell -> {key: (epochs, values)}; accuracies in percent."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for key, _, _ in LOSS_SERIES + ACC_SERIES:
        xs, ys = [], []
        for i, ev in enumerate(events):
            v = ev.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                xs.append(float(ev.get("epoch") or i + 1))
                ys.append(100.0 * float(v) if key.endswith("accuracy") else float(v))
        if xs:
            out[key] = (xs, ys)
    return out


class CellChart(Chart):
    """One metric (``loss`` or ``accuracy``) of one cell, train and val; redraws only when they change."""

    def __init__(self, metric: str = "loss", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.metric = metric
        self.series = LOSS_SERIES if metric == "loss" else ACC_SERIES
        self.cell: str | None = None
        self.curves: dict[str, tuple[list[float], list[float]]] = {}
        self._key: tuple | None = None

    def set_cell(self, cell: str | None, events: list[dict]) -> None:
        curves = {k: v for k, v in cell_curves(events).items() if k in {s[0] for s in self.series}}
        key = (cell, tuple((k, tuple(v[1])) for k, v in curves.items()))
        if key == self._key:
            return
        self._key = key
        self.cell, self.curves = cell, curves
        self.replot()

    def draw(self, plt: Any) -> str | None:
        name = "accuracy %" if self.metric == "accuracy" else "loss"
        if not self.curves:
            return f"Fine-tuning {name}: n/a" + ("" if self.cell is None else " (no epochs yet)")
        plt.title(f"Fine-tuning {name}")
        for key, label, marker in self.series:
            if key in self.curves:
                xs, ys = self.curves[key]
                plt.plot(xs, ys, label=label, marker=marker)
        plt.xlabel("epoch")
        if self.metric == "accuracy":
            plt.ylim(0, 100)
        return None
