"""Scripts (A1111's `modules.scripts`): the `Script` base class extensions subclass, the loader that
imports `scripts/*.py` of Easel and of each enabled extension, and the two runners
`scripts_txt2img` / `scripts_img2img` that build the scripts' inputs and call their hooks.

Argument layout (as A1111): a runner's scripts share one flat `script_args` list. Slot 0 holds the
selected script's 1-based index among the selectable scripts (0 = none); each script owns the slice
`script_args[script.args_from:script.args_to]`, the values of the components its `ui()` returned.
Always-visible scripts get their hooks called for every generation with their slice; a selectable
script's `run(p, *args)` replaces the plain generation when it is chosen.

A hook that raises is reported with the extension's name and the traceback (log and Extensions
tab) and the generation goes on; only a selected script's `run` failing fails the generation.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from modules import errors, extensions, script_callbacks, script_loading
from modules.paths import script_path

log = logging.getLogger(__name__)

AlwaysVisible = object()
"""`Script.show()` returns this for scripts shown on the tab itself rather than in the Script list."""


class PostprocessImageArgs:
    """`postprocess_image(p, pp)`: replace `pp.image` to change the image that is saved and shown."""

    def __init__(self, image: Any) -> None:
        self.image = image


class PostprocessBatchListArgs:
    """`postprocess_batch_list(p, pp, batch_number=)`: `pp.images` (one (3, H, W) tensor in [0, 1]
    per image) may be replaced, shortened or extended."""

    def __init__(self, images: list[Any]) -> None:
        self.images = images


class Script:
    """Base class of scripts. Override `title()`, and `ui()`, `show()`, `run()` or the hooks you need."""

    name: str | None = None
    section: str | None = None
    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group: Any = None
    create_group = True
    infotext_fields: list[Any] | None = None
    """[(component, "Infotext key"), ...]: values pasted from an infotext into this script's inputs"""
    paste_field_names: list[str] | None = None
    api_info: Any = None
    on_before_component_elem_id: list[tuple[str, Callable[..., Any]]] | None = None
    on_after_component_elem_id: list[tuple[str, Callable[..., Any]]] | None = None
    setup_for_ui_only = False
    """True: `setup()` is not called for API requests"""
    sorting_priority = 0
    controls: list[Any] | None = None

    def title(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} has no title()")

    def ui(self, is_img2img: bool) -> Any:
        """Create the script's components and return them (a list); their values become `*args`."""
        return None

    def show(self, is_img2img: bool) -> Any:
        """False: hidden on this tab; True: in the Script list; `AlwaysVisible`: always on."""
        return True

    def run(self, p: Any, *args: Any) -> Any:
        """A selectable script's generation: return a `Processed` (usually from process_images)."""
        return None

    def setup(self, p: Any, *args: Any) -> None:
        """Before anything else of the generation (even before the model is chosen)."""

    def before_process(self, p: Any, *args: Any) -> None:
        """Before the prompts and seeds are used; p.all_prompts etc. are set."""

    def process(self, p: Any, *args: Any) -> None:
        """Before processing begins; change p (prompts, extra_generation_params) here."""

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Before a batch; kwargs: batch_number, prompts, seeds, subseeds. Extra networks are not parsed yet."""

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Same as before_process_batch, called just after it."""

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """After a batch is decoded; kwargs: images (B, 3, H, W) tensor in [0, 1], batch_number."""

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None:
        """After a batch is decoded, with the images as a list that may be changed; kwargs: batch_number."""

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        """Each image before it is saved; replace pp.image to change it."""

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        """After the whole generation; processed.images etc. may be changed."""

    def before_hr(self, p: Any, *args: Any) -> None:
        """Before the hires pass."""

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Before each UI component is created (kwargs: elem_id, label, ...)."""

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """After each UI component is created (kwargs: elem_id, label, ...)."""

    def on_before_component(self, callback: Callable[..., Any], *, elem_id: str) -> None:
        """Call `callback(OnComponent)` before the component with this elem_id is created."""
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback: Callable[..., Any], *, elem_id: str) -> None:
        """Call `callback(OnComponent)` after the component with this elem_id is created."""
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """An elem_id for a component of this script: script_[<tab>_]<title>_<item_id>. The tab is
        named only when the script shows the same way on both tabs (else the id is already unique)."""
        need_tabname = self.show(True) == self.show(False)
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


class ScriptBuiltinUI(Script):
    """Built-in always-on scripts whose ids are those of Easel's own components (no script_ prefix)."""

    setup_for_ui_only = True

    def elem_id(self, item_id: str) -> str:
        need_tabname = self.show(True) == self.show(False)
        tab = f"{'img2img' if self.is_img2img else 'txt2img'}_" if need_tabname else ""
        return f"{tab}{item_id}"


