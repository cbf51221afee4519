"""Extensions as A1111 loads them, with an honest status: settings registered under --nowebui, ldm-only imports
shown as incompatible (with the reason), a broken script shown with the first line of its error, a guarded ldm
import that falls back loading fine. Our own small extensions, through a real API-only server."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from modules import extension_guard, extension_status
from tests.servers import running_webui

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 3}

EXTENSIONS = {
    # on_ui_settings adds an option; the always-on script reads it while the job runs (A1111: works with --nowebui)
    "ext-settings/scripts/factor.py": '''
        import gradio as gr
        from modules import script_callbacks, scripts, shared

        def on_settings():
            shared.opts.add_option("ext_settings_factor", shared.OptionInfo(
                3, "Factor", gr.Slider, {"minimum": 1, "maximum": 9}, section=("ext", "Ext")))

        script_callbacks.on_ui_settings(on_settings)

        class Factor(scripts.Script):
            def title(self):
                return "Factor"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p, *args):
                p.extra_generation_params["Ext factor"] = shared.opts.ext_settings_factor
                model = shared.sd_model  # A1111's names on the model that extensions read
                info = model.sd_checkpoint_info
                p.extra_generation_params["Ext model"] = \
                    f"{info.name_for_extra}|{model.is_sd1}|{model.sd_model_hash == info.shorthash}|{len(info.hash)}"
    ''',
    "ext-ldm/scripts/patch.py": '''
        from ldm.modules.attention import CrossAttention  # A1111's copy of the model code

        CrossAttention.forward = lambda self, x: x
    ''',
    "ext-broken/scripts/a.py": '''
        raise ValueError("boom on the first line\\nand more detail below")
    ''',
    # A1111's built-in Lora extension's modules: the lists work, rescaling the loaded networks is refused
    "ext-lora-list/scripts/lora_list.py": '''
        import networks
        from modules import scripts

        class LoraList(scripts.Script):
            def title(self):
                return "Lora list"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p, *args):
                networks.list_available_networks()
                on_disk = networks.available_network_aliases["trained-alias"]
                p.extra_generation_params["Lora listed"] = f"{on_disk.name}/{on_disk.alias}"
    ''',
    "ext-lora-rescale/scripts/rescale.py": '''
        import networks
        from modules import scripts

        class Rescale(scripts.Script):
            def title(self):
                return "Rescale"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p, *args):
                for net in networks.loaded_networks:  # A1111: rescale each loaded LoRA's layers in place
                    net.te_multiplier = 0
    ''',
    # prompt-fusion's way: replace A1111's prompt encoding entry point, which generation here never calls
    "ext-prompt-hijack/scripts/hijack.py": '''
        from modules import prompt_parser

        original = prompt_parser.get_learned_conditioning


        def interpolating(model, prompts, steps, *args, **kwargs):
            return original(model, prompts, steps, *args, **kwargs)


        prompt_parser.get_learned_conditioning = interpolating
    ''',
    "ext-guarded/scripts/guarded.py": '''
        try:
            import ldm.modules.attention  # noqa: F401
            HAVE_LDM = True
        except ImportError:
            HAVE_LDM = False
    ''',
}


def write_extensions(root: Path) -> None:
    import torch
    from safetensors.torch import save_file

    lora_dir = root / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(lora_dir / "file-name.safetensors"),
              metadata={"ss_output_name": "trained-alias"})
    for relative, code in EXTENSIONS.items():
        path = root / "extensions" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))


@pytest.fixture(scope="module")
def api_only_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("compat-data")
    write_extensions(data_dir)
    with running_webui(data_dir, "--nowebui") as (url, log_path):
        yield url, log_path


@pytest.mark.timeout(240)
def test_extension_settings_exist_under_nowebui_and_reach_the_job(api_only_server):
    url, _ = api_only_server
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    assert options["ext_settings_factor"] == 3
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "prompt": "a red circle"}, timeout=120).json()
    assert "Ext factor: 3" in body["info"]
    assert "Ext model: demo-shapes-sd1|True|True|8" in body["info"]  # the built-in demo model, SD1 family
    assert "Lora listed: file-name/trained-alias" in body["info"]  # A1111's networks lists, over our registry
    requests.post(f"{url}/sdapi/v1/options", json={"ext_settings_factor": 7}, timeout=30).raise_for_status()
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "prompt": "a red circle"}, timeout=120).json()
    assert "Ext factor: 7" in body["info"]


@pytest.mark.timeout(240)
def test_extension_status_is_honest(api_only_server):
    url, log_path = api_only_server
    requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "prompt": "a circle"}, timeout=120).raise_for_status()
    records = {r["name"]: r for r in requests.get(f"{url}/sdapi/v1/extensions", timeout=30).json()}
    assert records["ext-settings"]["load_state"] == "loaded"
    assert records["ext-guarded"]["load_state"] == "loaded"  # its try/except ImportError fallback ran
    assert records["Lora"]["load_state"] == "loaded" and records["Lora"]["is_builtin"]
    # once a job ran, the script that rescales A1111's loaded networks is shown incompatible (the job still ran)
    rescale = records["ext-lora-rescale"]
    assert rescale["load_state"] == "incompatible" and "networks.loaded_networks" in rescale["incompatible"]
    # from then on its hooks are not called: a further job logs no new failure of it
    failures = log_path.read_text().count("Error running process of script Rescale")
    assert failures >= 1
    requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "prompt": "a square"}, timeout=120).raise_for_status()
    assert log_path.read_text().count("Error running process of script Rescale") == failures
    ldm = records["ext-ldm"]
    assert ldm["load_state"] == "incompatible"
    assert "ldm.modules.attention" in ldm["incompatible"] and "diffusers" in ldm["incompatible"]
    assert "Extension 'ext-ldm' is incompatible" in ldm["load_status"]
    hijack = records["ext-prompt-hijack"]
    assert hijack["load_state"] == "incompatible"
    assert "replaces modules.prompt_parser.get_learned_conditioning" in hijack["incompatible"]
    broken = records["ext-broken"]
    assert broken["load_state"] == "failed"
    assert broken["failed_scripts"] == {"a.py": "ValueError: boom on the first line"}
    # the server kept going: the other extensions work and a job runs (checked above); the log names the file
    assert "ext-broken" in log_path.read_text()


@pytest.fixture
def guard():
    extension_guard.install()
    yield
    extension_guard.uninstall()
    for name in [m for m in sys.modules if m.startswith("webui_guard_probe")]:
        del sys.modules[name]


def test_ldm_import_names_the_calling_extension(guard, tmp_path, monkeypatch):
    probe = tmp_path / "extensions" / "my-ext" / "webui_guard_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import sgm.modules.diffusionmodules.openaimodel\n")
    monkeypatch.syspath_prepend(str(probe.parent))
    with pytest.raises(extension_guard.IncompatibleImportError) as caught:
        importlib.import_module("webui_guard_probe")
    assert str(caught.value).startswith("Extension 'my-ext' is incompatible: it imports sgm.modules")
    assert isinstance(caught.value, ImportError)  # try/except ImportError fallbacks keep working
    wrapped = RuntimeError("needs A1111")
    wrapped.__context__ = caught.value
    assert extension_guard.incompatibility_in(wrapped) is caught.value


def test_guard_leaves_real_and_unknown_modules_alone(guard):
    import json  # noqa: F401  (a real module still imports)

    with pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module("no_such_package_here")
    assert not isinstance(caught.value, extension_guard.IncompatibleExtensionError)
    with pytest.raises(extension_guard.IncompatibleImportError, match="hijack layer"):
        importlib.import_module("modules.sd_hijack_optimizations")


def test_status_summary_lines():
    extension_status.reset()
    extension_status.record_script_loaded("e", "a.py")
    extension_status.record_script_failure("e", "b.py", KeyError("x"))
    extension_status.record_install("e", installed_packages=["timm"])
    assert extension_status.status("e").state == "failed"
    assert extension_status.status("e").summary() == "b.py: KeyError: 'x'; installed timm"
    extension_status.mark_incompatible("e", "imports ldm")
    assert extension_status.status("e").summary() == "incompatible: imports ldm"
    extension_status.forget_scripts()
    assert extension_status.status("e").state == "" and extension_status.status("e").installed_packages == ["timm"]
    extension_status.reset()


LDM_PATCHER = '''
from ldm.modules.attention import CrossAttention
from modules import scripts


class Patcher(scripts.Script):
    def title(self):
        return "Patcher"
'''


def test_extensions_tab_checks_installed_extensions_and_a_url_before_install(app, tmp_path):
    """The Extensions tab's "Check compatibility" (installed) and "Check" (a git URL, before installing)."""
    import gradio as gr

    from modules.ui import extensions as extensions_tab
    from tests.test_extensions import _git

    installed = Path(app.cmd_opts.data_dir) / "extensions" / "needs-sd-models" / "scripts"
    installed.mkdir(parents=True)
    (installed / "main.py").write_text("from modules import sd_models_no_such_module\n")
    table = extensions_tab.check_installed()
    assert "needs-sd-models" in table and "missing names" in table and "modules.sd_models_no_such_module" in table

    repo = tmp_path / "ldm-patcher.git"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "patch.py").write_text(LDM_PATCHER)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    table = extensions_tab.check_url(f"file://{repo}")
    assert "ldm-patcher" in table and "incompatible" in table and "ldm" in table
    assert not (Path(app.cmd_opts.data_dir) / "extensions" / "ldm-patcher").exists()  # checked, not installed
    app.cmd_opts.listen = True  # reachable from the network: no cloning on a visitor's behalf
    with pytest.raises(gr.Error, match="--enable-insecure-extension-access"):
        extensions_tab.check_url(f"file://{repo}")


