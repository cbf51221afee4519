"""Extension install / update / remove through real git repositories on file:// URLs, and the access rule."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from modules import extensions
from modules.options import Options

SCRIPT = '''import modules.scripts as scripts
import gradio as gr


class ExtensionTemplateScript(scripts.Script):
    def title(self):
        return "Extension Template"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Extension Template", open=False):
            checkbox = gr.Checkbox(False, label="Enable")
        return [checkbox]

    def process(self, p, checkbox):
        if checkbox:
            p.extra_generation_params["Extension Template"] = "on"
'''


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_extension_repo(root: Path, name: str = "sd-webui-template", install_py: str | None = None) -> Path:
    repo = root / f"{name}.git"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "template.py").write_text(SCRIPT)
    (repo / "metadata.ini").write_text("[Extension]\nName = sd-webui-template\n")
    if install_py is not None:
        (repo / "install.py").write_text(install_py)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


@pytest.fixture
def setup(tmp_path):
    cmd_opts = argparse.Namespace(data_dir=str(tmp_path / "data"), listen=False, share=False, server_name=None,
                                  enable_insecure_extension_access=False, disable_all_extensions=False,
                                  disable_extra_extensions=False)
    os.makedirs(cmd_opts.data_dir)
    return Options(), cmd_opts, tmp_path


def test_install_runs_install_py_and_lists_git_details(setup):
    opts, cmd_opts, tmp_path = setup
    marker = tmp_path / "installed.txt"
    repo = make_extension_repo(tmp_path, install_py=f"open({str(marker)!r}, 'a').write('x')\n")
    installed = extensions.install(f"file://{repo}", cmd_opts, folder_name="template")
    assert marker.read_text() == "x"
    listed = [e for e in extensions.list_extensions(opts, cmd_opts) if not e.is_builtin]
    assert [e.name for e in listed] == ["template"] and listed[0].path == installed.path
    record = listed[0].api_record()
    assert record["remote"] == f"file://{repo}" and record["branch"] == "main" and record["enabled"] is True
    assert record["commit_hash"] == _git(repo, "rev-parse", "HEAD").strip() and record["commit_date"] > 0
    assert listed[0].metadata == {"Extension": {"name": "sd-webui-template"}}
    assert [d for d in extensions.enabled_script_dirs(opts, cmd_opts) if "extensions-builtin" not in d] == \
        [os.path.join(installed.path, "scripts")]
    # install.py runs again only when it changed, not on every start
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert marker.read_text() == "x"
    Path(installed.path, "install.py").write_text(f"open({str(marker)!r}, 'a').write('y')\n")
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert marker.read_text() == "xy"


def test_default_folder_is_the_url_name_and_an_existing_folder_is_refused(setup):
    opts, cmd_opts, tmp_path = setup
    repo = make_extension_repo(tmp_path, name="sd-webui-thing")
    extension = extensions.install(f"file://{repo}", cmd_opts)  # folder: last URL part minus .git
    assert extension.name == "sd-webui-thing"
    assert extensions.default_folder_name("https://github.com/a/sd-webui-thing.git") == "sd-webui-thing"
    with pytest.raises(extensions.ExtensionError, match="already exists"):
        extensions.install(f"file://{repo}", cmd_opts, folder_name=extension.name)


def test_failed_clone_or_install_leaves_nothing(setup):
    opts, cmd_opts, tmp_path = setup
    user_dir = Path(cmd_opts.data_dir) / "extensions"
    with pytest.raises(extensions.ExtensionError, match="Could not clone"):
        extensions.install(f"file://{tmp_path}/missing-repo", cmd_opts, folder_name="missing")
    repo = make_extension_repo(tmp_path, install_py="import sys\nprint('boom')\nsys.exit(3)\n")
    with pytest.raises(extensions.ExtensionError, match=r"(?s)install.py of .* failed \(exit 3\).*boom"):
        extensions.install(f"file://{repo}", cmd_opts, folder_name="broken")
    assert sorted(os.listdir(user_dir)) == []  # no folder, no staging leftovers


def test_update_shows_as_available_then_updates(setup):
    opts, cmd_opts, tmp_path = setup
    repo = make_extension_repo(tmp_path)
    extensions.install(f"file://{repo}", cmd_opts, folder_name="template")
    found = [e for e in extensions.list_extensions(opts, cmd_opts) if e.name == "template"]
    extensions.check_updates(found)
    assert found[0].status == "latest" and not found[0].can_update
    (repo / "scripts" / "template.py").write_text(SCRIPT.replace('"on"', '"on (v2)"'))
    _git(repo, "commit", "-q", "-am", "second")
    extensions.check_updates(found)
    assert found[0].status == "behind" and found[0].can_update
    updated = extensions.update("template", cmd_opts)
    assert updated.commit_hash == _git(repo, "rev-parse", "HEAD").strip()
    assert '"on (v2)"' in Path(updated.path, "scripts", "template.py").read_text()


def test_uninstall_and_enable_flags(setup):
    opts, cmd_opts, tmp_path = setup
    extensions.install(f"file://{make_extension_repo(tmp_path)}", cmd_opts, folder_name="template")
    extensions.set_enabled(opts, "template", False)
    assert opts.disabled_extensions == ["template"]
    assert [e.enabled for e in extensions.list_extensions(opts, cmd_opts) if e.name == "template"] == [False]
    extensions.set_enabled(opts, "template", True)
    cmd_opts.disable_extra_extensions = True
    assert [e.enabled for e in extensions.list_extensions(opts, cmd_opts) if e.name == "template"] == [False]
    cmd_opts.disable_extra_extensions = False
    extensions.uninstall("template", cmd_opts)
    assert not (Path(cmd_opts.data_dir) / "extensions" / "template").exists()
    with pytest.raises(extensions.ExtensionError, match="No installed extension"):
        extensions.uninstall("../..", cmd_opts)


def test_update_and_uninstall_failures_are_extension_errors(setup):
    """Detached HEAD, no origin, not a git repository, a NUL in the folder name: ExtensionError (a 4xx through
    the API), never a TypeError/ValueError/OSError (a 500)."""
    _, cmd_opts, tmp_path = setup
    repo = make_extension_repo(tmp_path)
    installed = extensions.install(f"file://{repo}", cmd_opts, folder_name="template")
    _git(Path(installed.path), "checkout", "-q", "--detach")
    with pytest.raises(extensions.ExtensionError, match="detached HEAD"):
        extensions.update("template", cmd_opts)
    _git(Path(installed.path), "checkout", "-q", "main")
    _git(Path(installed.path), "remote", "remove", "origin")
    with pytest.raises(extensions.ExtensionError, match="origin"):
        extensions.update("template", cmd_opts)
    plain = Path(cmd_opts.data_dir) / "extensions" / "plain"
    plain.mkdir()
    with pytest.raises(extensions.ExtensionError, match="not a git repository"):
        extensions.update("plain", cmd_opts)
    with pytest.raises(extensions.ExtensionError, match="Bad folder name"):
        extensions.install(f"file://{repo}", cmd_opts, folder_name="a\0b")
    with pytest.raises(extensions.ExtensionError, match="Could not clone"):
        extensions.install(f"file://{repo}\0x", cmd_opts, folder_name="nul-url")


@pytest.mark.parametrize("exposure", [{"listen": True}, {"share": True}, {"server_name": "0.0.0.0"}])
def test_refused_when_reachable_from_the_network_unless_allowed(setup, exposure):
    opts, cmd_opts, tmp_path = setup
    repo = make_extension_repo(tmp_path)
    for key, value in exposure.items():
        setattr(cmd_opts, key, value)
    with pytest.raises(extensions.ExtensionError, match="--enable-insecure-extension-access"):
        extensions.install(f"file://{repo}", cmd_opts, folder_name="template")
    assert not (Path(cmd_opts.data_dir) / "extensions" / "template").exists()
    cmd_opts.enable_insecure_extension_access = True
    assert extensions.install(f"file://{repo}", cmd_opts, folder_name="template").name == "template"


def test_api_install_refused_with_listen_and_allowed_with_the_flag(tmp_path):
    import requests

    from tests.servers import running_webui

    repo = make_extension_repo(tmp_path)
    body = {"url": f"file://{repo}", "name": "template"}
    (tmp_path / "exposed").mkdir()
    (tmp_path / "allowed").mkdir()
    with running_webui(tmp_path / "exposed", "--api", "--nowebui", "--listen") as (url, _):
        refused = requests.post(f"{url}/sdapi/v1/extensions/install", json=body, timeout=60)
        assert refused.status_code == 403 and "--enable-insecure-extension-access" in refused.json()["detail"]
        assert requests.post(f"{url}/sdapi/v1/extensions/remove", json={"name": "x"}, timeout=60).status_code == 403
    assert not (tmp_path / "exposed" / "extensions" / "template").exists()
    with running_webui(tmp_path / "allowed", "--api", "--nowebui", "--listen",
                       "--enable-insecure-extension-access") as (url, _):
        installed = requests.post(f"{url}/sdapi/v1/extensions/install", json=body, timeout=120)
        assert installed.status_code == 200 and installed.json()["name"] == "template"
        listed = [e for e in requests.get(f"{url}/sdapi/v1/extensions", timeout=30).json() if not e["is_builtin"]]
        assert [e["name"] for e in listed] == ["template"] and listed[0]["remote"] == f"file://{repo}"
        again = requests.post(f"{url}/sdapi/v1/extensions/install", json=body, timeout=60)
        assert again.status_code == 400 and "already exists" in again.json()["detail"]
        assert requests.post(f"{url}/sdapi/v1/extensions/remove", json={"name": "template"},
                             timeout=60).status_code == 200
    assert not (tmp_path / "allowed" / "extensions" / "template").exists()


def test_ui_install_handler_refuses_when_exposed(app, tmp_path):
    import gradio as gr

    from modules.ui import extensions as extensions_tab

    repo = make_extension_repo(tmp_path)
    app.cmd_opts.listen = True
    with pytest.raises(gr.Error, match="--enable-insecure-extension-access"):
        extensions_tab.install_from_url(f"file://{repo}", "", "template")
    app.cmd_opts.enable_insecure_extension_access = True
    message, enabled, table, _ = extensions_tab.install_from_url(f"file://{repo}", "", "template")
    assert "Installed into" in message and "template" in table
    builtins = {e.name for e in extensions.list_extensions(app.opts, app.cmd_opts) if e.is_builtin}
    assert [n for n in enabled.value if n not in builtins] == ["template"]  # built-ins (FreeU, Lora) are enabled too


def test_installed_extension_runs_unchanged_after_restart(tmp_path):
    """Install from a file:// git URL (real install path), start the app again, see the accordion in the page,
    drive the extension's `process` hook through the API's alwayson_scripts, and see it in /scripts lists."""
    import json

    import requests

    from tests.servers import running_webui

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    marker = tmp_path / "install-ran"
    repo = make_extension_repo(tmp_path, install_py=f"open({str(marker)!r}, 'w').write('ok')\n")
    cmd_opts = argparse.Namespace(data_dir=str(data_dir), listen=False, share=False, server_name=None,
                                  enable_insecure_extension_access=False)
    extensions.install(f"file://{repo}", cmd_opts)
    assert marker.read_text() == "ok"
    with running_webui(data_dir, "--api") as (url, _):
        config = requests.get(f"{url}/config", timeout=60).text
        assert "Extension Template" in config  # its accordion is in the txt2img tab
        info = requests.get(f"{url}/sdapi/v1/script-info", timeout=60).json()
        assert {"name": "extension template", "is_alwayson": True, "is_img2img": False} \
            .items() <= info[[i["name"] for i in info].index("extension template")].items()
        base = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "seed": 3}
        on = requests.post(f"{url}/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {
            "extension template": {"args": [True]}}}, timeout=120).json()
        assert "Extension Template: on" in json.loads(on["info"])["infotexts"][0]
        off = requests.post(f"{url}/sdapi/v1/txt2img", json=base, timeout=120).json()
        assert "Extension Template" not in json.loads(off["info"])["infotexts"][0]
        bad = requests.post(f"{url}/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"nope": {"args": []}}},
                            timeout=60)
        assert bad.status_code == 422 and "nope" in bad.json()["detail"]


def test_broken_extension_is_reported_and_the_rest_works(tmp_path):
    import json

    import requests

    from tests.servers import running_webui

    data_dir = tmp_path / "data"
    broken = data_dir / "extensions" / "broken" / "scripts"
    broken.mkdir(parents=True)
    (broken / "syntax.py").write_text("def oops(:\n")
    (broken / "callback.py").write_text(
        "from modules import script_callbacks\n\n"
        "def explode(*args):\n    raise RuntimeError('callback exploded')\n\n"
        "script_callbacks.on_app_started(explode)\nscript_callbacks.on_before_image_saved(explode)\n")
    with running_webui(data_dir, "--api") as (url, log_path):
        body = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", "width": 64, "height": 64, "steps": 2,
                                                              "save_images": True}, timeout=120).json()
        assert "info" in body, body
        assert json.loads(body["info"])["infotexts"]
        assert list((data_dir / "outputs").rglob("*.png"))  # saving survived the raising callback
        log = log_path.read_text()
        assert "syntax.py" in log and "callback exploded" in log


MINIMAL_EXTENSION = '''import gradio as gr
from modules import scripts, script_callbacks
class MyExt(scripts.Script):
    def title(self): return "My Ext"
    def show(self, is_img2img): return scripts.AlwaysVisible
    def ui(self, is_img2img):
        with gr.Accordion("My Ext", open=False):
            en = gr.Checkbox(label="Enabled", value=False); sfx = gr.Textbox(label="Suffix")
        return [en, sfx]
    def process(self, p, en, sfx):
        if en:
            p.all_prompts = [x + sfx for x in p.all_prompts]
            p.extra_generation_params["My Ext"] = sfx
script_callbacks.on_app_started(lambda demo, app: app.add_api_route("/my-ext/ping", lambda: {"ok": True}))
'''


def test_the_reference_minimal_extension_runs_unchanged(tmp_path):
    import json

    import requests

    from tests.servers import running_webui

    data_dir = tmp_path / "data"
    scripts_dir = data_dir / "extensions" / "my-ext" / "scripts"
    scripts_dir.mkdir(parents=True)
    (scripts_dir / "my_ext.py").write_text(MINIMAL_EXTENSION)
    with running_webui(data_dir, "--api") as (url, _):
        assert requests.get(f"{url}/my-ext/ping", timeout=30).json() == {"ok": True}
        body = requests.post(f"{url}/sdapi/v1/txt2img", json={
            "prompt": "a red circle", "width": 64, "height": 64, "steps": 2,
            "alwayson_scripts": {"My Ext": {"args": [True, ", cat"]}}}, timeout=120).json()
        info = json.loads(body["info"])
        assert info["all_prompts"] == ["a red circle, cat"]
        assert info["infotexts"][0].startswith("a red circle, cat\n") and 'My Ext: ", cat"' in info["infotexts"][0]
