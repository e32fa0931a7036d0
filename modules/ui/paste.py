"""Filling UI fields from infotext: the ↙ button, "Send to txt2img/img2img/inpaint".

Each tab registers its fields with `infotext_utils.add_paste_fields` as (component, infotext label or
function of the parsed parameters); scripts and extensions may add theirs the same way. A send button
is a `ParamBinding` (registered with `infotext_utils.register_paste_params_button`); `connect_bindings`
wires every registered one once the page is built. The pure part — which value each field gets —
lives in `field_values` so it can be tested without a browser.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from modules import infotext_utils, script_callbacks, shared
from modules.ui import common

log = logging.getLogger(__name__)

MISSING = object()
"""A field the parameters say nothing about: left as it is."""


def sampler_from_params(params: dict[str, Any]) -> str:
    from modules import sd_samplers

    return sd_samplers.get_sampler_from_infotext(params)


def scheduler_from_params(params: dict[str, Any]) -> str:
    from modules import sd_samplers

    return sd_samplers.get_scheduler_from_infotext(params)


def seed_extras_from_params(params: dict[str, Any]) -> bool:
    """The "Extra" seed options are open exactly when the infotext uses a variation seed or a seed resize."""
    return "Variation seed" in params or "Seed resize from-1" in params


def infer_styles(params: dict[str, Any], mode: str, database: Any) -> None:
    """A1111's "Infer styles from prompts of pasted infotext" setting, applied to parsed `params`.

    "Apply if any": styles whose text the prompts contain are taken out of the prompts and selected
    ("Styles array"), when there are any; "Apply": the same, and the selection is emptied when none
    are found; "Discard": the style text is taken out but nothing is selected; "Ignore": unchanged.
    """
    if mode == "Ignore" or database is None or "Styles array" in params:
        return
    prompt = str(params.get("Prompt", "") or "")
    negative = str(params.get("Negative prompt", "") or "")
    found, prompt_left, negative_left = database.extract_styles_from_prompt(prompt, negative)
    if (mode == "Apply if any" and found) or mode == "Apply":
        params["Prompt"], params["Negative prompt"] = prompt_left, negative_left
        params["Styles array"] = found
    elif mode == "Discard":
        params["Prompt"], params["Negative prompt"] = prompt_left, negative_left


def _styles_database() -> Any:
    from modules import styles

    try:
        return styles.default_database()
    except Exception as e:  # pasting must work without a readable styles file
        log.warning("styles could not be read: %s", e)
        return None


def parse_for_paste(text: str) -> dict[str, Any]:
    """Parsed infotext, without the fields the settings say not to paste (seed, size, skip list).

    LoRA names in the prompt are rewritten to the local files whose hashes the infotext records
    ("Lora hashes"), styles are inferred from the prompts as the "infotext_styles" setting says, and
    then extensions' on_infotext_pasted callbacks may change the parameters before any field is set.
    """
    opts = shared.opts
    skip = list(getattr(opts, "infotext_skip_pasting", []) or [])
    params = infotext_utils.parse_generation_parameters(text or "", skip_fields=skip)
    try:
        from modules import networks

        networks.infotext_pasted(text or "", params)
    except Exception as e:  # a broken LoRA folder must not stop the rest of the paste
        log.warning("LoRA names in the pasted prompt were left as they are: %s", e)
    infer_styles(params, str(getattr(opts, "infotext_styles", "Apply if any") or "Ignore"), _styles_database())
    script_callbacks.infotext_pasted_callback(text or "", params)  # a failing callback is reported and skipped
    if not getattr(opts, "send_seed", True):
        params.pop("Seed", None)
    if not getattr(opts, "send_size", True):
        params.pop("Size-1", None)
        params.pop("Size-2", None)
    return params


def resolve_target(params: dict[str, Any], target: str | Callable[[dict], Any] | None) -> Any:
    if target is None:
        return MISSING
    if callable(target):
        try:
            value = target(params)
        except Exception as e:  # one bad field must not stop the others
            log.warning("paste field function failed: %s", e)
            return MISSING
        return MISSING if value is None else value
    return params.get(target, MISSING)


def field_values(params: dict[str, Any], fields: Sequence[tuple[str, bool, Any]]) -> list[Any]:
    """For each (kind, integer, target): the value to set, or MISSING to leave the field alone."""
    out: list[Any] = []
    for kind, integer, target in fields:
        value = resolve_target(params, target)
        if value is MISSING:
            out.append(MISSING)
            continue
        try:
            out.append(common.cast_like(kind, value, integer=integer))
        except (TypeError, ValueError):
            log.warning("pasted value %r does not fit its field; left alone", value)
            out.append(MISSING)
    return out


def override_choices(params: dict[str, Any]) -> list[str]:
    """"Label: value" items for the settings this infotext would change (Clip skip, Model hash...)."""
    items = []
    for label, key, value in infotext_utils.get_override_settings(params):
        # A value this install cannot use (e.g. "RNG: GPU", which the parser assumes when an infotext
        # has no RNG key, where only "CPU" is offered) is not offered as an override.
        info = shared.opts.data_labels.get(key)
        args = info.component_args if info is not None else None
        choices = (args() if callable(args) else args or {}).get("choices") if info is not None else None
        if choices and value not in choices:
            continue
        items.append(f"{label}: {value}")
    return items


def read_last_params() -> str:
    """The last generation's infotext (params.txt in the data folder), or ''."""
    path = Path(shared.paths.data_dir) / "params.txt"
    try:
        return path.read_text(encoding="utf8")
    except OSError:
        return ""


