"""Static reading of an A1111 extension folder for the compatibility check (`modules.extension_check`).

Nothing of the extension is imported or run: Python files are parsed with `ast`, `javascript/*.js` with regular
expressions. The result (`ExtensionUsage`) lists every A1111 name the extension uses, with where and whether the use
sits inside a `try` (a guarded use, e.g. a Forge-only name), the signs that it patches ldm/sgm model internals, the
Gradio 3 forms it writes, the third-party modules it imports and the requirements it installs itself.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass, field

from modules.extension_check_reach import reached_files

# Top-level import names that are A1111's own code rather than packages (modules/, launch.py, webui.py) and the
# modules of A1111's built-in extensions (extensions-builtin/Lora ...), which other extensions import by plain name.
A1111_ROOTS = frozenset({"modules", "launch", "webui", "repositories"})  # repositories/: A1111's clones (midas ...)
A1111_BUILTIN_MODULES = frozenset({
    "lora", "networks", "network", "network_lora", "network_lyco", "network_hada", "network_ia3", "network_lokr",
    "network_full", "network_norm", "network_glora", "network_oft", "lora_patches", "lyco_helpers",
    "extra_networks_lora", "ui_extra_networks_lora", "lora_logger", "ui_edit_user_metadata",
})
# A1111's copies of the Stability repositories: an extension that imports them works on ldm/sgm model internals
LDM_ROOTS = frozenset({"ldm", "sgm"})
# A1111 packages inside modules/ (their submodules are the module part of a dotted name, not attributes)
A1111_PACKAGES = frozenset({"modules.api", "modules.textual_inversion", "modules.hypernetworks", "modules.models",
                            "modules.processing_scripts", "modules.models.diffusion"})
# Objects whose attributes are checked one level deeper (A1111 singletons whose members extensions call)
SECOND_LEVEL = frozenset({"modules.shared.state", "modules.shared.opts", "modules.shared.total_tqdm",
                          "modules.sd_hijack.model_hijack", "modules.shared.cmd_opts"})
# `shared.opts.X`: these are the Options object's own members; any other X is a setting key (not checked, as in
# the census: an unknown key raises AttributeError here as in A1111)
OPTS_MEMBERS = frozenset({"add_option", "data", "data_labels", "onchange", "save", "set", "get_default",
                          "typemap", "same_type", "dumpjson", "load", "reorder", "cast_value", "restricted_opts",
                          "set_and_save"})
# Methods of A1111's Script (and ScriptPostprocessing) that extensions override
SCRIPT_METHODS = frozenset({
    "title", "ui", "show", "run", "setup", "before_process", "process", "before_process_batch",
    "after_extra_networks_activate", "process_batch", "postprocess", "postprocess_batch", "postprocess_batch_list",
    "post_sample", "on_mask_blend", "postprocess_image", "postprocess_maskoverlay",
    "postprocess_image_after_composite", "before_component", "after_component", "on_before_component",
    "on_after_component", "describe", "elem_id", "before_hr", "process_before_every_sampling", "before_make_infotext",
    "setup_ui", "image_changed", "process_firstpass", "create_infotext",
})
# A1111's `p` (StableDiffusionProcessing, ...Txt2Img, ...Img2Img, v1.10): reads of other names are the extension's
# own attributes or a `p` that is something else (a Path, a dict)
A1111_P_ATTRIBUTES = frozenset("""
sd_model outpath_samples outpath_grids prompt prompt_for_display negative_prompt styles seed subseed
subseed_strength seed_resize_from_h seed_resize_from_w seed_enable_extras sampler_name scheduler batch_size n_iter
steps cfg_scale width height restore_faces tiling do_not_save_samples do_not_save_grid extra_generation_params
overlay_images eta do_not_reload_embeddings denoising_strength ddim_discretize s_min_uncond s_churn s_tmax s_tmin
s_noise override_settings override_settings_restore_afterwards sampler_index refiner_checkpoint refiner_switch_at
token_merging_ratio token_merging_ratio_hr disable_extra_networks firstpass_image scripts_value script_args_value
scripts_setup_complete cached_uc cached_c comments sampler_noise_scheduler_override is_using_inpainting_conditioning
paste_to is_hr_pass sampler prompts negative_prompts seeds subseeds extra_network_data step_multiplier
color_corrections all_prompts all_negative_prompts all_seeds all_subseeds iteration main_prompt main_negative_prompt
modified_noise user rng c uc scripts script_args sd_model_name sd_model_hash sd_vae_name sd_vae_hash setup_prompts
close get_token_merging_ratio init sample get_conds_with_caching setup_conds get_conds parse_extra_network_prompts
save_samples fill_fields_from_opts js enable_hr firstphase_width firstphase_height hr_scale hr_upscaler
hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler hr_prompt
hr_negative_prompt force_task_id cached_hr_uc cached_hr_c hr_checkpoint_info hr_upscale_to_x hr_upscale_to_y
truncate_x truncate_y applied_old_hires_behavior_to latent_scale_mode hr_c hr_uc all_hr_prompts
all_hr_negative_prompts hr_prompts hr_negative_prompts hr_extra_network_data txt2img_upscale
calculate_target_resolution sample_hr_pass init_images resize_mode image_cfg_scale mask mask_blur_x mask_blur_y
mask_blur inpainting_fill inpaint_full_res inpaint_full_res_padding inpainting_mask_invert initial_noise_multiplier
latent_mask image_mask nmask image_conditioning init_latent mask_for_overlay mask_round batch_index
""".split())
SCRIPT_BASES = {"modules.scripts.Script": "Script",
                "modules.scripts_postprocessing.ScriptPostprocessing": "ScriptPostprocessing"}
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__", "venv", ".venv", "test", "tests", "dist", "site-packages",
                       "docs", "examples"})
MAX_FILE_BYTES = 1_500_000  # bundled/minified files above this are skipped (they define, they do not call A1111)

HIJACK_CALLS = frozenset({"hijack", "undo_hijack", "apply_optimizations", "undo_optimizations", "current_optimizer"})
HIJACK_MODULES = frozenset({"modules.sd_hijack_optimizations", "modules.sd_hijack_unet", "modules.sd_hijack_utils"})


@dataclass(frozen=True)
class NameUse:
    """One use of an A1111 name: `name` is the full dotted name (`modules.shared.opts.add_option`), `Script.process`,
    `p.seed`, `cmd_opts.lora_dir`, a page global or a Gradio form, as `kind` says."""

    name: str
    kind: str
    where: str      # "scripts/x.py:12"
    guarded: bool   # inside a try block (the extension copes with its absence)


@dataclass
class ExtensionUsage:
    """What one extension folder uses, read statically."""

    path: str
    uses: list[NameUse] = field(default_factory=list)
    ldm_patching: dict[str, str] = field(default_factory=dict)   # reason -> where
    imports: dict[str, NameUse] = field(default_factory=dict)     # third-party top-level name -> first use
    requirements: set[str] = field(default_factory=set)           # normalised names install.py/requirements install
    install_strings: set[str] = field(default_factory=set)        # every string constant of install.py
    preload_flags: set[str] = field(default_factory=set)          # dests the extension's preload.py adds
    local_names: set[str] = field(default_factory=set)            # importable names the extension provides itself
    js_defined: set[str] = field(default_factory=set)             # globals the extension's own JS defines
    parse_errors: list[str] = field(default_factory=list)
    js_calls_from_python: list[tuple[str, str, bool]] = field(default_factory=list)  # `_js="..."` code, where
    unreached: list[str] = field(default_factory=list)  # Python files no entry point imports (uses count guarded)

    def add(self, name: str, kind: str, where: str, guarded: bool) -> None:
        self.uses.append(NameUse(name, kind, where, guarded))


def normalise_requirement(text: str) -> str:
    """'opencv-python-headless>=4' -> 'opencv-python-headless' (lower case, '_' and '.' as '-')."""
    name = re.split(r"[<>=!~;\[\s@]", text.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def iter_files(root: str, suffixes: tuple[str, ...]) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(suffixes):
                full = os.path.join(folder, name)
                try:
                    if os.path.getsize(full) <= MAX_FILE_BYTES:
                        found.append(full)
                except OSError:
                    continue
    return found


def local_module_names(root: str) -> set[str]:
    """Every name the extension could import as its own: folders and .py stems anywhere in it (extensions put their
    packages beside scripts/ and import them by plain name, or vendor libraries in subfolders)."""
    names = set()
    for _folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "node_modules")]
        names.update(dirs)
        names.update(f[:-3] for f in files if f.endswith(".py"))
        names.update(f.split(".")[0] for f in files if f.endswith((".so", ".pyd")))
    return names


def dotted(node: ast.AST) -> list[str] | None:
    """`a.b.c` -> ['a', 'b', 'c']; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def module_boundary(full: list[str]) -> int:
    """How many leading parts of an A1111 dotted name are the module (`modules.api.api.Api` -> 3)."""
    if full[0] != "modules":
        return 1
    if len(full) >= 3 and ".".join(full[:2]) in A1111_PACKAGES:
        if len(full) >= 4 and ".".join(full[:3]) in A1111_PACKAGES:
            return 4
        return 3
    return min(2, len(full))


