"""A test extension for the script UI: an always-visible accordion whose value reaches the hooks,
and controls attached to Easel's own widgets through before/after_component."""
import gradio as gr

from modules import script_callbacks, scripts
from modules.ui_components import InputAccordion


class UiScript(scripts.Script):
    def __init__(self):
        self.on_after_component(self.add_button, elem_id="txt2img_generate")

    def title(self):
        return "UI script"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with InputAccordion(False, label="UI script", elem_id=self.elem_id("enabled")) as enabled:
            text = gr.Textbox(label="UI script text", value="from-the-page", elem_id=self.elem_id("text"))
        return [enabled, text]

    def process(self, p, enabled, text):
        if enabled:
            p.extra_generation_params["UI script"] = text

    def add_button(self, on_component):
        gr.Button("UI script button", elem_id="ui_script_button", size="sm")

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") == f"{self.tabname}_cfg_scale":
            gr.HTML(f"<span>UI script saw {kwargs['label']}</span>", elem_id=f"ui_script_after_{self.tabname}_cfg")


def before_seed_row(component, **kwargs):
    if kwargs.get("elem_id") == "txt2img_seed_row":
        gr.HTML("<span>UI script callback</span>", elem_id="ui_script_callback_marker")


def raises(component, **kwargs):
    if kwargs.get("elem_id") == "txt2img_steps":
        raise RuntimeError("ui script hook fails on purpose")


script_callbacks.on_before_component(before_seed_row)
script_callbacks.on_after_component(raises)
