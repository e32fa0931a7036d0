"""The generation settings both txt2img and img2img show: sampler, steps, size, batch, CFG, seed.

Labels, ranges and defaults are A1111's UI ones (they are also the keys of ui-config.json), and the
element ids are A1111's, which extension scripts look up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules.infotext_utils import PasteField
from modules.ui import common
from modules.ui.common import RANDOM_SYMBOL, REUSE_SYMBOL, SWITCH_SYMBOL
from modules.ui_components import FormRow, ToolButton


@dataclass
class GenerationParams:
    tab: str
    sampler: Any = None
    scheduler: Any = None
    steps: Any = None
    width: Any = None
    height: Any = None
    swap: Any = None
    batch_count: Any = None
    batch_size: Any = None
    cfg_scale: Any = None
    seed: Any = None
    random_seed: Any = None
    reuse_seed: Any = None
    seed_extras: Any = None
    subseed: Any = None
    random_subseed: Any = None
    reuse_subseed: Any = None
    subseed_strength: Any = None
    seed_resize_from_w: Any = None
    seed_resize_from_h: Any = None
    override_settings: Any = None

    def build_sampler(self) -> None:
        tab = self.tab
        with FormRow(elem_id=f"sampler_selection_{tab}"):
            names = common.sampler_names()
            self.sampler = gr.Dropdown(names, value=common.default_sampler(), label="Sampling method",
                                       elem_id=f"{tab}_sampling")
            self.scheduler = gr.Dropdown(common.schedule_labels(), value="Automatic", label="Schedule type",
                                         elem_id=f"{tab}_scheduler")
            self.steps = gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps",
                                   elem_id=f"{tab}_steps")

    def build_size(self, size_label_prefix: str = "") -> None:
        tab = self.tab
        with FormRow(elem_id=f"{tab}_dimensions_row", equal_height=True):
            with gr.Column(elem_id=f"{tab}_column_size", scale=3, min_width=200):
                self.width = gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Width",
                                       elem_id=f"{tab}_width")
                self.height = gr.Slider(minimum=64, maximum=2048, step=8, value=512, label="Height",
                                        elem_id=f"{tab}_height")
            with gr.Column(elem_id=f"{tab}_dimensions_row_tools", scale=0, min_width=48,
                           elem_classes="dimensions-tools"):
                self.swap = ToolButton(SWITCH_SYMBOL, elem_id=f"{tab}_res_switch_btn",
                                       tooltip="Switch width/height")
            with gr.Column(elem_id=f"{tab}_column_batch", scale=2, min_width=170):
                self.batch_count = gr.Slider(minimum=1, maximum=100, step=1, value=1, label="Batch count",
                                             elem_id=f"{tab}_batch_count")
                self.batch_size = gr.Slider(minimum=1, maximum=8, step=1, value=1, label="Batch size",
                                            elem_id=f"{tab}_batch_size")
        self.swap.click(fn=lambda w, h: (h, w), inputs=[self.width, self.height], outputs=[self.width, self.height],
                        show_progress="hidden", queue=False)

    def build_cfg(self) -> None:
        self.cfg_scale = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, value=7.0, label="CFG Scale",
                                   elem_id=f"{self.tab}_cfg_scale")

    def build_seed(self) -> None:
        tab = self.tab
        with FormRow(elem_id=f"{tab}_seed_row", equal_height=True):
            self.seed = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{tab}_seed", min_width=100, scale=4)
            self.random_seed = ToolButton(RANDOM_SYMBOL, elem_id=f"{tab}_random_seed",
                                          tooltip="Set seed to -1, which will cause a new random number to be used every time")
            self.reuse_seed = ToolButton(REUSE_SYMBOL, elem_id=f"{tab}_reuse_seed",
                                         tooltip="Reuse seed from last generation")
            self.seed_extras = gr.Checkbox(label="Extra", value=False, elem_id=f"{tab}_subseed_show",
                                           elem_classes="subseed-show", scale=0, min_width=90)
        with gr.Group(visible=False, elem_id=f"{tab}_seed_extras") as extras:
            with FormRow():
                self.subseed = gr.Number(label="Variation seed", value=-1, precision=0, elem_id=f"{tab}_subseed",
                                         scale=4)
                self.random_subseed = ToolButton(RANDOM_SYMBOL, elem_id=f"{tab}_random_subseed")
                self.reuse_subseed = ToolButton(REUSE_SYMBOL, elem_id=f"{tab}_reuse_subseed")
                self.subseed_strength = gr.Slider(label="Variation strength", value=0.0, minimum=0, maximum=1,
                                                  step=0.01, elem_id=f"{tab}_subseed_strength", scale=4)
            with FormRow():
                self.seed_resize_from_w = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize seed from width",
                                                    value=0, elem_id=f"{tab}_seed_resize_from_w")
                self.seed_resize_from_h = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize seed from height",
                                                    value=0, elem_id=f"{tab}_seed_resize_from_h")
        self.seed_extras.change(fn=lambda v: gr.Group(visible=bool(v)), inputs=[self.seed_extras],
                                outputs=[extras], show_progress="hidden", queue=False)
        self.random_seed.click(fn=lambda: -1, outputs=[self.seed], show_progress="hidden", queue=False)
        self.random_subseed.click(fn=lambda: -1, outputs=[self.subseed], show_progress="hidden", queue=False)

    def build_override(self) -> None:
        self.override_settings = gr.Dropdown([], value=[], multiselect=True, label="Override settings",
                                             visible=False, elem_id=f"{self.tab}_override_settings",
                                             allow_custom_value=True)

    def build_with_scripts(self, runner: Any, after_cfg: Callable[[], Any] | None = None) -> tuple[Any, Any]:
        """Build every parameter with the scripts' controls at A1111's section places between them,
        then the "Script" container; `after_cfg` builds the tab's own fields that follow CFG scale
        (img2img's denoising strength). Returns (what `after_cfg` returned, the script inputs)."""
        self.build_sampler()
        for section in ("sampler", "accordions", "checkboxes"):
            runner.setup_ui_for_section(section)
        self.build_size()
        for section in ("dimensions", "batch"):
            runner.setup_ui_for_section(section)
        self.build_cfg()
        runner.setup_ui_for_section("cfg")
        extra = after_cfg() if after_cfg is not None else None
        self.build_seed()
        runner.setup_ui_for_section("seed")
        self.build_override()
        runner.setup_ui_for_section("override_settings")
        with gr.Column(elem_id=f"{self.tab}_script_container", elem_classes="script-container"):
            script_inputs = runner.setup_ui()
        return extra, script_inputs

    def connect_reuse(self, generation_info: Any, selected: Any) -> None:
        from modules.ui.output import seed_for

        def reuse(key: str) -> Any:
            def fn(info: str, index: Any) -> Any:
                seed = seed_for(info, index, key)
                return gr.skip() if seed is None else seed
            return fn

        self.reuse_seed.click(fn=reuse("all_seeds"), inputs=[generation_info, selected], outputs=[self.seed],
                              show_progress="hidden", queue=False)
        self.reuse_subseed.click(fn=reuse("all_subseeds"), inputs=[generation_info, selected],
                                 outputs=[self.subseed], show_progress="hidden", queue=False)

    def paste_fields(self) -> list[PasteField]:
        from modules.ui import paste

        return [
            PasteField(self.steps, "Steps", api="steps"),
            PasteField(self.sampler, paste.sampler_from_params, api="sampler_name"),
            PasteField(self.scheduler, paste.scheduler_from_params, api="scheduler"),
            PasteField(self.cfg_scale, "CFG scale", api="cfg_scale"),
            PasteField(self.width, "Size-1", api="width"),
            PasteField(self.height, "Size-2", api="height"),
            PasteField(self.batch_size, "Batch size", api="batch_size"),
            PasteField(self.seed, "Seed", api="seed"),
            PasteField(self.seed_extras, paste.seed_extras_from_params),
            PasteField(self.subseed, "Variation seed", api="subseed"),
            PasteField(self.subseed_strength, "Variation seed strength", api="subseed_strength"),
            PasteField(self.seed_resize_from_w, "Seed resize from-1", api="seed_resize_from_w"),
            PasteField(self.seed_resize_from_h, "Seed resize from-2", api="seed_resize_from_h"),
        ]

    def components(self) -> dict[str, Any]:
        """name -> component, in the order the Generate handler receives them."""
        return {
            "sampler_name": self.sampler, "scheduler": self.scheduler, "steps": self.steps,
            "width": self.width, "height": self.height, "n_iter": self.batch_count, "batch_size": self.batch_size,
            "cfg_scale": self.cfg_scale, "seed": self.seed, "seed_enable_extras": self.seed_extras,
            "subseed": self.subseed, "subseed_strength": self.subseed_strength,
            "seed_resize_from_w": self.seed_resize_from_w, "seed_resize_from_h": self.seed_resize_from_h,
            "override_settings": self.override_settings,
        }


def processing_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The processing-object arguments from the generation settings' values."""
    from modules.infotext_utils import create_override_settings_dict

    def as_int(v: Any, default: int) -> int:
        try:
            return round(float(v))
        except (TypeError, ValueError):
            return default

    extras = bool(values.get("seed_enable_extras"))
    return {
        "sampler_name": values.get("sampler_name") or common.default_sampler(),
        "scheduler": values.get("scheduler") or "Automatic",
        "steps": as_int(values.get("steps"), 20),
        "width": as_int(values.get("width"), 512),
        "height": as_int(values.get("height"), 512),
        "n_iter": as_int(values.get("n_iter"), 1),
        "batch_size": as_int(values.get("batch_size"), 1),
        "cfg_scale": float(values.get("cfg_scale") if values.get("cfg_scale") is not None else 7.0),
        "seed": as_int(values.get("seed"), -1),
        "subseed": as_int(values.get("subseed"), -1) if extras else -1,
        "subseed_strength": float(values.get("subseed_strength") or 0.0) if extras else 0.0,
        "seed_resize_from_w": as_int(values.get("seed_resize_from_w"), 0) if extras else 0,
        "seed_resize_from_h": as_int(values.get("seed_resize_from_h"), 0) if extras else 0,
        "seed_enable_extras": extras,
        "override_settings": create_override_settings_dict(values.get("override_settings") or []),
    }
