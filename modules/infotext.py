"""The infotext: the `parameters` text stored in every generated image, written and parsed as A1111 v1.10.1 does.

Layout of the text::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>      (omitted when empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ...

Writing follows `processing.create_infotext`; parsing follows `infotext_utils.parse_generation_parameters`;
`read_info_from_image` follows `images.read_info_from_image`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Mapping

from PIL import Image

from modules.prompts.parser import prompt_has_emphasis

logger = logging.getLogger(__name__)

# The fixed slots of A1111 v1.10.1 `create_infotext`, in order. Every key that A1111 lists there is here (including
# the rarely set FP8 / inpainting / hash keys), because a key in this tuple keeps its slot even when it arrives
# through `extra_params`, exactly like a key of A1111's dict literal that `**p.extra_generation_params` updates.
INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# A1111's `re_param_code`: a key starts with a word character; a value is either a JSON string (quotes, with
# backslash escapes) or anything up to the next comma.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")


# --- writing ---------------------------------------------------------------------------------------------------------

def quote(text: object) -> object:
    """Quote a value as A1111 does (its parameter name): JSON-encode it when its text holds a comma, a colon or a
    newline."""
    value, text = text, str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(value, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote`: a value wrapped in double quotes is JSON-decoded; anything else is returned as is."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def as_ui_number(value: float) -> int | float:
    """The number as A1111's browser UI delivers it: a whole float becomes an int (7.0 -> 7), others stay.

    A1111 writes values with plain `str()`. Its UI sliders reach Python through JSON, where 7.0 arrives as int 7, so
    UI infotexts read `CFG scale: 7`; the API parses fields with pydantic as floats, so API infotexts read
    `CFG scale: 7.0`. Callers that build infotext for UI jobs pass values through this to match.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_params_line(generation_params: Mapping[str, object]) -> str:
    """The last infotext line: `Key: value` pairs joined by ", ", None dropped, a value equal to its key alone."""
    pairs = []
    for key, value in generation_params.items():
        if value is None:
            continue
        # Value formatting is A1111's f'{k}: {quote(v)}', i.e. plain str(): a float 7.0 prints "7.0" and a bool
        # prints "True". Whether a whole number appears as "7" or "7.0" is decided by the caller's value type
        # (see `as_ui_number`), never here.
        pairs.append(key if key == value else f"{key}: {quote(value)}")
    return ", ".join(pairs)


def build_infotext(
    prompt: str,
    negative_prompt: str,
    params: Mapping[str, object],
    extra_params: Mapping[str, object] | None = None,
    version: str | None = None,
    user: str | None = None,
) -> str:
    """Build the A1111 infotext for one image.

    `params` holds values for keys of `INFOTEXT_KEY_ORDER` (any subset, any order; leave out or set None what A1111
    leaves out, e.g. Clip skip 1). They are written in the fixed order, then `extra_params` in insertion order (a key
    of the fixed order keeps its fixed slot), then Version and User. Keys of `params` outside the fixed order are
    written right after the fixed ones, before `extra_params`.
    """
    merged: dict[str, object] = dict.fromkeys(INFOTEXT_KEY_ORDER)
    merged.update(params)
    merged.update(extra_params or {})
    # A1111 always assigns these two last; only let a None override a value the caller put in extra_params when
    # the key was not given at all.
    if version is not None or "Version" not in merged:
        merged["Version"] = version
    if user is not None or "User" not in merged:
        merged["User"] = user

    negative_text = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    # A1111 strips the whole text, which also drops the newline before an empty parameters line.
    return f"{prompt}{negative_text}\n{format_params_line(merged)}".strip()


# --- parsing ---------------------------------------------------------------------------------------------------------

def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """A1111's pre-1.0 rule for the first-pass size of hires fix: about 512x512 pixels, rounded up to 64."""
    desired_pixel_count = 512 * 512
    actual_pixel_count = width * height
    scale = math.sqrt(desired_pixel_count / actual_pixel_count)
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix_params(res: dict[str, object]) -> None:
    """Convert an old `First pass size` infotext into Size + Hires resize (A1111 with default settings)."""
    firstpass_width = res.get("First pass size-1")
    firstpass_height = res.get("First pass size-2")
    if firstpass_width is None or firstpass_height is None:
        return

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if firstpass_width == 0 or firstpass_height == 0:
        firstpass_width, firstpass_height = old_hires_fix_first_pass_dimensions(width, height)

    res["Size-1"] = firstpass_width
    res["Size-2"] = firstpass_height
    res["Hires resize-1"] = width
    res["Hires resize-2"] = height


