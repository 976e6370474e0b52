"""Accuracy-vs-label-fraction line charts (plotext) and PNG figures (matplotlib if installed, else a numpy raster)."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bttui.render.scatter import CLASS_COLORS, CLASS_RGB


@dataclass
class Curve:
    """One line: accuracy (%) per label fraction, optional 95% interval (low, high) per point."""

    label: str
    xs: list[float]
    ys: list[float]
    ci: list[tuple[float, float] | None] = field(default_factory=list)
    dashed: bool = False  # the paper's curves are drawn dashed in PNGs and with another marker in the terminal


SERIES_MARKERS = ("x", "o", "+", "*", "#", "@", "%", "&")


def accuracy_chart(curves: Sequence[Curve], *, title: str = "", width: int = 80, height: int = 20,
                   color: bool = True) -> str:
    """The curves as terminal text: x = label fraction (log scale), y = accuracy %, a vertical bar per 95% interval."""
    import plotext as plt

    from bttui.render.format import clean

    plt.clear_figure()
    plt.plotsize(max(30, width), max(10, height))
    plt.theme("clear")
    xs_all = sorted({x for c in curves for x in c.xs})
    for i, c in enumerate(curves):
        if not c.xs:
            continue
        col = CLASS_COLORS[i % len(CLASS_COLORS)]
        # Without colour (NO_COLOR, pipes) the series must still differ: each gets its own character.
        marker = ("hd" if not c.dashed else "x") if color else SERIES_MARKERS[i % len(SERIES_MARKERS)]
        plt.plot(c.xs, c.ys, color=col, marker=marker, label=clean(c.label, single_line=True)[:40])
        for x, ci in zip(c.xs, c.ci or []):
            if ci:  # plotext's error() is symmetric; an interval need not be
                plt.plot([x, x], [ci[0], ci[1]], color=col, marker="│")
    plt.xscale("log")
    if xs_all:
        plt.xticks(xs_all, [f"{x * 100:g}%" for x in xs_all])
    plt.xlabel("label fraction")
    plt.ylabel("test accuracy %")
    if title:
        plt.title(clean(title, single_line=True))
    text = plt.build()
    plt.clear_figure()
    return text if color else plt.uncolorize(text)


# ---------------------------------------------------------------------------- PNG
def write_png(path: str | Path, rgb: Any) -> Path:
    """Write an [H, W, 3] uint8 array as an 8-bit RGB PNG (zlib only; no imaging library needed)."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] array, got shape {arr.shape}")
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


