"""The Content-Type a deployment file is served with."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Web types pinned so the answer does not depend on the host's /etc/mime.types.
WEB_CONTENT_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".cjs": "application/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".xml": "application/xml",
    ".csv": "text/csv",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
}

# Non-`text/*` types whose content is text: they are served with a charset too.
TEXTUAL_APPLICATION_TYPES = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
    }
)


def content_type_for(name: str) -> str:
    """Content-Type for a file name; text types carry `charset=utf-8`."""
    suffix = PurePosixPath(name).suffix.lower()
    mimetype = WEB_CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0]
    if mimetype is None:
        return DEFAULT_CONTENT_TYPE
    if mimetype.startswith("text/") or mimetype in TEXTUAL_APPLICATION_TYPES:
        return f"{mimetype}; charset=utf-8"
    return mimetype
