"""The repository layout keeps the standard library's `platform` module reachable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_has_no_init_file() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_import_platform_from_repository_root_gives_the_standard_library() -> None:
    code = "import platform, sys; print(platform.__file__); print(platform.python_version())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    module_file, version = result.stdout.split()
    assert Path(module_file).name == "platform.py"
    assert not Path(module_file).is_relative_to(ROOT)
    assert version == ".".join(map(str, sys.version_info[:3]))


def test_gobuild_platform_imports_as_a_namespace_of_the_gobuild_package() -> None:
    code = "import gobuild.platform.config as c; print(c.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert Path(result.stdout.strip()) == ROOT / "platform" / "config.py"