@dataclass
class OnComponent:
    """What `Script.on_before_component` / `on_after_component` callbacks receive."""

    component: Any


# --- loading -------------------------------------------------------------------------------------------

current_basedir: str = str(script_path)


def basedir() -> str:
    """The folder of the extension (or Easel) whose script is being loaded: call it at import time."""
    return current_basedir


@dataclass
class ScriptFile:
    basedir: str
    filename: str
    path: str
    priority: str = "1"


@dataclass
class ScriptClassData:
    script_class: type
    path: str
    basedir: str
    module: ModuleType


scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list[ScriptClassData] = []
loaded_modules: dict[str, ModuleType] = {}


def list_scripts(scriptdirname: str, extension: str, *, include_extensions: bool = True) -> list[ScriptFile]:
    """Easel's own `<scriptdirname>/*<extension>` files, then those of each enabled extension,
    ordered by metadata.ini Requires/Before/After."""
    files: list[ScriptFile] = []
    own = Path(script_path) / scriptdirname
    if own.is_dir():
        for f in sorted(own.iterdir(), key=lambda p: p.name.lower()):
            if f.is_file() and f.name.endswith(extension):
                files.append(ScriptFile(str(script_path), f.name, str(f), "0"))
    if include_extensions:
        for ext in extensions.active():
            for path in ext.list_files(scriptdirname, extension):
                files.append(ScriptFile(ext.path, os.path.basename(path), path, "1"))
    return _sort_scripts(files)


def _script_key(f: ScriptFile) -> str:
    ext = extensions.extension_for_path(f.path)
    owner = ext.canonical_name if ext is not None else "builtin"
    return f"{owner}/{f.filename}".lower()


def _sort_scripts(files: list[ScriptFile]) -> list[ScriptFile]:
    """A stable topological order: a script runs after those its [scripts/<file>] After= (and its
    extension's) names, and before those its Before= names; names are extensions or ext/file.py."""
    keys = [_script_key(f) for f in files]
    owners = [k.split("/", 1)[0] for k in keys]
    after: dict[int, set[int]] = {i: set() for i in range(len(files))}

    def targets(name: str) -> list[int]:
        name = name.lower()
        return [j for j, k in enumerate(keys) if k == name or owners[j] == name]

    for i, f in enumerate(files):
        ext = extensions.extension_for_path(f.path)
        if ext is None:
            continue
        section = f"scripts/{f.filename}"
        for name in ext.metadata.get_script_requirements("After", section, "Extension") + \
                ext.metadata.get_script_requirements("Requires", section):
            after[i].update(j for j in targets(name) if j != i and owners[j] != owners[i])
        for name in ext.metadata.get_script_requirements("Before", section, "Extension"):
            for j in targets(name):
                if j != i and owners[j] != owners[i]:
                    after[j].add(i)
    ordered: list[int] = []
    remaining = list(range(len(files)))
    while remaining:
        ready = next((i for i in remaining if after[i] <= set(ordered)), None)
        if ready is None:  # a cycle: keep the rest in their folder order
            log.warning("script order in metadata.ini has a cycle among %s", [keys[i] for i in remaining])
            ordered.extend(remaining)
            break
        ordered.append(ready)
        remaining.remove(ready)
    return [files[i] for i in ordered]


def _owner_name(path: str) -> str:
    ext = extensions.extension_for_path(path)
    return ext.name if ext is not None else os.path.basename(path)


def _report(path: str, what: str) -> None:
    """Report the exception being handled as a failure of `path`'s extension during `what`."""
    owner = _owner_name(path)
    entry = errors.report(f"Error {what} of {owner} ({path})", exc_info=True)
    extensions.record_error(owner, what, entry.exception, entry.traceback)


_load_lock = threading.RLock()


