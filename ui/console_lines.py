"""One line of a build's console as the browser shows it: carriage returns collapsed the way a
terminal shows them, ANSI colours turned into HTML *after* the text is escaped, and the line's
level (error, warning) from `gobuild.platform.log_patterns`.

The HTML made here is the only HTML the dashboard builds from build output: text goes through
`html.escape` first, and the markup around it comes from a fixed set of class names and colours
computed from integers, so nothing a build prints can become markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace

from gobuild.platform.log_patterns import LineLevel, classify_line

# CSI sequences (SGR colours are the ones kept), OSC sequences and two-character escapes.
_ESCAPE = re.compile(
    r"\x1b\[(?P<params>[0-?]*)[ -/]*(?P<final>[@-~])"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]?"
)
# Control characters a terminal would not print (tab, CR and LF are handled apart).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BASIC_COLOURS = 16


@dataclass(frozen=True)
class Style:
    """The SGR state: colours are 0-15 (basic, bright), or an `#rrggbb` string."""

    fg: int | str | None = None
    bg: int | str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def apply(self, params: str) -> Style:
        codes = [int(code) if code.isdigit() else 0 for code in params.split(";")] or [0]
        style = self
        index = 0
        while index < len(codes):
            code = codes[index]
            index += 1
            if code == 0:
                style = Style()
            elif code == 1:
                style = replace(style, bold=True)
            elif code == 2:
                style = replace(style, dim=True)
            elif code == 3:
                style = replace(style, italic=True)
            elif code == 4:
                style = replace(style, underline=True)
            elif code == 22:
                style = replace(style, bold=False, dim=False)
            elif code == 23:
                style = replace(style, italic=False)
            elif code == 24:
                style = replace(style, underline=False)
            elif 30 <= code <= 37:
                style = replace(style, fg=code - 30)
            elif 90 <= code <= 97:
                style = replace(style, fg=code - 90 + 8)
            elif code == 39:
                style = replace(style, fg=None)
            elif 40 <= code <= 47:
                style = replace(style, bg=code - 40)
            elif 100 <= code <= 107:
                style = replace(style, bg=code - 100 + 8)
            elif code == 49:
                style = replace(style, bg=None)
            elif code in (38, 48):
                colour, index = _extended_colour(codes, index)
                if colour is not None:
                    style = replace(style, **{"fg" if code == 38 else "bg": colour})
        return style

    def wrap(self, escaped: str) -> str:
        """`escaped` text inside a span carrying this style (or bare for the default style)."""
        classes = []
        styles = []
        for name, colour in (("fg", self.fg), ("bg", self.bg)):
            if isinstance(colour, int):
                classes.append(f"ansi-{name}-{colour}")
            elif isinstance(colour, str):
                styles.append(f"{'color' if name == 'fg' else 'background-color'}:{colour}")
        for flag in ("bold", "dim", "italic", "underline"):
            if getattr(self, flag):
                classes.append(f"ansi-{flag}")
        if not classes and not styles:
            return escaped
        attributes = f' class="{" ".join(classes)}"' if classes else ""
        if styles:
            attributes += f' style="{";".join(styles)}"'
        return f"<span{attributes}>{escaped}</span>"


def _extended_colour(codes: list[int], index: int) -> tuple[str | int | None, int]:
    """`38;5;n` (256 colours) or `38;2;r;g;b` (true colour) starting at `codes[index]`."""
    if index < len(codes) and codes[index] == 5 and index + 1 < len(codes):
        number = codes[index + 1]
        return (_xterm_colour(number) if 0 <= number <= 255 else None), index + 2
    if index < len(codes) and codes[index] == 2 and index + 3 < len(codes):
        red, green, blue = (min(max(c, 0), 255) for c in codes[index + 1 : index + 4])
        return f"#{red:02x}{green:02x}{blue:02x}", index + 4
    return None, len(codes)


def _xterm_colour(number: int) -> int | str:
    if number < _BASIC_COLOURS:
        return number
    if number < 232:
        number -= _BASIC_COLOURS
        steps = [0, 95, 135, 175, 215, 255]
        red, green, blue = steps[number // 36], steps[number // 6 % 6], steps[number % 6]
        return f"#{red:02x}{green:02x}{blue:02x}"
    grey = 8 + (number - 232) * 10
    return f"#{grey:02x}{grey:02x}{grey:02x}"


@dataclass(frozen=True)
class ConsoleLine:
    """A numbered console line: safe HTML for the page, plain text for search and summaries."""

    number: int
    html: str
    text: str
    level: LineLevel | None = None

    def for_browser(self) -> dict[str, object]:
        return {"n": self.number, "h": self.html, "l": self.level or ""}


@dataclass
class _Builder:
    pieces: list[tuple[Style, str]] = field(default_factory=list)
    carriage_return: bool = False

    def add(self, style: Style, text: str) -> None:
        text = _CONTROL.sub("", text)
        parts = text.split("\r")
        for position, part in enumerate(parts):
            if position:
                self.carriage_return = True
            if not part:
                continue
            if self.carriage_return:
                # Printing after a carriage return overwrites the line: progress bars (npm,
                # pip, curl) end showing their last state only.
                self.pieces.clear()
                self.carriage_return = False
            self.pieces.append((style, part))


def render_line(number: int, raw: str) -> ConsoleLine:
    """The line as a terminal would end up showing it, as escaped HTML and as plain text."""
    builder = _Builder()
    style = Style()
    position = 0
    for match in _ESCAPE.finditer(raw):
        builder.add(style, raw[position : match.start()])
        if match.group("final") == "m":
            style = style.apply(match.group("params") or "0")
        position = match.end()
    builder.add(style, raw[position:])
    text = "".join(part for _, part in builder.pieces)
    markup = "".join(piece_style.wrap(html.escape(part)) for piece_style, part in builder.pieces)
    return ConsoleLine(number=number, html=markup, text=text, level=classify_line(text))
