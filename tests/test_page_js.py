"""A1111's page globals and extension JavaScript/CSS served as files, in a real browser (Debian's Chromium).

One server for the module, with two small extensions written the way real ones are: `page-probe` (JavaScript
that uses A1111's globals and callbacks, a file containing `</script`, a style.css, and a script whose UI uses
Gradio 3 forms: `gr.Box`, `source=`/`tool=`, `.style()`, `_js=`, `gr.Checkbox.update`, plus `after_component`
callbacks) and `zz-after` (whose script must still run after the `</script` file).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.servers import running_webui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")

# every global of the census (extension-surface.md, section d) and the callbacks' registration functions
PAGE_GLOBALS = ["gradioApp", "onUiLoaded", "onUiUpdate", "onAfterUiUpdate", "onUiTabChange", "onOptionsChanged",
                "get_uiCurrentTab", "get_uiCurrentTabContent", "updateInput", "randomId", "requestProgress", "opts",
                "titles", "localization", "create_submit_args", "args_to_array", "switch_to_txt2img",
                "switch_to_img2img", "switch_to_inpaint", "switch_to_extras", "submit", "submit_img2img",
                "selected_gallery_index", "showSubmitButtons", "get_tab_index", "currentTab", "localSet", "localGet",
                "localRemove", "onEdit", "uiElementIsVisible", "uiElementInSight", "executeCallbacks",
                "extraNetworksEditUserMetadata"]

PROBE_JS = """
window.__probe = {missingAtLoad: PAGE_GLOBALS_JSON.filter(function(n) { return !(n in window); }),
                  loaded: 0, updates: 0, afterUpdates: 0, tabChanges: 0, optionsChanged: 0};
