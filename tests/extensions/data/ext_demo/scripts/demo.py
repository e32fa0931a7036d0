"""A test extension using only the documented A1111 extension API."""
import demo_ext_helper  # noqa: F401  (the extension root is on sys.path while loading)
import gradio as gr

from modules import script_callbacks, scripts, shared

EVENTS = []
BASEDIR = scripts.basedir()


class DemoAlwaysOn(scripts.Script):
    def title(self):
        return "Demo always on"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        enabled = gr.Checkbox(label="Demo enabled", value=False)
        tag = gr.Textbox(label="Demo tag", value="default-tag")
        return [enabled, tag]

    def setup(self, p, enabled, tag):
        EVENTS.append(("setup", enabled, tag))

    def before_process(self, p, enabled, tag):
        EVENTS.append(("before_process", enabled, tag))

    def process(self, p, enabled, tag):
        EVENTS.append(("process", enabled, tag))
        if enabled:
            p.extra_generation_params["Demo tag"] = tag

    def before_process_batch(self, p, enabled, tag, **kw):
        EVENTS.append(("before_process_batch", kw["batch_number"]))

    def process_batch(self, p, enabled, tag, **kw):
        EVENTS.append(("process_batch", kw["batch_number"]))

    def postprocess_batch(self, p, enabled, tag, **kw):
        EVENTS.append(("postprocess_batch", tuple(kw["images"].shape)))

    def postprocess_batch_list(self, p, pp, enabled, tag, **kw):
        EVENTS.append(("postprocess_batch_list", len(pp.images)))

    def postprocess_image(self, p, pp, enabled, tag):
        EVENTS.append(("postprocess_image", pp.image.size))

    def postprocess(self, p, processed, enabled, tag):
        EVENTS.append(("postprocess", len(processed.images)))


class DemoBrokenHook(scripts.Script):
    def title(self):
        return "Demo broken hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p):
        raise RuntimeError("hook failure for the test")


def on_settings():
    shared.opts.add_option("demo_ext_option", shared.OptionInfo(
        "hello", "Demo extension option", section=("demo_ext", "Demo extension")).info("an option from a test"))


def on_tabs():
    return [(None, "Demo tab", "demo_tab")]


def on_saved(params):
    EVENTS.append(("image_saved", params.filename))


def on_started(demo, app):
    EVENTS.append(("app_started", demo, app))


def on_model(sd_model):
    EVENTS.append(("model_loaded", sd_model))


def on_grid(params):
    EVENTS.append(("image_grid", len(params.imgs)))


script_callbacks.on_ui_settings(on_settings)
script_callbacks.on_ui_tabs(on_tabs)
script_callbacks.on_image_saved(on_saved)
script_callbacks.on_app_started(on_started)
script_callbacks.on_model_loaded(on_model)
script_callbacks.on_image_grid(on_grid)
