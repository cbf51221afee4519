"""Every field the API accepts is either honoured or refused with a 422 naming it (never silently dropped)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

SMALL = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 1}


@pytest.mark.parametrize(("field", "value"), [
    ("restore_faces", True), ("tiling", True), ("hr_checkpoint_name", "other.safetensors"),
    ("disable_extra_networks", True), ("firstpass_image", "aGVsbG8="),
])
def test_a_field_this_program_cannot_honour_is_a_422_naming_it(app, field, value):
    from modules.api import ApiError, generate
    from modules.api.models import Txt2ImgRequest

    with pytest.raises(ApiError) as caught:
        generate(Txt2ImgRequest(**SMALL, **{field: value}), img2img=False)
    assert caught.value.status_code == 422
    assert caught.value.detail.startswith(f"{field}: ") and repr(value) in caught.value.detail
    assert app.tasks.pending() == [] and app.runner.current() is None  # nothing was queued


def test_the_off_values_clients_send_by_default_still_generate(app):
    """webuiapi sends restore_faces=False, tiling=False, hr_checkpoint_name=None, refiner_checkpoint=None."""
    from modules.api import generate
    from modules.api.models import Txt2ImgRequest

    request = Txt2ImgRequest(**SMALL, restore_faces=False, tiling=False, hr_checkpoint_name=None,
                             refiner_checkpoint=None, refiner_switch_at=None, disable_extra_networks=False,
                             s_min_uncond=0.0)
    assert len(generate(request, img2img=False)["images"]) == 1


def test_refiner_and_ngms_fields_are_honoured_and_an_unknown_refiner_is_a_400_naming_it(app, tiny_checkpoints):
    import json
    import shutil
    from pathlib import Path

    from modules.api import ApiError, generate
    from modules.api.models import Txt2ImgRequest

    folder = Path(app.cmd_opts.data_dir) / "models" / "Stable-diffusion"
    shutil.copy(tiny_checkpoints["sd1"], folder / "tiny-refiner.safetensors")
    with pytest.raises(ApiError) as caught:
        generate(Txt2ImgRequest(**SMALL, refiner_checkpoint="no-such-refiner", refiner_switch_at=0.5), img2img=False)
    assert caught.value.status_code == 400
    assert caught.value.detail.startswith("refiner_checkpoint: ") and "no-such-refiner" in caught.value.detail
    request = Txt2ImgRequest(**{**SMALL, "steps": 4}, refiner_checkpoint="tiny-refiner", refiner_switch_at=0.5,
                             s_min_uncond=100.0)
    info = json.loads(generate(request, img2img=False)["info"])
    assert "Refiner: tiny-refiner [" in info["infotexts"][0] and "Refiner switch at: 0.5" in info["infotexts"][0]
    assert "NGMS: 100.0" in info["infotexts"][0]


def test_an_async_job_refused_after_its_id_was_taken_does_not_stay_queued(app):
    from modules.api import ApiError, submit_job
    from modules.api.models import JobRequest

    with pytest.raises(ApiError) as caught:
        submit_job(JobRequest(**SMALL, script_name="no such script", force_task_id="task(refused)"))
    assert caught.value.status_code in (400, 404, 422)
    task = app.tasks.get("task(refused)")
    assert task is None or task.status == "failed"
    assert app.tasks.pending() == []
    # the id is free again
    answer = submit_job(JobRequest(**SMALL, force_task_id="task(refused)"))
    assert answer["id"] == "task(refused)"
    app.runner.wait_idle(60)