def editor_value(image: Image.Image | None) -> dict[str, Any] | None:
    """An ImageEditor value with `image` as its background and nothing painted."""
    if image is None:
        return None
    return {"background": image, "layers": [], "composite": image}


def _load_image(source: Any) -> Image.Image | None:
    if source is None:
        return None
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):  # an ImageEditor value
        return _load_image(source.get("background") or source.get("composite"))
    path = source[0] if isinstance(source, (list, tuple)) else source
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, TypeError, ValueError) as e:
        log.warning("could not open %r to send it: %s", path, e)
        return None


def gallery_item(items: Any, index: Any = None, info_json: str | None = None) -> Any:
    """The selected gallery item (default: the first image after a grid, as the info says)."""
    if not items:
        return None
    if index is None:
        try:
            index = int(json.loads(info_json or "{}").get("index_of_first_image", 0))
        except (ValueError, AttributeError):
            index = 0
    return items[max(0, min(int(index), len(items) - 1))]


def connect_binding(binding: infotext_utils.ParamBinding, extra_outputs: Sequence[tuple[Any, Any]] = (),
                    read_params_txt: bool = False) -> None:
    """Wire one send/paste button to its target tab's registered fields.

    extra_outputs: (component, value or function giving the value) pairs set on every click, e.g. the
    tab to switch to.
    """
    target = infotext_utils.paste_fields.get(binding.tabname)
    if target is None:
        log.warning("paste target %r has no registered fields", binding.tabname)
        return
    fields = [f if isinstance(f, infotext_utils.PasteField) else infotext_utils.PasteField(*f)
              for f in (target.get("fields") or [])]
    if binding.paste_field_names:
        fields = [f for f in fields if f.label in binding.paste_field_names or f.function is not None]
    specs = []
    for f in fields:
        kind, integer = common.component_kind(f.component)
        specs.append((kind, integer, f.function or f.label))
    init_img = target.get("init_img") if binding.source_image_component is not None else None
    override = target.get("override_settings_component") or binding.override_settings_component

    inputs = [c for c in (binding.source_text_component, binding.source_image_component) if c is not None]
    # A gallery source also needs which item is selected: (selected index state, generation info).
    selection = list(getattr(binding.source_image_component, "easel_selection_inputs", []) or [])
    inputs += selection
    outputs: list[Any] = []
    if init_img is not None:
        outputs.append(init_img)
    outputs += [f.component for f in fields]
    if override is not None:
        outputs.append(override)
    outputs += [c for c, _ in extra_outputs]
    is_editor = isinstance(init_img, gr.ImageEditor)

    def paste(*values: Any) -> list[Any]:
        text = values[0] if binding.source_text_component is not None else ""
        if read_params_txt and not (text or "").strip():
            text = read_last_params()
        image_source = None
        if binding.source_image_component is not None:
            image_source = values[len(inputs) - len(selection) - 1]
            if selection:
                image_source = gallery_item(image_source, *values[len(inputs) - len(selection):])
        params = parse_for_paste(text or "")
        result: list[Any] = []
        if init_img is not None:
            image = _load_image(image_source)
            result.append(editor_value(image) if is_editor else image if image is not None else gr.skip())
        for v in field_values(params, specs):
            result.append(gr.skip() if v is MISSING else v)
        if override is not None:
            choices = override_choices(params)
            result.append(gr.Dropdown(choices=choices, value=choices, visible=bool(choices)))
        # Update objects are made per click: made while the page is built they would become page blocks.
        result += [v() if callable(v) else v for _, v in extra_outputs]
        return result

    binding.paste_button.click(fn=paste, inputs=inputs, outputs=outputs, show_progress="hidden",
                               concurrency_limit=None)


def connect_bindings(extra_outputs_for: Callable[[str], Sequence[tuple[Any, Any]]]) -> None:
    """Wire every registered send/paste button (the page's and extensions')."""
    for binding in infotext_utils.registered_param_bindings:
        is_paste = binding.source_tabname == binding.tabname and binding.source_image_component is None
        extra = () if is_paste else extra_outputs_for(binding.tabname)
        connect_binding(binding, extra, read_params_txt=is_paste)
