"""The web UI's files: compressed, and cached for as long as they cannot change.

There is no build step, so file names carry no hash. Instead the whole UI folder gets
one version (a hash of every file's bytes, taken at start-up) and ``index.html`` is
served with its two references rewritten to ``v/<version>/app.js`` and ``style.css``.
The modules import each other by relative paths, so every file the page loads lives
under that prefix, and the prefix changes whenever any file does: those responses may
be cached for a year (``immutable``). ``index.html`` itself, and any file asked for
without the current prefix, are revalidated on every use (``no-cache`` plus ``ETag``).

Text files are sent gzip-compressed to clients that accept it; the compressed bytes are
kept in memory (the UI is a few hundred KB), so each file is compressed once; a change
to the UI's files takes effect when the server restarts.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
COMPRESSIBLE = {".js", ".css", ".html", ".json", ".svg", ".txt", ".map"}
MIN_COMPRESS_BYTES = 512
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def ui_version(directory: Path) -> str:
    """A short hash of every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class _Body:
    """One file's bytes, plain and gzip-compressed, with its ETag."""

    def __init__(self, data: bytes, suffix: str) -> None:
        self.plain = data
        self.etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        compress = suffix in COMPRESSIBLE and len(data) >= MIN_COMPRESS_BYTES
        self.gzipped = gzip.compress(data, compresslevel=9, mtime=0) if compress else None
        self.media_type = MEDIA_TYPES.get(suffix)


class UiFiles(StaticFiles):
    """``StaticFiles`` for the UI folder with the versioned prefix, gzip and caching."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, html=True)
        self.root = directory
        self.version = ui_version(directory)
        self.prefix = f"v/{self.version}/"
        self._bodies: dict[str, _Body] = {}
        index = (directory / "index.html").read_text(encoding="utf-8")
        # Relative, so the UI also works mounted under a path prefix.
        index = index.replace('href="style.css"', f'href="{self.prefix}style.css"')
        index = index.replace('src="app.js"', f'src="{self.prefix}app.js"')
        self._index = _Body(index.encode(), ".html")

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            return await super().get_response(path, scope)  # 405
        path = path.lstrip("/")
        if path in ("", ".", "index.html"):
            return self._send(self._index, scope, REVALIDATE)
        cache = REVALIDATE
        if path.startswith("v/"):
            version, _, path = path.removeprefix("v/").partition("/")
            if version == self.version:
                cache = FOREVER
        body = self._body(path)
        if body is None:
            return await super().get_response(path, scope)  # the usual 404 / 405
        return self._send(body, scope, cache)

    def _body(self, path: str) -> _Body | None:
        found = self._bodies.get(path)
        if found is not None:
            return found
        full, stat = self.lookup_path(path)
        if full is None or stat is None or not Path(full).is_file():
            return None
        body = _Body(Path(full).read_bytes(), Path(full).suffix)
        self._bodies[path] = body
        return body

    def _send(self, body: _Body, scope: Scope, cache: str) -> Response:
        headers = Headers(scope=scope)
        common = {"Cache-Control": cache, "ETag": body.etag, "Vary": "Accept-Encoding"}
        if headers.get("if-none-match") == body.etag:
            return Response(status_code=304, headers=common)
        if body.gzipped is not None and "gzip" in headers.get("accept-encoding", ""):
            return Response(
                body.gzipped,
                media_type=body.media_type,
                headers={**common, "Content-Encoding": "gzip"},
            )
        return Response(body.plain, media_type=body.media_type, headers=common)
