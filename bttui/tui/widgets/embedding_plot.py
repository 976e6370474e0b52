"""The t-SNE / UMAP scatter of a cell's test features, one marker character and colour per class."""

from __future__ import annotations

from typing import Any

from bttui.render.format import clean
from bttui.tui.widgets.plot import Chart

# Class i is drawn with MARKERS[i] (the legend shows it), so classes stay apart without colour.
MARKERS = "0123456789abcdefghijklmnopqrstuvwxyz"
COLORS = ("red", "green", "blue", "orange", "magenta", "cyan", "yellow", "gray",
          "red+", "green+", "blue+", "orange+", "magenta+", "cyan+")
# The same colours as Rich styles, for a legend drawn outside the plot.
RICH_COLORS = ("red", "green", "blue", "dark_orange", "magenta", "cyan", "yellow", "grey50",
               "bright_red", "bright_green", "bright_blue", "orange1", "bright_magenta", "bright_cyan")
# Up to this many classes the legend sits inside the plot; more would cover the points (11 organs),
# so the legend goes below it (``legend_text``).
LEGEND_INSIDE_MAX = 6


def legend_text(class_names: list[str]) -> Any:
    """``0 heart  1 left lung …``: each class's marker in its colour, then its name (wraps as needed)."""
    from rich.text import Text

    text = Text()
    for c, name in enumerate(class_names):
        if c:
            text.append("  ")
        text.append(MARKERS[c % len(MARKERS)], style=f"bold {RICH_COLORS[c % len(RICH_COLORS)]}")
        text.append(" " + clean(name, single_line=True))
    return text


class EmbeddingPlot(Chart):
    """Shows ``embedding`` ({"coords": [[x, y]...], "labels": [...], "class_names": [...], "method": str})."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.embedding: dict[str, Any] | None = None
        self.note = "embedding: n/a"

    def show(self, embedding: dict[str, Any] | None, note: str = "") -> None:
        self.embedding = embedding
        self.note = note
        self.replot()

    def draw(self, plt: Any) -> str | None:
        emb = self.embedding
        if not emb:
            return clean(self.note or "embedding: n/a", single_line=True)
        coords, labels, names = emb["coords"], emb["labels"], emb["class_names"]
        inside = len(names) <= LEGEND_INSIDE_MAX
        for c, name in enumerate(names):
            idx = [i for i, lab in enumerate(labels) if int(lab) == c]
            if not idx:
                continue
            plt.scatter([float(coords[i][0]) for i in idx], [float(coords[i][1]) for i in idx],
                        marker=MARKERS[c % len(MARKERS)], color=COLORS[c % len(COLORS)],
                        label=clean(name, single_line=True)[:18] if inside else None)
        plt.title(clean(f"{emb.get('method', '')} of test features  {self.note}".strip(), single_line=True))
        plt.xticks([])
        plt.yticks([])
        return None
