"""The txt2img tab.

Scripts (A1111's extension contract) take part as in A1111: always-on scripts' controls sit among the
generation settings (their `section`, or after the settings), then the "Script" dropdown with each
selectable script's controls; Generate sends those controls' values as the job's `script_args`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules import infotext_utils, scripts
from modules.infotext_utils import PasteField
from modules.ui import component_hooks, extra_networks, output
from modules.ui.params import GenerationParams, processing_kwargs
from modules.ui.toprow import Toprow
from modules.ui_components import ResizeHandleRow


@dataclass
class Txt2ImgTab:
    toprow: Toprow
    params: GenerationParams
    out: output.OutputPanel
    networks: extra_networks.ExtraNetworksPages | None = None
    settings_tabs: Any = None


def build() -> Txt2ImgTab:
    """Build the tab's contents inside the current `gr.Tab`; the tab's scripts see its components
    being created (before_component / after_component)."""
    runner = scripts.scripts_txt2img
    with component_hooks.tab_scripts(runner):
        return _build(runner)


def _build(runner: scripts.ScriptRunner) -> Txt2ImgTab:
    tab = "txt2img"
    runner.prepare_ui()
    toprow = Toprow(tab).build()
    params = GenerationParams(tab)
    with ResizeHandleRow(equal_height=False, elem_id=f"{tab}_extra_tabs"):
        with gr.Column(elem_id=f"{tab}_settings", scale=1, min_width=420, elem_classes="settings-column"), \
                gr.Tabs(elem_id=f"{tab}_settings_tabs", selected=f"{tab}_generation", overflow_behavior="wrap",
                        elem_classes="settings-tabs") as settings_tabs:
                with gr.Tab("Generation", id=f"{tab}_generation", elem_id=f"{tab}_generation_tab"):
                    _, script_inputs = params.build_with_scripts(runner)
                networks = extra_networks.ExtraNetworksPages(tab).build()
        with gr.Column(scale=1, min_width=380):
            out = output.OutputPanel(tab).build()

    toprow.connect_token_counters(params.steps)
    params.connect_reuse(out.generation_info, out.selected)
    named = {"prompt": toprow.prompt, "negative_prompt": toprow.negative_prompt, "styles": toprow.styles,
             **params.components()}
    names = list(named)

    def generate(request: gr.Request, *values: Any):  # type: ignore[no-untyped-def]
        from modules.processing import StableDiffusionProcessingTxt2Img

        given = dict(zip(names, values[:len(names)], strict=True))
        script_args = values[len(names):]

        def make_p() -> Any:
            p = StableDiffusionProcessingTxt2Img(
                prompt=given["prompt"] or "", negative_prompt=given["negative_prompt"] or "",
                styles=list(given["styles"] or []), **processing_kwargs(given))
            runner.prepare_ui_run(p, script_args)
            return p

        yield from output.run_generation(request.session_hash or "anonymous", tab, make_p)

    toprow.generate.click(fn=generate, inputs=[*named.values(), *script_inputs], outputs=out.outputs(toprow),
                          show_progress="hidden", concurrency_limit=None, api_name=False)
    output.connect_controls(toprow, tab)

    fields = [
        PasteField(toprow.prompt, "Prompt", api="prompt"),
        PasteField(toprow.negative_prompt, "Negative prompt", api="negative_prompt"),
        PasteField(toprow.styles, "Styles array", api="styles"),
        *params.paste_fields(),
        *runner.infotext_fields,
    ]
    infotext_utils.add_paste_fields(tab, None, fields, params.override_settings)
    infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
        paste_button=toprow.paste, tabname=tab, source_text_component=toprow.prompt, source_tabname=tab))
    return Txt2ImgTab(toprow, params, out, networks, settings_tabs)
