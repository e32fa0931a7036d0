"""Extension callbacks (A1111's `modules.script_callbacks`): `on_X(fn)` registers, `X_callback(...)`
calls every registered function.

A callback that raises is reported with the extension it belongs to (its file's folder) and skipped;
the others still run and the caller goes on, so one broken extension cannot break a generation, an
image save or the start-up. The sampling-loop callbacks (cfg_denoiser, cfg_denoised, cfg_after_cfg)
are handed to the engine as `denoiser_hooks()`; they receive the engine's parameter objects, whose
tensors they may replace, and the loop continues with what they leave there.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules import errors
from modules.engine.denoise import AfterCFGParams, DenoisedParams, DenoiserHooks, DenoiserParams

log = logging.getLogger(__name__)

# A1111's parameter class names for the sampling-loop callbacks.
CFGDenoiserParams = DenoiserParams
CFGDenoisedParams = DenoisedParams
AfterCFGCallbackParams = AfterCFGParams


class ImageSaveParams:
    """An image about to be saved (before_image_saved: change image, filename or pnginfo) or just
    saved (image_saved: read only)."""

    def __init__(self, image: Any, p: Any, filename: str, pnginfo: dict[str, Any]) -> None:
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class ImageGridLoopParams:
    """A grid about to be assembled: callbacks may change the images, columns or rows."""

    def __init__(self, imgs: list[Any], cols: int, rows: int) -> None:
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclass
class ExtraNoiseParams:
    noise: Any
    x: Any
    xi: Any


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: Any


@dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list[str]
    is_positive: bool = True


@dataclass
class CallbackItem:
    """One registration: the function, the file that registered it, and an optional name."""

    script: str
    callback: Callable[..., Any]
    name: str | None = None


CALLBACK_KINDS = (
    "callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs", "callbacks_ui_train_tabs",
    "callbacks_ui_settings", "callbacks_before_image_saved", "callbacks_image_saved", "callbacks_extra_noise",
    "callbacks_cfg_denoiser", "callbacks_cfg_denoised", "callbacks_cfg_after_cfg", "callbacks_before_component",
    "callbacks_after_component", "callbacks_image_grid", "callbacks_infotext_pasted", "callbacks_script_unloaded",
    "callbacks_before_ui", "callbacks_on_reload", "callbacks_list_optimizers", "callbacks_list_unets",
    "callbacks_before_token_counter",
)
callback_map: dict[str, list[CallbackItem]] = {kind: [] for kind in CALLBACK_KINDS}


def _caller_file() -> str:
    """The file of the code that called `on_X` (two frames up): it tells which extension owns it."""
    frame = sys._getframe(3)
    return os.path.abspath(frame.f_code.co_filename)


def _add(kind: str, callback: Callable[..., Any], name: str | None) -> None:
    if not callable(callback):
        raise TypeError(f"{kind}: {callback!r} is not callable")
    callback_map[kind].append(CallbackItem(_caller_file(), callback, name))


def _owner(item: CallbackItem) -> str:
    from modules import extensions

    ext = extensions.extension_for_path(item.script)
    return ext.name if ext is not None else os.path.basename(item.script)


def _report(item: CallbackItem, kind: str) -> None:
    owner = _owner(item)
    entry = errors.report(f"Error executing callback {kind} of {owner} ({item.script})", exc_info=True)
    from modules import extensions

    extensions.record_error(owner, f"callback {kind}", entry.exception, entry.traceback)


def _run(kind: str, *args: Any) -> list[Any]:
    """Call every callback of `kind`; returns the results of those that did not raise."""
    results = []
    for item in list(callback_map[kind]):
        try:
            results.append(item.callback(*args))
        except Exception:
            _report(item, kind)
    return results


def clear_callbacks() -> None:
    for items in callback_map.values():
        items.clear()


def remove_current_script_callbacks() -> None:
    """Forget callbacks registered by the file calling this (for scripts that reload themselves)."""
    filename = os.path.abspath(sys._getframe(1).f_code.co_filename)
    for kind, items in callback_map.items():
        callback_map[kind] = [i for i in items if i.script != filename]


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    for kind, items in callback_map.items():
        callback_map[kind] = [i for i in items if i.callback != callback_func]


def remove_callbacks_for_paths(prefix: str) -> None:
    """Forget every callback registered by files under `prefix` (an extension being reloaded)."""
    prefix = os.path.abspath(prefix)
    for kind, items in callback_map.items():
        callback_map[kind] = [i for i in items if not i.script.startswith(prefix)]


# --- calling -------------------------------------------------------------------------------------------

def app_started_callback(demo: Any, app: Any) -> None:
    """The server is built: `demo` is the Gradio Blocks (None without UI), `app` the FastAPI app."""
    _run("callbacks_app_started", demo, app)


def app_reload_callback() -> None:
    _run("callbacks_on_reload")


def model_loaded_callback(sd_model: Any) -> None:
    _run("callbacks_model_loaded", sd_model)


def ui_tabs_callback() -> list[tuple[Any, str, str]]:
    """Extension tabs: each callback returns a list of (blocks, title, elem_id)."""
    tabs: list[tuple[Any, str, str]] = []
    for result in _run("callbacks_ui_tabs"):
        tabs.extend(result or [])
    return tabs


def ui_tabs_by_owner() -> list[tuple[str, list[Any]]]:
    """As `ui_tabs_callback`, with the name of the extension whose callback returned each list, so
    the page can report a tab it cannot show under that name. A callback that raises is reported and
    left out; whatever a callback returned is passed on as a list, unchecked."""
    out: list[tuple[str, list[Any]]] = []
    for item in list(callback_map["callbacks_ui_tabs"]):
        try:
            result = item.callback()
        except Exception:
            _report(item, "callbacks_ui_tabs")
            continue
        if result is None:
            result = []
        elif not isinstance(result, (list, tuple)):
            result = [result]
        out.append((_owner(item), list(result)))
    return out


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    _run("callbacks_ui_train_tabs", params)


def ui_settings_callback() -> None:
    """Let extensions add their settings (`shared.opts.add_option`)."""
    _run("callbacks_ui_settings")


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("callbacks_before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("callbacks_image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _run("callbacks_extra_noise", params)


def cfg_denoiser_callback(params: DenoiserParams) -> None:
    _run("callbacks_cfg_denoiser", params)


def cfg_denoised_callback(params: DenoisedParams) -> None:
    _run("callbacks_cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGParams) -> None:
    _run("callbacks_cfg_after_cfg", params)


def before_component_callback(component: Any, **kwargs: Any) -> None:
    _run_kw("callbacks_before_component", component, kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    _run_kw("callbacks_after_component", component, kwargs)


def _run_kw(kind: str, component: Any, kwargs: dict[str, Any]) -> None:
    for item in list(callback_map[kind]):
        try:
            item.callback(component, **kwargs)
        except Exception:
            _report(item, kind)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("callbacks_image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    """Pasted generation parameters: callbacks may add, change or remove keys of `params`."""
    _run("callbacks_infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("callbacks_script_unloaded")


def before_ui_callback() -> None:
    _run("callbacks_before_ui")


def list_optimizers_callback() -> list[Any]:
    res: list[Any] = []
    _run("callbacks_list_optimizers", res)
    return res


def list_unets_callback() -> list[Any]:
    res: list[Any] = []
    _run("callbacks_list_unets", res)
    return res


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _run("callbacks_before_token_counter", params)


def denoiser_hooks() -> DenoiserHooks | None:
    """The sampling-loop callbacks as the engine's hooks, or None when no extension registered any.

    Each hook reports its own failure (once per callback, not at every step) and lets the step go on.
    """
    kinds = ("callbacks_cfg_denoiser", "callbacks_cfg_denoised", "callbacks_cfg_after_cfg")
    if not any(callback_map[k] for k in kinds):
        return None

    def wrap(item: CallbackItem, kind: str) -> Callable[[Any], None]:
        def call(params: Any) -> None:
            try:
                item.callback(params)
            except Exception as e:
                owner = _owner(item)
                errors.display_once(e, f"callback {kind} of {owner} ({item.script})")
                from modules import extensions

                extensions.record_error(owner, f"callback {kind}", f"{type(e).__name__}: {e}",
                                        errors.format_exception(e))
        return call

    return DenoiserHooks(
        on_denoiser=[wrap(i, "cfg_denoiser") for i in callback_map["callbacks_cfg_denoiser"]],
        on_denoised=[wrap(i, "cfg_denoised") for i in callback_map["callbacks_cfg_denoised"]],
        on_after_cfg=[wrap(i, "cfg_after_cfg") for i in callback_map["callbacks_cfg_after_cfg"]],
    )


# --- registering ---------------------------------------------------------------------------------------

def on_app_started(callback: Callable[[Any, Any], None], *, name: str | None = None) -> None:
    """`callback(demo, app)` once the server is built."""
    _add("callbacks_app_started", callback, name)


def on_before_reload(callback: Callable[[], None], *, name: str | None = None) -> None:
    _add("callbacks_on_reload", callback, name)


def on_model_loaded(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    """`callback(sd_model)` each time a checkpoint is put in service."""
    _add("callbacks_model_loaded", callback, name)


def on_ui_tabs(callback: Callable[[], list[tuple[Any, str, str]]], *, name: str | None = None) -> None:
    """`callback()` returns [(gr.Blocks, "Title", "elem_id"), ...]: tabs shown before Settings."""
    _add("callbacks_ui_tabs", callback, name)


def on_ui_train_tabs(callback: Callable[[UiTrainTabParams], None], *, name: str | None = None) -> None:
    _add("callbacks_ui_train_tabs", callback, name)


def on_ui_settings(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` adds settings with `shared.opts.add_option(key, shared.OptionInfo(...))`."""
    _add("callbacks_ui_settings", callback, name)