def _parse_version(text: object) -> tuple[tuple[int, ...], int] | None:
    """("v1.7.0-225-gabc" -> ((1, 7, 0), 225)): release numbers and commits after the tag, as A1111 compares them."""
    if not isinstance(text, str):
        return None
    match = re.match(r"^v?(\d+(?:\.\d+)*)(?:-(\d+))?", text.strip())
    if match is None:
        return None
    release = tuple(int(part) for part in match.group(1).split("."))
    # Pad so (1, 6) compares equal to (1, 6, 0).
    release = release + (0,) * (3 - len(release)) if len(release) < 3 else release
    return release, int(match.group(2) or 0)


def _apply_version_backcompat(res: dict[str, object]) -> None:
    """A1111's `infotext_versions.backcompat`: options that reproduce images made by older versions."""
    version = _parse_version(res.get("Version"))
    if version is None:
        return
    before_1_6_0 = version < ((1, 6, 0), 0)
    if before_1_6_0 and "[" in str(res.get("Prompt", "")):
        res["Old prompt editing timelines"] = True
    if before_1_6_0 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if version < ((1, 7, 0), 225):
        res["Downcast alphas_cumprod"] = True
    if version < ((1, 8, 0), 0) and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


# Keys A1111 fills in when an infotext lacks them (values as A1111 sets them: some str, some int).
_DEFAULTS_AFTER_HIRES: tuple[tuple[str, object], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)
_DEFAULTS_BEFORE_HIRES: tuple[tuple[str, object], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)


def split_prompt_and_params(text: str) -> tuple[str, str, str]:
    """Split an infotext into (prompt, negative prompt, parameters line), A1111's way.

    The last line counts as parameters only if it holds at least 3 `Key: value` pairs. Each line is stripped; a line
    starting with "Negative prompt:" starts the negative prompt, which runs to the parameters line.
    """
    *lines, last_line = text.strip().split("\n")
    if len(RE_PARAM.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt = ""
    negative_prompt = ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX):].strip()
        if in_negative:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative_prompt, last_line


def parse_params_line(line: str) -> dict[str, str]:
    """Parse `Key: value, Key2: "quoted, value"` pairs; a `WxH` value gives `Key-1`/`Key-2` (strings, as A1111)."""
    res: dict[str, str] = {}
    for key, value in RE_PARAM.findall(line):
        if value == "":
            # A1111 fails on v[0] here and skips the pair (logging "Error parsing"); an empty value is dropped.
            logger.debug('Error parsing "%s: %s"', key, value)
            continue
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = RE_IMAGE_SIZE.match(value) if isinstance(value, str) else None
        if size is not None:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value
    return res


def parse_generation_parameters(x: str, skip_fields: Iterable[str] | None = None, styles=None,
                                infotext_styles: str = "Apply if any") -> dict[str, object]:
    """Parse an infotext into a dict, with A1111 v1.10.1's semantics and its default settings.

    Returns "Prompt", "Negative prompt" and every parsed key (values as strings, JSON-unquoted; `Size: WxH` as
    "Size-1"/"Size-2"), plus the defaults A1111 adds for missing keys (Clip skip "1", RNG "GPU", Schedule type
    "Automatic", Hires resize-1/-2 0, ...). A legacy sampler name such as "DPM++ 2M Karras" is kept as A1111 keeps
    it; `split_sampler_and_scheduler` turns it into the sampler and schedule type the UI/API fields get.
    Keys in `skip_fields` (A1111's "infotext_skip_pasting" setting) are removed from the result.
    `styles` (a StyleDatabase) with `infotext_styles` "Apply if any"/"Apply" (A1111's setting): styles whose text
    the prompts end with are listed as "Styles array" and taken out of the prompts; "Ignore" leaves them in.
    """
    prompt, negative_prompt, params_line = split_prompt_and_params(x)  # `x`: A1111's parameter name
    if styles is not None and infotext_styles != "Ignore":
        found, bare_prompt, bare_negative = styles.extract_styles_from_prompt(prompt, negative_prompt)
        if found or infotext_styles == "Apply":
            prompt, negative_prompt = bare_prompt, bare_negative
            styles_found: list[str] | None = found
        else:
            styles_found = None
    else:
        styles_found = None
    res: dict[str, object] = {"Prompt": prompt, "Negative prompt": negative_prompt}
    res.update(parse_params_line(params_line))
    if styles_found is not None:
        res["Styles array"] = styles_found

    # A missing Clip skip means the default of 1.
    res.setdefault("Clip skip", "1")

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] = f"{res['Prompt']}<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, default in _DEFAULTS_BEFORE_HIRES:
        res.setdefault(key, default)

    _restore_old_hires_fix_params(res)

    for key, default in _DEFAULTS_AFTER_HIRES:
        res.setdefault(key, default)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    # Infotexts from before the Emphasis setting were made with the original method: A1111 1.10 says so
    # explicitly when the prompt actually uses weights.
    if "Emphasis" not in res and (prompt_uses_emphasis(prompt) or prompt_uses_emphasis(negative_prompt)):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)

    _apply_version_backcompat(res)

    skip = set(skip_fields or ())
    return {key: value for key, value in res.items() if key not in skip}