def test_page_leaves_out_the_javascript_of_incompatible_and_failed_extensions(tmp_path):
    import argparse

    from modules.options import Options
    from modules.ui import page_assets

    for name in ("works", "incompatible", "failed", "js-only"):
        folder = tmp_path / "extensions" / name / "javascript"
        folder.mkdir(parents=True)
        (folder / f"{name}.js").write_text(f"window.loaded_{name.replace('-', '_')} = true;\n")
    cmd_opts = argparse.Namespace(data_dir=str(tmp_path), disable_all_extensions=False,
                                  disable_extra_extensions=False)
    extension_status.reset()
    extension_status.record_script_loaded("works", "main.py")
    extension_status.mark_incompatible("incompatible", "imports ldm")
    extension_status.record_script_failure("failed", "main.py", ImportError("no"))
    try:
        head = page_assets.page_head(Options(), cmd_opts, extension_filter=lambda e:
                                     extension_status.page_files_wanted(e.name))
    finally:
        extension_status.reset()
    assert "works/javascript/works.js" in head and "js-only/javascript/js-only.js" in head
    assert "incompatible.js" not in head and "failed.js" not in head


TABS_EXTENSION = '''
import gradio as gr
from modules import script_callbacks, ui

seen = {}


def on_tabs():
    seen["paste_fields"] = len(ui.txt2img_paste_fields)  # A1111 builds txt2img before on_ui_tabs
    with gr.Blocks() as block:
        with gr.Tab("Inner", open=False):  # Gradio 3 ignored an argument a block does not take
            gr.HTML("data for the page script", visible=False, elem_id="tabs_ext_hidden")
    return [(block, "Tabs ext", "tabs_ext")]


script_callbacks.on_ui_tabs(on_tabs)
'''


