"""Confusion matrices as Rich tables: numbers always shown, a colour scale on the cell background only helps."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.color import Color
from rich.style import Style
from rich.table import Table
from rich.text import Text

from bttui.render.format import clean, truncate

# Cell backgrounds: the diagonal (correct) goes from dark to bright green, the
# rest (confusions) from dark to bright red. Mid-tones with white text read on
# both dark and light terminal themes.
_DIAG_LOW, _DIAG_HIGH = (24, 64, 28), (38, 150, 60)
_OFF_LOW, _OFF_HIGH = (72, 30, 30), (200, 45, 45)
# SIMPLE_HEAD without edges and with right padding only: between two columns
# sit one space of padding and a one-space separator, so n+2 columns cost
# 2n+2 characters besides their content.
# Row labels longer than this are cut even on a wide terminal.
_MAX_LABEL = 24


def _blend(low: tuple[int, int, int], high: tuple[int, int, int], t: float) -> Color:
    t = min(1.0, max(0.0, t))
    return Color.from_rgb(*(lo + (hi - lo) * t for lo, hi in zip(low, high)))


def _as_rows(matrix: Any) -> list[list[int]]:
    """The matrix as a list of int rows (accepts nested lists and numpy arrays)."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    out: list[list[int]] = []
    for row in rows or []:
        out.append([int(round(float(v))) if v is not None and math.isfinite(float(v)) else 0 for v in row])
    return out


def abbreviate(names: Sequence[str], width: int) -> list[str] | None:
    """Names cut to ``width`` characters (ellipsis marks a cut); None if that makes two of them equal."""
    if width < 3:
        return None
    short = [truncate(n, width) for n in names]
    return short if len(set(short)) == len(short) else None


def _fmt_percent(p: float, decimals: bool) -> str:
    if p == 0:
        return "0"
    if decimals:
        if p >= 99.95:
            return "100"
        return "<0.1" if p < 0.05 else f"{p:.1f}"
    return "<1" if p < 0.5 else f"{p:.0f}"


def _matrix_width(n: int, gap: int = 2) -> int:
    """Characters the table spends on padding and separators for ``n`` classes (``gap`` per column)."""
    return gap * n + 2


def confusion_table(
    matrix: Any,
    class_names: Sequence[str] | None,
    normalize: bool = True,
    title: str | None = None,
    width: int | None = None,
) -> Table:
    """A confusion matrix (rows = true class, columns = predicted) as a Rich table.

    ``normalize`` shows each row as percentages of that row (the diagonal is the
    per-class accuracy), otherwise raw counts; the last column ``n`` is the row's
    count either way. Class names are shown in full when they fit in ``width``
    columns (default: the terminal's width), cut with an ellipsis when the cut
    names stay distinct, and otherwise replaced by class indices in the header
    (row labels then start with the index). Names are shown literally.
    """
    rows = _as_rows(matrix)
    n = len(rows)
    if any(len(r) != n for r in rows):
        raise ValueError(f"confusion matrix must be square, got rows of lengths {[len(r) for r in rows]}")
    names = [clean(c, single_line=True) for c in (class_names or [])][:n]
    names += [str(i) for i in range(len(names), n)]
    width = width or shutil.get_terminal_size((100, 24)).columns

    sums = [sum(r) for r in rows]
    n_w = max([len(str(s)) for s in sums] + [1])
    longest = max([len(x) for x in names] + [1])

    def texts(decimals: bool) -> list[list[str]]:
        if not normalize:
            return [[str(v) for v in r] for r in rows]
        return [[_fmt_percent(100.0 * v / s, decimals) if s else "-" for v in r] for r, s in zip(rows, sums)]

    def layout(gap: int) -> tuple[list[list[str]], int, list[str], list[str], int]:
        """(cell texts, cell width, headers, row labels, label width) with ``gap`` characters between columns."""
        def per_column(cell_texts: list[list[str]]) -> tuple[int, int]:
            cell_w = max([len(t) for r in cell_texts for t in r] + [1])
            avail = width - label_w - n_w - _matrix_width(n, gap)
            return cell_w, (avail // n if n else cell_w)

        label_w = min(max(longest, 4), _MAX_LABEL, max(8, width // 4))
        cell_texts = texts(decimals=True)
        cell_w, per_col = per_column(cell_texts)
        if normalize and per_col < cell_w:
            # Too narrow for one decimal: whole percentages still read as a matrix.
            cell_texts = texts(decimals=False)
            cell_w, per_col = per_column(cell_texts)

        if longest <= max(per_col, cell_w):
            headers, labels = names, names
        else:
            short = abbreviate(names, max(per_col, cell_w))
            if short is not None:
                headers, labels = short, names
            else:
                headers = [str(i) for i in range(n)]
                labels = [f"{i} {name}" for i, name in enumerate(names)]
                # Index headers are narrow, so the row labels may take what the cells leave;
                # whole labels are worth more than a decimal place.
                want = min(max(len(x) for x in labels), _MAX_LABEL + 4)
                room = width - n_w - _matrix_width(n, gap) - n * max(cell_w, len(str(n - 1)))
                if room < want and normalize:
                    cell_texts = texts(decimals=False)
                    cell_w = max(len(t) for r in cell_texts for t in r)
                    room = width - n_w - _matrix_width(n, gap) - n * max(cell_w, len(str(n - 1)))
                label_w = max(8, min(want, room))
        return cell_texts, cell_w, headers, labels, label_w

    def needed(gap: int, cell_w: int, headers: list[str], label_w: int) -> int:
        return label_w + n_w + sum(max(cell_w, len(h)) for h in headers) + _matrix_width(n, gap)

    gap = 2
    cell_texts, cell_w, headers, labels, label_w = layout(gap)
    if needed(gap, cell_w, headers, label_w) > width:
        # Many classes in a narrow panel: one space between columns instead of two, so the
        # last columns and the row counts stay on screen (11 organ classes in 58 columns).
        gap = 1
        cell_texts, cell_w, headers, labels, label_w = layout(gap)

    what = "% of each row" if normalize else "counts"
    table = Table(
        title=Text(clean(title, single_line=True)) if title else None,
        caption=f"rows: true class · columns: predicted · {what}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, gap - 1, 0, 0),
    )
    table.add_column(Text("true \\ pred", style="dim"), no_wrap=True, overflow="ellipsis", max_width=label_w)
    for h in headers:
        table.add_column(Text(h), justify="right", no_wrap=True, overflow="ellipsis",
                         min_width=cell_w, max_width=max(cell_w, len(h)))
    table.add_column(Text("n", style="dim"), justify="right", no_wrap=True, min_width=n_w)

    for i, (row, row_texts, total) in enumerate(zip(rows, cell_texts, sums)):
        cells: list[Text] = [Text(truncate(labels[i], label_w))]
        for j, (count, txt) in enumerate(zip(row, row_texts)):
            frac = count / total if total else 0.0
            if count == 0:
                cells.append(Text(txt, style="dim"))
                continue
            if i == j:
                style = Style(color="white", bgcolor=_blend(_DIAG_LOW, _DIAG_HIGH, frac), bold=True)
            else:
                # sqrt: a 5% confusion must already stand out, 50% should be loud.
                style = Style(color="white", bgcolor=_blend(_OFF_LOW, _OFF_HIGH, math.sqrt(frac)))
            cells.append(Text(txt, style=style))
        cells.append(Text(str(total), style="dim"))
        table.add_row(*cells)
    return table


# The name docs/design.md pins; both are the same function.
confusion_matrix_table = confusion_table
