"""Page JavaScript for the extension check: the globals A1111's page defines, the globals an extension's
`javascript/*.js` (and the `_js=` code of its Python) calls, and the globals this program's page defines.

Read with regular expressions after comments and string literals are blanked: good enough to find calls of named
globals (`gradioApp()`, `onUiLoaded(...)`), not a JavaScript parser.
"""

from __future__ import annotations

import os
import re

# The globals of A1111's page (v1.10: script.js and javascript/*.js) that an extension's script can call or read.
A1111_JS_GLOBALS = frozenset({
    # script.js
    "gradioApp", "get_uiCurrentTab", "get_uiCurrentTabContent", "uiUpdateCallbacks", "uiAfterUpdateCallbacks",
    "uiLoadedCallbacks", "uiTabChangeCallbacks", "optionsChangedCallbacks", "optionsAvailableCallbacks",
    "onUiUpdate", "onAfterUiUpdate", "onUiLoaded", "onUiTabChange", "onOptionsChanged", "onOptionsAvailable",
    "executeCallbacks", "scheduleAfterUiUpdateCallbacks", "uiCurrentTab", "uiElementIsVisible", "uiElementInSight",
    # ui.js
    "set_theme", "all_gallery_buttons", "selected_gallery_button", "selected_gallery_index",
    "gallery_container_buttons",
    "extract_image_from_gallery", "switch_to_txt2img", "switch_to_img2img_tab", "switch_to_img2img",
    "switch_to_sketch", "switch_to_inpaint", "switch_to_inpaint_sketch", "switch_to_extras", "get_tab_index",
    "create_tab_index_args", "get_img2img_tab_index", "create_submit_args", "setSubmitButtonsVisibility",
    "showSubmitButtons", "showSubmitInterruptingPlaceholder", "showRestoreProgressButton", "submit",
    "submit_txt2img_upscale", "submit_img2img", "submit_extras", "restoreProgressTxt2img", "restoreProgressImg2img",
    "modelmerger", "ask_for_style_name", "confirm_clear_prompt", "opts", "opts_metadata", "opts_tabs",
    "update_txt2img_tokens", "update_img2img_tokens", "update_token_counter", "restart_reload", "updateInput",
    "desiredCheckpointName", "selectCheckpoint", "currentImg2imgSourceResolution",
    "updateImg2imgResizeToTextAfterChangingImage", "setRandomSeed", "switchWidthHeight", "onEdit", "args_to_array",
    "currentTab", "reload_ui",
    # progressbar.js, localStorage.js, localization.js, hints.js, imageviewer.js, contextMenus.js, others
    "rememberGallerySelection", "getGallerySelectedIndex", "request", "pad2", "formatTime", "setTitle", "randomId",
    "requestProgress", "requestPing", "localSet", "localGet", "localRemove", "localization", "getTranslation",
    "localizeWholePage", "titles", "closeModal", "showModal", "modalImageSwitch", "setupImageForLightbox",
    "modalNextImage", "modalPrevImage", "appendContextMenuOption", "removeContextMenuOption",
    "addContextMenuEventListener", "extraNetworksEditUserMetadata", "extraNetworksRequestMetadata",
    "extraNetworksShowMetadata", "setupExtraNetworks", "cardClicked", "saveCardPreview", "popup", "closePopup",
    "requestGet", "keyupEditAttention", "inputAccordionChecked", "setupAccordion",
    "extensions_apply", "extensions_check", "install_extension_from_index", "toggle_all_extensions",
    "toggle_extension", "dimensionChange", "settingsShowAllTabs", "settingsShowOneTab", "attachGalleryListeners",
    "imageMaskResize", "setupResizeHandle",
})

_DEFINITION = re.compile(
    r"(?:function\s*\*?\s*([A-Za-z_$][\w$]*)\s*\()"          # function NAME(
    r"|(?:\b(?:var|let|const)\s+([A-Za-z_$][\w$]*))"          # var NAME
    r"|(?:\bwindow\.([A-Za-z_$][\w$]*)\s*=(?!=))"             # window.NAME =
    r"|(?:^\s*([A-Za-z_$][\w$]*)\s*=(?!=))"                   # NAME = at the start of a line (sloppy global)
    r"|(?:\bclass\s+([A-Za-z_$][\w$]*))"
    r"|(?:(?:^|[{};,])\s*(?:(?:async|static|get|set)\s+)*([A-Za-z_$][\w$]*)\s*\([^()]*\)\s*\{)",  # method NAME() {
    re.M)
