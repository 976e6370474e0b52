"""What every plotext chart of the TUI does on a redraw: clear the figure, plot, or say why there is nothing."""

from __future__ import annotations

from typing import Any, Callable

from textual_plotext import PlotextPlot


def redraw(chart: PlotextPlot, draw: Callable[[Any], str | None]) -> None:
    """Clear ``chart``'s figure, let ``draw(plt)`` plot into it, and repaint the widget.

    ``draw`` returns None when it plotted, else the title the empty figure shows instead
    (``"Loss: n/a (no step events yet)"``); that title replaces any title ``draw`` set.
    """
    plt = chart.plt
    plt.clear_data()
    plt.clear_figure()
    empty = draw(plt)
    if empty is not None:
        plt.title(empty)
    chart.refresh()


class Chart(PlotextPlot):
    """A plotext widget drawn from its own state: subclasses define ``draw`` (see ``redraw``) and call
    ``replot`` after changing that state; mounting draws it the first time."""

    def on_mount(self) -> None:
        self.replot()

    def replot(self) -> None:
        redraw(self, self.draw)

    def draw(self, plt: Any) -> str | None:
        raise NotImplementedError
