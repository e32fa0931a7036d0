"""The img2img tab, with its img2img / Inpaint / Inpaint upload sub-tabs.

In "Inpaint" the mask is painted in the browser with a white brush over the image (Gradio's image
editor); every painted pixel belongs to the mask. "Inpaint upload" takes the image and a mask file
(white = repaint) instead.

Scripts take part as in the txt2img tab (always-on controls among the settings, then the "Script"
dropdown); SD upscale is among the selectable scripts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, ImageChops

from modules import infotext_utils, scripts
from modules.infotext_utils import PasteField
from modules.ui import common, component_hooks, extra_networks, output
from modules.ui.params import GenerationParams, processing_kwargs
from modules.ui.toprow import Toprow
from modules.ui_components import FormRow, ResizeHandleRow

MODES = ("img2img", "inpaint", "inpaint_upload")
MODE_TAB_IDS = {"img2img": "img2img_img2img_tab", "inpaint": "img2img_inpaint_tab",
                "inpaint_upload": "img2img_inpaint_upload_tab"}


class MissingInputError(ValueError):
    """The chosen sub-tab lacks its image or mask."""


@dataclass
class Img2ImgTab:
    toprow: Toprow
    params: GenerationParams
    out: output.OutputPanel
    mode_tabs: Any
    mode: Any
    init_img: Any
    inpaint_editor: Any
    inpaint_controls: Any
    networks: extra_networks.ExtraNetworksPages | None = None
    settings_tabs: Any = None


def mask_from_layers(size: tuple[int, int], layers: list[Image.Image]) -> Image.Image:
    """A black/white mask of everything painted on the editor's layers (any alpha counts)."""
    mask = Image.new("L", size, 0)
    for layer in layers or []:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.open(layer)
        if layer.mode in ("RGBA", "LA") or "transparency" in layer.info:
            painted = layer.convert("RGBA").getchannel("A")
        else:
            painted = layer.convert("L")
        painted = painted.point(lambda v: 255 if v > 0 else 0)
        if painted.size != size:
            painted = painted.resize(size, Image.Resampling.NEAREST)
        mask = ImageChops.lighter(mask, painted)
    return mask


def _as_image(value: Any) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    with Image.open(value) as im:
        im.load()
        return im.copy()


def inputs_for_mode(mode: int, init_img: Any, editor: Any, upload_base: Any, upload_mask: Any,
                    ) -> tuple[Image.Image, Image.Image | None]:
    """(init image, mask or None) for the active sub-tab; raises MissingInputError naming what is missing."""
    if mode == 1:
        editor = editor or {}
        image = _as_image(editor.get("background")) or _as_image(editor.get("composite"))
        if image is None:
            raise MissingInputError("no image in the Inpaint tab: drop an image there and paint the mask over it")
        mask = mask_from_layers(image.size, [_as_image(x) for x in (editor.get("layers") or [])])
        if mask.getbbox() is None:
            raise MissingInputError("nothing is masked: paint over the part of the image to repaint")
        return image.convert("RGB"), mask
    if mode == 2:
        image = _as_image(upload_base)
        mask_image = _as_image(upload_mask)
        if image is None or mask_image is None:
            raise MissingInputError("Inpaint upload needs both an image and a mask (white = repaint)")
        if mask_image.mode in ("RGBA", "LA"):
            # A mask with transparency: the opaque bright parts are the mask.
            mask = ImageChops.multiply(mask_image.convert("L"), mask_image.getchannel("A"))
        else:
            mask = mask_image.convert("L")
        return image.convert("RGB"), mask
    image = _as_image(init_img)
    if image is None:
        raise MissingInputError("no image in the img2img tab: drop an image to start from")
    return image, None


def build() -> Img2ImgTab:
    """Build the tab's contents inside the current `gr.Tab`; the tab's scripts see its components
    being created (before_component / after_component)."""
    runner = scripts.scripts_img2img
    with component_hooks.tab_scripts(runner):
        return _build(runner)