class _PythonReader(ast.NodeVisitor):
    """Collects the uses of one Python file into `usage`."""

    def __init__(self, usage: ExtensionUsage, where: str, gradio_forms: list[tuple[str, str, bool]]):
        self.usage = usage
        self.where = where
        self.aliases: dict[str, list[str]] = {}   # local name -> A1111 dotted name
        self.guarded_aliases: set[str] = set()
        self.gradio_names: set[str] = set()
        self.try_depth = 0
        self.gradio_forms = gradio_forms
        self.p_reads: list[tuple[str, int, bool]] = []
        self.classes: list[tuple[str, list[list[str]], list[str], int]] = []
        self.p_is_processing: list[bool] = []  # per enclosing function: is `p` its parameter (A1111's job)?
        self.functions: list[ast.AST] = []
        self.local_scopes: list[set[str]] = []
        self._words: dict[int, set[str]] = {}

    # --- helpers
    def _at(self, node: ast.AST) -> str:
        return f"{self.where}:{getattr(node, 'lineno', 0)}"

    def _is_local(self, root: str) -> bool:
        return root in self.usage.local_names

    def _record_a1111(self, full: list[str], node: ast.AST) -> None:
        guarded = self.try_depth > 0
        at = self._at(node)
        if full[0] in LDM_ROOTS:
            self.usage.ldm_patching.setdefault("imports ldm/sgm", f"{'.'.join(full)} ({at})")
            return
        cut = module_boundary(full)
        module = ".".join(full[:cut])
        kind_of_module = "module"
        self.usage.add(module, kind_of_module, at, guarded)
        if module in HIJACK_MODULES:
            self.usage.ldm_patching.setdefault(module.split(".")[-1], at)
        rest = full[cut:]
        if not rest:
            return
        first = f"{module}.{rest[0]}"
        if module == "modules.shared" and rest[0] == "cmd_opts":
            self.usage.add(first, "attribute", at, guarded)
            if len(rest) > 1:
                self.usage.add(f"cmd_opts.{rest[1]}", "cmd_opt", at, guarded)
            return
        kind = "attribute"
        if module == "launch":
            kind = "launch_helper"
        elif module == "modules.script_callbacks" and rest[0].startswith("on_"):
            kind = "callback"
        self.usage.add(first, kind, at, guarded)
        if module == "modules.sd_hijack" and (rest[0] in HIJACK_CALLS or (len(rest) > 1 and rest[1] in HIJACK_CALLS)):
            call = rest[0] if rest[0] in HIJACK_CALLS else rest[1]
            self.usage.ldm_patching.setdefault(f"sd_hijack.{call}", at)
        if len(rest) > 1 and first in SECOND_LEVEL:
            if first == "modules.shared.opts" and rest[1] not in OPTS_MEMBERS:
                return  # a setting key
            self.usage.add(f"{first}.{rest[1]}", "attribute", at, guarded)

    def _note_guard(self, alias: str) -> None:
        """An alias bound inside a try (or its fallback handler) stands for a name the extension copes without."""
        if self.try_depth:
            self.guarded_aliases.add(alias)
        else:
            self.guarded_aliases.discard(alias)

    def _record_through_alias(self, alias: str, full: list[str], node: ast.AST) -> None:
        guarded = alias in self.guarded_aliases
        self.try_depth += guarded
        self._record_a1111(full, node)
        self.try_depth -= guarded

    def _resolve(self, parts: list[str]) -> list[str] | None:
        """The A1111 dotted name a chain of local names stands for, or None."""
        target = self.aliases.get(parts[0])
        if target is None or (self.local_scopes and parts[0] in self.local_scopes[-1]):
            return None
        # dunder attributes are Python's, not A1111 names (`cmd_opts.__getattribute__`)
        tail = parts[1:]
        for i, part in enumerate(tail):
            if part.startswith("__"):
                tail = tail[:i]
                break
        return target + tail

    # --- imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            root = parts[0]
            if self._is_local(root) and root not in A1111_ROOTS:
                continue
            if root in A1111_ROOTS or root in LDM_ROOTS or root in A1111_BUILTIN_MODULES:
                self._record_a1111(parts, node)
                if alias.asname:
                    self.aliases[alias.asname] = parts
                    self._note_guard(alias.asname)
                else:
                    self.aliases[root] = [root]
                    self._note_guard(root)
            else:
                self._third_party(root, node)
                if root == "gradio":
                    self.gradio_names.add(alias.asname or "gradio")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        parts = node.module.split(".")
        root = parts[0]
        if root == "scripts" or (self._is_local(root) and root not in A1111_ROOTS):
            return  # the extension's own scripts/ or package
        if root in A1111_ROOTS or root in LDM_ROOTS or root in A1111_BUILTIN_MODULES:
            for alias in node.names:
                if alias.name == "*":
                    self._record_a1111(parts, node)
                    continue
                full = parts + [alias.name]
                self._record_a1111(full, node)
                self.aliases[alias.asname or alias.name] = full
                self._note_guard(alias.asname or alias.name)
        else:
            self._third_party(root, node)

    def _third_party(self, root: str, node: ast.AST) -> None:
        if root in sys.stdlib_module_names or root == "__future__" or self._is_local(root):
            return
        if root not in self.usage.imports or (self.usage.imports[root].guarded and not self.try_depth):
            self.usage.imports[root] = NameUse(root, "package", self._at(node), self.try_depth > 0)

    # --- guards
    def visit_Try(self, node: ast.AST) -> None:
        # the body may fail (the extension copes), and a handler is the fallback for another WebUI version
        self.try_depth += 1
        for child in [*node.body, *node.handlers]:
            self.visit(child)
        self.try_depth -= 1
        for child in [*node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try

    @staticmethod
    def _tests_hasattr(test: ast.AST) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"
                   for n in ast.walk(test))

    def visit_If(self, node: ast.If | ast.IfExp) -> None:
        """`if hasattr(shared, "native"): shared.native ...` is a guarded use."""
        if not self._tests_hasattr(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.try_depth += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.try_depth -= 1
        for child in node.orelse if isinstance(node.orelse, list) else [node.orelse]:
            self.visit(child)

    visit_IfExp = visit_If

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        """`hasattr(cmd_opts, "x") and cmd_opts.x`: the operands after a hasattr test are guarded."""
        guarded = 0
        for value in node.values:
            self.try_depth += guarded
            self.visit(value)
            self.try_depth -= guarded
            if not guarded and self._tests_hasattr(value):
                guarded = 1

    # --- uses
    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = dotted(node)
        if parts is None:
            self.generic_visit(node)
            return
        if parts[0] in self.gradio_names and len(parts) >= 2:
            if parts[1] in ("Box", "Variable"):
                self.gradio_forms.append((f"gr.{parts[1]}", self._at(node), self.try_depth > 0))
        if parts[0] == "p" and len(parts) >= 2 and self.p_is_processing and self.p_is_processing[-1]:
            # `p.x.y = ...` reads p.x too; replacing p.sample / p.init counts as using them
            if len(parts) > 2 or isinstance(node.ctx, ast.Load) or parts[1] in ("sample", "init"):
                self.p_reads.append((parts[1], getattr(node, "lineno", 0), self.try_depth > 0))
        full = self._resolve(parts)
        if full is not None:
            self._record_through_alias(parts[0], full, node)
        self._patching_signs(parts, node)
        # the chain's inner Attribute nodes are the same chain: do not visit them again

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            full = self._resolve([node.id])
            if full is not None:
                self._record_through_alias(node.id, full, node)

    def _function_words(self) -> set[str]:
        """The names, attributes and strings of the enclosing function (what a forward patch is applied to)."""
        if not self.functions:
            return set()
        function = self.functions[-1]
        if id(function) not in self._words:
            words = set()
            for n in ast.walk(function):
                if isinstance(n, ast.Name):
                    words.add(n.id)
                elif isinstance(n, ast.Attribute):
                    words.add(n.attr)
                elif isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 80:
                    words.add(n.value)
            self._words[id(function)] = words
        return self._words[id(function)]

    def _patching_signs(self, parts: list[str], node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Store) or parts[-1] != "forward":
            return
        owner = parts[:-1]
        # `module.forward = ...` in a loop over the UNet's modules counts as the UNet's, by what the function reads
        words = set(owner) | self._function_words()
        if any("CrossAttention" in word for word in words):
            self.usage.ldm_patching.setdefault("CrossAttention.forward replaced", self._at(node))
        elif "diffusion_model" in words:
            self.usage.ldm_patching.setdefault("diffusion_model forward patched", self._at(node))

    def visit_Call(self, node: ast.Call) -> None:
        func_parts = dotted(node.func) if isinstance(node.func, ast.Attribute) else None
        at, guarded = self._at(node), self.try_depth > 0
        if func_parts:
            last = func_parts[-1]
            if last in ("register_forward_hook", "register_forward_pre_hook") and "diffusion_model" in func_parts:
                self.usage.ldm_patching.setdefault("forward hooks on diffusion_model", at)
            if (last == "update" and len(func_parts) == 3 and func_parts[0] in self.gradio_names
                    and func_parts[1][:1].isupper()):
                self.gradio_forms.append(("gr.<Component>.update(", at, guarded))
            is_gradio_call = func_parts[0] in self.gradio_names
            for keyword in node.keywords:
                if keyword.arg in ("source", "tool") and is_gradio_call:
                    self.gradio_forms.append((f"{keyword.arg}=", at, guarded))
        if isinstance(node.func, ast.Attribute) and node.func.attr == "style" and (node.keywords or not node.args):
            self.gradio_forms.append((".style(", at, guarded))
        if (isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value == "forward"):
            target = dotted(node.args[0]) or []
            if "diffusion_model" in target:
                self.usage.ldm_patching.setdefault("diffusion_model forward patched", at)
            elif any("CrossAttention" in part for part in target):
                self.usage.ldm_patching.setdefault("CrossAttention.forward replaced", at)
        for keyword in node.keywords:
            if keyword.arg == "_js":
                self.gradio_forms.append(("_js=", at, guarded))
            if keyword.arg in ("_js", "js") and isinstance(keyword.value, ast.Constant) \
                    and isinstance(keyword.value.value, str):
                self.usage.js_calls_from_python.append((keyword.value.value, at, guarded))
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # `p` is A1111's job where it is the function's parameter (elsewhere it is often a Path or a loop value)
        arguments = node.args
        params = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
        self.p_is_processing.append("p" in params)
        self.functions.append(node)
        # names bound in the function shadow an imported A1111 module (`images = []` after `from modules import
        # images`); nested functions count with it (a rough rule, never wrong the other way round)
        self.local_scopes.append(params | {n.id for n in ast.walk(node)
                                           if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
        self.generic_visit(node)
        self.functions.pop()
        self.local_scopes.pop()
        self.p_is_processing.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = [b for b in (dotted(base) for base in node.bases) if b]
        resolved = []
        for base in bases:
            full = self._resolve(base)
            resolved.append(full if full is not None else base)
        methods = [item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.classes.append((node.name, resolved, methods, node.lineno))
        self.generic_visit(node)


def _add_requirements(usage: ExtensionUsage, root: str) -> None:
    """Requirements the extension installs itself: requirements*.txt lines and install.py's string constants."""
    for name in os.listdir(root):
        if name.startswith("requirements") and name.endswith(".txt"):
            try:
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                    for line in f:
                        line = line.split("#", 1)[0].strip()
                        if line and not line.startswith("-"):
                            usage.requirements.add(normalise_requirement(line))
            except OSError:
                continue
    install = os.path.join(root, "install.py")
    if os.path.isfile(install):
        try:
            tree = ast.parse(open(install, encoding="utf-8", errors="replace").read())
        except (SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 300:
                usage.install_strings.add(node.value.strip())
                for token in node.value.split():
                    if re.match(r"^[A-Za-z][\w.\-]*(\[.*\])?([<>=!~]=?.*)?$", token):
                        usage.requirements.add(normalise_requirement(token))


def _add_preload_flags(usage: ExtensionUsage, root: str) -> None:
    path = os.path.join(root, "preload.py")
    if os.path.isfile(path):
        usage.preload_flags |= preload_flags(path)


def preload_flags(path: str) -> set[str]:
    """The dests a preload.py adds with `parser.add_argument("--x-y", ..., dest=...)`."""
    try:
        tree = ast.parse(open(path, encoding="utf-8", errors="replace").read())
    except (OSError, SyntaxError, ValueError):
        return set()
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                        None)
            options = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            long = next((o for o in options if o.startswith("--")), None)
            if dest or long:
                flags.add(dest or long.lstrip("-").replace("-", "_"))
    return flags


def read_python(usage: ExtensionUsage, root: str) -> list[tuple[str, str, bool]]:
    """Parse every Python file of the extension; returns the Gradio 3 forms found (form, where, guarded)."""
    gradio_forms: list[tuple[str, str, bool]] = []
    script_classes: dict[str, str] = {}   # class name -> A1111 base it derives from ("Script")
    pending: list[tuple[str, list[list[str]], list[str], str]] = []
    trees: dict[str, ast.Module] = {}
    for path in iter_files(root, (".py",)):
        rel = os.path.relpath(path, root)
        try:
            trees[rel] = ast.parse(open(path, encoding="utf-8", errors="replace").read())
        except (SyntaxError, ValueError) as e:
            usage.parse_errors.append(f"{rel}: {e.__class__.__name__}")
    reached = reached_files(trees)
    usage.unreached = sorted(set(trees) - reached)
    for rel, tree in trees.items():
        reader = _PythonReader(usage, rel, gradio_forms)
        reader.try_depth = rel not in reached  # a file A1111 never runs: its uses cannot fail the extension
        reader.visit(tree)
        for attr, line, guarded in reader.p_reads:
            if attr in A1111_P_ATTRIBUTES:
                usage.add(f"p.{attr}", "p_attribute", f"{rel}:{line}", guarded)
        for name, bases, methods, line in reader.classes:
            pending.append((name, bases, methods, f"{rel}:{line}"))
    # Script subclasses, also through the extension's own intermediate classes
    changed = True
    while changed:
        changed = False
        for name, bases, _methods, _where in pending:
            if name in script_classes:
                continue
            for base in bases:
                kind = SCRIPT_BASES.get(".".join(base)) or script_classes.get(base[-1]) \
                    or (base[-1] if base[-1] in ("Script", "ScriptPostprocessing") and len(base) == 1 else None)
                if kind:
                    script_classes[name] = kind
                    changed = True
                    break
    for name, _bases, methods, where in pending:
        kind = script_classes.get(name)
        if kind:
            for method in methods:
                if method in SCRIPT_METHODS:
                    usage.add(f"{kind}.{method}", "script_method", where, where.rsplit(":", 1)[0] not in reached)
    return gradio_forms


def scan_extension(root: str) -> tuple[ExtensionUsage, list[tuple[str, str, bool]]]:
    """Read the extension at `root`: its name uses, ldm-patching signs, imports and requirements."""
    usage = ExtensionUsage(path=root)
    usage.local_names = local_module_names(root)
    _add_requirements(usage, root)
    _add_preload_flags(usage, root)
    forms = read_python(usage, root)
    return usage, forms
