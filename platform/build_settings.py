"""The rules a build setting follows wherever it is said: in a project's settings (checked by
the gateway) or in a repository's gobuild.toml (checked by the builder). An image must be an
image name; a folder must stay inside the repository."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# An image reference as Docker's distribution/reference grammar has it:
# [registry[:port]/]path[:tag][@digest]. Which images a builder runs is the image policy's
# (`container.image_source`); this only refuses what is not an image name.
_IMAGE_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_REFERENCE = re.compile(
    rf"^(?:{_IMAGE_HOST}(?:\.{_IMAGE_HOST})*(?::[0-9]+)?/)?"
    rf"{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    rf"(?::[\w][\w.-]{{0,127}})?(?:@{_IMAGE_DIGEST})?$"
)
_IMAGE_ID = re.compile(r"^(?:sha256:)?[0-9a-f]{12,64}$")
MAX_IMAGE_REFERENCE = 255
# Longest install, build or test command a project may set.
MAX_COMMAND_LENGTH = 4096
MAX_FOLDER_LENGTH = 1024


class InvalidBuildSetting(ValueError):
    """A build setting breaks its rule; the message names the setting."""


def check_relative_folder(value: str, key: str) -> str:
    """A relative folder inside the repository, normalized (`./dist/` -> `dist`)."""
    if not value.strip():
        raise InvalidBuildSetting(f"'{key}' must not be empty (use '.' for the repository root)")
    if "\x00" in value or "\\" in value:
        raise InvalidBuildSetting(f"'{key}' contains a NUL byte or a backslash")
    if len(value) > MAX_FOLDER_LENGTH:
        raise InvalidBuildSetting(f"'{key}' is longer than {MAX_FOLDER_LENGTH} characters")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise InvalidBuildSetting(f"'{key}' must be a relative path, not {value!r}")
    if ".." in path.parts:
        raise InvalidBuildSetting(f"'{key}' must not contain '..'")
    return str(path)


def check_image_reference(value: str, key: str = "image") -> str:
    """An image name such as `node:20-bookworm` or `ghcr.io/org/image@sha256:...`."""
    image = value.strip()
    if not image:
        raise InvalidBuildSetting(f"'{key}' must not be empty")
    if _IMAGE_ID.match(image):
        raise InvalidBuildSetting(f"'{key}' must name an image (like 'node:20'), not an image id")
    if len(image) > MAX_IMAGE_REFERENCE or not _IMAGE_REFERENCE.match(image):
        raise InvalidBuildSetting(
            f"'{key}' is not an image name like 'node:20' or 'ghcr.io/org/image:tag': "
            f"{image[:80]!r}"
        )
    return image


def check_command(value: str, key: str) -> str:
    """A shell command (`sh -c`); empty switches the step off."""
    if "\x00" in value:
        raise InvalidBuildSetting(f"'{key}' contains a NUL byte")
    if len(value) > MAX_COMMAND_LENGTH:
        raise InvalidBuildSetting(f"'{key}' is longer than {MAX_COMMAND_LENGTH} characters")
    return value