def load_scripts(*, include_extensions: bool = True) -> None:
    """Import Easel's scripts/ and every enabled extension's scripts/*.py, collect their Script
    classes, let extensions add settings (on_ui_settings) and set up both runners.

    Each script file is imported with its extension's folder on sys.path (extensions import their
    own helper modules that way) and `basedir()` returning that folder. A file that fails to import
    is reported with its extension's name and skipped.
    """
    global current_basedir, scripts_txt2img, scripts_img2img, scripts_postproc
    import sys

    with _load_lock:
        if include_extensions and not extensions.extensions:
            extensions.list_extensions()
        scripts_data.clear()
        postprocessing_scripts_data.clear()
        script_callbacks.clear_callbacks()
        loaded_modules.clear()
        from modules import scripts_postprocessing

        for f in list_scripts("scripts", ".py", include_extensions=include_extensions):
            added_path = f.basedir not in sys.path
            if added_path:
                sys.path.insert(0, f.basedir)
            current_basedir = f.basedir
            try:
                module = script_loading.load_module(f.path)
                loaded_modules[f.path] = module
                for obj in list(vars(module).values()):
                    if not isinstance(obj, type) or obj.__module__ != module.__name__:
                        continue
                    if issubclass(obj, Script) and obj is not Script:
                        scripts_data.append(ScriptClassData(obj, f.path, f.basedir, module))
                    elif issubclass(obj, scripts_postprocessing.ScriptPostprocessing):
                        postprocessing_scripts_data.append(ScriptClassData(obj, f.path, f.basedir, module))
            except Exception:
                _report(f.path, "loading script")
            finally:
                current_basedir = str(script_path)
                if added_path and f.basedir in sys.path:
                    sys.path.remove(f.basedir)

        # Settings of extensions exist before anything reads or lists the options.
        script_callbacks.ui_settings_callback()
        _connect_model_loaded()
        scripts_txt2img = ScriptRunner()
        scripts_img2img = ScriptRunner()
        scripts_txt2img.initialize_scripts(is_img2img=False)
        scripts_img2img.initialize_scripts(is_img2img=True)
        scripts_postproc = scripts_postprocessing.ScriptPostprocessingRunner()


def _connect_model_loaded() -> None:
    """Extensions' on_model_loaded callbacks run whenever the model manager puts a model in service."""
    from modules import shared

    manager = shared.model_manager
    if manager is None:
        return
    hooks = getattr(manager, "on_model_loaded", None)
    if hooks is not None and script_callbacks.model_loaded_callback not in hooks:
        hooks.append(script_callbacks.model_loaded_callback)


def reload_scripts() -> None:
    """Unload (on_script_unloaded callbacks) and load every script again."""
    script_callbacks.script_unloaded_callback()
    load_scripts()


# --- running -------------------------------------------------------------------------------------------

_in_selectable_run: contextvars.ContextVar[bool] = contextvars.ContextVar("easel_in_selectable_run", default=False)


def in_selectable_run() -> bool:
    """True while a selected script's run() is on the stack (its process_images calls run plainly)."""
    return _in_selectable_run.get()


def _component_value(component: Any) -> Any:
    return getattr(component, "value", None)


def _choices(component: Any) -> list[str] | None:
    choices = getattr(component, "choices", None)
    if choices is None:
        return None
    return [str(c[0]) if isinstance(c, (tuple, list)) else str(c) for c in choices]


