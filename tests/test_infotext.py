"""Infotext writing and parsing, checked against A1111 v1.10.1's exact output and parse results."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from modules.infotext import (
    INFOTEXT_KEY_ORDER,
    as_ui_number,
    build_infotext,
    decode_user_comment,
    encode_user_comment,
    parse_generation_parameters,
    prompt_uses_emphasis,
    quote,
    read_info_from_image,
    sampler_from_infotext,
    scheduler_from_infotext,
    split_sampler_and_scheduler,
    unquote,
)

# §4 of the A1111 reference, byte for byte.
REFERENCE_PARAMS_LINE = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Clip skip: 2, Hires upscale: 2, "
    'Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


def test_key_order_holds_the_a1111_keys_in_order():
    listed_in_reference = [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
        "Model hash", "Model", "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Seed resize from",
        "Denoising strength", "Clip skip", "ENSD", "Token merging ratio", "RNG", "Tiling",
    ]
    positions = [INFOTEXT_KEY_ORDER.index(key) for key in listed_in_reference]
    assert positions == sorted(positions)
    assert INFOTEXT_KEY_ORDER[:4] == ("Steps", "Sampler", "Schedule type", "CFG scale")
    assert INFOTEXT_KEY_ORDER[-1] == "Tiling"


def test_reference_example_is_reproduced_byte_for_byte_whatever_the_insertion_order():
    params = {  # deliberately shuffled
        "Clip skip": 2, "Size": "512x768", "Seed": 123, "Model": "v1-5-pruned-emaonly", "Steps": 20,
        "Denoising strength": 0.7, "CFG scale": 7, "Sampler": "DPM++ 2M", "Model hash": "6ce0161689",
        "Schedule type": "Karras", "VAE": None, "RNG": None,
    }
    extra = {"Hires upscale": 2, "Hires upscaler": "Latent", "Lora hashes": "add_detail: 7c6bad76eb54"}
    text = build_infotext("masterpiece, a cat", "lowres, blurry", params, extra, version="v1.10.1")
    assert text == f"masterpiece, a cat\nNegative prompt: lowres, blurry\n{REFERENCE_PARAMS_LINE}"


def test_api_style_example_with_float_values_is_exact():
    # A1111 writes str(value): API requests carry floats, so cfg 7.0 prints "7.0"; UI sliders deliver ints.
    params = {"Steps": 30, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 42, "Size": "512x512",
              "Variation seed": 7, "Variation seed strength": 0.25, "Seed resize from": "640x480", "Tiling": "True"}
    text = build_infotext("a red fox", "", params, version="v1.10.1")
    assert text == (
        "a red fox\nSteps: 30, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 512x512, Variation seed: 7, "
        "Variation seed strength: 0.25, Seed resize from: 640x480, Tiling: True, Version: v1.10.1"
    )
    ui_text = build_infotext("a red fox", "", {"Steps": 30, "CFG scale": as_ui_number(7.0), "Seed": 42})
    assert ui_text == "a red fox\nSteps: 30, CFG scale: 7, Seed: 42"
    assert as_ui_number(7.5) == 7.5
    assert as_ui_number(3) == 3


def test_fixed_keys_in_extra_params_keep_their_slot_and_extras_keep_insertion_order():
    text = build_infotext("p", "", {"Steps": 5, "Seed": 1, "Size": "64x64"},
                          {"Eta": 0.5, "Denoising strength": 0.4, "Mask blur": 4, "Sampler": "Euler"}, user="alice")
    assert text == ("p\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.4, Eta: 0.5, "
                    "Mask blur: 4, User: alice")


def test_none_values_are_dropped_and_a_value_equal_to_its_key_is_written_alone():
    text = build_infotext("p", "", {"Steps": 5, "Seed": None, "Tiling": None},
                          {"Pad conds": "Pad conds", "NGMS": None, "Eta": 1})
    assert text == "p\nSteps: 5, Pad conds, Eta: 1"


def test_values_with_commas_colons_or_newlines_are_json_quoted_without_escaping_unicode():
    assert quote("plain value") == "plain value"
    assert quote(12) == 12
    assert quote("a, b") == '"a, b"'
    assert quote("C:\\x") == '"C:\\\\x"'
    assert quote("line1\nline2") == '"line1\\nline2"'
    assert quote("猫, 🐱") == '"猫, 🐱"'
    assert unquote('"猫, 🐱"') == "猫, 🐱"
    assert unquote('"broken') == '"broken'
    assert unquote('"not json\\q"') == '"not json\\q"'


def test_empty_negative_prompt_and_empty_prompt_are_left_out():
    assert build_infotext("just a prompt", "", {"Steps": 1}) == "just a prompt\nSteps: 1"
    assert build_infotext("", "", {"Steps": 1, "Seed": 2}) == "Steps: 1, Seed: 2"
    assert build_infotext("  padded  ", "", {}) == "padded"  # A1111 strips the whole text


TRICKY_PROMPTS = [
    ("a cat, sitting: on a mat", "ugly, bad: hands"),
    ("line one, with comma\nline two: with colon\nline three", "neg one\nneg two, three"),
    ('a "quoted" word and a back\\slash, C:\\path\\file', 'no "quotes\\" here'),
    ("emoji 🐱🚀 and CJK 猫が好き, 한국어", "ぼやけた, 低品質 🙈"),
    ("(masterpiece:1.2), [from:to:0.5], <lora:add_detail:0.8>, BREAK next", ""),
    ("Steps: 1, Sampler: x, Seed: 3 (looks like params but is the prompt)", "Steps: 2, CFG scale: 3, Seed: 4"),
    ("", "only a negative"),
]


@pytest.mark.parametrize(("prompt", "negative"), TRICKY_PROMPTS)
def test_build_then_parse_round_trips_tricky_prompts(prompt, negative):
    text = build_infotext(prompt, negative, {"Steps": 20, "Sampler": "Euler a", "Seed": 7, "Size": "512x512"})
    parsed = parse_generation_parameters(text)
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    assert (parsed["Steps"], parsed["Sampler"], parsed["Seed"]) == ("20", "Euler a", "7")
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")


TRICKY_VALUES = {
    "Lora hashes": "a: 1234, b: 5678",
    "TI hashes": "猫: abc, 🐱: def",
    "Hires prompt": 'multi\nline, "quoted" and back\\slash: yes',
    "Wildcard": "C:\\models\\x.safetensors",
    "Plain": 'has "quotes" but no separators',
    "Styles": '["style one", "style: two"]',
}


def test_build_then_parse_round_trips_values_with_separators_quotes_and_unicode():
    text = build_infotext("p", "n", {"Steps": 3, "Seed": 1, "CFG scale": 7.5}, TRICKY_VALUES, version="v1.10.1")
    parsed = parse_generation_parameters(text)
    for key, value in TRICKY_VALUES.items():
        assert parsed[key] == value, key
    assert parsed["CFG scale"] == "7.5"
    assert parsed["Version"] == "v1.10.1"


def test_parse_of_a1111_docstring_example_gives_strings_and_defaults():
    text = (
        "girl with an artist's beret, determined, blue eyes, ((eyeshadow)), detailed\n"
        "Negative prompt: ugly, fat, (((deformed))), [blurry]\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
    )
    parsed = parse_generation_parameters(text)
    assert parsed["Prompt"] == "girl with an artist's beret, determined, blue eyes, ((eyeshadow)), detailed"
    assert parsed["Negative prompt"] == "ugly, fat, (((deformed))), [blurry]"
    assert parsed["Steps"] == "20" and parsed["Seed"] == "965400086" and parsed["Model hash"] == "45dee52b"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert "Size" not in parsed
    # A1111's defaults for missing keys, with A1111's types.
    assert parsed["Clip skip"] == "1"
    assert parsed["RNG"] == "GPU"
    assert parsed["Schedule type"] == "Automatic"
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (0, 0)
    assert parsed["Hires sampler"] == "Use same sampler"
    assert parsed["Masked area padding"] == 32
    assert parsed["FP8 weight"] == "Disable"
    assert "Cache FP16 weight for LoRA" not in parsed
    assert "Downcast alphas_cumprod" not in parsed  # no Version: no backcompat flags


def test_last_line_with_fewer_than_three_pairs_belongs_to_the_prompt():
    parsed = parse_generation_parameters("a cat\nstyle: anime, mood: calm")
    assert parsed["Prompt"] == "a cat\nstyle: anime, mood: calm"
    assert "style" not in parsed


def test_multiline_prompt_and_negative_lines_are_stripped_and_joined():
    text = "  first line  \nsecond line\nNegative prompt:   neg a\n  neg b \nSteps: 1, Seed: 2, Size: 8x16"
    parsed = parse_generation_parameters(text)
    assert parsed["Prompt"] == "first line\nsecond line"
    assert parsed["Negative prompt"] == "neg a\nneg b"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("8", "16")


def test_parse_skips_empty_values_and_skip_fields():
    parsed = parse_generation_parameters("p\nSteps: 5, Sampler: , Seed: 9, CFG scale: 4", skip_fields=["Seed", "RNG"])
    assert "Sampler" not in parsed
    assert "Seed" not in parsed and "RNG" not in parsed
    assert parsed["Steps"] == "5" and parsed["CFG scale"] == "4"


def test_parse_appends_hypernet_and_converts_old_first_pass_size():
    parsed = parse_generation_parameters(
        "p\nSteps: 5, Seed: 1, Size: 1024x768, First pass size: 0x0, Hypernet: anime, Hypernet strength: 0.5")
    assert parsed["Prompt"] == "p<hypernet:anime:0.5>"
    assert (parsed["Size-1"], parsed["Size-2"]) == (640, 448)  # scaled to ~512*512 pixels, each side rounded up to 64
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (1024, 768)


def test_old_versions_get_a1111_backcompat_flags():
    old = parse_generation_parameters("a [b:c:5]\nSteps: 5, Sampler: DDIM, Seed: 1, Version: v1.5.1-12-gabcdef")
    assert old["Old prompt editing timelines"] is True
    assert old["Pad conds v0"] is True
    assert old["Downcast alphas_cumprod"] is True
    tsnr = parse_generation_parameters("a\nSteps: 5, Sampler: DDIM, Refiner: x, Seed: 1, Version: v1.7.0-224-g1")
    assert tsnr["Downcast alphas_cumprod"] is True and tsnr["Refiner switch by sampling steps"] is True
    assert "Pad conds v0" not in tsnr
    new = parse_generation_parameters("a [b:c:5]\nSteps: 5, Sampler: DDIM, Seed: 1, Version: v1.10.1")
    assert not {"Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod"} & new.keys()


def test_fp8_infotext_gets_the_lora_cache_default():
    parsed = parse_generation_parameters("p\nSteps: 5, Seed: 1, FP8 weight: Enable for SDXL")
    assert parsed["Cache FP16 weight for LoRA"] is False


@pytest.mark.parametrize(("sampler", "schedule", "expected"), [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic")),  # Karras is DPM++ 2M's own default
    ("Euler a Karras", None, ("Euler a", "Karras")),
    ("DPM++ 2M SDE Exponential", "Automatic", ("DPM++ 2M SDE", "Automatic")),
    ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "Karras")),
    ("Euler", "sgm_uniform", ("Euler", "SGM Uniform")),
    ("Euler", "Karras", ("Euler", "Karras")),
    ("DPM++ 2M", "Karras", ("DPM++ 2M", "Automatic")),
    ("No such sampler", "Beta", ("DPM++ 2M", "Beta")),
    (None, None, ("DPM++ 2M", "Automatic")),
])
def test_split_sampler_and_scheduler_follows_a1111(sampler, schedule, expected):
    assert split_sampler_and_scheduler(sampler, schedule) == expected


def test_legacy_sampler_name_is_kept_by_parse_and_split_for_the_fields():
    parsed = parse_generation_parameters("p\nSteps: 20, Sampler: Euler a Karras, CFG scale: 7, Seed: 1")
    assert parsed["Sampler"] == "Euler a Karras"  # as A1111's parse_generation_parameters leaves it
    assert sampler_from_infotext(parsed) == "Euler a"
    assert scheduler_from_infotext(parsed) == "Karras"


def _reopen(image: Image.Image, image_format: str, **save_args) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save_args)
    buffer.seek(0)
    return Image.open(buffer)


def test_read_info_from_png_parameters_chunk_keeps_other_items():
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text("parameters", "a 猫\nSteps: 1, Seed: 2, Size: 8x8")
    pnginfo.add_text("extra", "value")
    image = _reopen(Image.new("RGB", (8, 8)), "PNG", pnginfo=pnginfo)
    geninfo, items = read_info_from_image(image)
    assert geninfo == "a 猫\nSteps: 1, Seed: 2, Size: 8x8"
    assert items == {"extra": "value"}


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_read_info_from_exif_user_comment(image_format):
    text = "a fox, 狐 🦊\nNegative prompt: blur\nSteps: 4, Seed: 5, Size: 16x16"
    exif = Image.Exif()
    exif[0x8769] = {0x9286: encode_user_comment(text)}
    image = _reopen(Image.new("RGB", (16, 16), "blue"), image_format, exif=exif)
    geninfo, items = read_info_from_image(image)
    assert geninfo == text
    assert "exif" not in items and "jfif" not in items


def test_user_comment_encoding_matches_piexif_unicode_form():
    assert encode_user_comment("Aé") == b"UNICODE\x00\x00A\x00\xe9"
    assert decode_user_comment(b"UNICODE\x00\x00A\x00\xe9") == "Aé"
    assert decode_user_comment(b"ASCII\x00\x00\x00plain") == "plain"
    assert decode_user_comment(b"\x00" * 8 + b"raw") == "\x00" * 8 + "raw"  # undefined prefix: lenient utf-8


def test_read_info_from_gif_comment_and_plain_image():
    gif = _reopen(Image.new("P", (4, 4)), "GIF", comment="Steps: 1, Seed: 1, Size: 4x4")
    assert read_info_from_image(gif)[0] == "Steps: 1, Seed: 1, Size: 4x4"
    assert read_info_from_image(Image.new("RGB", (4, 4))) == (None, {})


def test_read_info_converts_novelai_metadata():
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text("Software", "NovelAI")
    pnginfo.add_text("Description", "1girl, solo")
    pnginfo.add_text("Comment", json.dumps({"uc": "lowres", "steps": 28, "sampler": "k_euler_ancestral",
                                            "scale": 11, "seed": 99}))
    image = _reopen(Image.new("RGB", (32, 48)), "PNG", pnginfo=pnginfo)
    geninfo, _items = read_info_from_image(image)
    assert geninfo == ("1girl, solo\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 11, "
                       "Seed: 99, Size: 32x48, Clip skip: 2, ENSD: 31337")


def test_v1_10_defaults_for_hires_schedule_type_and_refiner_switch():
    parsed = parse_generation_parameters("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8")
    assert parsed["Hires schedule type"] == "Use same scheduler"
    assert parsed["Refiner switch by sampling steps"] is False
    old = parse_generation_parameters("a cat\nSteps: 20, Seed: 1, Size: 8x8, Refiner: x, Version: v1.7.0")
    assert old["Refiner switch by sampling steps"] is True  # back-compat still overrides the default


@pytest.mark.parametrize(
    ("prompt", "negative", "uses_emphasis"),
    [
        ("a cat", "", False),
        ("(cat:1.2)", "", True),
        ("a cat", "[blurry]", True),
        ("((cat", "", True),  # unclosed brackets run to the end
        ("\\(cat\\)", "", False),  # escaped brackets are literal text
        ("(cat:1.0)", "", False),
        ("a BREAK b", "", False),
    ],
)
def test_emphasis_default_when_prompt_uses_weights(prompt, negative, uses_emphasis):
    text = build_infotext(prompt, negative, {"Steps": 1, "Seed": 1, "Size": "8x8"})
    assert ("Emphasis" in parse_generation_parameters(text)) is uses_emphasis
    assert (prompt_uses_emphasis(prompt) or prompt_uses_emphasis(negative)) is uses_emphasis


def test_explicit_emphasis_is_kept():
    parsed = parse_generation_parameters("(cat:1.3)\nSteps: 1, Seed: 1, Size: 8x8, Emphasis: No norm")
    assert parsed["Emphasis"] == "No norm"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_infotext_parser_never_raises_on_arbitrary_text(text):
    from modules.infotext import parse_generation_parameters
    from modules.ui.paste import infotext_values

    params = parse_generation_parameters(text)
    assert isinstance(params, dict) and "Prompt" in params
    assert isinstance(infotext_values(text), dict)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Steps", "Seed", "Size", "CFG scale", "Sampler", "Hires upscale",
                                           "Variation seed", "Seed resize from", "Clip skip", "Lora hashes"]),
                          st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=20)), max_size=8))
def test_infotext_parser_survives_hostile_values_for_known_keys(pairs):
    from modules.ui.paste import infotext_values

    line = ", ".join(f"{key}: {value}" for key, value in pairs)
    assert isinstance(infotext_values(f"prompt\n{line}"), dict)