def prompt_uses_emphasis(prompt: str) -> bool:
    """True if some text of the prompt gets a weight other than 1 (A1111's `parse_prompt_attention` rules)."""
    return prompt_has_emphasis(prompt)


# --- sampler names ---------------------------------------------------------------------------------------------------

# A1111 v1.10.1 schedulers: (name, label, aliases).
A1111_SCHEDULERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("automatic", "Automatic", ()),
    ("uniform", "Uniform", ()),
    ("karras", "Karras", ()),
    ("exponential", "Exponential", ()),
    ("polyexponential", "Polyexponential", ()),
    ("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    ("kl_optimal", "KL Optimal", ()),
    ("align_your_steps", "Align Your Steps", ()),
    ("simple", "Simple", ()),
    ("normal", "Normal", ()),
    ("ddim", "DDIM", ()),
    ("beta", "Beta", ()),
)

# A1111 v1.10.1 samplers in its list order: (name, aliases, default scheduler name or None).
A1111_SAMPLERS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("DPM++ 2M", ("k_dpmpp_2m",), "karras"),
    ("DPM++ SDE", ("k_dpmpp_sde",), "karras"),
    ("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "exponential"),
    ("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "exponential"),
    ("DPM++ 2S a", ("k_dpmpp_2s_a",), "karras"),
    ("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "exponential"),
    ("Euler a", ("k_euler_a", "k_euler_ancestral"), None),
    ("Euler", ("k_euler",), None),
    ("LMS", ("k_lms",), None),
    ("Heun", ("k_heun",), None),
    ("DPM2", ("k_dpm_2",), "karras"),
    ("DPM2 a", ("k_dpm_2_a",), "karras"),
    ("DPM fast", ("k_dpm_fast",), None),
    ("DPM adaptive", ("k_dpm_ad",), None),
    ("Restart", ("restart",), "karras"),
    ("DDIM", ("ddim",), None),
    ("DDIM CFG++", ("ddim_cfgpp",), None),
    ("PLMS", ("plms",), None),
    ("UniPC", ("unipc",), None),
    ("LCM", ("k_lcm", "lcm"), None),
)

_SAMPLER_DEFAULT_SCHEDULER = {name: default for name, _aliases, default in A1111_SAMPLERS}
_SCHEDULER_BY_NAME_OR_LABEL = {
    **{name: (name, label) for name, label, _aliases in A1111_SCHEDULERS},
    **{label: (name, label) for name, label, _aliases in A1111_SCHEDULERS},
}
# Lower-cased sampler names and aliases -> sampler name (A1111's `samplers_map`).
SAMPLER_NAME_BY_ALIAS: dict[str, str] = {
    **{alias.lower(): name for name, aliases, _default in A1111_SAMPLERS for alias in aliases},
    **{name.lower(): name for name, _aliases, _default in A1111_SAMPLERS},
}


def split_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, default_sampler: str = "DPM++ 2M"
) -> tuple[str, str]:
    """A1111's `sd_samplers.get_sampler_and_scheduler`: what the sampler and schedule-type fields get on paste.

    A trailing scheduler label, name or alias is cut from the sampler name ("Euler a Karras" -> "Euler a",
    "Karras"); a scheduler equal to the sampler's own default becomes "Automatic" ("DPM++ 2M Karras" ->
    "DPM++ 2M", "Automatic"); an unknown sampler becomes `default_sampler`, an unknown scheduler "Automatic".
    """
    _found_name, found_label = _SCHEDULER_BY_NAME_OR_LABEL.get(scheduler_name or "", ("automatic", "Automatic"))
    found_name = _found_name
    name = sampler_name or default_sampler

    for scheduler_name_option, label, aliases in A1111_SCHEDULERS:
        for option in (label, scheduler_name_option, *aliases):
            if name.endswith(" " + option):
                found_name, found_label = scheduler_name_option, label
                name = name[: -(len(option) + 1)]
                break

    sampler = name if name in _SAMPLER_DEFAULT_SCHEDULER else default_sampler
    if _SAMPLER_DEFAULT_SCHEDULER.get(sampler) == found_name:
        found_label = "Automatic"
    return sampler, found_label


def sampler_from_infotext(params: Mapping[str, object]) -> str:
    """The sampler a parsed infotext selects (A1111's `get_sampler_from_infotext`)."""
    sampler, schedule = _str_or_none(params.get("Sampler")), _str_or_none(params.get("Schedule type"))
    return split_sampler_and_scheduler(sampler, schedule)[0]


def scheduler_from_infotext(params: Mapping[str, object]) -> str:
    """The schedule type label a parsed infotext selects (A1111's `get_scheduler_from_infotext`)."""
    sampler, schedule = _str_or_none(params.get("Sampler")), _str_or_none(params.get("Schedule type"))
    return split_sampler_and_scheduler(sampler, schedule)[1]


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


# --- reading from image files ----------------------------------------------------------------------------------------

# Image.info entries that are format details, not generation info (A1111's IGNORED_INFO_KEYS).
IGNORED_INFO_KEYS = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
    "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
})

