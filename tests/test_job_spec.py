"""The frozen job spec, the run state, and A1111's `p` as an adapter over both."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from PIL import Image

from modules.job_spec import Job, JobSpec, RunState


@pytest.mark.unit
def test_a_spec_cannot_be_changed_in_place():
    spec = JobSpec(prompt="a red circle", styles=["s"], override_settings={"CLIP_stop_at_last_layers": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.steps = 30
    with pytest.raises(TypeError):
        spec.override_settings["CLIP_stop_at_last_layers"] = 3
    with pytest.raises(AttributeError):
        spec.styles.append("t")
    assert spec.replace(steps=30).steps == 30 and spec.steps == 20


@pytest.mark.unit
def test_a_spec_goes_through_json_and_back_unchanged():
    image = Image.new("RGB", (8, 8), (200, 10, 20))
    spec = JobSpec(prompt=["a", "b"], init_images=[image], image_mask=Image.new("L", (8, 8), 255), steps=7,
                   override_settings={"eta_noise_seed_delta": 31337}, styles=["x"])
    text = json.dumps(spec.to_json())
    back = JobSpec.from_json(json.loads(text))
    assert back.prompt == ("a", "b") and back.steps == 7 and back.styles == ("x",)
    assert dict(back.override_settings) == {"eta_noise_seed_delta": 31337}
    assert back.init_images[0].tobytes() == image.tobytes() and back.image_mask.getpixel((0, 0)) == 255
    with pytest.raises(ValueError, match="unknown job field"):
        JobSpec.from_json({"stepz": 3})


@pytest.mark.unit
def test_writing_p_makes_a_new_spec_copy_and_run_values_go_to_the_run_state():
    p = Job(prompt="a", steps=3, override_settings={"a": 1}, styles=["s"])
    first = p.spec
    p.steps = 9
    p.override_settings["b"] = 2          # A1111 scripts change these in place
    p.override_settings.pop("a")
    p.styles.append("t")
    p.all_seeds = [5, 6]
    p.extra_generation_params["Script"] = "mine"
    p.my_script_value = 42                # a script's own attribute stays on the job
    assert (first.steps, dict(first.override_settings), first.styles) == (3, {"a": 1}, ("s",))
    assert (p.spec.steps, dict(p.spec.override_settings), p.spec.styles) == (9, {"b": 2}, ("s", "t"))
    assert p.run.all_seeds == [5, 6] and p.run.extra_generation_params == {"Script": "mine"}
    assert p.my_script_value == 42 and not hasattr(p.spec, "my_script_value")
    with pytest.raises(TypeError, match="stepz"):
        Job(stepz=3)


@pytest.mark.unit
def test_copies_of_p_as_scripts_make_them():
    p = Job(prompt="a", seed=1, all_seeds=[1])
    replaced = dataclasses.replace(p, seed=2)
    assert (replaced.seed, p.seed, replaced.prompt) == (2, 1, "a")
    copied = copy.copy(p)
    copied.steps = 5
    copied.all_seeds = [9]
    assert (p.steps, p.all_seeds) == (20, [1])
    assert {f.name for f in dataclasses.fields(p)} >= {"prompt", "all_seeds", "scripts", "is_hr_pass"}


@pytest.mark.unit
def test_the_resolved_denoising_strength_is_the_runs_and_a_scripts_choice_wins():
    p = Job(init_images=[Image.new("RGB", (8, 8))])
    assert p.denoising_strength is None
    p.run.denoising_strength = 0.75       # what processing resolves for img2img
    assert p.denoising_strength == 0.75 and p.spec.denoising_strength is None
    p.denoising_strength = 0.3            # a script (before_hr, say) sets it
    assert p.denoising_strength == 0.3 and p.spec.denoising_strength == 0.3


@pytest.mark.integration
def test_processing_never_writes_the_spec(app):
    from modules.processing import process_images

    p = Job(prompt="a red circle", seed=3, steps=2, width=64, height=64, batch_size=2, do_not_save_samples=True,
            do_not_save_grid=True, override_settings={"CLIP_stop_at_last_layers": 2})
    spec = p.spec
    processed = process_images(p, app.context())
    assert p.spec is spec  # the very same frozen object: nothing was written back
    assert p.run.all_seeds == [3, 4] and processed.all_seeds == [3, 4]
    assert p.run.clip_skip == 2 and "Clip skip: 2" in processed.infotexts[0]
    assert isinstance(p.run, RunState) and p.run.all_prompts == ["a red circle"] * 2


@pytest.mark.unit
def test_deepcopy_and_pickle_of_p_and_its_spec_as_a1111_extensions_do():
    import pickle

    p = Job(prompt="a", override_settings={"a": 1}, styles=["s1"])
    p.context = object()  # the running application's (model): shared, never copied
    clone = copy.deepcopy(p)
    assert clone.spec == p.spec and clone.context is p.context
    clone.override_settings["b"] = 2
    assert dict(p.override_settings) == {"a": 1} and dict(clone.override_settings) == {"a": 1, "b": 2}
    assert pickle.loads(pickle.dumps(p.spec)) == p.spec
    private = copy.copy(p.override_settings)  # a script's own copy
    private["z"] = 1
    assert type(private) is dict and "z" not in p.override_settings
    stale = p.styles
    p.styles = ["other"]
    stale.append("s2")  # a list read before the reassignment does not overwrite it
    assert p.styles == ["other"]
