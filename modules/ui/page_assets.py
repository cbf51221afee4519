"""The page's extra `<head>`: A1111's page helpers, then the enabled extensions' JavaScript and CSS, as files.

A1111 serves its `script.js` and every extension's `javascript/*.js` by URL (`<script src=…>`), in a fixed order:
its own helpers first, then each enabled extension's files (sorted by name) in extension order, and links each
extension's `style.css`. Here the same order is built by `page_head`:

    javascript/a1111_page.js            the globals extension scripts use (gradioApp, onUiLoaded, opts …)
    <extension>/javascript/*.js, *.mjs  every enabled extension, in `extensions.list_extensions` order
    javascript/a1111_ready.js           starts the callbacks once every script above has registered its own
    <extension>/style.css               as stylesheet links

Each file is served by `GET /webui-page/file/<key>?<mtime>`, where `<key>` is looked up in the list `page_head`
made, so only those files can be read (no path from the request reaches the file system) and a changed file gets
a new URL. Serving by URL means no file's text can break another's: a `.js` containing `</script` is harmless.
Gradio puts the `head` HTML into the page with `async = false` on each script, so they run in this order.

`mount(app)` adds the routes: the files, `GET /webui-page/opts` (the current settings as JSON: the page's `opts`
global, which works without `--api`), A1111's `POST /internal/progress` (what its `requestProgress` polls) and
A1111's `GET /file=<path>`, with which extension scripts read their own data files (tag lists, images) — here only
from enabled extensions' folders and `tmp/` (A1111's Gradio 3 served its whole working directory). With a Gradio
login, every one of them needs it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, Response

from modules import extensions

log = logging.getLogger("webui.page_assets")

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/webui-page"
PAGE_HELPERS = ROOT / "javascript" / "a1111_page.js"
PAGE_READY = ROOT / "javascript" / "a1111_ready.js"
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


@dataclass(frozen=True)
class PageFile:
    key: str    # the URL part after /webui-page/file/
    path: Path

    @property
    def url(self) -> str:
        try:
            mtime = int(os.path.getmtime(self.path))
        except OSError:
            mtime = 0
        return f"{ROUTE.lstrip('/')}/file/{quote(self.key)}?{mtime}"  # relative: works under a root path


_served: dict[str, Path] = {}  # key → file, for the file route: exactly what the last page_head listed
_file_roots: list[Path] = []   # folders A1111's `file=` route may serve from (see `resolve_a1111_file`)


def _extension_files(extension: extensions.Extension) -> tuple[list[PageFile], list[PageFile]]:
    """(scripts, stylesheets) of one extension, scripts sorted by file name as A1111 does."""
    prefix = f"{'builtin' if extension.is_builtin else 'ext'}/{extension.name}"
    scripts: list[PageFile] = []
    js_dir = Path(extension.path, "javascript")
    if js_dir.is_dir():
        for name in sorted(os.listdir(js_dir)):
            if name.endswith((".js", ".mjs")) and (js_dir / name).is_file():
                scripts.append(PageFile(f"{prefix}/javascript/{name}", js_dir / name))
    style = Path(extension.path, "style.css")
    return scripts, [PageFile(f"{prefix}/style.css", style)] if style.is_file() else []


def _page_extensions(opts: Any, cmd_opts: Any,
                     extension_filter: Callable[[extensions.Extension], bool] | None) -> list[extensions.Extension]:
    """The enabled extensions the filter keeps, in `extensions.list_extensions` order."""
    return [e for e in extensions.list_extensions(opts, cmd_opts)
            if e.enabled and (extension_filter is None or extension_filter(e))]


def page_files(opts: Any, cmd_opts: Any,
               extension_filter: Callable[[extensions.Extension], bool] | None = None,
               page_extensions: list[extensions.Extension] | None = None) -> list[PageFile]:
    """Every file of the page's head in A1111's order: helpers, extension scripts, the start, stylesheets."""
    scripts = [PageFile("webui/javascript/a1111_page.js", PAGE_HELPERS)]
    stylesheets: list[PageFile] = []
    if page_extensions is None:
        page_extensions = _page_extensions(opts, cmd_opts, extension_filter)
    for extension in page_extensions:
        extension_scripts, extension_styles = _extension_files(extension)
        scripts += extension_scripts
        stylesheets += extension_styles
    return [*scripts, PageFile("webui/javascript/a1111_ready.js", PAGE_READY), *stylesheets]


def page_head(opts: Any, cmd_opts: Any,
              extension_filter: Callable[[extensions.Extension], bool] | None = None) -> str:
    """The `<head>` HTML that loads the page helpers and the extensions' files (and allows the file route to serve
    exactly those). `extension_filter(extension)` False leaves an enabled extension's files out."""
    page_extensions = _page_extensions(opts, cmd_opts, extension_filter)
    files = page_files(opts, cmd_opts, page_extensions=page_extensions)
    _served.clear()
    _served.update({f.key: f.path for f in files})
    _file_roots[:] = [ROOT / "tmp", *(Path(e.path) for e in page_extensions)]
    tags = []
    for f in files:
        url = html.escape(f.url, quote=True)
        if f.path.suffix == ".css":
            tags.append(f'<link rel="stylesheet" property="stylesheet" href="{url}">')
        elif f.path.suffix == ".mjs":
            tags.append(f'<script type="module" src="{url}"></script>')
        else:
            tags.append(f'<script src="{url}"></script>')
    return "\n".join(tags)