def test_extension_tabs_see_the_built_tabs_and_gradio3_leniency(app, tmp_path):
    import sys

    from modules import scripts, ui

    folder = tmp_path / "extensions" / "tabs-ext"
    (folder / "scripts").mkdir(parents=True)
    (folder / "scripts" / "tabs_probe.py").write_text(TABS_EXTENSION)
    scripts.load_scripts([str(folder)])
    try:
        assert scripts.load_errors == []
        demo = ui.create_ui()
        seen = sys.modules["tabs_probe.py"].seen
        assert seen["paste_fields"] > 5
        blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
        # in the page but hidden, as Gradio 3 had an extension's invisible block (its page script looks it up)
        assert blocks["tabs_ext_hidden"].visible == "hidden"
        assert blocks["tab_tabs_ext"].render_children is True  # every tab's content is in the page, as in Gradio 3
        assert blocks["tab_txt2img"].render_children is True and blocks["tab_img2img"].render_children is True
    finally:
        scripts.load_scripts([])


def test_loader_installs_each_missing_package_in_turn(tmp_path, monkeypatch):
    """A script missing two packages of A1111's environment (sd-dynamic-prompts: dynamicprompts, then send2trash)
    loads at the first start: the loader installs for each missing module once and imports again. The install
    step itself (pip under the constraints) is tested in tests/test_extension_installs.py; here it writes the
    module into a folder on sys.path, as pip would into site-packages."""
    import sys

    from modules import extension_installs, scripts

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    installed = []

    def install(extension, module):
        if module not in ("first_need_a", "first_need_b"):
            return None
        (site / f"{module}.py").write_text("VALUE = 1\n")
        installed.append((extension, module))
        return module

    monkeypatch.setattr(extension_installs, "install_for_missing_module", install)
    folder = tmp_path / "extensions" / "needs-two" / "scripts"
    folder.mkdir(parents=True)
    (folder / "needs_two.py").write_text("import first_need_a\nimport first_need_b\nLOADED = True\n")
    extension_status.reset()
    scripts.load_scripts([str(folder.parent)])
    try:
        assert installed == [("needs-two", "first_need_a"), ("needs-two", "first_need_b")]
        assert sys.modules["needs_two.py"].LOADED is True
        assert extension_status.status("needs-two").state == "loaded"
    finally:
        for name in ("first_need_a", "first_need_b", "needs_two.py"):
            sys.modules.pop(name, None)
        scripts.load_scripts([])
        extension_status.reset()
