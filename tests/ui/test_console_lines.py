"""Console lines as the dashboard shows them: escaped first, colours as fixed classes, carriage
returns collapsed like a terminal, error lines recognised by the shared patterns."""

from __future__ import annotations

from gobuild.ui.console_lines import render_line


def test_markup_in_a_line_is_escaped_and_only_colour_spans_are_added() -> None:
    line = render_line(7, "\x1b[1;31merror:\x1b[0m <script>alert(1)</script> & <img onerror=x>")

    assert line.html == (
        '<span class="ansi-fg-1 ansi-bold">error:</span> '
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img onerror=x&gt;"
    )
    assert line.text == "error: <script>alert(1)</script> & <img onerror=x>"
    assert line.level == "error"
    assert line.for_browser() == {"n": 7, "h": line.html, "l": "error"}


def test_extended_colours_become_computed_hex_styles_and_nothing_else() -> None:
    line = render_line(1, '\x1b[38;5;196mred\x1b[38;2;1;2;300m"rgb"\x1b[48;5;999mx')

    assert line.html == (
        '<span style="color:#ff0000">red</span>'
        '<span style="color:#0102ff">&quot;rgb&quot;</span>'
        '<span style="color:#0102ff">x</span>'
    )


def test_progress_with_carriage_returns_ends_as_its_last_state() -> None:
    assert render_line(1, "fetching 10%\rfetching 55%\rfetching 100%").text == "fetching 100%"
    assert render_line(1, "\x1b[32m 50%\r\x1b[2K\x1b[32mdone\x1b[0m").html == (
        '<span class="ansi-fg-2">done</span>'
    )
    # A carriage return at the end changes nothing until something is printed after it.
    assert render_line(1, "kept\r").text == "kept"


def test_other_escapes_and_control_characters_are_dropped() -> None:
    line = render_line(1, "\x1b]0;title\x07a\x1b[2Jb\x08c\x00")

    assert (line.html, line.text, line.level) == ("abc", "abc", None)
