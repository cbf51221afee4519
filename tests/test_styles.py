"""styles.csv: reading, applying with and without {prompt}, saving atomically."""

from __future__ import annotations

from modules.styles import PromptStyle, StyleDatabase, merge_prompts


def test_merge_rules():
    assert merge_prompts("masterpiece", "a cat") == "a cat, masterpiece"
    assert merge_prompts("photo of {prompt}, 35mm", "a cat") == "photo of a cat, 35mm"
    assert merge_prompts("", "a cat") == "a cat"
    assert merge_prompts("best", "") == "best"


def test_read_apply_and_save(tmp_path, caplog):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\n"Cinematic","film still of {prompt}, dramatic","blurry"\n'
                    'Clean,"sharp, clean",\n,"nameless row",\n', encoding="utf-8")
    db = StyleDatabase(str(path))
    assert list(db.styles) == ["Cinematic", "Clean"]
    assert db.apply_styles_to_prompt("a red circle", ["Cinematic", "Clean"]) == \
        "film still of a red circle, dramatic, sharp, clean"
    assert db.apply_negative_styles_to_prompt("noise", ["Cinematic"]) == "noise, blurry"
    assert db.apply_styles_to_prompt("x", ["Missing"]) == "x"
    assert "Missing" in caplog.text

    db.save_style(PromptStyle("New, with comma", 'say "hi", {prompt}', ""))
    reread = StyleDatabase(str(path))
    assert reread.styles["New, with comma"].prompt == 'say "hi", {prompt}'
    assert reread.styles["Cinematic"].negative_prompt == "blurry"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".styles-")]


def test_styles_are_extracted_from_a_pasted_infotext(tmp_path):
    from modules.infotext import build_infotext, parse_generation_parameters

    path = tmp_path / "styles.csv"
    db = StyleDatabase(str(path))
    db.save_style(PromptStyle("Cinematic", "film still of {prompt}, dramatic", "blurry"))
    db.save_style(PromptStyle("Clean", "sharp, clean", ""))
    prompt = db.apply_styles_to_prompt("a red circle", ["Cinematic", "Clean"])
    negative = db.apply_negative_styles_to_prompt("noise", ["Cinematic", "Clean"])
    assert db.extract_styles_from_prompt(prompt, negative) == (["Cinematic", "Clean"], "a red circle", "noise")
    assert db.extract_styles_from_prompt("a red circle", "noise") == ([], "a red circle", "noise")

    text = build_infotext(prompt, negative, {"Steps": 20, "Sampler": "Euler", "Seed": 1})
    parsed = parse_generation_parameters(text, styles=db)
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Styles array"]) == \
        ("a red circle", "noise", ["Cinematic", "Clean"])
    ignored = parse_generation_parameters(text, styles=db, infotext_styles="Ignore")
    assert ignored["Prompt"] == prompt and "Styles array" not in ignored
    assert "Styles array" not in parse_generation_parameters(text)
