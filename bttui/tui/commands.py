"""Command palette entries: every key of the screen the palette was opened from, found by its description."""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


class ScreenKeys(Provider):
    """Offers the current screen's key bindings (``Stop``, ``GPUs``, ``Log scale``...) as palette commands.

    Built from the bindings themselves, so a new key shows up in the palette with no extra code.
    """

    def _entries(self) -> Iterator[tuple[str, Any, str]]:
        screen = self.screen
        seen: set[str] = set()
        for binding in getattr(type(screen), "BINDINGS", []):
            if not isinstance(binding, Binding) or not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            key = self.app.get_key_display(binding)
            yield binding.description, partial(screen.run_action, binding.action), f"key: {key}"

    async def discover(self) -> Hits:
        for label, command, help_text in self._entries():
            yield DiscoveryHit(label, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, command, help_text in self._entries():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), command, help=help_text)
