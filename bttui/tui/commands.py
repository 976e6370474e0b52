"""Command palette entries: every key of the current screen, found by its description, and every listed run."""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


class _Entries(Provider):
    """A provider whose commands are ``_entries()``: (label, callback, help text), searched by label."""

    def _entries(self) -> Iterator[tuple[str, Any, str]]:
        raise NotImplementedError

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, command, help_text in self._entries():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), command, help=help_text)


class ScreenKeys(_Entries):
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


class RunCommands(_Entries):
    """``open run <name>`` / ``results of <name>`` for every run the runs screen has listed (no store read)."""

    def _rows(self) -> list[Any]:
        from bttui.tui.screens.runs import RunsScreen

        for screen in self.app.screen_stack:
            if isinstance(screen, RunsScreen):
                return list(screen.all_rows)
        return []

    def _open(self, run_id: str, results: bool) -> None:
        from bttui.tui.screens.detail import RunDetailScreen
        from bttui.tui.screens.results import ResultsScreen

        self.app.push_screen(ResultsScreen(run_id) if results else RunDetailScreen(run_id))

    def _entries(self) -> Iterator[tuple[str, Any, str]]:
        from bttui.render.format import clean

        for row in self._rows():
            name = clean(row.name, single_line=True)
            yield f"open run {name}", partial(self._open, row.id, False), f"{row.status}  {row.id}"
            yield f"results of {name}", partial(self._open, row.id, True), f"{row.status}  {row.id}"
