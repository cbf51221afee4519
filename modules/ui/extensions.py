"""The Extensions tab (A1111 layout): installed list with enable checkboxes and update status, Check for updates,
Apply and restart, Install from URL, Uninstall. The work is done by modules.extensions."""

from __future__ import annotations

import html
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import gradio as gr

from modules import extension_status, extensions, script_callbacks, shared
from modules.ui.components import create


def load_state(extension: extensions.Extension) -> dict[str, object]:
    """What happened to the extension in this run (modules.extension_status), "disabled" when it is off."""
    if not extension.enabled:
        return {"state": "disabled", "summary": "disabled"}
    state = extension_status.status(extension.name).as_dict()
    problems = getattr(extension, "requirement_errors", None) or []
    if problems:  # an unmet metadata.ini `Requires` (A1111 loads the extension anyway and says so)
        state["summary"] = "; ".join([str(state["summary"] or ""), *problems]).strip("; ")
    return state


def installed_table(items: list[extensions.Extension]) -> str:
    rows = []
    for e in items:
        state = load_state(e)
        rows.append(
            f"<tr><td>{html.escape(e.name)}{' (built-in)' if e.is_builtin else ''}</td>"
            f"<td>{html.escape(e.remote or '')}</td><td>{html.escape(e.branch or '')}</td>"
            f"<td>{html.escape(e.version)}</td>"
            f"<td>{time.strftime('%Y-%m-%d %H:%M', time.localtime(e.commit_date)) if e.commit_date else ''}</td>"
            f"<td>{html.escape(e.status or 'unknown')}</td>"
            f'<td class="extension_state_{html.escape(str(state["state"] or "none"))}">'
            f"{html.escape(str(state['summary'] or 'no scripts'))}</td></tr>")
    return ('<table id="extensions_table"><thead><tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th>'
            f'<th>Date</th><th>Update</th><th>Status</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def compatibility_table(reports: list) -> str:
    """The static check's prediction per extension (modules.extension_check), as an HTML table."""
    rows = "".join(
        f'<tr><td>{html.escape(r.name)}</td><td class="extension_prediction">{html.escape(r.prediction)}</td>'
        f"<td>{html.escape(r.reason)}</td></tr>" for r in reports)
    return ('<table id="extensions_check_table"><thead><tr><th>Extension</th><th>Prediction</th><th>Why</th></tr>'
            f"</thead><tbody>{rows or '<tr><td colspan=3>no extensions installed</td></tr>'}</tbody></table>")


def check_installed() -> str:
    """Check every installed (non-built-in) extension statically: A1111 names it lacks here, packages, ldm patching."""
    from modules import extension_check

    items = [e for e in extensions.list_extensions(shared.opts, shared.cmd_opts) if not e.is_builtin]
    return compatibility_table(extension_check.check_extensions([e.path for e in items]) if items else [])


def check_url(url: str) -> str:
    """Check an extension from its git URL before installing it: a shallow clone into a temporary folder, read
    statically (nothing of it runs), then deleted."""
    from modules import extension_check

    url = (url or "").strip()
    if not url:
        raise gr.Error("Enter the URL of the extension's git repository to check it.")
    try:
        extensions.check_access(shared.cmd_opts)
    except extensions.ExtensionError as e:
        raise gr.Error(str(e)) from e
    with tempfile.TemporaryDirectory(prefix="check-extension-") as scratch:
        try:
            path = extension_check.clone(url, scratch)
        except RuntimeError as e:
            raise gr.Error(str(e)) from e
        return compatibility_table(extension_check.check_extensions([path], [url]))


def _state() -> tuple[list[extensions.Extension], list[str], list[str]]:
    items = extensions.list_extensions(shared.opts, shared.cmd_opts)
    return items, [e.name for e in items], [e.name for e in items if e.enabled]


def refresh() -> tuple:
    items, names, enabled = _state()
    removable = [e.name for e in items if not e.is_builtin]
    return gr.CheckboxGroup(choices=names, value=enabled), installed_table(items), gr.Dropdown(choices=removable)


def check_for_updates() -> str:
    items, _, _ = _state()
    extensions.check_updates(items)
    return installed_table(items)


def apply_enabled(enabled: list[str]) -> None:
    names = [e.name for e in extensions.list_extensions(shared.opts, shared.cmd_opts)]
    disabled = sorted(n for n in names if n not in set(enabled or []))
    shared.opts.set("disabled_extensions", disabled)
    shared.save_settings()


def replace_process() -> None:
    """Start this program again in this process, with the same arguments."""
    os.execv(sys.executable, [sys.executable, *sys.argv])


def restart_server(delay: float = 0.5, restart: Callable[[], None] = replace_process) -> threading.Thread:
    """A1111's Apply and restart: once the response has gone out, tell extensions (`on_before_reload`, then
    `on_script_unloaded`: A1111's order when it restarts the UI) and start afresh. A1111 reloads in-process; here
    the process is replaced, so extensions get the same chance to save state and stop their threads first.
    `restart`: what starts afresh (a test passes one that does not replace the test process)."""
    def later() -> None:
        time.sleep(delay)
        script_callbacks.app_reload_callback()
        script_callbacks.script_unloaded_callback()
        restart()

    thread = threading.Thread(target=later, name="restart", daemon=True)
    thread.start()
    return thread


def apply_and_restart(enabled: list[str]) -> str:
    apply_enabled(enabled)
    restart_server()
    return "Restarting…"


def install_from_url(url: str, branch: str, folder: str) -> tuple:
    try:
        with shared.queue_lock:  # never while a job runs: install.py may change the environment
            extension = extensions.install(url, shared.cmd_opts, branch=branch or None, folder_name=folder or None)
    except extensions.ExtensionError as e:
        raise gr.Error(str(e)) from e
    message = f"Installed into {extension.path}. Use Installed tab to restart."
    return (message, *refresh())


def uninstall(name: str, confirmed: bool) -> tuple:
    if not confirmed:
        raise gr.Error("Tick the confirmation box to uninstall.")
    try:
        extensions.uninstall(name, shared.cmd_opts)
    except extensions.ExtensionError as e:
        raise gr.Error(str(e)) from e
    return (f"Removed {name}. Restart to unload its scripts.", *refresh())


def create_tab() -> None:
    items, names, enabled = _state()
    allowed = extensions.cmd_args_allow(shared.cmd_opts)
    with create(gr.Tab, "Extensions", id="extensions", elem_id="tab_extensions"):
        if not allowed:
            create(gr.HTML,
                   f'<p class="warning" id="extensions_disabled">{html.escape(extensions.INSECURE_MESSAGE)}</p>')
        with create(gr.Tabs, elem_id="tabs_extensions"):
            with create(gr.Tab, "Installed", id="installed"):
                with create(gr.Row):
                    apply_button = create(gr.Button, "Apply and restart UI", variant="primary",
                                                     elem_id="extensions_apply")
                    check_button = create(gr.Button, "Check for updates", elem_id="extensions_check")
                    compat_button = create(gr.Button, "Check compatibility", elem_id="extensions_check_compat")
                enabled_box = create(gr.CheckboxGroup, choices=names, value=enabled, label="Enabled",
                                                       elem_id="extensions_enabled")
                table = create(gr.HTML, installed_table(items), elem_id="extensions_installed_html")
                with create(gr.Row):
                    remove_name = create(gr.Dropdown, choices=[e.name for e in items if not e.is_builtin],
                                                      label="Uninstall extension", elem_id="extensions_remove_name")
                    remove_confirm = create(gr.Checkbox, label="Yes, delete its folder",
                                                         elem_id="extensions_remove_confirm")
                    remove_button = create(gr.Button, "Uninstall", elem_id="extensions_remove", interactive=allowed)
                status = create(gr.HTML, elem_id="extensions_status")
                compat_result = create(gr.HTML, elem_id="extensions_compat_result")
            with create(gr.Tab, "Install from URL", id="install_from_url"):
                url = create(gr.Textbox, label="URL for extension's git repository", elem_id="install_url")
                branch = create(gr.Textbox, label="Specific branch name",
                                            placeholder="Leave empty for default main branch",
                                            elem_id="install_branch")
                folder = create(gr.Textbox, label="Local directory name", placeholder="Leave empty for auto",
                                            elem_id="install_dirname")
                with create(gr.Row):
                    install_button = create(gr.Button, "Install", variant="primary", elem_id="install_button",
                                            interactive=allowed)
                    check_url_button = create(gr.Button, "Check", elem_id="install_check_button",
                                              interactive=allowed)
                install_result = create(gr.HTML, elem_id="extension_install_result")
        refresh_outputs = [enabled_box, table, remove_name]
        check_button.click(check_for_updates, inputs=[], outputs=[table], api_visibility="undocumented")
        compat_button.click(check_installed, inputs=[], outputs=[compat_result], api_visibility="undocumented")
        check_url_button.click(check_url, inputs=[url], outputs=[install_result], api_visibility="undocumented")
        apply_button.click(apply_and_restart, inputs=[enabled_box], outputs=[status], api_visibility="undocumented")
        install_button.click(install_from_url, inputs=[url, branch, folder], outputs=[install_result, *refresh_outputs],
                             api_visibility="undocumented")
        remove_button.click(uninstall, inputs=[remove_name, remove_confirm], outputs=[status, *refresh_outputs],
                            api_visibility="undocumented")
