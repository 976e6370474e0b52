"""Plain-string formatters shared by the CLI and the TUI: durations, losses, accuracies, bytes, times."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Callable

# C0 controls except tab and newline, DEL and the C1 block: a run name or class
# name carrying them could move the cursor or recolour the terminal (ESC = 0x1b).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0x1B: "\\e", 0x07: "\\a", 0x08: "\\b", 0x0B: "\\v", 0x0C: "\\f", 0x0D: "\\r"}


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return _CONTROL_NAMES.get(code, f"\\x{code:02x}")


def clean(value: Any, *, single_line: bool = False) -> str:
    """``str(value)`` with control characters made visible (``\\e`` for ESC), so data never drives the terminal.

    ``single_line`` also turns newlines and tabs into spaces (table cells, list rows).
    """
    text = "" if value is None else str(value)
    text = _CONTROL_RE.sub(_escape_control, text)
    if single_line:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text


def truncate(text: str, width: int) -> str:
    """Cut ``text`` to at most ``width`` characters, marking the cut with an ellipsis."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    return text[: width - 1] + "…"


def _finite(value: Any) -> float | None:
    """A float for numbers (and the event log's "nan"/"inf" strings), None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt_duration(seconds: Any) -> str:
    """Human duration: ``3h12m``, ``41m``, ``1m05s``, ``12s``, ``0.4s``; ``-`` when unknown."""
    s = _finite(seconds)
    if s is None or not math.isfinite(s):
        return "-"
    if s < 0:
        s = 0.0
    if s < 10:
        # Sub-10 s steps and epochs are common on small demos; one decimal keeps them distinct.
        return f"{s:.1f}s"
    total = int(round(s))
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes >= 10:
        return f"{minutes}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def fmt_seconds(seconds: Any) -> str:
    """A short span with a decimal below a minute (``12.3s``, epoch and cell times), else like ``fmt_duration``."""
    s = _finite(seconds)
    if s is not None and 0 <= s < 60:
        return f"{s:.1f}s"
    return fmt_duration(seconds)


def fmt_loss(value: Any) -> str:
    """A loss with 4 significant digits (``812.4``, ``0.01235``, ``1.235e+04``); ``nan``/``inf`` as such."""
    v = _finite(value)
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def fmt_accuracy(value: Any, digits: int = 1) -> str:
    """An accuracy in 0-1 as a percentage, ``63.4%``; ``-`` when unknown."""
    v = _finite(value)
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v * 100:.{digits}f}%"


def fmt_ci(ci: Any, digits: int = 1) -> str:
    """A ``[low, high]`` interval in 0-1 as ``60.1–66.7``; empty when absent or malformed."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return ""
    lo, hi = _finite(ci[0]), _finite(ci[1])
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"{lo * 100:.{digits}f}–{hi * 100:.{digits}f}"


def fmt_fraction(value: Any) -> str:
    """A label fraction in 0-1 as a percentage without needless digits: ``10%``, ``0.5%``, ``100%``."""
    v = _finite(value)
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v * 100:.4g}%"


def fmt_bytes(n: Any) -> str:
    """A size in bytes with binary units: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    v = _finite(n)
    if v is None or not math.isfinite(v):
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while abs(v) >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f"{int(v)} B"
    return f"{v:.1f} {units[i]}" if abs(v) < 100 else f"{v:.0f} {units[i]}"


def fmt_rate(value: Any, unit: str = "img/s") -> str:
    """A throughput with 3 significant digits and the unit: ``1.23k img/s``, ``87.4 img/s``."""
    v = _finite(value)
    if v is None or not math.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v / 1000:.3g}k {unit}"
    return f"{v:.3g} {unit}"


def parse_time(value: Any) -> datetime | None:
    """A datetime from an ISO 8601 string or unix seconds; None when neither."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        return datetime.fromtimestamp(value, tz=timezone.utc)
    try:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def fmt_time(value: Any) -> str:
    """A creation time shown in the local zone, ``2024-11-25 20:58``; the raw text when it does not parse."""
    dt = parse_time(value)
    if dt is None:
        return clean(value, single_line=True) if value else "-"
    return dt.astimezone().strftime("%Y-%m-%d %H:%M")


def inline_value(value: Any, scalar: Callable[[Any], str], key: Callable[[Any], str]) -> str:
    """``value`` in TOML's inline syntax: booleans lower case, lists ``[a, b]``, tables ``{k = v}``, nested.

    ``scalar`` writes every other value (strings, numbers, None) and ``key`` a table's keys: ``fmt_value``
    makes them safe to show, ``bttui.config.load.toml_value`` valid TOML.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline_value(item, scalar, key) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key(k)} = {inline_value(item, scalar, key)}" for k, item in value.items()) + "}"
    return scalar(value)


def _shown_scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return '"' + clean(value, single_line=True).replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return clean(value, single_line=True)


def fmt_value(value: Any) -> str:
    """A config value as TOML-like text: strings quoted, lists bracketed, booleans lower case, None as ``-``."""
    return inline_value(value, _shown_scalar, clean)