onUiLoaded(function() {
    __probe.loaded += 1;
    __probe.promptAtLoad = !!gradioApp().querySelector('#txt2img_prompt');
    __probe.formatAtLoad = opts.samples_format;
    __probe.afterScriptRanBeforeLoad = window.__afterRan === true;
});
onUiUpdate(function(mutations) { __probe.updates += 1; __probe.lastMutations = mutations.length; });
onAfterUiUpdate(function() { __probe.afterUpdates += 1; });
onUiTabChange(function() { __probe.tabChanges += 1; __probe.tab = get_uiCurrentTabContent().id; });
onOptionsChanged(function() { __probe.optionsChanged += 1; });
// as many A1111 extensions do: wait for the page, then watch the DOM for the elements and settings they need
document.addEventListener("DOMContentLoaded", function() {
    __probe.domContentLoaded = (__probe.domContentLoaded || 0) + 1;
    var observer = new MutationObserver(function() {
        if (gradioApp().querySelector('#txt2img_prompt') && opts.samples_format) {
            observer.disconnect();
            __probe.observerSawUi = true;
        }
    });
    observer.observe(gradioApp(), {childList: true, subtree: true});
});
""".replace("PAGE_GLOBALS_JSON", json.dumps(PAGE_GLOBALS))

BREAKER_JS = 'window.__breaker = "</script><b>not markup</b>";\n'

PROBE_SCRIPT = '''
import gradio as gr

from modules import script_callbacks, scripts


class PageProbe(scripts.Script):
    def title(self):
        return "Page probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        with gr.Box(elem_id=f"{tab}_probe_box"):
            enabled = gr.Checkbox(label="Probe enabled", value=False, elem_id=f"{tab}_probe_enabled")
            gr.Image(source="upload", tool="sketch", type="pil", elem_id=f"{tab}_probe_image")
            toggle = gr.Button("Probe toggle", elem_id=f"{tab}_probe_toggle").style(full_width=False, size="sm")
            js_out = gr.Textbox(label="Probe js", elem_id=f"{tab}_probe_js")
        toggle.click(fn=lambda value: gr.Checkbox.update(value=not value), inputs=[enabled], outputs=[enabled])
        toggle.click(fn=None, _js="() => 'js ran: ' + typeof gradioApp", inputs=[], outputs=[js_out],
                     show_progress=False)
        return [enabled]

    def after_component(self, component, **kwargs):
        # A1111 announces the blocks extensions make themselves too
        if kwargs.get("elem_id") == "txt2img_probe_enabled":
            gr.HTML("after own checkbox", elem_id="probe_after_own")


def after_component(component, **kwargs):
    if kwargs.get("elem_id") == "txt2img_prompt":
        gr.Button("After prompt", elem_id="probe_after_prompt")


script_callbacks.on_after_component(after_component)
'''


def _write_extensions(data_dir: Path) -> None:
    probe = data_dir / "extensions" / "page-probe"
    (probe / "javascript").mkdir(parents=True)
    (probe / "scripts").mkdir()
    (probe / "javascript" / "a_probe.js").write_text(PROBE_JS)
    (probe / "javascript" / "b_breaker.js").write_text(BREAKER_JS)
    (probe / "scripts" / "page_probe.py").write_text(PROBE_SCRIPT)
    (probe / "style.css").write_text("#probe_after_prompt { outline: 3px solid rgb(255, 0, 0); }\n")
    (probe / "data").mkdir()
    (probe / "data" / "words.csv").write_text("alpha,1\n")
    (probe / ".secret").write_text("token\n")
    after = data_dir / "extensions" / "zz-after" / "javascript"
    after.mkdir(parents=True)
    (after / "after.js").write_text("window.__afterRan = true;\n")


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("page-js")
    _write_extensions(data_dir)
    with running_webui(data_dir) as (url, log_path):
        yield url, log_path


@pytest.fixture(scope="module")
def loaded_page(probe_server):
    from playwright.sync_api import sync_playwright

    url, _ = probe_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("window.__probe && window.__probe.loaded === 1", timeout=60000)
        yield page, errors
        browser.close()


def test_head_lists_the_files_in_a1111_order(probe_server):
    url, _ = probe_server
    head = httpx.get(url + "/config", timeout=10).json()["head"]
    sources = re.findall(r'(?:src|href)="webui-page/file/([^"?]+)\?\d+"', head)
    assert sources == ["webui/javascript/a1111_page.js", "ext/page-probe/javascript/a_probe.js",
                       "ext/page-probe/javascript/b_breaker.js", "ext/zz-after/javascript/after.js",
                       "webui/javascript/a1111_ready.js", "ext/page-probe/style.css"]
    assert "<script>" not in head  # nothing is pasted inline


def test_file_route_serves_only_the_listed_files(probe_server):
    url, _ = probe_server
    breaker = httpx.get(url + "/webui-page/file/ext/page-probe/javascript/b_breaker.js", timeout=10)
    assert breaker.status_code == 200 and breaker.text == BREAKER_JS
    assert breaker.headers["content-type"].startswith("text/javascript")
    css = httpx.get(url + "/webui-page/file/ext/page-probe/style.css", timeout=10)
    assert css.headers["content-type"].startswith("text/css") and "probe_after_prompt" in css.text
    for key in ("ext/page-probe/scripts/page_probe.py", "ext/page-probe/javascript/../scripts/page_probe.py",
                "ext/page-probe/javascript/%2e%2e/%2e%2e/%2e%2e/webui.py", "webui/webui.py", "../config.json"):
        answer = httpx.get(url + "/webui-page/file/" + key, timeout=10)
        assert answer.status_code == 404, key
        assert "PageProbe" not in answer.text and "def main" not in answer.text


def test_options_route_gives_the_current_settings(probe_server):
    url, _ = probe_server
    values = httpx.get(url + "/webui-page/opts", timeout=10).json()
    assert values["samples_format"] == "png" and "sd_model_checkpoint" in values


def test_globals_exist_before_extension_scripts_and_on_ui_loaded_runs_once(loaded_page):
    page, errors = loaded_page
    probe = page.evaluate("window.__probe")
    assert probe["missingAtLoad"] == []
    assert probe["promptAtLoad"] is True and probe["formatAtLoad"] == "png"
    assert probe["afterScriptRanBeforeLoad"] is True  # onUiLoaded waits for every extension script
    assert probe["optionsChanged"] >= 1
    assert probe["domContentLoaded"] == 1  # run after every extension script, as in A1111's page
    page.wait_for_function("window.__probe.observerSawUi === true", timeout=10000)
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__probe.loaded") == 1
    assert errors == []


def test_script_with_closing_tag_text_breaks_nothing(loaded_page):
    page, _ = loaded_page
    assert page.evaluate("window.__breaker") == "</script><b>not markup</b>"
    assert page.evaluate("window.__afterRan") is True
    # the extension's style.css is applied
    outline = page.evaluate("getComputedStyle(document.querySelector('#probe_after_prompt')).outlineColor")
    assert outline == "rgb(255, 0, 0)"


def test_update_and_tab_callbacks_fire(loaded_page):
    page, _ = loaded_page
    page.wait_for_function("window.__probe.afterUpdates > 0", timeout=10000)
    before = page.evaluate("[window.__probe.updates, window.__probe.tabChanges]")
    page.click("#tab_img2img-button")
    page.wait_for_function("window.__probe.tab === 'tab_img2img'", timeout=30000)
    after = page.evaluate("[window.__probe.updates, window.__probe.tabChanges]")
    assert after[0] > before[0] and after[1] == before[1] + 1
    assert page.evaluate("get_uiCurrentTab().textContent.trim()") == "img2img"
    page.evaluate("switch_to_txt2img()")
    page.wait_for_function("window.__probe.tab === 'tab_txt2img'", timeout=30000)
    assert page.evaluate("get_tab_index('tabs')") == 0


def get_current_tab_text(page) -> str:
    return page.evaluate("document.querySelector('#tabs [role=tablist] button[aria-selected=true]').textContent.trim()")


def test_helpers_behave_as_a1111s(loaded_page):
    page, _ = loaded_page
    assert re.fullmatch(r"task\([A-Za-z0-9]{15}\)", page.evaluate("randomId()"))
    assert page.evaluate("create_submit_args(['id', 1, [{'image': 1}], 'a', 'b'])") == ["id", 1, None, "a", "b"]
    assert page.evaluate("args_to_array((function() { return arguments; })(1, 2))") == [1, 2]
    assert page.evaluate("localSet('k', 'v'), [localGet('k'), (localRemove('k'), localGet('k', 'gone'))]") == [
        "v", "gone"]
    assert page.evaluate("uiElementIsVisible(gradioApp().getElementById('txt2img_prompt'))") is True
    assert page.evaluate("selected_gallery_index()") == -1
    # Gradio 3's "label > textarea" selectors find the textarea Gradio now wraps one level deeper
    assert page.evaluate("""gradioApp().querySelector('#txt2img_prompt > label > textarea')
        === document.querySelector('#txt2img_prompt textarea')""") is True
    assert page.evaluate("gradioApp().querySelectorAll('#txt2img_prompt > label > textarea').length") == 1
    # and A1111's "#tabs > .tab-nav > button" the top-level tab buttons
    assert page.evaluate("gradioApp().querySelector('#tabs > .tab-nav > button.selected').textContent.trim()") \
        == get_current_tab_text(page)
    # updateInput makes Gradio see a value set from JavaScript: the token counter counts the new prompt
    page.evaluate("""(() => {
        const area = gradioApp().querySelector('#txt2img_prompt textarea');
        area.value = 'one two three';
        updateInput(area);
    })()""")
    page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === 'one two three'")


def test_more_a1111_page_names(loaded_page):
    page, _ = loaded_page
    # switchWidthHeight swaps the tab's sliders (and Gradio sees the new values)
    sizes = "[...['width', 'height']].map(n => document.querySelector('#txt2img_' + n + ' input[type=number]').value)"
    width, height = page.evaluate(sizes)
    page.evaluate("switchWidthHeight('txt2img')")
    assert page.evaluate(sizes) == [height, width]
    # appendContextMenuOption: a right click on the element shows the entry, a click on it runs the function
    page.evaluate("appendContextMenuOption('#txt2img_generate', 'Probe entry', () => { window.__menuRan = 1; })")
    page.click("#txt2img_generate", button="right")
    page.click("#context-menu >> text=Probe entry")
    assert page.evaluate("window.__menuRan") == 1
    assert page.evaluate("typeof dimensionChange === 'function' && typeof selectCheckpoint === 'function' && "
                         "typeof restart_reload === 'function'") is True


def test_extension_ui_with_gradio3_forms_works(loaded_page):
    page, _ = loaded_page
    # Gradio 3's class names, which extension scripts and stylesheets select by
    assert page.locator("#txt2img_prompt.gradio-textbox").count() == 1
    assert page.locator("#txt2img_probe_box.gradio-group").count() >= 1  # Gradio nests two group divs with its id
    assert page.locator("#txt2img_probe_box #txt2img_probe_enabled").count() == 1
    assert page.locator("#txt2img_probe_image").count() == 1
    checkbox = page.locator("#txt2img_probe_enabled input[type=checkbox]")
    assert checkbox.is_checked() is False
    page.click("#txt2img_probe_toggle")
    page.wait_for_function("document.querySelector('#txt2img_probe_enabled input').checked === true",
                           timeout=15000)
    page.wait_for_function(
        "document.querySelector('#txt2img_probe_js textarea').value === 'js ran: function'", timeout=15000)


def test_after_component_adds_controls(loaded_page):
    page, _ = loaded_page
    # after the WebUI's own prompt box, and after a checkbox the extension made itself (announced as in A1111)
    for anchor, added in (("#txt2img_prompt", "#probe_after_prompt"), ("#txt2img_probe_enabled", "#probe_after_own")):
        assert page.locator(added).count() == 1
        follows = page.evaluate(f"""(() => {{
            const a = document.querySelector('{anchor}'), b = document.querySelector('{added}');
            return !!(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING);
        }})()""")
        assert follows, added


def test_tooltips_from_titles(loaded_page):
    page, _ = loaded_page
    page.wait_for_function("document.querySelector('#txt2img_generate').title !== ''", timeout=10000)
    assert page.get_attribute("#txt2img_generate", "title") == page.evaluate("titles['Generate']")


def test_options_reload_after_apply_settings(loaded_page):
    page, _ = loaded_page
    page.click("#tab_settings-button")
    checkbox = "#setting_save_txt input[type=checkbox]"
    page.wait_for_selector(checkbox, timeout=30000)
    changed, value = page.evaluate("[window.__probe.optionsChanged, opts.save_txt]")
    page.click(checkbox)
    page.click("#settings_submit")
    page.wait_for_function(f"window.__probe.optionsChanged === {changed + 1}", timeout=20000)
    assert page.evaluate("opts.save_txt") is (not value)


def test_internal_progress_answers_as_a1111s(probe_server):
    url, _ = probe_server
    answer = httpx.post(url + "/internal/progress", json={"id_task": "task(nothing)", "id_live_preview": -1},
                        timeout=10).json()
    assert answer["active"] is False and answer["queued"] is False and answer["completed"] is False
    assert answer["textinfo"] == "Waiting..." and answer["id_live_preview"] == -1


def test_a1111_file_route_serves_extension_files_only(probe_server):
    url, log_path = probe_server
    probe = log_path.parent / "extensions" / "page-probe"
    words = httpx.get(f"{url}/file={probe}/data/words.csv", timeout=10)
    assert words.status_code == 200 and words.text == "alpha,1\n"
    for path in (f"{probe}/.secret", f"{probe}/data/../../../config.json", "webui.py", "modules/shared.py",
                 f"{log_path}", "/etc/passwd"):
        answer = httpx.get(f"{url}/file={path}", timeout=10)
        assert answer.status_code == 404, path
