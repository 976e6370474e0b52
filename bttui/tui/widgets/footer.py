"""A Footer that packs itself at narrow widths, so the help key stays on screen at 80 columns."""

from __future__ import annotations

from textual import events
from textual.widgets import Footer

# Below this many columns the footer drops its padding and the "^p palette" hint (ctrl+p still works).
COMPACT_BELOW = 110


class AdaptiveFooter(Footer):
    """Compact, without the palette hint, below ``COMPACT_BELOW`` columns; the full footer above."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._narrow: bool | None = None

    def on_resize(self, event: events.Resize) -> None:
        self.fit(event.size.width)

    def fit(self, width: int) -> None:
        narrow = width < COMPACT_BELOW
        if narrow == self._narrow:
            return
        self._narrow = narrow
        self.compact = narrow
        self.show_command_palette = not narrow