def on_before_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    _add("callbacks_before_image_saved", callback, name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    _add("callbacks_image_saved", callback, name)


def on_extra_noise(callback: Callable[[ExtraNoiseParams], None], *, name: str | None = None) -> None:
    _add("callbacks_extra_noise", callback, name)


def on_cfg_denoiser(callback: Callable[[DenoiserParams], None], *, name: str | None = None) -> None:
    """`callback(CFGDenoiserParams)` before the UNet at every step; x, image_cond, text_cond and
    text_uncond may be replaced."""
    _add("callbacks_cfg_denoiser", callback, name)


def on_cfg_denoised(callback: Callable[[DenoisedParams], None], *, name: str | None = None) -> None:
    """`callback(CFGDenoisedParams)` after the UNet, before guidance is combined; x may be replaced."""
    _add("callbacks_cfg_denoised", callback, name)


def on_cfg_after_cfg(callback: Callable[[AfterCFGParams], None], *, name: str | None = None) -> None:
    """`callback(AfterCFGCallbackParams)` on the guided prediction; x may be replaced."""
    _add("callbacks_cfg_after_cfg", callback, name)


def on_before_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    _add("callbacks_before_component", callback, name)


def on_after_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` after each UI component is created (kwargs has elem_id)."""
    _add("callbacks_after_component", callback, name)


def on_image_grid(callback: Callable[[ImageGridLoopParams], None], *, name: str | None = None) -> None:
    _add("callbacks_image_grid", callback, name)


def on_infotext_pasted(callback: Callable[[str, dict[str, Any]], None], *, name: str | None = None) -> None:
    _add("callbacks_infotext_pasted", callback, name)


def on_script_unloaded(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` before scripts are reloaded, so a script can undo what it set up."""
    _add("callbacks_script_unloaded", callback, name)


def on_before_ui(callback: Callable[[], None], *, name: str | None = None) -> None:
    _add("callbacks_before_ui", callback, name)


def on_list_optimizers(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    _add("callbacks_list_optimizers", callback, name)


def on_list_unets(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    _add("callbacks_list_unets", callback, name)


def on_before_token_counter(callback: Callable[[BeforeTokenCounterParams], None], *,
                            name: str | None = None) -> None:
    _add("callbacks_before_token_counter", callback, name)


def registered(kind: str) -> list[CallbackItem]:
    """The registrations of one kind ("cfg_denoiser", "ui_tabs", ...), in call order."""
    return list(callback_map[kind if kind.startswith("callbacks_") else f"callbacks_{kind}"])


__all__ = [n for n in dir() if n.startswith(("on_", "Image", "CFG", "After", "Extra", "UiTrain", "BeforeToken"))] + [
    "denoiser_hooks", "clear_callbacks", "remove_current_script_callbacks", "remove_callbacks_for_function",
]