class ScriptRunner:
    """The scripts of one tab (txt2img or img2img), their inputs and their hooks."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list[Any] = []
        self.paste_field_names: list[str] = []
        self.inputs: list[Any] = [None]
        self.is_img2img = False
        self.ui_created = False
        self.dropdown: Any = None
        self._ui_lock = threading.Lock()
        self.on_before_component_elem_id: dict[str, list[tuple[Callable[..., Any], Script]]] = {}
        self.on_after_component_elem_id: dict[str, list[tuple[Callable[..., Any], Script]]] = {}
        self._ui_prepared = False
        self._ui_done: set[int] = set()

    def initialize_scripts(self, is_img2img: bool) -> None:
        """Instantiate every loaded script class that shows on this tab."""
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        self.on_before_component_elem_id = {}
        self.on_after_component_elem_id = {}
        self.is_img2img = is_img2img
        for data in scripts_data:
            try:
                script = data.script_class()
                script.filename = data.path
                script.is_txt2img = not is_img2img
                script.is_img2img = is_img2img
                script.tabname = "img2img" if is_img2img else "txt2img"
                visibility = script.show(is_img2img)
            except Exception:
                _report(data.path, "initializing script")
                continue
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)
        self.alwayson_scripts.sort(key=lambda s: getattr(s, "sorting_priority", 0))
        self.titles = [self._title(s) for s in self.selectable_scripts]
        self.title_map = {self._title(s).lower(): s for s in self.scripts}
        for script in self.scripts:
            script.name = self._title(script).lower()

    @staticmethod
    def _title(script: Script) -> str:
        try:
            return str(script.title())
        except Exception:
            _report(script.filename or "?", "title()")
            return os.path.basename(script.filename or "?")

    # --- inputs --------------------------------------------------------------------------------------
    def create_script_ui(self, script: Script) -> None:
        """Call the script's ui() in the current Gradio context and give it its argument slice."""
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        try:
            controls = script.ui(script.is_img2img)
        except Exception:
            _report(script.filename or "?", "creating UI for script")
            controls = None
        if controls is None:
            controls = []
        elif not isinstance(controls, (list, tuple)):
            controls = [controls]
        script.controls = list(controls)
        for control in script.controls:
            if getattr(control, "custom_script_source", None) is None:
                with contextlib.suppress(AttributeError):
                    control.custom_script_source = os.path.basename(script.filename or "")
        self.inputs.extend(script.controls)
        script.args_to = len(self.inputs)
        script.api_info = {
            "name": script.name,
            "is_img2img": script.is_img2img,
            "is_alwayson": script.alwayson,
            "args": [{"label": getattr(c, "label", None), "value": _component_value(c),
                      "minimum": getattr(c, "minimum", None), "maximum": getattr(c, "maximum", None),
                      "step": getattr(c, "step", None), "choices": _choices(c)} for c in script.controls],
        }
        if script.infotext_fields:
            self.infotext_fields.extend(script.infotext_fields)
        if script.paste_field_names:
            self.paste_field_names.extend(script.paste_field_names)

    def prepare_ui(self) -> None:
        """Start a new layout of the inputs; the page then creates the scripts of each section where
        it belongs (`setup_ui_for_section`) and finally the rest (`setup_ui`), in page order, so the
        argument slices follow the order the inputs appear in."""
        self.inputs = [None]
        self.infotext_fields = []
        self.paste_field_names = []
        self._ui_done = set()
        self._ui_prepared = True

    def _create_in_group(self, script: Script) -> None:
        import gradio as gr

        self._ui_done.add(id(script))
        if not script.create_group:
            self.create_script_ui(script)
            return
        with gr.Group(visible=script.alwayson, elem_classes="easel-script-group") as group:
            self.create_script_ui(script)
        if script.alwayson and not group.children:
            group.visible = False  # a hooks-only script: no empty box on the page
        script.group = group

    def setup_ui_for_section(self, section: str | None, scriptlist: list[Script] | None = None) -> None:
        """Create the inputs of the always-on scripts of `section` (or of the scripts in `scriptlist`)
        in the current Gradio context, each in its own group as A1111 does."""
        if not self._ui_prepared:
            self.prepare_ui()
        for script in (self.alwayson_scripts if scriptlist is None else scriptlist):
            if script.alwayson and script.section != section:
                continue
            if id(script) not in self._ui_done:
                self._create_in_group(script)

    def setup_ui(self) -> list[Any]:
        """Create the remaining scripts' inputs in the current Gradio context: the always-on scripts
        no section placed (section None, or one this page has no place for), the "Script" dropdown
        in slot 0, then each selectable script in a group that shows while it is chosen.

        Returns `self.inputs`: the components whose values the UI sends as `script_args`.
        """
        import gradio as gr

        if not self._ui_prepared:
            self.prepare_ui()
        for script in self.alwayson_scripts:
            if id(script) not in self._ui_done:
                self._create_in_group(script)
        self.dropdown = gr.Dropdown(label="Script", elem_id="script_list", choices=["None", *self.titles],
                                    value="None", type="index")
        self.inputs[0] = self.dropdown
        for script in self.selectable_scripts:
            self._create_in_group(script)
        self._connect_dropdown()
        self._ui_prepared = False
        self.ui_created = True
        return self.inputs

    def _connect_dropdown(self) -> None:
        """Show the chosen script's group (also when pasted parameters or ui-config.json choose it)."""
        import gradio as gr

        dropdown = self.dropdown
        grouped = [(i + 1, s.group) for i, s in enumerate(self.selectable_scripts) if s.group is not None]
        titles = list(self.titles)

        def select_script(index: Any) -> list[Any]:
            chosen = int(index or 0)
            return [gr.update(visible=number == chosen) for number, _ in grouped]

        def init_field(title: Any) -> None:
            chosen = titles.index(title) + 1 if title in titles else 0
            for number, group in grouped:
                group.visible = number == chosen

        dropdown.init_field = init_field
        if grouped:
            dropdown.change(fn=select_script, inputs=[dropdown], outputs=[g for _, g in grouped],
                            show_progress="hidden", queue=False)
        def script_from_params(params: dict[str, Any]) -> str:
            # An infotext without "Script" (a plain generation) deselects any script when pasted.
            title = str(params.get("Script", "None"))
            if title != "None" and title not in titles:
                log.warning("pasted parameters name the script %r, which this tab does not have", title)
                return "None"
            return title

        self.infotext_fields.append((dropdown, script_from_params))

    def ensure_inputs(self) -> None:
        """Build the inputs outside the page when no UI built them (API-only server): the components'
        default values fill the arguments an API request leaves out."""
        with self._ui_lock:
            if self.ui_created:
                return
            import gradio as gr

            with gr.Blocks(analytics_enabled=False):
                self.prepare_ui()
                self.setup_ui()

    def init_default_script_args(self) -> list[Any]:
        """The full argument list with every script's component defaults and no script selected."""
        self.ensure_inputs()
        last = max([1, *[s.args_to or 0 for s in self.scripts]])
        args: list[Any] = [None] * last
        args[0] = 0
        for script in self.scripts:
            if script.args_from is None or script.args_to is None:
                continue
            for i in range(script.args_from, script.args_to):
                args[i] = _component_value(self.inputs[i]) if i < len(self.inputs) else None
        return args

    def selectable_index(self, script: Script) -> int:
        return self.selectable_scripts.index(script) + 1

    def script(self, title: str) -> Script | None:
        """The script with this title (any case), or None."""
        return self.title_map.get(title.strip().lower())

    def prepare_api_run(self, p: Any, script: Script | None, script_args: list[Any] | None,
                        alwayson: dict[str, list[Any]] | None) -> None:
        """Attach the runner to `p` with an argument list from an API request: defaults, then the
        selected script's `script_args` and each always-on script's `args` laid over its slice."""
        args = self.init_default_script_args()
        if script is not None:
            args[0] = self.selectable_index(script)
            self._lay_over(args, script, script_args or [])
        for title, values in (alwayson or {}).items():
            target = self.script(title)
            if target is not None and target.alwayson:
                self._lay_over(args, target, values or [])
        p.scripts = self
        p.script_args = args

    @staticmethod
    def _lay_over(args: list[Any], script: Script, values: list[Any]) -> None:
        start, end = script.args_from or 0, script.args_to or 0
        for i, v in enumerate(list(values)[: max(0, end - start)]):
            args[start + i] = v

    def prepare_ui_run(self, p: Any, args: list[Any] | tuple[Any, ...]) -> None:
        """Attach the runner to `p` with the values of `self.inputs` as the UI sends them."""
        p.scripts = self
        p.script_args = list(args)

    # --- hooks ---------------------------------------------------------------------------------------
    def _args_of(self, p: Any, script: Script) -> list[Any]:
        args = p.script_args or []
        return list(args[script.args_from:script.args_to]) if script.args_from is not None else []

    def _call_alwayson(self, name: str, p: Any, *extra: Any, **kwargs: Any) -> None:
        for script in self.alwayson_scripts:
            try:
                getattr(script, name)(p, *extra, *self._args_of(p, script), **kwargs)
            except Exception:
                _report(script.filename or "?", f"running {name}")

    def selected_script(self, args: list[Any] | tuple[Any, ...] | None) -> Script | None:
        if not args:
            return None
        index = args[0]
        if isinstance(index, str):
            return self.script(index) if index.strip().lower() != "none" else None
        if not index:
            return None
        index = int(index)
        return self.selectable_scripts[index - 1] if 0 < index <= len(self.selectable_scripts) else None

    def run(self, p: Any, *args: Any) -> Any:
        """Run the selected script (slot 0 of args); None when none is selected."""
        script = self.selected_script(args)
        if script is None:
            return None
        token = _in_selectable_run.set(True)
        try:
            return script.run(p, *args[script.args_from:script.args_to])
        finally:
            _in_selectable_run.reset(token)

    def setup_scrips(self, p: Any, *, is_ui: bool = True) -> None:
        """Call setup() of the always-on scripts (A1111 spells this method so)."""
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *self._args_of(p, script))
            except Exception:
                _report(script.filename or "?", "running setup")

    setup_scripts = setup_scrips

    def before_process(self, p: Any) -> None:
        self._call_alwayson("before_process", p)

    def process(self, p: Any) -> None:
        self._call_alwayson("process", p)

    def before_process_batch(self, p: Any, **kwargs: Any) -> None:
        self._call_alwayson("before_process_batch", p, **kwargs)

    def process_batch(self, p: Any, **kwargs: Any) -> None:
        self._call_alwayson("process_batch", p, **kwargs)

    def postprocess_batch(self, p: Any, images: Any, **kwargs: Any) -> None:
        self._call_alwayson("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None:
        self._call_alwayson("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None:
        self._call_alwayson("postprocess_image", p, pp)

    def postprocess(self, p: Any, processed: Any) -> None:
        self._call_alwayson("postprocess", p, processed)

    def before_hr(self, p: Any) -> None:
        self._call_alwayson("before_hr", p)

    # --- UI component hooks (modules.ui.component_hooks calls these around every block of the page) -----
    def before_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hook("before_component", self.on_before_component_elem_id, component, kwargs)

    def after_component(self, component: Any, **kwargs: Any) -> None:
        self._component_hook("after_component", self.on_after_component_elem_id, component, kwargs)

    def _component_hook(self, name: str, by_id: dict[str, list[tuple[Callable[..., Any], Script]]],
                        component: Any, kwargs: dict[str, Any]) -> None:
        self.apply_on_before_component_callbacks()
        elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
        for callback, script in by_id.get(elem_id, []) if elem_id else []:
            try:
                callback(OnComponent(component=component))
            except Exception:
                _report(script.filename or "?", f"running on_{name} for {elem_id}")
        for script in self.scripts:
            try:
                getattr(script, name)(component, **kwargs)
            except Exception:
                _report(script.filename or "?", f"running {name}")

    def apply_on_before_component_callbacks(self) -> None:
        """Take the elem_id callbacks scripts registered with on_before/after_component (in __init__,
        ui() or an earlier hook) into the runner, where they stay for later page builds."""
        for script in self.scripts:
            for elem_id, cb in script.on_before_component_elem_id or []:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((cb, script))
            for elem_id, cb in script.on_after_component_elem_id or []:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((cb, script))
            if script.on_before_component_elem_id:
                script.on_before_component_elem_id.clear()
            if script.on_after_component_elem_id:
                script.on_after_component_elem_id.clear()


scripts_txt2img: ScriptRunner = ScriptRunner()
scripts_img2img: ScriptRunner = ScriptRunner()
scripts_postproc: Any = None
scripts_current: ScriptRunner | None = None


def before_component(component: Any, **kwargs: Any) -> None:
    """For the UI: before creating a component (the tab's scripts, then extension callbacks)."""
    if scripts_current is not None:
        scripts_current.before_component(component, **kwargs)
    script_callbacks.before_component_callback(component, **kwargs)


def after_component(component: Any, **kwargs: Any) -> None:
    """For the UI: after creating a component (extension callbacks, then the tab's scripts, which
    attach to it by elem_id here)."""
    script_callbacks.after_component_callback(component, **kwargs)
    if scripts_current is not None:
        scripts_current.after_component(component, **kwargs)


def runner_for(is_img2img: bool) -> ScriptRunner:
    return scripts_img2img if is_img2img else scripts_txt2img