# --- routes ---------------------------------------------------------------------------------------------------------

def _logged_in(app: Any, request: Any) -> bool:
    """Gradio's own login rule for its routes (routes added to its app are not behind it by themselves)."""
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    if getattr(app, "auth_dependency", None) is not None:
        return app.auth_dependency(request) is not None
    cookie_id = getattr(app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}")
    return getattr(app, "tokens", {}).get(token) is not None


def resolve_a1111_file(requested: str) -> Path | None:
    """The file A1111's `file=<path>` URL names, when it may be served: a relative path is taken from the WebUI's
    folder (A1111's working directory), and the file must lie in an enabled extension's folder or in `tmp/` (where
    extensions write what their page scripts read), with no hidden (dot) folder or file on the way."""
    path = Path(requested)
    target = Path(os.path.realpath(path if path.is_absolute() else ROOT / path))
    for root in _file_roots:
        real_root = Path(os.path.realpath(root))
        if target.is_relative_to(real_root):
            inside = target.relative_to(real_root).parts
            if inside and not any(part.startswith(".") for part in inside) and target.is_file():
                return target
    return None


def current_options_json() -> str:
    from modules import shared

    return json.dumps(shared.opts.all_values(), default=str)


def progress_record(id_task: str | None, id_live_preview: int = -1, live_preview: bool = True) -> dict[str, Any]:
    """A1111's `/internal/progress` answer (`modules.progress.progressapi`) with its live preview: the current
    image as a data URL when the task is running and the image is newer than `id_live_preview`."""
    from modules import progress, shared

    record = progress.progressapi({"id_task": id_task})
    image, step = shared.state.current_image, shared.state.current_image_step
    if record["active"] and live_preview and image is not None and step != id_live_preview:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        record["live_preview"] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        record["id_live_preview"] = step
    return record


def mount(app: Any) -> None:
    """The page's routes onto the running Gradio app, ahead of Gradio's catch-all route."""
    def file_route(key: str, request: Request) -> Response:
        path = _served.get(key)
        if not _logged_in(app, request):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        if path is None or not path.is_file():
            return JSONResponse({"detail": f"Not a page file: {key}"}, status_code=404)
        # the URL carries the file's mtime, so a changed file has a new URL and this one may be kept
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "max-age=86400"})

    def options_route(request: Request) -> Response:
        if not _logged_in(app, request):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        return Response(current_options_json(), media_type="application/json", headers={"Cache-Control": "no-store"})

    async def progress_route(request: Request) -> Response:
        if not _logged_in(app, request):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        try:
            id_live_preview = int(body.get("id_live_preview", -1))
        except (TypeError, ValueError):
            id_live_preview = -1
        return JSONResponse(progress_record(body.get("id_task"), id_live_preview,
                                            bool(body.get("live_preview", True))))

    def a1111_file_route(path: str, request: Request) -> Response:
        if not _logged_in(app, request):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        target = resolve_a1111_file(path)
        if target is None:
            return JSONResponse({"detail": f"File not allowed: {path}"}, status_code=404)
        return FileResponse(target, headers={"Cache-Control": "no-cache"})

    app.add_api_route(f"{ROUTE}/file/{{key:path}}", file_route, methods=["GET"], include_in_schema=False)
    app.add_api_route("/file={path:path}", a1111_file_route, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{ROUTE}/opts", options_route, methods=["GET"], include_in_schema=False)
    app.add_api_route("/internal/progress", progress_route, methods=["POST"], include_in_schema=False)
    ours = (ROUTE, "/internal/progress", "/file=")
    app.router.routes[:] = sorted(app.router.routes, key=lambda r: not getattr(r, "path", "").startswith(ours))
