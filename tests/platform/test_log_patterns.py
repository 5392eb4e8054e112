"""Error and warning lines of build logs are recognised, with or without colours; ordinary
lines (including ones that merely mention errors) are not."""

from __future__ import annotations

import pytest

from gobuild.platform.log_patterns import classify_line, strip_ansi

ERROR_LINES = [
    "npm ERR! code ELIFECYCLE",
    'npm ERR! Missing script: "build"',
    "npm error code E404",
    "error: could not compile `site` due to 2 previous errors",
    "Error: Cannot find module 'react'",
    "error[E0308]: mismatched types",
    "src/main.c:12:5: error: expected ';' before '}' token",
    "src/app.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
    "Traceback (most recent call last):",
    "ValueError: invalid literal for int() with base 10: 'x'",
    "ModuleNotFoundError: No module named 'flask'",
    'java.lang.NullPointerException: Cannot invoke "String.length()"',
    "FAILED tests/test_app.py::test_index - AssertionError: assert 1 == 2",
    "FAIL src/App.test.js",
    "BUILD FAILED in 3s",
    "fatal: could not read Username for 'https://github.com'",
    "make: *** [Makefile:4: all] Error 2",
    "Process completed with exit code 1.",
    "Build failed: step 'build' exited with code 127",
    "subprocess.CalledProcessError: Command 'x' returned non-zero exit status 2.",
    "  code: 'ERR_MODULE_NOT_FOUND'",
    "Uncaught TypeError: x is not a function",
    "E       assert 1 == 2",
    "panic: runtime error: index out of range [3] with length 3",
    "thread 'main' panicked at src/main.rs:2:5:",
    "sh: 1: vite: not found; bash: vite: command not found",
    "ERROR: Could not find a version that satisfies the requirement nosuchpkg",
    "[ERROR] Failed to execute goal",
    "error Command failed with exit code 1.",
    "Found 3 errors in 2 files.",
    "Segmentation fault (core dumped)",
]

WARNING_LINES = [
    "npm WARN deprecated inflight@1.0.6: This module is not supported",
    "npm warn deprecated glob@7.2.3",
    "warning: unused variable: `x`",
    "src/main.c:3:9: warning: unused variable 'y' [-Wunused-variable]",
    "WARNING: Running pip as the 'root' user",
    "[WARN] No tests found",
    "/app/x.py:3: DeprecationWarning: datetime.utcnow() is deprecated",
    "warning package.json: No license field",
]

ORDINARY_LINES = [
    "",
    "Compiling serde v1.0.200",
    "added 120 packages in 3s",
    "Found 0 errors. Watching for file changes.",
    "Tests: 12 passed, 12 total",
    "3 passed, 0 failed in 0.52s",
    "Step 'build' finished in 2.1s",
    "Process completed with exit code 0.",
    "src/errors.ts compiled",
    "Build succeeded in 4.2s",
    '  File "/app/main.py", line 3, in <module>',
    "> site@1.0.0 build",
]


@pytest.mark.parametrize("line", ERROR_LINES)
def test_error_lines_are_errors(line: str) -> None:
    assert classify_line(line) == "error"


@pytest.mark.parametrize("line", WARNING_LINES)
def test_warning_lines_are_warnings(line: str) -> None:
    assert classify_line(line) == "warning"


@pytest.mark.parametrize("line", ORDINARY_LINES)
def test_ordinary_lines_are_neither(line: str) -> None:
    assert classify_line(line) is None


def test_colours_do_not_hide_an_error_or_make_one() -> None:
    assert classify_line("\x1b[31merror\x1b[39m: could not compile") == "error"
    assert classify_line("\x1b[1m\x1b[31mnpm ERR!\x1b[0m code 1") == "error"
    assert classify_line("\x1b[33mwarning\x1b[0m: unused import") == "warning"
    assert classify_line("\x1b[32m✓ built in 1.2s\x1b[0m") is None


def test_strip_ansi_removes_colours_cursor_moves_and_hyperlinks() -> None:
    assert strip_ansi("\x1b[1;31mred\x1b[0m plain") == "red plain"
    assert strip_ansi("\x1b[2K\x1b[1Gprogress 50%") == "progress 50%"
    assert strip_ansi("\x1b]8;;https://example.com\x07link\x1b]8;;\x07") == "link"
    assert strip_ansi("no escapes") == "no escapes"
