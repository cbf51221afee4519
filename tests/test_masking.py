"""Inpainting geometry: the "only masked" crop region and the "fill" masked content."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modules import masking


def test_crop_region_is_the_mask_bounding_box_plus_padding_clipped():
    mask = Image.new("L", (100, 80), 0)
    mask.paste(255, (40, 30, 60, 50))
    assert masking.get_crop_region(mask) == (40, 30, 60, 50)
    assert masking.get_crop_region(mask, 10) == (30, 20, 70, 60)
    assert masking.get_crop_region(mask, 100) == (0, 0, 100, 80)
    assert masking.get_crop_region(Image.new("L", (10, 10), 0)) == (0, 0, 10, 10)


def test_crop_region_grows_to_the_processing_aspect_ratio_inside_the_image():
    # a 20x20 region, processed at 2:1, becomes 40 wide around the same centre
    assert masking.expand_crop_region((40, 30, 60, 50), 128, 64, 100, 80) == (30, 30, 70, 50)
    # near the right edge it is shifted back inside
    assert masking.expand_crop_region((80, 30, 100, 50), 128, 64, 100, 80) == (60, 30, 100, 50)
    # a wide region processed square grows in height, clipped to the image
    assert masking.expand_crop_region((0, 70, 100, 80), 64, 64, 100, 80) == (0, 0, 100, 80)


def test_fill_replaces_the_hole_with_surrounding_colours_only():
    image = Image.new("RGB", (64, 64), (200, 10, 10))
    image.paste((10, 200, 10), (32, 0, 64, 64))   # left red, right green
    image.paste((0, 0, 255), (24, 24, 40, 40))    # blue in the hole: must not leak out
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    result = np.asarray(masking.fill(image, mask)).astype(int)
    original = np.asarray(image).astype(int)
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], original[outside])
    assert result[24:40, 24:40, 2].max() < 40           # no blue left in the hole
    assert result[32, 25, 0] > result[32, 25, 1]         # red side stays reddish
    assert result[32, 38, 1] > result[32, 38, 0]         # green side stays greenish
