"""A1111's `modules.api.api`: the names extensions import from it (`encode_pil_to_base64`,
`decode_base64_to_image`, `verify_url`, `script_name_to_index`, `validate_sampler_name`, the `Api` class with
`add_api_route` and the route methods they call directly such as `text2imgapi`). The routes themselves live in
`modules.api` (`add_routes`); this module only adapts names to them. An adapter: nothing in the core uses it."""

from __future__ import annotations

import base64
import io
import ipaddress
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, PngImagePlugin

from modules import auth, shared
from modules.api import models
from modules.api.common import decode_base64_image

_URL_TIMEOUT_S = 30
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def _setting(name: str, default: Any) -> Any:
    return getattr(shared.opts, name, default)


def verify_url(url: str) -> bool:
    """True when every address the URL's host resolves to is a global one (A1111 refuses local-network fetches)."""
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_global for address in addresses)


def _fetch_image(url: str) -> Image.Image:
    if not _setting("api_enable_requests", True):
        raise HTTPException(status_code=500, detail="Requests not allowed")
    if _setting("api_forbid_local_requests", True) and not verify_url(url):
        raise HTTPException(status_code=500, detail="Request to local resource not allowed")
    request = urllib.request.Request(url, headers={"User-Agent": _setting("api_useragent", "") or "Mozilla/5.0"})
    try:
        with urllib.request.urlopen(request, timeout=_URL_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            data = response.read()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Exception as e:
        raise HTTPException(status_code=500, detail="Invalid image url") from e


def decode_base64_to_image(encoding: str) -> Image.Image:
    """A PIL image from base64 text (with or without a "data:image/...;base64," prefix), or from an http(s) URL
    whose host is a global address. Bad data raises HTTPException naming the problem."""
    if isinstance(encoding, str) and encoding.startswith(("http://", "https://")):
        return _fetch_image(encoding)
    return decode_base64_image(encoding, "image")


def encode_pil_to_base64(image: Image.Image) -> bytes:
    """The image as base64 bytes in the `samples_format` setting's format (PNG: its "parameters" text kept; JPEG
    and WebP: as A1111, with the `jpeg_quality` setting). A1111 returns bytes; `.decode()` gives the text."""
    file_format = _FORMATS.get(str(_setting("samples_format", "png")).lower(), "PNG")
    buffer = io.BytesIO()
    if file_format == "PNG":
        pnginfo = PngImagePlugin.PngInfo()
        for key, value in (image.info or {}).items():
            if isinstance(key, str) and isinstance(value, str):
                pnginfo.add_text(key, value)
        image.save(buffer, format="PNG", pnginfo=pnginfo)
    else:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, format=file_format, quality=int(_setting("jpeg_quality", 80)))
    return base64.b64encode(buffer.getvalue())


def script_name_to_index(name: str, scripts: Sequence[Any]) -> int:
    """Index of the script titled `name` (case-insensitive) in `scripts`; 422 when there is none."""
    try:
        return [script.title().lower() for script in scripts].index(name.lower())
    except ValueError as e:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found") from e


def validate_sampler_name(name: str) -> str:
    """`name` when it names a sampler (or an alias); 400 otherwise, as A1111's API."""
    from modules.sampling import samplers

    for sampler in samplers.SAMPLERS:
        if name == sampler.name or name in sampler.aliases:
            return name
    raise HTTPException(status_code=400, detail="Sampler not found")


def upscaler_to_index(name: str) -> int:
    """Position of the upscaler called `name` (case-insensitive) in `shared.sd_upscalers`; 400 when unknown."""
    names = [upscaler.name.lower() for upscaler in shared.sd_upscalers]
    try:
        return names.index(name.lower())
    except ValueError as e:
        raise HTTPException(status_code=400, detail=f"Invalid upscaler, needs to be one of these: "
                                                    f"{' , '.join(u.name for u in shared.sd_upscalers)}") from e


class Api:
    """A1111's `Api(app, queue_lock)`. The /sdapi/v1 routes are already on the application (`modules.api`), so
    constructing one adds none; `add_api_route` puts an extension's route on the app behind --api-auth, as
    A1111's does, and the route methods answer as the routes would."""

    def __init__(self, app: FastAPI, queue_lock: Any = None) -> None:
        self.app = app
        self.queue_lock = queue_lock if queue_lock is not None else shared.queue_lock
        self.credentials = auth.parse_credentials(getattr(shared.cmd_opts, "api_auth", None))

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())) -> bool:  # noqa: B008 (FastAPI form)
        if auth.check(self.credentials, credentials.username, credentials.password):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if self.credentials:
            kwargs["dependencies"] = [*kwargs.get("dependencies", []), Depends(self.auth)]
        self.app.add_api_route(path, endpoint, **kwargs)

    # --- the routes, called directly (extensions such as task queues do) -------------------------------------

    @staticmethod
    def _generate(request: models.Txt2ImgRequest, img2img: bool) -> dict[str, Any]:
        """The route's answer; called from inside a turn of the queue (an extension holding `queue_lock`), the job
        runs right there instead of queueing behind its own caller."""
        from modules import api as routes

        if not shared.runner.in_turn():
            return routes.generate(request, img2img)
        job = routes.checked_build_job(request, img2img)
        routes.attach_scripts(job, request, img2img)
        processed = shared.run_job(job, "img2img" if img2img else "txt2img")
        return routes._response(request, processed, job.init_images if img2img and request.include_init_images
                                else None)

    def text2imgapi(self, txt2imgreq: models.Txt2ImgRequest) -> models.TextToImageResponse:
        return models.TextToImageResponse(**self._generate(txt2imgreq, False))

    def img2imgapi(self, img2imgreq: models.Img2ImgRequest) -> models.ImageToImageResponse:
        return models.ImageToImageResponse(**self._generate(img2imgreq, True))

    def pnginfoapi(self, req: models.PNGInfoRequest) -> models.PNGInfoResponse:
        from modules import api as routes

        return models.PNGInfoResponse(**routes.png_info(req))

    def progressapi(self, req: models.ProgressRequest | None = None) -> models.ProgressResponse:
        from modules import api as routes

        request = req or models.ProgressRequest()
        return models.ProgressResponse(**routes.progress(request.skip_current_image))

    def interruptapi(self) -> dict[str, Any]:
        shared.state.interrupt()
        return {}

    def skip(self) -> None:
        shared.state.skip()

    def get_config(self) -> dict[str, Any]:
        return shared.opts.all_values()

    def set_config(self, req: dict[str, Any]) -> dict[str, Any]:
        from modules import api as routes

        return routes.set_options(req)

    def get_cmd_flags(self) -> dict[str, Any]:
        from modules import api as routes

        return routes.cmd_flags()
