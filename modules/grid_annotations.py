"""A1111's grid legends (`images.GridAnnotation`, `images.draw_grid_annotations`): the X/Y/Z plot draws its axis
labels with them, and extensions (LoRA Block Weight) draw their own grids' labels."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOR_ACTIVE = (0, 0, 0)
COLOR_INACTIVE = (153, 153, 153)
COLOR_BACKGROUND = (255, 255, 255)


@dataclasses.dataclass
class GridAnnotation:
    """One legend line (A1111's class): inactive lines are grey and struck through."""

    text: str = ""
    is_active: bool = True
    size: tuple[int, int] | None = None
    allowed_width: int = 0


@functools.lru_cache(maxsize=64)
def get_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at `size` (A1111 ships Roboto; the default font avoids a font file)."""
    try:
        return ImageFont.load_default(size=max(1, size))
    except (TypeError, OSError):  # Pillow without FreeType: one fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(drawing: ImageDraw.ImageDraw, text: str, font: Any, line_length: float) -> list[str]:
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if drawing.textlength(line, font=font) <= line_length or not lines[-1]:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _layout_annotations(width: int, height: int, hor_texts: list[list[GridAnnotation]],
                        ver_texts: list[list[GridAnnotation]]) -> tuple[int, int, int, int, list[int], list[int]]:
    """Wrap the legends (in place) and measure them: (pad_left, pad_top, fontsize, line_spacing, heights of the
    column legends, heights of the row legends), as A1111's draw_grid_annotations does."""
    fontsize = max(1, (width + height) // 25)
    line_spacing = fontsize // 2
    font = get_font(fontsize)
    pad_left = 0 if sum(len(line.text) for lines in ver_texts for line in lines) == 0 else width * 3 // 4
    calc = ImageDraw.Draw(Image.new("RGB", (1, 1), COLOR_BACKGROUND))
    for texts, allowed_width in zip(hor_texts + ver_texts, [width] * len(hor_texts) + [pad_left] * len(ver_texts)):
        items = list(texts)
        texts.clear()
        for line in items:
            texts += [GridAnnotation(x, line.is_active) for x in _wrap(calc, line.text, font, allowed_width)]
        for line in texts:
            bbox = calc.multiline_textbbox((0, 0), line.text, font=font) if line.text else (0, 0, 0, 0)
            line.size = (bbox[2] - bbox[0], bbox[3] - bbox[1])
            line.allowed_width = allowed_width
    hor_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing for lines in hor_texts]
    # A1111 subtracts the spacing once per line here (not once per block); kept so that rows centre as there
    ver_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing * len(lines)
                   for lines in ver_texts]
    pad_top = 0 if sum(hor_heights) <= 0 else max(hor_heights) + line_spacing * 2
    return pad_left, pad_top, fontsize, line_spacing, hor_heights, ver_heights


def annotation_padding(width: int, height: int, hor_labels: Sequence[str], ver_labels: Sequence[str]
                       ) -> tuple[int, int]:
    """(left, top) space the legends of a grid of `width`×`height` cells take (0 where a side has no text)."""
    hor = [[GridAnnotation(text)] for text in hor_labels]
    ver = [[GridAnnotation(text)] for text in ver_labels]
    pad_left, pad_top, *_ = _layout_annotations(width, height, hor, ver)
    return pad_left, pad_top


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0) -> Image.Image:
    """A1111's legends: column texts centred above each column, row texts centred left of each row, cells spaced
    by `margin` pixels. `im` is a grid of `width`×`height` cells without gaps."""
    cols, rows = im.width // width, im.height // height
    if cols != len(hor_texts) or rows != len(ver_texts):
        raise ValueError(f"grid of {cols}x{rows} cells for {len(hor_texts)}x{len(ver_texts)} legends")
    pad_left, pad_top, fontsize, line_spacing, hor_heights, ver_heights = \
        _layout_annotations(width, height, hor_texts, ver_texts)
    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       COLOR_BACKGROUND)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    draw = ImageDraw.Draw(result)

    def draw_texts(x: float, y: float, lines: list[GridAnnotation]) -> None:
        for line in lines:
            size, font = fontsize, get_font(fontsize)
            while draw.textlength(line.text, font=font) > line.allowed_width and size > 1:
                size -= 1  # a single word wider than its cell: a smaller font rather than a clipped word
                font = get_font(size)
            if line.text:
                draw.multiline_text((x, y + line.size[1] / 2), line.text, font=font, anchor="mm", align="center",
                                    fill=COLOR_ACTIVE if line.is_active else COLOR_INACTIVE)
            if not line.is_active:
                middle = y + line.size[1] // 2
                draw.line((x - line.size[0] // 2, middle, x + line.size[0] // 2, middle), fill=COLOR_INACTIVE,
                          width=4)
            y += line.size[1] + line_spacing

    for col in range(cols):
        draw_texts(pad_left + (width + margin) * col + width / 2, pad_top / 2 - hor_heights[col] / 2,
                   hor_texts[col])
    for row in range(rows):
        draw_texts(pad_left / 2, pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2,
                   ver_texts[row])
    return result
