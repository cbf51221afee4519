"""The A1111 surface manifest (`configs/a1111_surface.json`): every A1111 name that two or more of the 100
most-starred extensions use exists here, and every function and class accepts each of A1111's parameters by name
and at A1111's position. One test per name, so a failure names what is missing (`-k` selects one).

Names are looked up as `modules.extension_check_resolve` does for the extension check (import, `hasattr`; no app
start). ldm-patching names (`sd_hijack_optimizations`, `model_hijack.hijack` ...) are not expected to exist: an
extension using them is reported incompatible instead.
"""

from __future__ import annotations

import inspect
import json
import os

import pytest

from modules import extension_check, extension_check_js
from modules.extension_check_resolve import (
    add_builtin_extension_paths,
    check_signature,
    find_object,
    lookup,
    parser_dests,
    signature_problems,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "configs", "a1111_surface.json"), encoding="utf-8") as _f:
    MANIFEST = json.load(_f)
ENTRIES = [e for e in MANIFEST["names"] if not e.get("ldm_patching")]
PYTHON_KINDS = {"module", "attribute", "function", "class", "callback", "script_method", "p_attribute",
                "launch_helper", "cmd_opt"}


def entries_of(kinds: set[str], with_signature: bool = False) -> list:
    chosen = [e for e in ENTRIES if e["kind"] in kinds and (not with_signature or e.get("signature"))]
    return [pytest.param(e, id=e["name"]) for e in chosen]


@pytest.fixture(scope="module")
def dests():
    from modules import extension_guard

    add_builtin_extension_paths()
    extension_guard.install()  # as the app has it: ldm-only modules (repositories.midas …) refuse with a reason
    yield parser_dests() | extension_check.builtin_preload_flags()
    extension_guard.uninstall()


def test_manifest_lists_the_census_names():
    names = [e["name"] for e in MANIFEST["names"]]
    assert len(names) == len(set(names))
    assert all(e["count"] >= 2 for e in MANIFEST["names"])
    kinds = {e["kind"] for e in MANIFEST["names"]}
    assert kinds <= PYTHON_KINDS | {"js_global", "gradio_form"}
    for must in ("modules.shared", "modules.scripts.Script", "launch.run_pip", "gradioApp", "_js="):
        assert must in names, must


@pytest.mark.parametrize("entry", entries_of(PYTHON_KINDS))
def test_python_name_exists(entry, dests):
    why = lookup(entry["name"], dests)
    # a name that exists only to refuse (IncompatibleExtensionError) is there: the check reports its users
    assert why == "" or why.startswith("incompatible: "), \
        f"A1111 {entry['kind']} {entry['name']} (used by {entry['count']} of the 100) is missing: {why}"


@pytest.mark.parametrize("entry", entries_of({"js_global"}))
def test_page_global_is_defined(entry):
    assert entry["name"] in extension_check_js.page_globals(ROOT), \
        f"page global {entry['name']} (used by {entry['count']} of the 100) is not defined by javascript/*.js"


@pytest.mark.parametrize("entry", entries_of({"gradio_form"}))
def test_gradio3_form_is_supported(entry):
    assert entry["name"] in extension_check.supported_gradio_forms(), \
        f"Gradio 3 form {entry['name']} (used by {entry['count']} of the 100) is not in SUPPORTED_GRADIO3_FORMS"


@pytest.mark.parametrize("entry", entries_of(PYTHON_KINDS, with_signature=True))
def test_signature_accepts_a1111_calls(entry, dests):
    why = lookup(entry["name"], dests)
    assert why == "" or why.startswith("incompatible: "), f"A1111 {entry['kind']} {entry['name']} is missing: {why}"
    problems = check_signature(entry["name"], entry["signature"])
    assert not problems, f"{entry['name']}{describe(entry['name'])} vs A1111 {entry['signature']}: " + \
        "; ".join(problems)


def describe(name: str) -> str:
    try:
        return str(inspect.signature(find_object(name)))
    except (LookupError, AttributeError, TypeError, ValueError):
        return ""


def test_signature_rules_catch_mismatches():
    def ours(a, b=None, *, name=None):
        return a, b, name

    here = inspect.signature(ours)
    assert signature_problems("(a, b=None, *, name=None)", here) == []
    assert signature_problems("(b, a)", here) == [
        "position 0 is 'a' here, 'b' in A1111", "position 1 is 'b' here, 'a' in A1111"]
    assert signature_problems("(a, b, c)", here) == ["'c' not accepted by name", "'c' not accepted at position 2"]
    assert signature_problems("()", here) == ["'a' is required here and unknown to A1111"]
    assert signature_problems("(a, *args)", here) == ["*args not accepted"]


def test_ldm_patching_names_are_what_the_check_calls_incompatible():
    from modules.extension_check_scan import HIJACK_CALLS, HIJACK_MODULES

    for entry in (e for e in MANIFEST["names"] if e.get("ldm_patching")):
        name = entry["name"]
        assert any(name == m or name.startswith(m + ".") for m in HIJACK_MODULES) or \
            name.rsplit(".", 1)[-1] in HIJACK_CALLS, name
