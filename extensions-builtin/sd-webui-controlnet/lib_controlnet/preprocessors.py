"""ControlNet preprocessors ("modules"): turn an input picture into the control map a ControlNet model reads.

Names, labels, sliders (label, range, default), tags and list order follow sd-webui-controlnet 1.1.4xx, so its API
calls (`"module": "canny"`), saved infotext (`Module: depth_midas`) and `/controlnet/control_types` answers carry
over. Each preprocessor has:

- `name`: the name the extension's UI shows and writes in infotext ("depth_midas",
  "invert (from white bg & black line)"); the canonical key of `PREPROCESSORS`. `label` is the same text (the
  extension separates the two; here the shown name is the key).
- `api_name`: the extension's internal key ("depth", "invert"), what `/controlnet/module_list` returns without
  `alias_names`; resolved through `ALIASES`, like the extension's older names.

Weight-free preprocessors are written here with OpenCV/numpy. Those that run a network (HED, PiDiNet, lineart,
MiDaS, OpenPose, ...) live in `annotators.py` and read their weight files from the folder the caller passes
(`models/ControlNet/annotators/`); nothing is ever downloaded.

`Preprocessor.run` takes an HxWxC uint8 RGB picture (C = 1, 3 or 4; RGBA is composited on white, as the extension's
HWC3 does) and returns an HxWx3 uint8 RGB map. A preprocessor with a resolution slider first scales the picture so
its short side is `resolution` (edge-padded to a multiple of 64 while detecting, the padding removed after), and
returns the map at that size; the others work at the input size. The inpaint preprocessors are the exception: they
return float32 (see `inpaint_hint`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np

from . import annotators

MissingAnnotatorError = annotators.MissingAnnotatorError
AnnotatorUnavailableError = annotators.AnnotatorUnavailableError

PAD_MULTIPLE = 64  # the extension detects on a picture padded to a multiple of 64 (the annotator nets need it)
SHUFFLE_RESOLUTION = 512  # the extension hides shuffle's resolution slider and fixes it at 512
SHUFFLE_NOISE_CELL = 256  # size of the smooth random flow's cells (the extension's content-shuffle default)
COLOR_GRID_CELL = 64  # t2ia_color_grid: one colour per 64x64 cell


class Slider(NamedTuple):
    """One slider of the extension's UI: label, range, default value and step."""

    label: str
    minimum: float
    maximum: float
    default: float
    step: float = 0.01  # the extension's default step where it names none

    def api_json(self) -> dict[str, Any]:
        """The extension's `/controlnet/module_list` `module_detail` entry for this slider."""
        return {"name": self.label, "value": self.default, "min": self.minimum, "max": self.maximum,
                "step": self.step}


RESOLUTION = Slider("Resolution", 64, 2048, 512, 8)


@dataclass(frozen=True)
class RunOptions:
    """Everything a preprocessor function may need besides the picture and the two thresholds."""

    annotators_dir: str
    mask: np.ndarray | None = None
    seed: int = 0
    device: str = "cpu"


