"""The dashboard's own CSS: the console (ANSI colours, error lines, search matches) and a few
layout details Tailwind and Quasar do not cover."""

from __future__ import annotations

# The 16 ANSI colours (xterm's defaults, slightly softened for a dark console).
_ANSI_COLOURS = [
    "#3b3b3b", "#e5534b", "#57ab5a", "#c69026", "#539bf5", "#b083f0", "#39c5cf", "#d1d5da",
    "#768390", "#ff6a69", "#6bc46d", "#daaa3f", "#6cb6ff", "#dcbdfb", "#56d4dd", "#ffffff",
]  # fmt: skip


def _ansi_rules() -> str:
    rules = []
    for number, colour in enumerate(_ANSI_COLOURS):
        rules.append(f".ansi-fg-{number} {{ color: {colour}; }}")
        rules.append(f".ansi-bg-{number} {{ background-color: {colour}; }}")
    return "\n".join(rules)


DASHBOARD_CSS = """
.gb-log { position: relative; width: 100%; }
.gb-log-scroll {
  height: 60vh; overflow: auto; background: #1e2228; color: #d1d5da; border-radius: 6px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
  line-height: 1.45; padding: 6px 0;
}
.gb-line { display: flex; white-space: pre-wrap; word-break: break-all; padding: 0 10px;
  content-visibility: auto; contain-intrinsic-size: auto 18px; }
.gb-line:hover { background: #2a2f37; }
.gb-ln { flex: none; width: 5.5em; color: #6e7681; text-align: right; padding-right: 1em;
  user-select: none; }
.gb-text { flex: 1; min-width: 0; }
.gb-error { background: rgba(229, 83, 75, 0.18); }
.gb-error .gb-ln { color: #ff938a; }
.gb-warning { background: rgba(198, 144, 38, 0.12); }
.gb-match { outline: 1px solid #c69026; }
.gb-match-current { background: rgba(198, 144, 38, 0.45) !important; }
.gb-flash { animation: gb-flash 1.6s ease-out; }
@keyframes gb-flash { from { background: rgba(108, 182, 255, 0.6); } to { background: inherit; } }
.gb-log-follow {
  position: absolute; right: 18px; bottom: 14px; background: #539bf5; color: white;
  border: 0; border-radius: 14px; padding: 4px 12px; cursor: pointer; font-size: 12px;
}
.ansi-bold { font-weight: bold; }
.ansi-dim { opacity: 0.7; }
.ansi-italic { font-style: italic; }
.ansi-underline { text-decoration: underline; }
.gb-mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.gb-step-failed { border: 2px solid #c62828; }
""" + _ansi_rules()
