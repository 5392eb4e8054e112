"""The build console element: lines are sent to the browser in batches and kept there up to a
cap; the server never re-sends what the page already shows."""

from __future__ import annotations

from typing import Any

from nicegui.element import Element

from gobuild.ui.console_lines import ConsoleLine


class LogView(Element, component="log_view.js"):
    """A console of numbered lines (see log_view.js)."""

    def __init__(self, max_lines: int) -> None:
        super().__init__()
        self._props["maxLines"] = max_lines
        self.first_held = 0

    def replace(self, lines: list[ConsoleLine]) -> None:
        self.first_held = lines[0].number if lines else 0
        self.run_method("replace", [line.for_browser() for line in lines])

    def append(self, lines: list[ConsoleLine]) -> None:
        if lines and not self.first_held:
            self.first_held = lines[0].number
        self.run_method("append", [line.for_browser() for line in lines])

    def prepend(self, lines: list[ConsoleLine]) -> None:
        if lines:
            self.first_held = lines[0].number
        self.run_method("prepend", [line.for_browser() for line in lines])

    async def jump(self, number: int) -> bool:
        return bool(await self.run_method("jump", number, timeout=5))

    async def search(self, term: str) -> int:
        return int(await self.run_method("search", term, timeout=10) or 0)

    async def step(self, direction: int) -> int:
        return int(await self.run_method("step", direction, timeout=5) or 0)

    def note_first(self, args: Any) -> None:
        """The page told which line it holds first (after trimming or prepending)."""
        if isinstance(args, dict) and isinstance(args.get("first"), int):
            self.first_held = args["first"]
