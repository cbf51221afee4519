"""What every API route module shares: the API's error type, its error body, and base64 image coding."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from fastapi import HTTPException
from PIL import Image, PngImagePlugin, UnidentifiedImageError


class ApiError(HTTPException):
    pass


def _error_body(error: str, detail: Any, body: Any = "", errors: Any = "") -> dict[str, Any]:
    return {"error": error, "detail": detail, "body": body, "errors": errors}


# --- images ------------------------------------------------------------------------------------------------------

def decode_base64_image(data: str, what: str = "image") -> Image.Image:
    """A PIL image from base64, with or without a `data:image/...;base64,` prefix; 400 naming the field if not."""
    if not isinstance(data, str) or not data:
        raise ApiError(400, f"{what}: empty image data")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{what}: invalid base64 ({e})") from e
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"{what}: image too large ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, TypeError, SyntaxError) as e:  # broken TIFFs: the last two
        raise ApiError(400, f"{what}: not an image ({e})") from e
    return image


def encode_png(image: Image.Image, info: str | None) -> str:
    buffer = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    if info:
        meta.add_text("parameters", info)
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()