PreprocessFn = Callable[[np.ndarray, int, float, float, RunOptions], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    """One preprocessor as the extension lists it, with the function that makes its control map."""

    name: str
    label: str
    resolution: Slider | None
    threshold_a: Slider | None
    threshold_b: Slider | None
    needs_files: tuple[str, ...]
    api_name: str
    tags: tuple[str, ...] = ()
    priority: int = 0  # the extension's sorting priority: higher is listed first
    is_inpaint: bool = False
    is_reference: bool = False
    fn: PreprocessFn = field(default=lambda image, *_: image, repr=False, compare=False)

    def run(self, image: np.ndarray, resolution: int | None = None, threshold_a: float | None = None,
            threshold_b: float | None = None, annotators_dir: str = "", *, mask: np.ndarray | None = None,
            seed: int | None = None, device: str = "cpu") -> np.ndarray:
        """The control map of `image` (HxWxC uint8 RGB). None for a slider means its default.

        `mask` (HxW or HxWxC, nonzero/>127 = masked) is used by the inpaint preprocessors only (an RGBA picture's
        alpha channel is taken as the mask when none is given). `seed` makes `shuffle` reproducible (default 0).
        `device` is where an annotator network runs ("cpu" unless given).
        """
        if self.is_inpaint:
            return self.fn(image, 0, 0.0, 0.0, RunOptions(annotators_dir, mask=mask))
        picture = to_rgb(image)
        res = int(resolution if resolution is not None else (self.resolution or RESOLUTION).default)
        if res < 1:
            raise ValueError(f"Preprocessor resolution must be positive, got {res}")
        a = float(threshold_a if threshold_a is not None else (self.threshold_a.default if self.threshold_a else 0))
        b = float(threshold_b if threshold_b is not None else (self.threshold_b.default if self.threshold_b else 0))
        options = RunOptions(annotators_dir, seed=0 if seed is None else int(seed), device=device)
        return self.fn(picture, res, a, b, options)


# ---------------------------------------------------------------------------------------------------------------
# Picture helpers


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from gray (HxW, HxWx1), RGB or RGBA (composited on white, the extension's HWC3)."""
    if image.dtype != np.uint8:
        raise ValueError(f"Preprocessor input must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"Preprocessor input must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        blended = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return blended.clip(0, 255).astype(np.uint8)
    return image


def scale_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """`image` scaled so its short side is `resolution` (cubic up, area down), aspect ratio kept."""
    height, width = image.shape[:2]
    scale = float(resolution) / float(min(height, width))
    size = (int(round(width * scale)), int(round(height * scale)))
    if size == (width, height):
        return image
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interpolation)


def resize_with_pad(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(picture at short side `resolution`, edge-padded at right/bottom to a multiple of 64; the function that
    crops a map of the padded size back to the unpadded one)."""
    scaled = scale_short_side(image, resolution)
    height, width = scaled.shape[:2]
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    padded = np.pad(scaled, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")

    def remove_pad(result: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(result[:height, :width])

    return np.ascontiguousarray(padded), remove_pad


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if gray.ndim == 2 else gray


def smooth_noise(height: int, width: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """HxW float32 noise in [0, 1] that varies smoothly over `cell` pixels (coarse uniform noise, cubic upscale)."""
    coarse = rng.uniform(0.0, 1.0, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    fine = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    fine = fine[cell:cell + height, cell:cell + width]
    fine -= fine.min()
    return fine / max(float(fine.max()), 1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Weight-free preprocessors: (rgb, resolution, threshold_a, threshold_b, options) -> map


def identity(image: np.ndarray, *_: Any) -> np.ndarray:
    return image


def canny(image: np.ndarray, resolution: int, low: float, high: float, _: RunOptions) -> np.ndarray:
    padded, remove_pad = resize_with_pad(image, resolution)
    return gray_to_rgb(remove_pad(cv2.Canny(padded, int(low), int(high))))


def invert(image: np.ndarray, *_: Any) -> np.ndarray:
    return 255 - image


def threshold(image: np.ndarray, resolution: int, level: float, _b: float, _: RunOptions) -> np.ndarray:
    """White where every channel is above `level`, black elsewhere."""
    padded, remove_pad = resize_with_pad(image, resolution)
    result = np.where(padded.min(axis=2) > level, 255, 0).astype(np.uint8)
    return gray_to_rgb(remove_pad(result))


def scribble_xdog(image: np.ndarray, resolution: int, level: float, _b: float, _: RunOptions) -> np.ndarray:
    """XDoG sketch: white where a pixel is darker than its wide surround (wide minus sharp Gaussian blur, darkest
    channel) by more than `level` / 2."""
    padded, remove_pad = resize_with_pad(image, resolution)
    picture = padded.astype(np.float32)
    wide_minus_sharp = np.min(cv2.GaussianBlur(picture, (0, 0), 5.0) - cv2.GaussianBlur(picture, (0, 0), 0.5), axis=2)
    # through uint8 as the extension does, so the threshold falls on the same pixels
    darkness = 255 - np.clip(255 - wide_minus_sharp, 0, 255).astype(np.uint8).astype(np.int32)
    result = np.where(2 * darkness > level, 255, 0).astype(np.uint8)
    return gray_to_rgb(remove_pad(result))


def lineart_standard(image: np.ndarray, resolution: int, _a: float, _b: float, _: RunOptions) -> np.ndarray:
    """Lines of a drawing on white: how much darker each pixel is than its blurred surround, normalised by the
    median line strength so faint and strong drawings come out alike."""
    padded, remove_pad = resize_with_pad(image, resolution)
    picture = padded.astype(np.float32)
    darkness = np.min(cv2.GaussianBlur(picture, (0, 0), 6.0) - picture, axis=2).clip(0, 255)
    strong = darkness[darkness > 8]
    darkness /= max(16.0, float(np.median(strong)) if strong.size else 0.0)
    return gray_to_rgb(remove_pad((darkness * 127).clip(0, 255).astype(np.uint8)))


def blur_gaussian(image: np.ndarray, resolution: int, sigma: float, _b: float, _: RunOptions) -> np.ndarray:
    scaled = scale_short_side(image, resolution)
    return cv2.GaussianBlur(scaled, (0, 0), max(float(sigma), 0.01))


def tile_resample(image: np.ndarray, _res: int, rate: float, _b: float, _: RunOptions) -> np.ndarray:
    """The picture shrunk by the down-sampling rate (kept as is below 1.1, as in the extension)."""
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def color_grid(image: np.ndarray, resolution: int, _a: float, _b: float, _: RunOptions) -> np.ndarray:
    """t2ia_color_grid: the picture at short side `resolution`, averaged to one colour per 64x64 cell."""
    scaled = cv2.resize(image, scale_short_side_size(image, resolution), interpolation=cv2.INTER_AREA)
    height, width = scaled.shape[:2]
    cells = cv2.resize(scaled, (max(1, width // COLOR_GRID_CELL), max(1, height // COLOR_GRID_CELL)),
                       interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cells, (width, height), interpolation=cv2.INTER_NEAREST)


def scale_short_side_size(image: np.ndarray, resolution: int) -> tuple[int, int]:
    """(width, height) with the short side `resolution` (the colour grid's own rounding: long side rounded)."""
    height, width = image.shape[:2]
    if height < width:
        return int(round(width / height * resolution)), resolution
    return resolution, int(round(height / width * resolution))


def shuffle(image: np.ndarray, _res: int, _a: float, _b: float, options: RunOptions) -> np.ndarray:
    """Content shuffle: every pixel fetched from a place given by a smooth random flow drawn from `seed`."""
    scaled = scale_short_side(image, SHUFFLE_RESOLUTION)
    height, width = scaled.shape[:2]
    rng = np.random.default_rng(options.seed)
    flow_x = smooth_noise(height, width, SHUFFLE_NOISE_CELL, rng) * float(width - 1)
    flow_y = smooth_noise(height, width, SHUFFLE_NOISE_CELL, rng) * float(height - 1)
    return cv2.remap(scaled, flow_x, flow_y, cv2.INTER_LINEAR)


def recolor_luminance(image: np.ndarray, _res: int, gamma: float, _b: float, _: RunOptions) -> np.ndarray:
    # The extension converts its RGB array with OpenCV's BGR->LAB; kept so maps match the extension's.
    lightness = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0].astype(np.float32) / 255.0
    return gray_to_rgb((lightness ** gamma * 255.0).clip(0, 255).astype(np.uint8))


def recolor_intensity(image: np.ndarray, _res: int, gamma: float, _b: float, _: RunOptions) -> np.ndarray:
    value = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 2].astype(np.float32) / 255.0
    return gray_to_rgb((value ** gamma * 255.0).clip(0, 255).astype(np.uint8))


def binary_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW bool: True where masked (uint8 > 127, float > 0.5, bool True), resized to the picture if needed."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.dtype == np.bool_:
        masked = mask
    elif np.issubdtype(mask.dtype, np.floating):
        masked = mask > 0.5
    else:
        masked = mask > 127
    if masked.shape != (height, width):
        resized = cv2.resize(masked.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        masked = resized > 0
    return masked


def inpaint_hint(image: np.ndarray, _res: int, _a: float, _b: float, options: RunOptions) -> np.ndarray:
    """The ControlNet inpaint hint: float32 HxWx3, the picture in [0, 1] with every masked pixel set to -1.

    This is the extension's inpaint protocol (`hint = colour * (1 - mask) - mask`, colour in [0, 1]): the
    ControlNet inpaint model reads -1 as "to be filled". The mask is `mask`, else the alpha channel of an RGBA
    picture (the extension's way of passing it). inpaint_only+lama gives the same hint: the extension's LaMa fill
    only repaints the masked pixels, which the hint replaces by -1 anyway.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"Inpaint preprocessor input must be an HxWxC uint8 picture, got {image.dtype} {image.shape}")
    mask = options.mask
    if mask is None and image.ndim == 3 and image.shape[2] == 4:
        mask = image[:, :, 3]
    if mask is None:
        raise ValueError("Inpaint preprocessors need a mask: pass mask=... or an RGBA picture whose alpha is the mask")
    colour = image[:, :, :3] if image.ndim == 3 and image.shape[2] == 4 else to_rgb(image)
    hint = colour.astype(np.float32) / 255.0
    hint[binary_mask(mask, *hint.shape[:2])] = -1.0
    return hint


def annotator_preprocessor(name: str) -> PreprocessFn:
    """A preprocessor that runs the annotator network `name` (annotators.py) on the padded, resized picture."""
    def run(image: np.ndarray, resolution: int, a: float, b: float, options: RunOptions) -> np.ndarray:
        padded, remove_pad = resize_with_pad(image, resolution)
        detected = annotators.detect(name, padded, a, b, options.annotators_dir, options.device)
        return gray_to_rgb(remove_pad(detected))
    return run


# ---------------------------------------------------------------------------------------------------------------
# The registry


STYLE_FIDELITY = Slider("Style Fidelity (only for Balanced mode)", 0.0, 1.0, 0.5)
GAMMA = Slider("Gamma Correction", 0.1, 2.0, 1.0, 0.001)
VARIATION = Slider("Variation", 3.0, 32.0, 8.0, 1.0)


def _entry(name: str, tags: tuple[str, ...], fn: PreprocessFn, *, api_name: str = "", priority: int = 0,
           resolution: Slider | None = RESOLUTION, a: Slider | None = None, b: Slider | None = None,
           **flags: bool) -> Preprocessor:
    return Preprocessor(name=name, label=name, resolution=resolution, threshold_a=a, threshold_b=b,
                        needs_files=annotators.ANNOTATOR_FILES.get(name, ()), api_name=api_name or name,
                        tags=tags, priority=priority, fn=fn, **flags)


def _annotator_entry(name: str, tags: tuple[str, ...], **kwargs: Any) -> Preprocessor:
    return _entry(name, tags, annotator_preprocessor(name), **kwargs)


_ENTRIES = [
    _entry("none", ("InstructP2P",), identity, priority=10, resolution=None),
    _entry("invert (from white bg & black line)", ("Canny", "Lineart", "Scribble", "MLSD"), invert,
           api_name="invert", priority=20, resolution=None),
    _entry("canny", ("Canny",), canny, priority=100, a=Slider("Low Threshold", 1, 255, 100, 1),
           b=Slider("High Threshold", 1, 255, 200, 1)),
    _entry("threshold", (), threshold, a=Slider("Binarization Threshold", 0, 255, 127)),
    _entry("scribble_xdog", ("Scribble", "SparseCtrl"), scribble_xdog, a=Slider("XDoG Threshold", 1, 64, 32)),
    _entry("blur_gaussian", ("Tile",), blur_gaussian, a=Slider("Sigma", 0.01, 64.0, 9.0)),
    _entry("tile_resample", ("Tile",), tile_resample, priority=100, resolution=None,
           a=Slider("Down Sampling Rate", 1.0, 8.0, 1.0)),
    # The colour fix itself works on the latents while sampling (the extension's hook), not on the picture.
    _entry("tile_colorfix", ("Tile",), identity, resolution=None, a=VARIATION),
    _entry("tile_colorfix+sharp", ("Tile",), identity, resolution=None, a=VARIATION,
           b=Slider("Sharpness", 0.0, 2.0, 1.0)),
    _entry("t2ia_color_grid", ("T2I-Adapter",), color_grid, api_name="color"),
    _entry("shuffle", ("Shuffle",), shuffle, resolution=None),
    _entry("lineart_standard (from white bg & black line)", ("Lineart",), lineart_standard,
           api_name="lineart_standard", priority=100),
    _entry("recolor_luminance", ("Recolor",), recolor_luminance, priority=100, resolution=None, a=GAMMA),
    _entry("recolor_intensity", ("Recolor",), recolor_intensity, resolution=None, a=GAMMA),
    # Reference: the picture itself; the attention/AdaIN sharing happens in the sampling hook.
    _entry("reference_only", ("Reference",), identity, priority=100, resolution=None, a=STYLE_FIDELITY,
           is_reference=True),
    _entry("reference_adain", ("Reference",), identity, resolution=None, a=STYLE_FIDELITY, is_reference=True),
    _entry("reference_adain+attn", ("Reference",), identity, resolution=None, a=STYLE_FIDELITY, is_reference=True),
    _entry("inpaint_only", ("Inpaint",), inpaint_hint, priority=100, resolution=None, is_inpaint=True),
    _entry("inpaint_global_harmonious", ("Inpaint",), inpaint_hint, api_name="inpaint", resolution=None,
           is_inpaint=True),
    _entry("inpaint_only+lama", ("Inpaint",), inpaint_hint, resolution=None, is_inpaint=True),
    _annotator_entry("depth_midas", ("Depth",), api_name="depth", priority=100),
    _annotator_entry("normal_midas", ("NormalMap",), api_name="normal_map",
                     a=Slider("Normal Background Threshold", 0.0, 1.0, 0.4)),
    _annotator_entry("normal_bae", ("NormalMap",), priority=100),
    _annotator_entry("openpose", ("OpenPose",)),
    _annotator_entry("openpose_face", ("OpenPose",)),
    _annotator_entry("openpose_faceonly", ("OpenPose",)),
    _annotator_entry("openpose_hand", ("OpenPose",)),
    _annotator_entry("openpose_full", ("OpenPose",), priority=100),
    _annotator_entry("lineart_realistic", ("Lineart",), api_name="lineart"),
    _annotator_entry("lineart_coarse", ("Lineart",)),
    _annotator_entry("lineart_anime", ("Lineart",)),
    _annotator_entry("softedge_hed", ("SoftEdge",), api_name="hed"),
    _annotator_entry("softedge_hedsafe", ("SoftEdge",), api_name="hed_safe"),
    _annotator_entry("softedge_pidinet", ("SoftEdge",), api_name="pidinet", priority=100),
    _annotator_entry("softedge_pidisafe", ("SoftEdge",), api_name="pidinet_safe"),
    _annotator_entry("scribble_hed", ("Scribble", "SparseCtrl")),
    _annotator_entry("scribble_pidinet", ("Scribble", "SparseCtrl"), api_name="pidinet_scribble", priority=100),
    _annotator_entry("t2ia_sketch_pidi", ("T2I-Adapter",), api_name="pidinet_sketch"),
    _annotator_entry("mlsd", ("MLSD",), priority=100, a=Slider("MLSD Value Threshold", 0.01, 2.0, 0.1),
                     b=Slider("MLSD Distance Threshold", 0.01, 20.0, 0.1)),
]


def _extension_order(entries: list[Preprocessor]) -> list[Preprocessor]:
    """"none" first, then by priority and label, both descending: the extension's `get_sorted_preprocessors`."""
    rest = [p for p in entries if p.name != "none"]
    rest.sort(key=lambda p: str(p.priority).zfill(8) + p.label, reverse=True)
    return [p for p in entries if p.name == "none"] + rest


PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in _extension_order(_ENTRIES)}

# Other names the extension accepts for the same preprocessor: its internal keys (what its API lists without
# alias_names), the 1.0 names, and "None".
ALIASES: dict[str, str] = {
    **{p.api_name: p.name for p in PREPROCESSORS.values() if p.api_name != p.name},
    "None": "none",
    "fake_scribble": "scribble_hed",
}


def get(name: str) -> Preprocessor:
    """The preprocessor called `name` (shown name, the extension's internal key or an older alias)."""
    preprocessor = PREPROCESSORS.get(name) or PREPROCESSORS.get(ALIASES.get(name, ""))
    if preprocessor is None:
        raise ValueError(f"Unknown ControlNet preprocessor {name!r}; valid names: {', '.join(PREPROCESSORS)}")
    return preprocessor


def module_list(alias_names: bool = False) -> list[str]:
    """The extension's `/controlnet/module_list` `module_list`: internal keys, or shown names with alias_names."""
    return [p.label if alias_names else p.api_name for p in PREPROCESSORS.values()]


def module_detail(alias_names: bool = False) -> dict[str, dict[str, Any]]:
    """The extension's `/controlnet/module_list` `module_detail`: whether a ControlNet model is needed, and the
    visible sliders (resolution first)."""
    return {
        (p.label if alias_names else p.api_name): {
            "model_free": p.is_reference,
            "sliders": [s.api_json() for s in (p.resolution, p.threshold_a, p.threshold_b) if s is not None],
        }
        for p in PREPROCESSORS.values()
    }


def control_types() -> dict[str, dict[str, Any]]:
    """The extension's `/controlnet/control_types` `control_types`: "All", then each tag alphabetically, with
    its preprocessors ("none" first), the default one (the first after "none"), and a model list of just "None"
    (the caller fills in the installed models)."""
    ordered = list(PREPROCESSORS.values())
    types = {"All": {"module_list": [p.label for p in ordered], "model_list": ["None"], "default_option": "none",
                     "default_model": "None"}}
    for tag in sorted({t for p in ordered for t in p.tags}):
        labels = [p.label for p in ordered if tag in p.tags or p.name == "none"]
        types[tag] = {"module_list": labels, "model_list": ["None"],
                      "default_option": labels[1] if len(labels) > 1 else labels[0], "default_model": "None"}
    return types
