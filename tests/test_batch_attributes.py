"""A1111's per-batch attributes on `p` (p.prompts, p.seeds, p.iteration, p.batch_index ...) as scripts see them."""

from __future__ import annotations

from modules import scripts
from modules.processing import Job

SCRIPT = '''
from modules import scripts

seen = []


class BatchWatcher(scripts.Script):
    def title(self):
        return "Batch watcher"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def before_process_batch(self, p, **kwargs):
        seen.append(("before", p.iteration, list(p.prompts), list(p.negative_prompts), list(p.seeds),
                     list(p.subseeds)))

    def process_batch(self, p, **kwargs):
        seen.append(("batch", p.iteration, list(p.prompts), list(p.seeds)))

    def postprocess_image(self, p, pp):
        seen.append(("image", p.iteration, p.batch_index))
'''


def test_scripts_see_each_batch_prompts_seeds_iteration_and_image_index(app, tmp_path):
    folder = tmp_path / "extensions" / "watcher" / "scripts"
    folder.mkdir(parents=True)
    (folder / "watcher.py").write_text(SCRIPT)
    scripts.load_scripts(extension_dirs=[str(folder.parent)])
    try:
        (module,) = {d.module for d in scripts.scripts_data if d.path.endswith("watcher.py")}
        runner = scripts.scripts_txt2img
        job = Job(prompt=["a <lora:missing:1>cat", "a dog", "a cow", "a pig"], negative_prompt="blurry", seed=10,
                  subseed=3, batch_size=2, n_iter=2, width=64, height=64, steps=1, sampler_name="Euler",
                  do_not_save_samples=True, do_not_save_grid=True)
        runner.attach(job, runner.default_args())
        app.run_job(job)
    finally:
        scripts.load_scripts(extension_dirs=[])
    assert module.seen == [
        ("before", 0, ["a <lora:missing:1>cat", "a dog"], ["blurry", "blurry"], [10, 11], [3, 4]),
        ("batch", 0, ["a cat", "a dog"], [10, 11]),  # network tags removed once the networks are active
        ("image", 0, 0), ("image", 0, 1),
        ("before", 1, ["a cow", "a pig"], ["blurry", "blurry"], [12, 13], [5, 6]),
        ("batch", 1, ["a cow", "a pig"], [12, 13]),
        ("image", 1, 0), ("image", 1, 1),
    ]
