"""Looks A1111 names up in this program, for the extension check; run as a child process
(`python -m modules.extension_check_resolve` with a JSON list of [name, kind] on stdin, a JSON object
{name: "" | why missing} on stdout) so that importing the adapters leaves the caller's process untouched.

How a name is decided, without starting the app (no `shared.initialize`, no model):
- a module: `importlib.import_module` succeeds; an import that fails for another reason counts as missing, with it.
- `module.attr`: the module imports and `hasattr` is true (a module-level `__getattr__` counts); `from modules
  import x` also finds a submodule `modules.x`.
- one level deeper for A1111's singletons (`shared.state.job_count`, `shared.opts.add_option`): `hasattr` on the
  object as it is at import time (`shared.state` and `shared.opts` exist before `initialize`). A computed name that
  raises something other than AttributeError before the app is set up exists (it answers once the app runs).
- `cmd_opts.<flag>`: a dest of `cmd_args.build_parser()` (plus the extension's own preload flags, added by the
  caller) — `shared.cmd_opts` itself is None until the flags are parsed.
- `Script.<method>` / `ScriptPostprocessing.<method>`: `hasattr` on the class.
- `p.<attr>`: a dataclass field of the job class or an attribute of a default `StableDiffusionProcessingImg2Img()`.
The A1111 built-in extensions' modules (`networks`, `lora` ...) are looked up with every `extensions-builtin/*`
folder on sys.path, as A1111 has them while extensions load.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import os
import sys
import textwrap
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import(name: str) -> tuple[Any, str]:
    try:
        return importlib.import_module(name), ""
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None, "module absent"
        return None, f"import fails: {e}"
    except Exception as e:  # an adapter that fails to import is as missing as an absent one, and says why
        return None, f"import fails: {e.__class__.__name__}: {e}"


class _Refused(Exception):
    """The name exists here only to refuse: reading it raised IncompatibleExtensionError."""


def _has(obj: Any, attr: str) -> bool:
    try:
        getattr(obj, attr)
        return True
    except AttributeError:
        return False
    except Exception as e:  # exists, but its value depends on the running app, or it refuses
        if any(cls.__name__ == "IncompatibleExtensionError" for cls in type(e).__mro__):
            raise _Refused(str(e)) from e
        return True


def lookup(name: str, parser_dests: set[str]) -> str:
    """"" when `name` exists here, "incompatible: why" when it exists only to refuse, else why it is missing."""
    try:
        return _lookup(name, parser_dests)
    except _Refused as e:
        return f"incompatible: {e}"


def _lookup(name: str, parser_dests: set[str]) -> str:
    if name.startswith("cmd_opts."):
        return "" if name.split(".", 1)[1] in parser_dests else "no such flag"
    if name.startswith(("Script.", "ScriptPostprocessing.")):
        cls_name, method = name.split(".", 1)
        module = "modules.scripts" if cls_name == "Script" else "modules.scripts_postprocessing"
        mod, why = _import(module)
        if mod is None or not hasattr(mod, cls_name):
            return why or f"{module}.{cls_name} absent"
        return "" if hasattr(getattr(mod, cls_name), method) else "not a method here"
    if name.startswith("p."):
        return "" if name[2:] in _p_attributes() else "not an attribute of p here"
    parts = name.split(".")
    # the longest prefix that imports as a module, then attributes
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        if module_name in sys.modules or _module_exists(module_name):
            obj, why = _import(module_name)
            if obj is None:
                return why
            for depth, attr in enumerate(parts[cut:]):
                if obj is None and depth:
                    return ""  # runtime state not set up before the app runs: nothing to check deeper
                if not _has(obj, attr):
                    return f"{'.'.join(parts[:cut + depth])} has no {attr!r}"
                try:
                    obj = getattr(obj, attr)
                except Exception:
                    return ""
            refusal = _refusal(obj)
            if refusal:
                raise _Refused(refusal)
            return ""
    return "module absent"


def _refusal(obj: Any) -> str:
    """The message of a function here whose whole body is `raise IncompatibleExtensionError(...)` (a name kept only
    to refuse when called: `networks.load_network`, `sd_hijack.apply_optimizations`), else ""."""
    if not inspect.isfunction(obj):
        return ""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return ""
    function = tree.body[0] if tree.body else None
    body = getattr(function, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or not isinstance(body[0].exc, ast.Call):
        return ""
    call = body[0].exc
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if not name.endswith("IncompatibleExtensionError") and not (name == "_refuse"):
        return ""
    texts = [n.value for n in ast.walk(call) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    text = "".join(texts).strip()
    if not text or text.endswith(":"):
        text = f"{text} an A1111 internal this program does not have".strip()
    return text


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError) as e:
        if any(cls.__name__ == "IncompatibleExtensionError" for cls in type(e).__mro__):
            raise _Refused(str(e)) from e  # an ldm-only module (modules.extension_guard): refused with a reason
        return False


_P_ATTRIBUTES: set[str] | None = None


def _p_attributes() -> set[str]:
    global _P_ATTRIBUTES
    if _P_ATTRIBUTES is None:
        names: set[str] = set()
        processing, _ = _import("modules.processing")
        for cls_name in ("StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img"):
            cls = getattr(processing, cls_name, None)
            if cls is None:
                continue
            names |= set(dir(cls))
            if dataclasses.is_dataclass(cls):
                names |= {f.name for f in dataclasses.fields(cls)}
            try:
                job = cls()
                for attr in ("spec", "run"):
                    part = getattr(job, attr, None)
                    if dataclasses.is_dataclass(part):
                        names |= {f.name for f in dataclasses.fields(part)}
                names |= set(vars(job))
            except Exception:  # the class cannot be built without arguments here: its declared names count
                pass
        _P_ATTRIBUTES = names
    return _P_ATTRIBUTES


def parser_dests() -> set[str]:
    cmd_args, _ = _import("modules.cmd_args")
    if cmd_args is None or not hasattr(cmd_args, "build_parser"):
        return set()
    parser = cmd_args.build_parser()
    # flags, and names set as defaults only (other extensions' preload flags, e.g. lyco_dir, read with getattr)
    return {action.dest for action in parser._actions} | set(parser._defaults)


def add_builtin_extension_paths() -> None:
    """Put every `extensions-builtin/*` folder on sys.path (once), as A1111 has them while extensions load."""
    builtin = os.path.join(REPO_ROOT, "extensions-builtin")
    if os.path.isdir(builtin):
        for name in sorted(os.listdir(builtin)):
            folder = os.path.join(builtin, name)
            if os.path.isdir(folder) and folder not in sys.path:
                sys.path.append(folder)


def find_object(name: str) -> Any:
    """The object an A1111 dotted name stands for here (module, then attributes); raises LookupError."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        if _module_exists(module_name):
            obj, why = _import(module_name)
            if obj is None:
                raise LookupError(why)
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
    raise LookupError(f"{name}: module absent")