class _Canvas:
    """A white RGB raster with a plot area mapped to data coordinates (for the matplotlib-free PNGs)."""

    def __init__(self, w: int, h: int, xlim: tuple[float, float], ylim: tuple[float, float], margin: int = 40) -> None:
        import numpy as np

        self.img = np.full((h, w, 3), 255, dtype=np.uint8)
        self.w, self.h, self.m = w, h, margin
        self.xlim, self.ylim = xlim, ylim
        self.img[margin:h - margin, margin] = 0  # y axis
        self.img[h - margin, margin:w - margin] = 0  # x axis

    def to_px(self, x: float, y: float) -> tuple[int, int]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        px = self.m + (x - x0) / ((x1 - x0) or 1.0) * (self.w - 2 * self.m)
        py = self.h - self.m - (y - y0) / ((y1 - y0) or 1.0) * (self.h - 2 * self.m)
        return int(round(px)), int(round(py))

    def dot(self, px: int, py: int, rgb: tuple[int, int, int], r: int = 2) -> None:
        self.img[max(0, py - r):max(0, py + r + 1), max(0, px - r):max(0, px + r + 1)] = rgb

    def line(self, a: tuple[int, int], b: tuple[int, int], rgb: tuple[int, int, int], dashed: bool = False) -> None:
        n = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for i in range(n + 1):
            if dashed and (i // 6) % 2:
                continue
            x = int(round(a[0] + (b[0] - a[0]) * i / n))
            y = int(round(a[1] + (b[1] - a[1]) * i / n))
            self.img[max(0, y - 1):y + 1, max(0, x - 1):x + 1] = rgb

    def legend(self, colors: Sequence[tuple[int, int, int]]) -> None:
        # Swatches in the top-right corner, in curve/class order (the text legend goes beside the file).
        for i, rgb in enumerate(colors):
            y = self.m // 2 + i * 10
            if y + 6 < self.h:
                self.img[y:y + 6, self.w - 20:self.w - 8] = rgb


def scatter_png(path: str | Path, coords: Any, labels: Sequence[int], class_names: Sequence[str],
                title: str = "") -> Path:
    """An embedding scatter as PNG, one colour per class."""
    import numpy as np

    pts = np.asarray(coords, dtype=float)
    labels = [int(v) for v in labels]
    if _have_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as mplt

        fig, ax = mplt.subplots(figsize=(7, 6), dpi=100)
        for c, name in enumerate(class_names):
            m = np.asarray(labels) == c
            if m.any():
                ax.scatter(pts[m, 0], pts[m, 1], s=6, label=name, color=np.asarray(CLASS_RGB[c % len(CLASS_RGB)]) / 255)
        ax.set_title(title)
        ax.legend(fontsize=7, markerscale=2)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.savefig(path)
        mplt.close(fig)
        return Path(path)
    pad = lambda lo, hi: (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))  # noqa: E731
    canvas = _Canvas(640, 560, pad(pts[:, 0].min(), pts[:, 0].max()), pad(pts[:, 1].min(), pts[:, 1].max()))
    for (x, y), c in zip(pts, labels):
        canvas.dot(*canvas.to_px(x, y), CLASS_RGB[c % len(CLASS_RGB)])
    canvas.legend([CLASS_RGB[c % len(CLASS_RGB)] for c in range(len(class_names))])
    return write_png(path, canvas.img)


def accuracy_png(path: str | Path, curves: Sequence[Curve], title: str = "") -> Path:
    """Accuracy-vs-label-fraction curves (log x) as PNG, CIs as vertical bars, paper curves dashed."""
    curves = [c for c in curves if c.xs]
    if _have_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as mplt

        fig, ax = mplt.subplots(figsize=(7, 5), dpi=100)
        for i, c in enumerate(curves):
            rgb = [v / 255 for v in CLASS_RGB[i % len(CLASS_RGB)]]
            ax.plot(c.xs, c.ys, "--" if c.dashed else "-", marker="o", color=rgb, label=c.label)
            for x, y, ci in zip(c.xs, c.ys, c.ci or [None] * len(c.xs)):
                if ci:
                    ax.vlines(x, ci[0], ci[1], color=rgb)
        ax.set_xscale("log")
        ax.set_xlabel("label fraction")
        ax.set_ylabel("test accuracy %")
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.savefig(path)
        mplt.close(fig)
        return Path(path)
    xs = [math.log10(x) for c in curves for x in c.xs if x > 0] or [0.0]
    ys = [v for c in curves for v in c.ys] + [b for c in curves for ci in c.ci if ci for b in ci] or [0.0, 100.0]
    canvas = _Canvas(640, 480, (min(xs) - 0.1, max(xs) + 0.1), (max(0.0, min(ys) - 5), min(100.0, max(ys) + 5)))
    for i, c in enumerate(curves):
        rgb = CLASS_RGB[i % len(CLASS_RGB)]
        pts = [canvas.to_px(math.log10(x), y) for x, y in zip(c.xs, c.ys) if x > 0]
        for a, b in zip(pts, pts[1:]):
            canvas.line(a, b, rgb, dashed=c.dashed)
        for p in pts:
            canvas.dot(*p, rgb, r=3)
        for x, ci in zip(c.xs, c.ci or []):
            if ci and x > 0:
                canvas.line(canvas.to_px(math.log10(x), ci[0]), canvas.to_px(math.log10(x), ci[1]), rgb)
    canvas.legend([CLASS_RGB[i % len(CLASS_RGB)] for i in range(len(curves))])
    return write_png(path, canvas.img)
