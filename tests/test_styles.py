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