_PARAMETERS = re.compile(r"(?:function\s*[\w$]*\s*\(([^)]*)\))|(?:\(([^()]*)\)\s*=>)|(?:\b([A-Za-z_$][\w$]*)\s*=>)")
_IDENTIFIER = re.compile(r"(?<![\w$.])(?:window\.)?([A-Za-z_$][\w$]*)(?![\w$])(?!\s*:(?!:))")


_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")
_REGEX_AFTER_WORDS = ("return", "typeof", "case", "do", "else", "in", "of", "void", "yield", "await", "delete", "new")


def _template_text(source: str, i: int) -> tuple[int, bool]:
    """Skip a template literal's text from `i`; returns where it ends and whether a `${` expression starts there."""
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
        elif ch == "`":
            return i + 1, False
        elif ch == "$" and source.startswith("{", i + 1):
            return i + 2, True
        else:
            i += 1
    return n, False


def _regex_allowed(out: list[str], prev: str) -> bool:
    """Whether a `/` here starts a regular expression literal (rather than a division)."""
    if not prev or prev in _REGEX_BEFORE:
        return True
    if prev.isalpha():
        tail = "".join(out[-12:]).rstrip()
        return tail.endswith(_REGEX_AFTER_WORDS)
    return False


def strip_js(source: str) -> str:
    """The code of a script with comments, string, template and regular-expression literals blanked (a small
    scanner: minified bundles put quotes and slashes inside regular expressions, which a regex-based strip misreads);
    the `${...}` parts of templates stay, they are code."""
    out: list[str] = []
    braces: list[int] = []  # per open `${`: the `{` depth inside it
    prev = ""
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        nxt = source[i + 1] if i + 1 < n else ""
        if ch in "\"'":
            j = i + 1
            while j < n and source[j] != ch and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            out.append('""')
            i, prev = j + 1, '"'
            continue
        if ch == "`" or (ch == "}" and braces and braces[-1] == 0):
            if ch == "}":
                braces.pop()
            i, expression = _template_text(source, i + 1)
            out.append('"" ')
            if expression:
                braces.append(0)
            prev = '"'
            continue
        if ch == "/" and nxt == "/":
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "/" and nxt == "*":
            end = source.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
            continue
        if ch == "/" and _regex_allowed(out, prev):
            j, in_class = i + 1, False
            while j < n and source[j] != "\n":
                if source[j] == "\\":
                    j += 2
                    continue
                if source[j] == "[":
                    in_class = True
                elif source[j] == "]":
                    in_class = False
                elif source[j] == "/" and not in_class:
                    break
                j += 1
            out.append('""')
            i, prev = j + 1, '"'
            continue
        if braces and ch == "{":
            braces[-1] += 1
        elif braces and ch == "}":
            braces[-1] -= 1
        out.append(ch)
        if not ch.isspace():
            prev = ch
        i += 1
    return "".join(out)


def defined_globals(source: str) -> set[str]:
    """The names a script defines at any level (function NAME, var/let/const NAME, window.NAME =, NAME = ...)."""
    names = set()
    for match in _DEFINITION.finditer(strip_js(source)):
        names.update(group for group in match.groups() if group)
    return names


def _parameters(code: str) -> set[str]:
    names = set()
    for match in _PARAMETERS.finditer(code):
        for group in match.groups():
            if group:
                names.update(part.strip().split("=")[0].strip(" .{}[]") for part in group.split(","))
    return {name for name in names if name}


def used_globals(source: str, known: frozenset[str] = A1111_JS_GLOBALS) -> set[str]:
    """The `known` globals a script uses and does not define (nor take as a parameter) itself."""
    code = strip_js(source)
    own = defined_globals(source) | _parameters(code)
    used = set()
    for match in _IDENTIFIER.finditer(code):
        name = match.group(1)
        if name in known and name not in own:
            used.add(name)
    return used


def page_globals(repo_root: str) -> set[str]:
    """The globals this program's page defines: every definition in the repository's `javascript/*.js`."""
    folder = os.path.join(repo_root, "javascript")
    names: set[str] = set()
    if not os.path.isdir(folder):
        return names
    for name in sorted(os.listdir(folder)):
        if name.endswith(".js"):
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                names |= defined_globals(f.read())
    return names


def extension_js_files(root: str) -> list[str]:
    """The files A1111 adds to the page for an extension: `javascript/*.js` (sorted, as A1111 loads them)."""
    folder = os.path.join(root, "javascript")
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith((".js", ".mjs"))]
