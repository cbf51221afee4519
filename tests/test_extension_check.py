"""The static extension check (`modules.extension_check`, `webui.py --check-extensions`): small extensions written
into temporary folders, one per kind of name, checked for real (names are looked up by importing this program's
modules in a child process); the command line on a folder and on a git URL (a local repository made with git)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from modules import extension_check, extension_check_js

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT_HEAD = "import gradio as gr\nfrom modules import scripts, shared, script_callbacks\n"

FIXTURES = {
    "absent-module": {"scripts/a.py": "from modules import no_such_module_for_the_check\n"},
    "absent-attribute": {"scripts/a.py": "from modules import shared\nx = shared.no_such_attribute_for_the_check\n"},
    "ldm": {"scripts/a.py": "import ldm.modules.attention\nfrom modules import shared\n"},
    "cross-attention": {"scripts/a.py": textwrap.dedent("""
        from modules import shared
        def patch():
            for name, module in shared.sd_model.model.diffusion_model.named_modules():
                if module.__class__.__name__ == "CrossAttention":
                    module.forward = lambda *a: None
        """)},
    "cv2": {"scripts/a.py": "import cv2\n", "requirements.txt": "opencv-python-headless>=4\n"},
    "unknown-package": {"scripts/a.py": "import zz_package_nobody_provides\n"},
    "js": {"javascript/a.js": "onUiLoaded(function () { gradioApp().querySelector('#txt2img'); });\n"
                              "// gradioApp is not called in this comment: notAGlobal()\n"},
    "gradio3": {"scripts/a.py": SCRIPT_HEAD + "def ui():\n    return gr.Button.update(visible=False)\n"},
    "script": {"scripts/a.py": SCRIPT_HEAD + textwrap.dedent("""
        class MyScript(scripts.Script):
            def title(self):
                return "Mine"
            def show(self, is_img2img):
                return scripts.AlwaysVisible
            def process(self, p, *args):
                p.extra_generation_params["Mine"] = p.seed
                p.my_own_value = 1
                return p.my_own_value
        script_callbacks.on_ui_settings(lambda: shared.opts.add_option("mine", shared.OptionInfo(1, "Mine")))
        x = shared.opts.some_setting_key_nobody_declares
        """)},
    "flags": {"preload.py": "def preload(parser):\n    parser.add_argument('--my-ext-dir', default='x')\n",
              "scripts/a.py": "from modules import shared\na = shared.cmd_opts.my_ext_dir\n"
                              "b = shared.cmd_opts.no_such_flag_for_the_check\nc = shared.cmd_opts.lora_dir\n"},
    "refused": {"scripts/a.py": SCRIPT_HEAD + textwrap.dedent("""
        class MyScript(scripts.Script):
            def process(self, p, *args):
                p.sample = lambda *a, **k: None
        """)},
    "reach": {"scripts/a.py": "from lib_reach import helper\n",
              "lib_reach/__init__.py": "",
              "lib_reach/helper.py": "from . import deeper\n",
              "lib_reach/deeper.py": "from modules import no_such_module_reached_for_the_check\n",
              "comfy_nodes.py": "from modules import no_such_module_unreached_for_the_check\nimport folder_paths\n"},
    "guarded": {"scripts/a.py": "try:\n    from modules import forge_only_name_for_the_check\nexcept ImportError:\n"
                                "    pass\nimport gradio\n"},
}


def write_extension(root: str, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return root


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, extension_check.ExtensionReport]:
    base = tmp_path_factory.mktemp("extensions")
    paths = [write_extension(str(base / name), files) for name, files in FIXTURES.items()]
    return {r.name: r for r in extension_check.check_extensions(paths)}


def test_absent_module_is_a_missing_name(reports):
    report = reports["absent-module"]
    assert report.prediction == "missing names"
    assert report.missing == ["modules.no_such_module_for_the_check"]
    assert report.names["modules.no_such_module_for_the_check"]["kind"] == "module"
    assert report.names["modules.no_such_module_for_the_check"]["where"] == os.path.join("scripts", "a.py") + ":1"


def test_absent_attribute_is_a_missing_name_and_the_module_is_found(reports):
    report = reports["absent-attribute"]
    assert report.prediction == "missing names"
    assert report.missing == ["modules.shared.no_such_attribute_for_the_check"]
    assert report.names["modules.shared"]["missing"] == ""
    assert "has no 'no_such_attribute_for_the_check'" in report.names[report.missing[0]]["missing"]


def test_ldm_import_is_incompatible_with_the_reason(reports):
    report = reports["ldm"]
    assert report.prediction == "incompatible"
    assert "imports ldm/sgm" in report.reason and "ldm.modules.attention" in report.reason
    assert report.ldm_patching == {"imports ldm/sgm": f"ldm.modules.attention ({os.path.join('scripts', 'a.py')}:1)"}


def test_forward_replaced_on_the_unet_modules_is_incompatible(reports):
    report = reports["cross-attention"]
    assert report.prediction == "incompatible"
    assert list(report.ldm_patching) == ["CrossAttention.forward replaced"]


def test_cv2_installed_by_the_extension_or_available(reports):
    report = reports["cv2"]
    expected = "available" if importlib.util.find_spec("cv2") else "installed by the extension"
    assert report.packages == {"cv2": expected}
    assert report.prediction == ("should work" if expected == "available" else "needs packages")


def test_unknown_package_needs_packages(reports):
    report = reports["unknown-package"]
    assert report.packages == {"zz_package_nobody_provides": "not available"}
    assert report.prediction == "needs packages"
    assert report.reason == "zz_package_nobody_provides (not available)"


def test_js_globals_are_looked_up_in_this_page(reports):
    report = reports["js"]
    assert set(report.names) == {"onUiLoaded", "gradioApp"}
    page = extension_check_js.page_globals(ROOT)
    for name in ("onUiLoaded", "gradioApp"):
        assert report.names[name]["kind"] == "js_global"
        assert (report.names[name]["missing"] == "") == (name in page)


def test_gradio3_form_is_judged_by_what_gradio_extensions_declares(reports):
    report = reports["gradio3"]
    info = report.names["gr.<Component>.update("]
    assert info["kind"] == "gradio_form"
    supported = "gr.<Component>.update(" in extension_check.supported_gradio_forms()
    assert (info["missing"] == "") == supported
    assert report.prediction == ("should work" if supported else "missing names")


def test_script_methods_p_attributes_and_settings(reports):
    report = reports["script"]
    assert report.prediction == "should work", report.reason
    for name in ("Script.title", "Script.show", "Script.process", "p.extra_generation_params", "p.seed",
                 "modules.shared.opts.add_option", "modules.script_callbacks.on_ui_settings",
                 "modules.scripts.AlwaysVisible"):
        assert report.names[name]["missing"] == "", name
    assert report.names["Script.process"]["kind"] == "script_method"
    assert report.names["modules.script_callbacks.on_ui_settings"]["kind"] == "callback"
    # the extension's own attribute of p and a setting key are not A1111 names to check
    assert "p.my_own_value" not in report.names
    assert not any("some_setting_key" in name for name in report.names)


def test_cmd_opts_flags_from_the_parser_and_the_extensions_preload(reports):
    report = reports["flags"]
    assert report.missing == ["cmd_opts.no_such_flag_for_the_check"]
    assert report.names["cmd_opts.my_ext_dir"]["missing"] == ""
    assert report.names["cmd_opts.lora_dir"]["missing"] == ""


def test_guarded_uses_are_reported_but_do_not_fail(reports):
    report = reports["guarded"]
    assert report.prediction == "should work"
    assert report.missing_guarded == ["modules.forge_only_name_for_the_check"]
    assert report.as_dict()["missing_guarded"] == ["modules.forge_only_name_for_the_check"]


def run_main(*targets: str) -> subprocess.CompletedProcess:
    code = "import sys; from modules.extension_check import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *targets], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_main_prints_the_prediction_for_a_folder(tmp_path):
    path = write_extension(str(tmp_path / "ldm-ext"), FIXTURES["ldm"] | {"scripts/a.py": "import sgm.modules\n"})
    completed = run_main(path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0] == "ldm-ext: incompatible"
    assert "ldm-patching: imports ldm/sgm (sgm.modules (scripts/a.py:1))" in completed.stdout


def test_main_clones_a_git_url_and_checks_it(tmp_path):
    repo = write_extension(str(tmp_path / "js-ext"), FIXTURES["js"])
    for command in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", repo, *command], check=True, capture_output=True)
    completed = run_main(f"file://{repo}")
    assert completed.returncode == 0, completed.stderr
    page = extension_check_js.page_globals(ROOT)
    expected = "should work" if {"gradioApp", "onUiLoaded"} <= page else "missing names"
    assert completed.stdout.splitlines()[0] == f"js-ext: {expected}"


def test_main_reports_an_unreachable_url(tmp_path):
    completed = run_main(f"file://{tmp_path}/nothing-here")
    assert completed.returncode == 2
    assert "git clone" in completed.stderr


def test_a_name_that_exists_only_to_refuse_makes_the_extension_incompatible(reports):
    report = reports["refused"]
    assert report.prediction == "incompatible"
    assert list(report.incompatible_uses) == ["p.sample"]
    assert report.incompatible_uses["p.sample"].endswith(f"({os.path.join('scripts', 'a.py')}:6)")
    assert report.names["p.sample"]["missing"] == ""
    assert not report.ldm_patching


def test_files_no_entry_point_imports_count_as_guarded(reports):
    report = reports["reach"]
    assert report.missing == ["modules.no_such_module_reached_for_the_check"]
    assert report.missing_guarded == ["modules.no_such_module_unreached_for_the_check"]
    assert report.names[report.missing[0]]["where"] == os.path.join("lib_reach", "deeper.py") + ":1"
    assert "folder_paths" not in report.packages  # imported only by a file A1111 never runs


def test_census_tables_rank_missing_names_over_the_non_ldm_extensions(reports):
    path = os.path.join(ROOT, "tools", "extension_census.py")
    spec = importlib.util.spec_from_file_location("extension_census", path)
    census = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(census)
    labelled = [(f"owner/{name}", reports[name]) for name in ("absent-module", "flags", "ldm", "script")]
    rows = [(label, "", "7", "abc123") for label, _ in labelled]
    text = census.census_markdown(labelled, rows)
    assert "| 1 | owner/absent-module | 7 | abc123 | no | no / no | `modules.no_such_module_for_the_check` " \
           "| missing names: modules.no_such_module_for_the_check |" in text
    assert "| 3 | owner/ldm | 7 | abc123 | yes |" in text and "incompatible: imports ldm/sgm" in text
    assert "Of the other **3**: **1** find every A1111 Python name" in text
    ranking = census.ranking(labelled, only_missing=True)
    assert [(name, len(users)) for name, _, users, _ in ranking] == [
        ("cmd_opts.no_such_flag_for_the_check", 1), ("modules.no_such_module_for_the_check", 1)]


def test_a_function_that_only_raises_incompatible_is_recognised():
    from modules import extension_check_resolve
    from modules.incompatible import IncompatibleExtensionError

    def refusing(name):
        """Kept for A1111 extensions."""
        raise IncompatibleExtensionError(f"demo.refusing({name}): an ldm internal")

    def working(name):
        if not name:
            raise IncompatibleExtensionError("only sometimes")
        return name

    assert extension_check_resolve._refusal(refusing) == "demo.refusing(): an ldm internal"
    assert extension_check_resolve._refusal(working) == ""
