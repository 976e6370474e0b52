"""The loss chart: total, on-diagonal and off-diagonal Barlow Twins terms, linear or log scale."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive

from bttui.tui.widgets.plot import Chart

# Plotting thousands of points per frame costs CPU for no visible gain at terminal resolution.
MAX_POINTS = 300


def _thin(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    if len(xs) <= MAX_POINTS:
        return xs, ys
    stride = -(-len(xs) // MAX_POINTS)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


class LossChart(Chart):
    """Holds the series and redraws only when data or scale changed."""

    log_scale: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.x_label = "step"

    def set_series(self, series: dict[str, tuple[list[float], list[float]]], x_label: str = "step") -> None:
        self.series = series
        self.x_label = x_label
        self.replot()

    def watch_log_scale(self, _old: bool, _new: bool) -> None:
        self.replot()

    def draw(self, plt: Any) -> str | None:
        plt.title("Loss (log)" if self.log_scale else "Loss")
        drawn = False
        for label, (xs, ys) in self.series.items():
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None and (not self.log_scale or y > 0)]
            if not pts:
                continue
            px, py = _thin([p[0] for p in pts], [p[1] for p in pts])
            plt.plot(px, py, label=label, marker="braille")
            drawn = True
        if not drawn:
            return "Loss: n/a (no step events yet)"
        plt.yscale("log" if self.log_scale else "linear")
        plt.xlabel(self.x_label)
        return None
