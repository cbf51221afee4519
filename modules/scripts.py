"""A1111's script API for extensions and built-in scripts: `Script`, `ScriptRunner`, `load_scripts()`.

Script files (`scripts/*.py` of the repo and of each extension) are loaded as modules; every `Script` subclass they
define is instantiated once per tab. A script is either selectable (`show()` is True: one entry of the "Script"
dropdown, its `run(p, *args)` replaces the normal generation) or always on (`show()` is `AlwaysVisible`: its hooks run
at named points of `processing.process_images`). The UI inputs of a tab are [selected script index] + every script's
`ui()` components; each script receives its slice `args_from:args_to` of them (A1111's args layout).

Nothing a script does may take the application down: a file that fails to import, a `ui()` or hook that raises, is
logged with the script's file name (and, for hooks, reported in the job's comments) and the rest goes on -- except
a hook that raises `processing.JobError`: that is a script refusing the job on purpose (a ControlNet model that does
not fit the checkpoint), and the job stops with its message (the API answers 400 with it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from modules import extension_guard, extension_status, gradio_extensions, script_callbacks
from modules.extensions import ScriptFile
from modules.processing import (
    JobError,
    PostprocessBatchListArgs,
    PostprocessImageArgs,
    PostSampleArgs,
    Processed,
    setup_scripts,
)

log = logging.getLogger("webui")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AlwaysVisible = object()  # A1111's marker: `show()` returns it for scripts that are always on (no dropdown entry)

__all__ = ["AlwaysVisible", "OnComponent", "PostSampleArgs", "PostprocessBatchListArgs", "PostprocessImageArgs",
           "Script", "ScriptRunner", "basedir", "load_scripts", "scripts_current", "scripts_img2img",
           "scripts_txt2img"]


@dataclasses.dataclass
class OnComponent:
    """What a callback registered with `Script.on_before_component` / `on_after_component` receives."""

    component: Any


class Script:
    """Base class of every script (A1111's `modules.scripts.Script`); override what you need."""

    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group: Any = None               # the gr.Group holding this script's UI
    create_group = True
    infotext_fields: list[tuple[Any, str]] | None = None
    paste_field_names: list[str] | None = None
    api_info: Any = None
    on_before_component_elem_id: list[tuple[str, Any]] | None = None
    on_after_component_elem_id: list[tuple[str, Any]] | None = None
    setup_for_ui_only = False
    controls: list[Any] | None = None

    def title(self) -> str:
        """The name in the Script dropdown (and in the API's `script_name` / `alwayson_scripts`)."""
        raise NotImplementedError()

    def ui(self, is_img2img: bool) -> list[Any] | None:
        """Create Gradio components; their values are passed to `run` and the hooks, in this order."""
        return None

    def show(self, is_img2img: bool) -> bool | object:
        """False: hidden on this tab; True: selectable in the dropdown; `scripts.AlwaysVisible`: always on."""
        return True

    def run(self, p: Any, *args: Any) -> Processed | None:
        """Selectable scripts: do the whole job (usually via `processing.process_images`) and return a Processed."""
        return None

    def setup(self, p: Any, *args: Any) -> None:
        """Once per job, before any other hook (and before a selected script's `run`)."""

    def before_process(self, p: Any, *args: Any) -> None:
        """Before anything is prepared (settings overrides not applied yet)."""

    def process(self, p: Any, *args: Any) -> None:
        """Once per job, after prompts and seeds are resolved (`p.all_prompts`, `p.all_seeds`) and before sampling."""

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Before each batch, ahead of extra-network parsing; kwargs: batch_number, prompts, seeds, subseeds."""

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Right before each batch is sampled; kwargs: batch_number, prompts, seeds, subseeds."""

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Right before every sampler run (the first pass, and again before the hires pass); kwargs: x (the
        starting latents), noise, c (the batch's conditioning, cond and uncond together), uc (None)."""

    def post_sample(self, p: Any, ps: PostSampleArgs, *args: Any) -> None:
        """After sampling (after the hires pass), before decoding: replace `ps.samples` to change the latents."""

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """After each batch is decoded; kwargs: images (PIL images of the batch), batch_number."""

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None:
        """After postprocess_batch; `pp.images` is the batch's list of PIL images, which a script may replace.
        kwargs: batch_number."""

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        """Per image, before it is saved: replace `pp.image` to change what is saved and shown."""

    def postprocess(self, p: Any, processed: Processed, *args: Any) -> None:
        """Once the job is complete."""

    def after_extra_networks_activate(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """After the batch's extra networks (`<lora:…>` …) are active; kwargs: batch_number, prompts, seeds,
        subseeds, extra_network_data (A1111)."""

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Before each component of this script's tab is created (the WebUI's own components, not other scripts');
        `kwargs` are its constructor arguments (`elem_id`, `label` ...). Components created here appear before it."""

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """Right after each component of this script's tab is created (see `before_component`); components created
        here appear right after it."""

    def on_before_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call `callback(OnComponent(component))` before the component with this elem_id is created. Register in
        `__init__` or `show()`: by `ui()` the tab's components above the scripts already exist."""
        self.on_before_component_elem_id = [*(self.on_before_component_elem_id or []), (elem_id, callback)]

    def on_after_component(self, callback: Callable[[OnComponent], None], *, elem_id: str) -> None:
        """Call `callback(OnComponent(component))` right after the component with this elem_id is created."""
        self.on_after_component_elem_id = [*(self.on_after_component_elem_id or []), (elem_id, callback)]

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's element id for a component of this script: `script_[tab_]<title>_<item_id>`."""
        need_tabname = self.show(True) == self.show(False)
        tabname = ("img2img_" if self.is_img2img else "txt2img_") if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"

    def before_hr(self, p: Any, *args: Any) -> None:
        """Before the hires pass of a txt2img job (after its first pass); hires fields may still be changed."""


@dataclasses.dataclass
class ScriptClassData:
    script_class: type[Script]
    path: str
    basedir: str
    module: ModuleType


scripts_data: list[ScriptClassData] = []
load_errors: list[tuple[str, str]] = []   # (file, error) of script files that could not be loaded
current_basedir = REPO_ROOT
_loaded = False
scripts_current: ScriptRunner | None = None  # the runner of the tab being built (A1111's name), else None


@contextlib.contextmanager
def current_runner(runner: ScriptRunner | None) -> Iterator[None]:
    """Announce the components created meanwhile to `runner`'s scripts (`before_component` / `after_component`):
    the txt2img and img2img tabs are built inside this, as A1111 sets `scripts_current` around them."""
    global scripts_current
    previous, scripts_current = scripts_current, runner
    try:
        yield
    finally:
        scripts_current = previous


def _route_component(phase: str, component: Any, kwargs: dict[str, Any]) -> None:
    """The components of the UI (`modules.ui.components.create`) to the scripts of the tab being built."""
    runner = scripts_current
    if runner is None:
        return
    if phase == "before":
        runner.before_component(component, **kwargs)
    else:
        runner.after_component(component, **kwargs)


# registered here, not imported by the UI: modules.ui.components stays free of this module (no import circle)
script_callbacks.register_component_router("scripts_current", _route_component)


def basedir() -> str:
    """The folder of the script being loaded: the extension's folder, or the repo root for `scripts/`."""
    return current_basedir


def extensions_dir() -> str:
    from modules import shared

    data_dir = shared.cmd_opts.data_dir if shared.cmd_opts is not None else REPO_ROOT
    return os.path.join(data_dir, "extensions")


def extensions_builtin_dir() -> str:
    return os.path.join(REPO_ROOT, "extensions-builtin")


def default_extension_dirs() -> list[str]:
    """Every extension folder: `extensions-builtin/*`, then `extensions/*` (the extension manager will filter)."""
    found = []
    for root in (extensions_builtin_dir(), extensions_dir()):
        if os.path.isdir(root):
            found += [os.path.join(root, name) for name in sorted(os.listdir(root))
                      if not name.startswith(".") and os.path.isdir(os.path.join(root, name))]
    return found


def list_script_files(extension_dirs: Sequence[str] | None = None) -> list[ScriptFile]:
    """`scripts/*.py` of the repo, then of each extension folder, alphabetically within a folder; then A1111's
    built-in processing scripts (`modules/processing_scripts`: the Refiner), as A1111 lists them."""
    folders = [REPO_ROOT, *(default_extension_dirs() if extension_dirs is None else extension_dirs)]
    files = []
    for folder, scripts_dir in [*((f, os.path.join(f, "scripts")) for f in folders),
                                (REPO_ROOT, os.path.join(REPO_ROOT, "modules", "processing_scripts"))]:
        if not os.path.isdir(scripts_dir):
            continue
        for name in sorted(os.listdir(scripts_dir)):
            path = os.path.join(scripts_dir, name)
            if name.endswith(".py") and not name.startswith("__") and os.path.isfile(path):
                files.append(ScriptFile(folder, name, path))
    return files


def _module_name(path: str) -> str:
    """A1111 names a script module by its file name (`xyz_grid.py`): extensions look scripts up by
    `script_class.__module__` (e.g. to find the X/Y/Z plot and add axes)."""
    return os.path.basename(path)


def load_module(path: str) -> ModuleType:
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _extension_of(script_file: ScriptFile) -> str | None:
    """The extension a script file belongs to (its folder name), None for the program's own scripts/."""
    if os.path.abspath(script_file.basedir) == os.path.abspath(REPO_ROOT):
        return None
    return os.path.basename(os.path.normpath(script_file.basedir))


def _import_script_file(script_file: ScriptFile) -> ModuleType:
    """Import one script file as A1111 does: its extension's folder first on sys.path while it imports, so its own
    packages beside scripts/ (lib_free_u/, sd_dynamic_prompts/, ...) import by their plain names."""
    global current_basedir
    current_basedir = script_file.basedir
    saved_path = list(sys.path)
    if os.path.abspath(script_file.basedir) != os.path.abspath(REPO_ROOT):
        sys.path.insert(0, script_file.basedir)
    try:
        return load_module(script_file.path)
    finally:
        current_basedir = REPO_ROOT
        sys.path[:] = saved_path


def _install_missing_package(extension: str, error: ModuleNotFoundError) -> bool:
    """A third-party package A1111's environment had and the extension did not install: install it on first need
    (the import-name map and the constraints of `modules.extension_installs`). True when something was installed."""
    missing = (error.name or "").split(".")[0]
    if not missing or missing == "modules" or missing in sys.modules:
        return False
    try:
        from modules import extension_installs
    except ImportError:
        return False
    return extension_installs.install_for_missing_module(extension, missing) is not None


MAX_FIRST_NEED_INSTALLS = 5  # per script file and start: bounded work for one extension


def _load_script_file(script_file: ScriptFile) -> ModuleType | None:
    """Import a script file; a failure is logged, kept in `load_errors` and in the extension's status."""
    extension = _extension_of(script_file)
    installed_for: set[str] = set()  # one install per missing module: a script may miss several in turn
    while True:
        try:
            module = _import_script_file(script_file)
        except BaseException as e:  # SystemExit from a script must not stop the app either
            if isinstance(e, KeyboardInterrupt):
                raise
            if extension and isinstance(e, ModuleNotFoundError) and e.name not in installed_for and \
                    len(installed_for) < MAX_FIRST_NEED_INSTALLS and _install_missing_package(extension, e):
                installed_for.add(e.name)
                continue
            _record_failure(extension, script_file.path, e, "Error loading script: %s")
            load_errors.append((script_file.path, f"{type(e).__name__}: {e}"))
            return None
        if extension:
            extension_status.record_script_loaded(extension, os.path.basename(script_file.path))
        return module


def _record_failure(extension: str | None, path: str | None, error: BaseException, message: str) -> None:
    """Log a script's failure; an extension that turned out to need an ldm internal is marked incompatible."""
    incompatible = extension_guard.incompatibility_in(error)
    if incompatible is not None:
        log.error("%s: %s", message % path, incompatible)
    else:
        log.error(message, path, exc_info=error)
    if not extension:
        return
    if incompatible is not None:
        extension_status.mark_incompatible(extension, str(incompatible))
    else:
        extension_status.record_script_failure(extension, os.path.basename(path or "?"), error)


def _note_incompatible(script: Script, error: BaseException) -> None:
    """A hook that failed on an ldm-only name (a hijack call, a late import) marks its extension incompatible."""
    incompatible = extension_guard.incompatibility_in(error)
    extension = extension_status.extension_name_of(script.filename) if script.filename else None
    if incompatible is not None and extension:
        extension_status.mark_incompatible(extension, str(incompatible))


def load_scripts(extension_dirs: Sequence[str] | None = None) -> None:
    """(Re)load every script file and re-create both tabs' script instances.

    `extension_dirs`: the enabled extension folders; None scans `extensions-builtin/*` and `extensions/*`. A file
    that raises on import is logged (with its path, also in `load_errors` and the extension's status) and skipped."""
    global _loaded
    if _loaded:
        script_callbacks.script_unloaded_callback()
    previous = {os.path.abspath(d.path) for d in scripts_data}
    for callbacks in script_callbacks.callback_map.values():  # callbacks of the old modules would run twice
        callbacks[:] = [c for c in callbacks if os.path.abspath(c.script) not in previous]
    scripts_data.clear()
    load_errors.clear()
    extension_status.forget_scripts()
    extension_guard.install()
    gradio_extensions.install()  # A1111's Gradio 3 forms for the extensions' module-level code, in every mode
    originals = extension_guard.entry_points()
    script_callbacks.ui_settings_registered = False  # the new modules' on_ui_settings callbacks have not run
    for script_file in list_script_files(extension_dirs):
        module = _load_script_file(script_file)
        if module is None:
            continue
        # A1111 registers every Script subclass the module holds, also one imported from another file of the
        # extension (the entry file imports it from its package)
        registered = {data.script_class for data in scripts_data}
        for obj in list(module.__dict__.values()):
            if inspect.isclass(obj) and issubclass(obj, Script) and obj is not Script and obj not in registered \
                    and not getattr(obj, "__abstractmethods__", None):
                scripts_data.append(ScriptClassData(obj, script_file.path, script_file.basedir, module))
    _loaded = True
    extension_guard.mark_replaced_entry_points(originals)
    scripts_txt2img.initialize_scripts(is_img2img=False)
    scripts_img2img.initialize_scripts(is_img2img=True)


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """A1111's `list_scripts`: files ending in `extension` in `<repo>/<scriptdirname>/`, then in that folder of each
    enabled extension (e.g. `list_scripts("localizations", ".json")`)."""
    folders = [REPO_ROOT, *(default_extension_dirs() if include_extensions else [])]
    if include_extensions:
        from modules import extensions, shared

        if shared.opts is not None:
            folders = [REPO_ROOT, *extensions.enabled_paths(shared.opts, shared.cmd_opts)]
    found = []
    for folder in folders:
        directory = os.path.join(folder, scriptdirname)
        if os.path.isdir(directory):
            found += [ScriptFile(folder, name, os.path.join(directory, name)) for name in sorted(os.listdir(directory))
                      if os.path.splitext(name)[1].lower() == extension.lower()
                      and os.path.isfile(os.path.join(directory, name))]
    return found


def list_files_with_name(filename: str) -> list[str]:
    """A1111's `list_files_with_name`: `filename` in the repo root and in each extension folder, where it exists."""
    folders = [REPO_ROOT, *default_extension_dirs()]
    return [os.path.join(folder, filename) for folder in folders if os.path.isfile(os.path.join(folder, filename))]


def ensure_loaded() -> None:
    """Load the scripts once (the UI calls this, so a UI built without webui.py still has the built-ins)."""
    if not _loaded:
        load_scripts()


def _short(path: str | None) -> str:
    return os.path.relpath(path, REPO_ROOT) if path and not os.path.relpath(path, REPO_ROOT).startswith("..") \
        else str(path)


class ScriptRunner:
    """One tab's scripts: builds their UI, slices the UI's values for each, and calls their hooks safely."""

    def __init__(self, is_img2img: bool = False) -> None:
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.inputs: list[Any] = [None]
        self.dropdown: Any = None
        self.ui_built = False
        # elem_id -> [(callback, script)] of Script.on_before_component / on_after_component (A1111's layout)
        self.on_before_component_elem_id: dict[str, list[tuple[Callable[..., Any], Script]]] = {}
        self.on_after_component_elem_id: dict[str, list[tuple[Callable[..., Any], Script]]] = {}

    # --- set-up ---------------------------------------------------------------------------------------------

    def initialize_scripts(self, is_img2img: bool | None = None) -> None:
        """Instantiate every loaded script class for this tab and sort them into selectable / always on."""
        if is_img2img is not None:
            self.is_img2img = is_img2img
        self.scripts, self.selectable_scripts, self.alwayson_scripts = [], [], []
        self.inputs, self.ui_built = [None], False
        self.on_before_component_elem_id, self.on_after_component_elem_id = {}, {}
        for data in scripts_data:
            try:
                script = data.script_class()
                script.filename = data.path
                script.is_txt2img = not self.is_img2img
                script.is_img2img = self.is_img2img
                script.tabname = "img2img" if self.is_img2img else "txt2img"
                visibility = script.show(self.is_img2img)
            except Exception as e:
                _record_failure(extension_status.extension_name_of(data.path), data.path, e,
                                f"Error setting up script {data.script_class.__name__} from %s")
                continue
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.titles = [self.title_of(s) for s in self.selectable_scripts]
        self.title_map = {self.title_of(s).lower(): s for s in self.scripts}
        self.apply_on_before_component_callbacks()

    def apply_on_before_component_callbacks(self) -> None:
        """Move what each script registered with `on_before_component` / `on_after_component` (in `__init__`,
        `show()` or `ui()`) into this runner's elem_id tables (A1111 does it after set-up and after the UI)."""
        for script in self.scripts:
            for registered, table in ((script.on_before_component_elem_id, self.on_before_component_elem_id),
                                      (script.on_after_component_elem_id, self.on_after_component_elem_id)):
                for elem_id, callback in registered or []:
                    table.setdefault(elem_id, []).append((callback, script))
            script.on_before_component_elem_id = []
            script.on_after_component_elem_id = []

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """A component of this runner's tab is about to be created: the elem_id callbacks, then every script's
        `before_component` (A1111's order). One that raises is logged with its file; the UI is built on."""
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            self._guarded(script, "on_before_component", callback, OnComponent(component=component))
        for script in self.scripts:
            self._guarded(script, "before_component", script.before_component, component, **kwargs)

    def after_component(self, component: Any, **kwargs: Any) -> None:
        for callback, script in self.on_after_component_elem_id.get(getattr(component, "elem_id", None), []):
            self._guarded(script, "on_after_component", callback, OnComponent(component=component))
        for script in self.scripts:
            self._guarded(script, "after_component", script.after_component, component, **kwargs)

    def _guarded(self, script: Script, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:
            log.exception("Error running %s of script %s (%s)", what, self.title_of(script), script.filename)
            _note_incompatible(script, e)

    @staticmethod
    def title_of(script: Script) -> str:
        try:
            return str(script.title())
        except Exception:
            log.exception("Error getting the title of a script in %s", script.filename)
            return f"{os.path.basename(script.filename or '?')} [error]"

    def setup_ui(self) -> list[Any]:
        """Build the scripts' UI inside the current Gradio Blocks; returns the tab's script inputs (A1111 layout).

        Always-on scripts first (each in a visible group; the script makes its own accordion), then the "Script"
        dropdown (`script_list`) and one hidden group per selectable script, shown when chosen."""
        import gradio as gr

        create = script_callbacks.create_component  # announced to extensions like the tab's own components

        self.inputs = [None]
        for script in self.alwayson_scripts:
            with create(gr.Group, visible=True, elem_id=f"{self._tab()}_script_{self._slug(script)}") as group:
                self._create_script_ui(script)
            script.group = group
        self.dropdown = create(gr.Dropdown, label="Script", elem_id="script_list", choices=["None", *self.titles],
                               value="None", type="index")
        self.inputs[0] = self.dropdown
        for script in self.selectable_scripts:
            with create(gr.Group, visible=False, elem_id=f"{self._tab()}_script_{self._slug(script)}") as group:
                self._create_script_ui(script)
            script.group = group
        groups = [s.group for s in self.selectable_scripts]
        if groups:
            def select_script(index: int | None) -> list[Any]:
                return [gr.Group(visible=i + 1 == index) for i in range(len(groups))]

            self.dropdown.change(select_script, inputs=[self.dropdown], outputs=groups, queue=False,
                                 show_progress="hidden", api_visibility="undocumented")
        self.apply_on_before_component_callbacks()  # what scripts registered in ui(), for components made later
        self.ui_built = True
        return list(self.inputs)

    def _tab(self) -> str:
        return "img2img" if self.is_img2img else "txt2img"

    def _slug(self, script: Script) -> str:
        return re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title_of(script).lower()))

    def _create_script_ui(self, script: Script) -> None:
        script.args_from = script.args_to = len(self.inputs)
        try:
            controls = script.ui(self.is_img2img)
        except Exception:
            log.exception("Error creating UI for script %s (%s)", self.title_of(script), script.filename)
            return
        if controls is None:
            return
        controls = list(controls)
        script.name = self.title_of(script).lower()
        script.controls = controls
        for control in controls:
            try:
                control.custom_script_source = os.path.basename(script.filename or "")
            except Exception:  # some objects refuse new attributes; the source label is only informative
                pass
        self.inputs += controls
        script.args_to = len(self.inputs)

    @property
    def infotext_fields(self) -> list[tuple[Any, Any]]:
        """Every script's `infotext_fields` ((component, infotext key or function of the parsed params)), in the
        order their UIs were built: what pasting an infotext into this tab fills besides the tab's own fields
        (A1111's `ScriptRunner.infotext_fields`)."""
        return [pair for script in self.scripts if script.infotext_fields for pair in script.infotext_fields]

    @property
    def paste_field_names(self) -> list[str]:
        return [name for script in self.scripts if script.paste_field_names for name in script.paste_field_names]

    def ensure_ui(self) -> None:
        """Build the UI once in a throwaway Blocks when no tab did (API-only use), to learn the default values."""
        if self.ui_built:
            return
        import gradio as gr

        with gr.Blocks():
            self.setup_ui()

    # --- arguments ------------------------------------------------------------------------------------------

    def default_args(self) -> list[Any]:
        """Every input's default value (the component's initial value; the dropdown: 0 = no script)."""
        self.ensure_ui()
        return [0, *(getattr(c, "value", None) for c in self.inputs[1:])]

    def complete_args(self, args: Sequence[Any]) -> list[Any]:
        """The UI's values padded with defaults where an older client sent fewer (A1111: API defaults)."""
        args = list(args)
        if len(args) < len(self.inputs) or not self.ui_built:
            defaults = self.default_args()
            args += defaults[len(args):]
        return args

    def attach(self, p: Any, args: Sequence[Any]) -> None:
        """Give a job this runner and the tab's script values (what the generate handlers call)."""
        p.scripts = self
        p.script_args = self.complete_args(args)

    def args_of(self, p: Any, script: Script) -> list[Any]:
        if script.args_from is None or script.args_to is None:
            return []
        args = list(p.script_args or [])
        if len(args) < script.args_to:
            args = self.complete_args(args)
        return args[script.args_from:script.args_to]

    def selected_script(self, index: Any) -> Script | None:
        """The dropdown's value (an index, 0 = none) or a title (A1111's API `script_name`, case-insensitive)."""
        if index is None or index == "" or index == 0:
            return None
        if isinstance(index, str):
            if index.lower() == "none":
                return None
            script = self.title_map.get(index.lower())
            if script is None or script not in self.selectable_scripts:
                raise JobError(f"Unknown script: {index!r}. Available: {', '.join(self.titles) or 'none'}")
            return script
        if not 0 < int(index) <= len(self.selectable_scripts):
            raise JobError(f"Script index {index} out of range (0..{len(self.selectable_scripts)})")
        return self.selectable_scripts[int(index) - 1]

    # --- running ----------------------------------------------------------------------------------------------

    def run(self, p: Any, *args: Any) -> Processed | None:
        """Run the selected script with its slice of `args` (default: `p.script_args`); None when none is selected,
        and the caller then runs `process_images` itself."""
        args = list(args) if args else list(p.script_args or [])
        script = self.selected_script(args[0] if args else 0)
        if script is None:
            return None
        setup_scripts(p)  # the always-on scripts' setup() comes before anything else, once per job
        if len(args) < (script.args_to or 0):
            args = self.complete_args(args)
        script_args = args[script.args_from:script.args_to]
        try:
            return script.run(p, *script_args)
        except ValueError:  # JobError included: already a message for the user
            raise
        except Exception as e:
            log.exception("Error running script %s (%s)", self.title_of(script), script.filename)
            raise JobError(f"Script {self.title_of(script)!r} ({_short(script.filename)}) failed: "
                           f"{type(e).__name__}: {e}") from e

    def _report(self, p: Any, script: Script, hook: str, error: Exception, processed: Any = None) -> None:
        log.exception("Error running %s of script %s (%s)", hook, self.title_of(script), script.filename)
        _note_incompatible(script, error)
        message = f"Error running {hook} of script {self.title_of(script)!r} ({_short(script.filename)}): " \
                  f"{type(error).__name__}: {error}"
        for target in (p, processed):
            comments = getattr(target, "comments", None)
            if isinstance(comments, list) and message not in comments:
                comments.append(message)

    def _call(self, hook: str, p: Any, *args: Any, processed: Any = None, **kwargs: Any) -> None:
        for script in self.alwayson_scripts:
            if extension_status.is_incompatible_file(script.filename):
                continue  # it already failed on an A1111 internal: its status says so, the job goes on without it
            try:
                getattr(script, hook)(p, *args, *self.args_of(p, script), **kwargs)
            except JobError:  # the script refuses the job on purpose (bad input): its message goes to the user
                raise
            except Exception as e:
                self._report(p, script, hook, e, processed)

    def setup(self, p: Any) -> None:
        """Every always-on script's setup(); use `processing.setup_scripts(p)`, which calls this once per job."""
        self._call("setup", p)

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:
        """A1111's name (sic) for running setup() once per job."""
        setup_scripts(p)

    def before_process(self, p: Any) -> None:
        self._call("before_process", p)

    def process(self, p: Any) -> None:
        self._call("process", p)

    def before_process_batch(self, p: Any, **kwargs: Any) -> None:
        self._call("before_process_batch", p, **kwargs)

    def process_batch(self, p: Any, **kwargs: Any) -> None:
        self._call("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p: Any, **kwargs: Any) -> None:
        self._call("process_before_every_sampling", p, **kwargs)

    def after_extra_networks_activate(self, p: Any, **kwargs: Any) -> None:
        self._call("after_extra_networks_activate", p, **kwargs)

    def before_hr(self, p: Any) -> None:
        self._call("before_hr", p)

    def post_sample(self, p: Any, ps: PostSampleArgs) -> None:
        self._call("post_sample", p, ps)

    def postprocess_batch(self, p: Any, images: list[Any], **kwargs: Any) -> None:
        self._call("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None:
        self._call("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None:
        self._call("postprocess_image", p, pp)

    def postprocess(self, p: Any, processed: Processed) -> None:
        self._call("postprocess", p, processed, processed=processed)


def with_script_parameters(fn: Callable[..., Any], count: int) -> Callable[..., Any]:
    """`fn(..., *script_args)` as a handler whose signature names each script input (`script_index`,
    `script_arg_1`, ...) with the default None.

    Gradio's API marks an input optional only if its component has a value or its parameter defaults to None; script
    components often have no value (an empty Textbox), and `*args` has no defaults, so without this an API client
    that sends the older, shorter argument list would be refused. The tab then fills the real defaults."""
    signature = inspect.signature(fn)
    named = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    extra = [inspect.Parameter("script_index" if i == 0 else f"script_arg_{i}",
                               inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for i in range(count)]
    if inspect.isgeneratorfunction(fn):  # Gradio streams only from generator functions
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            yield from fn(*args, **kwargs)
    else:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)
    handler.__signature__ = signature.replace(parameters=named + extra)
    return handler


def merge_processed(p: Any, results: Sequence[Processed], keep_grids: bool = False) -> Processed:
    """One Processed from several jobs' results (what a selectable script returns after running many jobs).

    Sub-grids are dropped unless `keep_grids`; images and infotexts stay aligned either way."""
    images, infotexts, saved, comments = [], [], [], []
    prompts, negatives, seeds, subseeds = [], [], [], []
    for result in results:
        start = 0 if keep_grids else result.index_of_first_image
        images += result.images[start:]
        infotexts += result.infotexts[start:]
        saved += result.saved_files
        prompts += result.all_prompts
        negatives += result.all_negative_prompts
        seeds += result.all_seeds
        subseeds += result.all_subseeds
        comments += [c for c in result.comments if c not in comments]
    first = results[0] if results else None
    seed = seeds[0] if seeds else p.seed
    return Processed(
        images=images, job=p, seed=seed, subseed=subseeds[0] if subseeds else p.subseed, all_seeds=seeds,
        all_subseeds=subseeds, all_prompts=prompts, all_negative_prompts=negatives, infotexts=infotexts,
        saved_files=saved, interrupted=any(r.interrupted for r in results), comments=comments,
        job_timestamp=first.job_timestamp if first else "", sd_model_name=first.sd_model_name if first else None,
        sd_model_hash=first.sd_model_hash if first else None, sd_vae_name=first.sd_vae_name if first else None,
        sd_vae_hash=first.sd_vae_hash if first else None)


scripts_txt2img = ScriptRunner(is_img2img=False)
scripts_img2img = ScriptRunner(is_img2img=True)
