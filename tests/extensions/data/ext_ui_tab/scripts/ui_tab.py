"""A test extension for the page side of the extension contract: an on_ui_tabs tab, a setting, an
on_infotext_pasted edit, an on_before_ui hook, and (beside this folder) javascript/ and style.css."""
import gradio as gr

from modules import script_callbacks, shared

EVENTS = []


def on_before_ui():
    EVENTS.append("before_ui")


def on_tabs():
    # on_before_ui ran first: the tab says so.
    with gr.Blocks(analytics_enabled=False) as block:
        gr.Textbox(label="Extension tab text", value=f"ext_ui_tab ready; events: {','.join(EVENTS)}",
                   elem_id="ext_ui_tab_text")
        gr.HTML("<div id='ext_ui_tab_styled'>styled by the extension's style.css</div>")
    return [(block, "UI tab ext", "ext_ui_tab")]


def on_settings():
    shared.opts.add_option("ext_ui_tab_greeting", shared.OptionInfo(
        "hello", "Greeting of the test tab", section=("ext_ui_tab", "UI tab extension")))


def on_pasted(infotext, params):
    # "Ext tag: x" in the pasted text is appended to the prompt, before the fields are filled.
    if "Ext tag" in params and "Ext tag:" in infotext:
        params["Prompt"] = f"{params.get('Prompt', '')}, tagged {params['Ext tag']}"


script_callbacks.on_before_ui(on_before_ui)
script_callbacks.on_ui_tabs(on_tabs)
script_callbacks.on_ui_settings(on_settings)
script_callbacks.on_infotext_pasted(on_pasted)
