"""A1111's `modules.extras`: `run_pnginfo(image)` (what the PNG Info tab shows for an image). An adapter: nothing
in the core uses it; the Extras operation itself is `modules.postprocessing`."""

from __future__ import annotations

from PIL import Image

from modules.infotext import read_info_from_image
from modules.ui.a1111_names import plaintext_to_html


def run_pnginfo(image: Image.Image | None) -> tuple[str, str, str]:
    """("", the image's generation parameters, HTML of every info item) as A1111's PNG Info handler returns."""
    if image is None:
        return "", "", ""
    geninfo, items = read_info_from_image(image)
    items = {**({"parameters": geninfo} if geninfo else {}), **items}
    info = ""
    for key, text in items.items():
        if isinstance(text, bytes):
            text = text.decode("utf8", errors="replace")
        info += f"<div><p><b>{plaintext_to_html(str(key))}</b></p><p>{plaintext_to_html(str(text))}</p></div>\n"
    if not info:
        info = "<div><p>Nothing found in the image.</p></div>"
    return "", geninfo or "", info
