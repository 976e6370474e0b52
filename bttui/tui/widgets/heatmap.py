"""Small terminal renderings: the cross-correlation heatmap and per-class accuracy bars."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text

from bttui.render.format import clean, truncate

# Shade by |value| so the picture survives NO_COLOR; colour adds the sign (blue +, red -).
_SHADES = " ░▒▓█"


def _downsample(matrix: Sequence[Sequence[float]], max_size: int) -> list[list[float]]:
    n = len(matrix)
    if n <= max_size:
        return [[float(v) for v in row] for row in matrix]
    # Block-average: keeps the diagonal's blocks on the diagonal.
    edges = [round(i * n / max_size) for i in range(max_size + 1)]
    out = []
    for bi in range(max_size):
        row = []
        for bj in range(max_size):
            vals = [float(matrix[i][j]) for i in range(edges[bi], edges[bi + 1]) for j in range(edges[bj], edges[bj + 1])]
            row.append(sum(vals) / len(vals) if vals else 0.0)
        out.append(row)
    return out


def xcorr_heatmap(matrix: Sequence[Sequence[float]] | None, max_size: int = 16) -> Text:
    """The Barlow Twins cross-correlation matrix as shaded cells: diagonal should be solid, the rest blank."""
    if not matrix or not matrix[0]:
        return Text("n/a", style="dim")
    m = _downsample(matrix, max_size)
    text = Text(no_wrap=True)
    for i, row in enumerate(m):
        for v in row:
            mag = min(1.0, abs(v))
            ch = _SHADES[min(len(_SHADES) - 1, int(round(mag * (len(_SHADES) - 1))))]
            colour = "dodger_blue2" if v >= 0 else "red3"
            text.append(ch * 2, style=colour)
        text.append("\n")
    # Statistics of the full matrix, not the block averages drawn (those mix off-diagonal terms into the diagonal).
    n = len(matrix)
    on = [float(matrix[i][i]) for i in range(n) if i < len(matrix[i])]
    off = [abs(float(v)) for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
    text.append(f"diag {sum(on) / max(1, len(on)):.2f}  |off| {sum(off) / max(1, len(off)):.2f}", style="dim")
    return text


def bar(fraction: float, width: int = 20) -> str:
    f = max(0.0, min(1.0, fraction))
    full = int(round(f * width))
    return "█" * full + "░" * (width - full)


def per_class_bars(class_names: Sequence[str], accuracies: Sequence[float], width: int = 20) -> Text:
    """One line per class: name, bar, percent; names shown literally."""
    if not class_names or not accuracies:
        return Text("n/a", style="dim")
    name_w = min(18, max(len(clean(n, single_line=True)) for n in class_names))
    text = Text(no_wrap=True)
    for name, acc in zip(class_names, accuracies):
        label = truncate(clean(name, single_line=True), name_w).ljust(name_w)
        text.append(label + " ")
        text.append(bar(float(acc), width), style="green" if acc >= 0.5 else "yellow")
        text.append(f" {100 * float(acc):5.1f}%\n")
    text.rstrip()
    return text