def signature_problems(a1111_signature: str, ours: inspect.Signature) -> list[str]:
    """Every way a call written for A1111's signature (`"(p, images_list, seed=-1, info='')"`) fails against ours:
    each A1111 parameter must be accepted by name and at its position; a parameter ours requires and A1111 does not
    have breaks every call."""
    a1111 = ast.parse(f"def f{a1111_signature}: pass").body[0].args
    params = list(ours.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_args = any(p.kind == p.VAR_POSITIONAL for p in params)
    var_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    problems = []
    a1111_positional = [a.arg for a in [*a1111.posonlyargs, *a1111.args]]
    for index, name in enumerate(a1111_positional):
        if name not in by_name and not var_kwargs:
            problems.append(f"{name!r} not accepted by name")
        if index < len(positional):
            if positional[index].name != name and positional[index].kind != positional[index].POSITIONAL_ONLY:
                problems.append(f"position {index} is {positional[index].name!r} here, {name!r} in A1111")
        elif not var_args:
            problems.append(f"{name!r} not accepted at position {index}")
    for arg in a1111.kwonlyargs:
        if arg.arg not in by_name and not var_kwargs:
            problems.append(f"keyword {arg.arg!r} not accepted")
    if a1111.vararg and not var_args:
        problems.append("*args not accepted")
    known = set(a1111_positional) | {a.arg for a in a1111.kwonlyargs}
    if a1111.kwarg and not var_kwargs and not set(by_name) - known:  # explicit extra keywords count as A1111's
        problems.append("**kwargs not accepted")
    for index, p in enumerate(params):
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in known \
                and not (p in positional and index < len(a1111_positional)):  # else already told by position
            problems.append(f"{p.name!r} is required here and unknown to A1111")
    return problems


def check_signature(name: str, a1111_signature: str) -> list[str]:
    """`signature_problems` for the object `name` stands for here (["missing: ..."] when there is none)."""
    try:
        obj = find_object(name)
    except (LookupError, AttributeError) as e:
        return [f"missing: {e}"]
    try:
        ours = inspect.signature(obj)
    except (TypeError, ValueError) as e:
        return [f"no signature here ({e})"]
    return signature_problems(a1111_signature, ours)


def resolve(names: list[str]) -> dict[str, str]:
    add_builtin_extension_paths()
    from modules import extension_guard

    extension_guard.install()  # as in the app: ldm-only modules answer with the reason they are refused
    dests = parser_dests()
    return {name: lookup(name, dests) for name in names}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    names = json.load(sys.stdin)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever the imports print stays out of the answer
    answer = resolve(names)
    real_stdout.write(json.dumps(answer))
    real_stdout.flush()


if __name__ == "__main__":
    main()