EXIF_IFD_POINTER = 0x8769
EXIF_USER_COMMENT = 0x9286
# The 8-byte character-code prefixes of an EXIF UserComment (EXIF 2.3, table 9) and how piexif decodes them.
_USER_COMMENT_CODECS = {
    b"UNICODE\x00": "utf_16_be",
    b"ASCII\x00\x00\x00": "ascii",
    b"JIS\x00\x00\x00\x00\x00": "shift_jis",
}


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment bytes for `text`, as `piexif.helper.UserComment.dump(text, encoding="unicode")` makes them."""
    return b"UNICODE\x00" + text.encode("utf_16_be")


def decode_user_comment(data: bytes) -> str:
    """Text of an EXIF UserComment, following A1111 (piexif's load, falling back to lenient UTF-8)."""
    codec = _USER_COMMENT_CODECS.get(data[:8]) if len(data) >= 8 else None
    if codec is not None:
        try:
            return data[8:].decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode("utf8", errors="ignore")


def _read_exif_user_comment(image: Image.Image) -> str:
    try:
        exif_ifd = image.getexif().get_ifd(EXIF_IFD_POINTER)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error):
        # Pillow raises any of these on corrupt EXIF; A1111 also treats unreadable EXIF as absent.
        return ""
    comment = exif_ifd.get(EXIF_USER_COMMENT, b"")
    if isinstance(comment, str):
        return comment
    return decode_user_comment(bytes(comment))


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, object]]:
    """Generation info of an opened image and its other info items (A1111's `images.read_info_from_image`).

    The info is the PNG `parameters` text; an EXIF UserComment (JPEG, WebP, AVIF) takes its place when present, a
    GIF comment otherwise. NovelAI PNGs are converted into A1111 infotext.
    """
    items: dict[str, object] = dict(image.info or {})
    geninfo = items.pop("parameters", None)

    if "exif" in items:
        exif_comment = _read_exif_user_comment(image)
        if exif_comment:
            geninfo = exif_comment
    elif "comment" in items:  # GIF
        comment = items["comment"]
        geninfo = comment.decode("utf8", errors="ignore") if isinstance(comment, bytes) else comment

    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)

    if items.get("Software") == "NovelAI":
        try:
            novelai = json.loads(str(items["Comment"]))
            sampler = SAMPLER_NAME_BY_ALIAS.get(novelai["sampler"], "Euler a")
            geninfo = (
                f"{items['Description']}\n"
                f"Negative prompt: {novelai['uc']}\n"
                f"Steps: {novelai['steps']}, Sampler: {sampler}, CFG scale: {novelai['scale']}, "
                f"Seed: {novelai['seed']}, Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337"
            )
        except Exception:
            logger.exception("Error parsing NovelAI image generation parameters")

    return (None if geninfo is None else str(geninfo)), items
