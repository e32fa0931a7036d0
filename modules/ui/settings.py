"""The Settings tab: every persisted option, grouped by section, and Apply to save config.json.

Components come from each option's `OptionInfo`: its own `component` when an extension gave one,
else a checkbox for booleans, a dropdown where `component_args` lists choices, a slider where it
gives a range, a number or a text box otherwise. The options shown in the top bar
(`quicksettings_list`) live there instead, under the same `setting_<key>` element ids.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules import shared
from modules.options import OptionHTML, OptionInfo

log = logging.getLogger(__name__)


def _component_args(info: OptionInfo) -> dict[str, Any]:
    args = info.component_args
    if callable(args):
        try:
            args = args()
        except Exception as e:
            log.warning("component_args of %r failed: %s", info.label, e)
            args = {}
    return dict(args or {})


def _choices_for(key: str, args: dict[str, Any]) -> list[Any] | None:
    if key == "sd_model_checkpoint":
        from modules.ui.quicksettings import checkpoint_titles

        return checkpoint_titles()
    if key == "sd_vae":
        from modules.ui.quicksettings import vae_choices

        return vae_choices()
    return args.get("choices")


def cast_setting(key: str, value: Any) -> Any:
    """A component's value converted to the type of the option's default (sliders send floats)."""
    default = shared.opts.get_default(key)
    if value is None:
        return None
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        return int(number) if number.is_integer() else number
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    if isinstance(default, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def make_component(key: str, info: OptionInfo, value: Any) -> Any:
    """The input for one option."""
    args = _component_args(info)
    label = info.label or key
    elem_id = f"setting_{key}"
    common = {"label": label, "elem_id": elem_id}
    if info.component is not None:
        try:
            return info.component(value=value, **common, **args)
        except TypeError as e:
            log.warning("setting %s: its component could not be built (%s); using a text box", key, e)
    choices = _choices_for(key, args)
    default = info.default
    if isinstance(default, bool) or isinstance(value, bool):
        return gr.Checkbox(value=bool(value), **common)
    if choices is not None:
        multiselect = isinstance(default, list)
        if not multiselect and value is not None and value not in choices:
            choices = [*choices, value]
        return gr.Dropdown(choices=list(choices), value=value, multiselect=multiselect,
                           allow_custom_value=key in ("sd_model_checkpoint", "sd_vae"), **common)
    if isinstance(default, list):
        return gr.Dropdown(choices=[str(v) for v in (value or [])], value=[str(v) for v in (value or [])],
                           multiselect=True, allow_custom_value=True, **common)
    if isinstance(default, (int, float)) and "minimum" in args and "maximum" in args:
        return gr.Slider(minimum=args["minimum"], maximum=args["maximum"], step=args.get("step", 1),
                         value=value, **common)
    if isinstance(default, (int, float)):
        return gr.Number(value=value, precision=0 if isinstance(default, int) else None, **common)
    return gr.Textbox(value="" if value is None else str(value), lines=1, **common)


@dataclass
class SettingsTab:
    components: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    apply: Any = None
    applied: Any = None  # the Apply button's event


def visible_options(skip: set[str]) -> dict[tuple[str, str], list[tuple[str, OptionInfo]]]:
    """Options by section (in declaration order), without those shown elsewhere."""
    sections: dict[tuple[str, str], list[tuple[str, OptionInfo]]] = {}
    for key, info in shared.opts.data_labels.items():
        if key in skip or info.section is None or not info.section[1]:
            continue
        sections.setdefault(tuple(info.section), []).append((key, info))
    return sections


def apply_settings(keys: list[str], values: list[Any]) -> tuple[str, list[str]]:
    """Set and save the options; returns (message, keys changed). Frozen settings refuse."""
    if getattr(shared.cmd_opts, "freeze_settings", False):
        return "Settings are frozen (--freeze-settings); nothing was changed.", []
    changed: list[str] = []
    failed: list[str] = []
    for key, value in zip(keys, values, strict=True):
        new = cast_setting(key, value)
        if new == getattr(shared.opts, key, None):
            continue
        try:
            if shared.opts.set(key, new):
                changed.append(key)
        except Exception as e:  # an option's onchange refused the value; the others still apply
            log.warning("setting %s = %r failed: %s", key, new, e)
            failed.append(f"{key}: {e}")
    shared.opts.save(shared.paths.config_file)
    msg = f"{len(changed)} settings changed" + (": " + ", ".join(changed) if changed else ".")
    if failed:
        msg += " Not applied: " + "; ".join(failed)
    return msg, changed


def build(skip: set[str]) -> SettingsTab:
    tab = SettingsTab()
    with gr.Row(elem_id="settings_top"):
        tab.apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=0,
                              min_width=200)
        tab.result = gr.HTML(elem_id="settings_result", elem_classes="settings-result")
    # Every section stays in sight (A1111 lists them all); a "More tabs" menu would hide extension sections.
    with gr.Tabs(elem_id="settings_sections", overflow_behavior="wrap"):
        for (section_id, title), items in visible_options(skip).items():
            with gr.Tab(title, id=f"settings_{section_id}", elem_id=f"settings_{section_id}"):
                for key, info in items:
                    if isinstance(info, OptionHTML):
                        gr.HTML(f"<div class='settings-comment'>{html.escape(str(info.default))}</div>")
                        continue
                    if info.comment_before:
                        gr.HTML(info.comment_before, elem_classes="settings-comment")
                    tab.components[key] = make_component(key, info, getattr(shared.opts, key, info.default))
                    if info.comment_after:
                        gr.HTML(info.comment_after, elem_classes="settings-comment")
    keys = list(tab.components)

    def on_apply(*values: Any) -> list[Any]:
        message, _changed = apply_settings(keys, list(values))
        return [f"<div class='settings-result-text'>{html.escape(message)}</div>", *current_values(keys)]

    tab.applied = tab.apply.click(fn=on_apply, inputs=list(tab.components.values()),
                                  outputs=[tab.result, *tab.components.values()], show_progress="hidden",
                                  api_name=False)
    return tab


def current_values(keys: list[str]) -> list[Any]:
    """The options' values now, for a page load (config.json may have changed since the page was built)."""
    out = []
    for key in keys:
        value = getattr(shared.opts, key, None)
        info = shared.opts.data_labels.get(key)
        fixed_choices = info is not None and _choices_for(key, _component_args(info)) is not None
        if key in ("sd_model_checkpoint", "sd_vae"):
            choices = list(_choices_for(key, {}) or [])
            out.append(gr.Dropdown(choices=choices if value in choices or value is None else [*choices, value],
                                   value=value))
        elif isinstance(value, list) and not fixed_choices:
            out.append(gr.Dropdown(choices=[str(v) for v in value], value=[str(v) for v in value]))
        else:
            out.append(value)
    return out
