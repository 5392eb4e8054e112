"""Which build log lines are errors or warnings: the one set of patterns GoBuild uses.

The dashboard highlights and lists the lines `classify_line` calls errors; the notification
service quotes them in failure alerts. Lines are judged without their ANSI escapes, so a
coloured `error:` counts like a plain one.
"""

from __future__ import annotations

import re
from typing import Literal

LineLevel = Literal["error", "warning"]

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks) and the remaining
# two-character escapes.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC, ended by BEL or ST
    r"|\x1b[@-Z\\-_]"  # other Fe escapes
)

_ERROR_PATTERNS = [
    r"^\s*npm (?:ERR!|error)",  # npm 6-9 and npm 10+
    r"^\s*(?:yarn |pnpm )?(?:error|ERROR|Error)(?:\[[\w-]+\])?:",  # error:, Error:, error[E0308]:
    r"^\s*ERR!",
    r"^\s*error\s",  # yarn 1: `error Command failed with exit code 1.`
    r"^\s*(?:\[ERROR\]|ERROR\b)",  # maven, pip, many loggers
    r"(?:^|\s|:)(?:fatal )?error(?: [A-Z]+\d+)?:",  # gcc `a.c:3:1: error:`, tsc `error TS2322:`
    r"^\s*(?:fatal|FATAL|Fatal error)\b:?",  # git `fatal:`, PHP `Fatal error:`
    r"Traceback \(most recent call last\)",  # Python
    r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception):",  # ValueError: / java.io.IOException:
    r"^\s*(?:Uncaught|Unhandled)\b",  # JavaScript
    r"^\s*E {2,}\S",  # pytest's failure detail lines
    r"\bFAILED\b|^\s*FAIL\s",  # pytest, BUILD FAILED, jest `FAIL src/x.test.js`
    r"\bERR_[A-Z0-9_]+\b",  # Node.js error codes
    r"^\s*make(?:\[\d+\])?: \*\*\*",  # make: *** [all] Error 2
    r"\bexit(?:ed with)? (?:code|status) [1-9]\d*\b",  # exit code 1, exited with code 2
    r"\bnon-zero exit (?:status|code)\b",
    r"^\s*panic:|\bpanicked at\b",  # Go, Rust
    r"\bSegmentation fault\b|\bcore dumped\b",
    r"\bcommand not found\b",
    r"^\s*Found [1-9]\d* errors?\b",  # tsc's summary
    r"^\s*Build (?:failed|timed out)\b",  # GoBuild's own last line
]

_WARNING_PATTERNS = [
    r"^\s*npm (?:WARN|warn)\b",
    r"^\s*(?:yarn |pnpm )?(?:warning|WARNING|Warning)(?:\[[\w-]+\])?:",
    r"^\s*warning\s",  # yarn 1: `warning package.json: No license field`
    r"^\s*(?:\[WARN(?:ING)?\]|WARN(?:ING)?\b)",
    r"(?:^|\s|:)warning(?: [A-Z]+\d+)?:",  # gcc `a.c:3:1: warning:`
    r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*Warning:",  # DeprecationWarning:, UserWarning:
    r"\bdeprecated\b",
]

_ERROR = re.compile("|".join(f"(?:{p})" for p in _ERROR_PATTERNS))
_WARNING = re.compile("|".join(f"(?:{p})" for p in _WARNING_PATTERNS), re.IGNORECASE)


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences (colours, cursor moves, hyperlinks)."""
    return _ANSI.sub("", text)


def classify_line(line: str) -> LineLevel | None:
    """`"error"`, `"warning"` or None (an ordinary line) for one line of a build log."""
    plain = strip_ansi(line)
    if _ERROR.search(plain):
        return "error"
    if _WARNING.search(plain):
        return "warning"
    return None