def _build(runner: scripts.ScriptRunner) -> Img2ImgTab:
    tab = "img2img"
    runner.prepare_ui()
    toprow = Toprow(tab).build()
    params = GenerationParams(tab)
    mode = gr.State(0)
    with ResizeHandleRow(equal_height=False):
        with gr.Column(elem_id=f"{tab}_settings", scale=1, min_width=420, elem_classes="settings-column"), \
                gr.Tabs(elem_id=f"{tab}_settings_tabs", selected=f"{tab}_generation", overflow_behavior="wrap",
                        elem_classes="settings-tabs") as settings_tabs:
                with gr.Tab("Generation", id=f"{tab}_generation", elem_id=f"{tab}_generation_tab"):
                    with gr.Tabs(elem_id="mode_img2img", selected=MODE_TAB_IDS["img2img"],
                                 overflow_behavior="wrap") as mode_tabs:
                        with gr.Tab("img2img", id=MODE_TAB_IDS["img2img"], elem_id="img2img_img2img_tab") as t0:
                            init_img = gr.Image(label="Image for img2img", elem_id="img2img_image", type="pil",
                                                image_mode="RGBA", sources=["upload", "clipboard"], height=420)
                        with gr.Tab("Inpaint", id=MODE_TAB_IDS["inpaint"], elem_id="img2img_inpaint_tab") as t1:
                            editor = gr.ImageEditor(
                                label="Image for inpainting with mask", elem_id="img2maskimg", type="pil",
                                image_mode="RGBA", sources=["upload", "clipboard"], height=460, layers=False,
                                brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed",
                                               default_size=24),
                                eraser=gr.Eraser(default_size=24), transforms=(), format="png")
                        with gr.Tab("Inpaint upload", id=MODE_TAB_IDS["inpaint_upload"],
                                    elem_id="img2img_inpaint_upload_tab") as t2:
                            upload_base = gr.Image(label="Image for img2img", elem_id="img_inpaint_base", type="pil",
                                                   image_mode="RGBA", sources=["upload", "clipboard"], height=300)
                            upload_mask = gr.Image(label="Mask", elem_id="img_inpaint_mask", type="pil",
                                                   image_mode="RGBA", sources=["upload", "clipboard"], height=300)

                    resize_mode = gr.Radio(common.RESIZE_MODES, value=common.RESIZE_MODES[0], type="index",
                                           label="Resize mode", elem_id="resize_mode")
                    runner.setup_ui_for_section("image")
                    with gr.Column(visible=False, elem_id="inpaint_controls") as inpaint_controls:
                        with FormRow():
                            mask_blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4,
                                                  elem_id="img2img_mask_blur")
                        with FormRow():
                            mask_mode = gr.Radio(common.MASK_MODES, value=common.MASK_MODES[0], type="index",
                                                 label="Mask mode", elem_id="img2img_mask_mode")
                        with FormRow():
                            inpainting_fill = gr.Radio(common.MASKED_CONTENT, value="original", type="index",
                                                       label="Masked content", elem_id="img2img_inpainting_fill")
                        with FormRow():
                            inpaint_full_res = gr.Radio(common.INPAINT_AREAS, value=common.INPAINT_AREAS[0], type="index",
                                                        label="Inpaint area", elem_id="img2img_inpaint_full_res")
                            inpaint_padding = gr.Slider(label="Only masked padding, pixels", minimum=0, maximum=256,
                                                        step=4, value=32, elem_id="img2img_inpaint_full_res_padding")
                    runner.setup_ui_for_section("inpaint")
                    def denoising_strength() -> Any:
                        slider = gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=0.75,
                                           label="Denoising strength", elem_id="img2img_denoising_strength")
                        runner.setup_ui_for_section("denoising")
                        return slider

                    denoising, script_inputs = params.build_with_scripts(runner, after_cfg=denoising_strength)
                networks = extra_networks.ExtraNetworksPages(tab).build()
        with gr.Column(scale=1, min_width=380):
            out = output.OutputPanel(tab).build(send_targets=("img2img", "inpaint"))

    for index, sub in enumerate((t0, t1, t2)):
        sub.select(fn=lambda i=index: (i, gr.Column(visible=i > 0)), outputs=[mode, inpaint_controls],
                   show_progress="hidden", queue=False)

    toprow.connect_token_counters(params.steps)
    params.connect_reuse(out.generation_info, out.selected)
    named = {
        "prompt": toprow.prompt, "negative_prompt": toprow.negative_prompt, "styles": toprow.styles, "mode": mode,
        "init_img": init_img, "editor": editor, "upload_base": upload_base, "upload_mask": upload_mask,
        "resize_mode": resize_mode, "mask_blur": mask_blur, "mask_mode": mask_mode,
        "inpainting_fill": inpainting_fill, "inpaint_full_res": inpaint_full_res,
        "inpaint_padding": inpaint_padding, "denoising_strength": denoising, **params.components(),
    }
    names = list(named)

    def generate(request: gr.Request, *values: Any):  # type: ignore[no-untyped-def]
        from modules.processing import StableDiffusionProcessingImg2Img

        given = dict(zip(names, values[:len(names)], strict=True))
        script_args = values[len(names):]

        def make_p() -> Any:
            m = int(given["mode"] or 0)
            image, mask = inputs_for_mode(m, given["init_img"], given["editor"], given["upload_base"],
                                          given["upload_mask"])
            kwargs: dict[str, Any] = {
                "prompt": given["prompt"] or "", "negative_prompt": given["negative_prompt"] or "",
                "styles": list(given["styles"] or []), "init_images": [image], "resize_mode": int(given["resize_mode"] or 0),
                "denoising_strength": float(given["denoising_strength"]),
                **processing_kwargs(given),
            }
            if mask is not None:
                kwargs.update(
                    mask=mask, mask_blur=int(given["mask_blur"]), inpainting_mask_invert=int(given["mask_mode"] or 0),
                    inpainting_fill=int(given["inpainting_fill"] if given["inpainting_fill"] is not None else 1),
                    inpaint_full_res=bool(given["inpaint_full_res"]),
                    inpaint_full_res_padding=int(given["inpaint_padding"]))
            p = StableDiffusionProcessingImg2Img(**kwargs)
            runner.prepare_ui_run(p, script_args)
            return p

        yield from output.run_generation(request.session_hash or "anonymous", tab, make_p)

    toprow.generate.click(fn=generate, inputs=[*named.values(), *script_inputs], outputs=out.outputs(toprow),
                          show_progress="hidden", concurrency_limit=None, api_name=False)
    output.connect_controls(toprow, tab)

    def fields() -> list[PasteField]:
        return [
            PasteField(toprow.prompt, "Prompt", api="prompt"),
            PasteField(toprow.negative_prompt, "Negative prompt", api="negative_prompt"),
            PasteField(toprow.styles, "Styles array", api="styles"),
            *params.paste_fields(),
            PasteField(denoising, "Denoising strength", api="denoising_strength"),
            PasteField(mask_blur, "Mask blur", api="mask_blur"),
            PasteField(mask_mode, "Mask mode", api="inpainting_mask_invert"),
            PasteField(inpainting_fill, "Masked content", api="inpainting_fill"),
            PasteField(inpaint_full_res, "Inpaint area", api="inpaint_full_res"),
            PasteField(inpaint_padding, "Masked area padding", api="inpaint_full_res_padding"),
            *runner.infotext_fields,
        ]

    infotext_utils.add_paste_fields("img2img", init_img, fields(), params.override_settings)
    infotext_utils.add_paste_fields("inpaint", editor, fields(), params.override_settings)
    infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
        paste_button=toprow.paste, tabname=tab, source_text_component=toprow.prompt, source_tabname=tab))
    return Img2ImgTab(toprow, params, out, mode_tabs, mode, init_img, editor, inpaint_controls, networks, settings_tabs)
