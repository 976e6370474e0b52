"""Terminal scatter plots of 2-D embeddings, coloured by class (plotext, imported when drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# plotext colour names, cycled over classes; 11 organ classes fit without repeats.
CLASS_COLORS = ("red", "green", "blue", "orange", "magenta", "cyan", "yellow", "white",
                "red+", "green+", "blue+", "orange+", "magenta+", "cyan+")
# Matplotlib's tab10 + a few, as RGB for the PNG fallback (same order as CLASS_COLORS is not required).
CLASS_RGB = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
             (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 128), (128, 0, 0),
             (0, 128, 128), (128, 128, 0))


def embedding_scatter(coords: Any, labels: Sequence[int], class_names: Sequence[str], *, title: str = "",
                      width: int = 80, height: int = 24, color: bool = True) -> str:
    """The scatter as text (ANSI colour codes when ``color``), one colour and legend entry per class."""
    import plotext as plt

    from bttui.render.format import clean

    xs = [float(p[0]) for p in coords]
    ys = [float(p[1]) for p in coords]
    plt.clear_figure()
    plt.plotsize(max(20, width), max(8, height))
    plt.theme("clear")
    for c, name in enumerate(class_names):
        idx = [i for i, lab in enumerate(labels) if int(lab) == c]
        if not idx:
            continue
        plt.scatter([xs[i] for i in idx], [ys[i] for i in idx], marker="dot",
                    color=CLASS_COLORS[c % len(CLASS_COLORS)], label=clean(name, single_line=True)[:24])
    if title:
        plt.title(clean(title, single_line=True))
    plt.xticks([])
    plt.yticks([])
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = plt.uncolorize(text)
    return text
