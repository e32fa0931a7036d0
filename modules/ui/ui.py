"""The Gradio page: top bar, the txt2img / img2img / PNG Info / Settings tabs, footer; mounted at "/".

`mount(app, args)` builds the page and mounts it on the FastAPI app that also serves the REST API
(the API's routes are registered first, so they win over the page's catch-all mount). The page
loads nothing from the internet: the theme uses system font stacks, and the page's own script and
style sheet (`javascript/*.js`, `style.css`) are inlined.
"""

from __future__ import annotations

import argparse
import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules import infotext_utils, shared, ui_extra_networks
from modules.paths import script_path
from modules.ui import common, extra_networks, img2img, paste, png_info, quicksettings, settings, txt2img
from modules.ui.ui_config import UiConfig
from modules.version import __version__

log = logging.getLogger(__name__)

SANS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
        "Noto Sans", "Liberation Sans", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts only, so nothing is fetched from a font CDN."""
    return gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate",
                             font=SANS, font_mono=MONO, radius_size="sm", spacing_size="sm")


def page_css() -> str:
    path = script_path / "style.css"
    try:
        return path.read_text(encoding="utf8")
    except OSError:
        log.warning("style sheet %s is missing", path)
        return ""


def page_head(args: argparse.Namespace) -> str:
    """<script> tags for the page: the theme choice and the scripts in javascript/."""
    parts = []
    if getattr(args, "theme", None) in ("light", "dark"):
        # Gradio picks light/dark from the __theme query parameter; add it once, as A1111 does.
        parts.append("<script>(function(){var u=new URL(window.location.href);"
                     f"if(u.searchParams.get('__theme')!=='{args.theme}'){{u.searchParams.set('__theme','{args.theme}');"
                     "window.location.replace(u.toString());}})();</script>")
    folder = script_path / "javascript"
    for js in sorted(folder.glob("*.js")) if folder.is_dir() else []:
        try:
            parts.append(f"<script>\n{js.read_text(encoding='utf8')}\n</script>")
        except OSError as e:
            log.warning("could not read %s: %s", js, e)
    return "\n".join(parts)


def footer_html(args: argparse.Namespace) -> str:
    links = []
    if getattr(args, "api", False):
        links.append("<a href='/docs' target='_blank' id='footer_api_link'>API</a>")
    versions = [f"Easel {html.escape(__version__)}", f"gradio {html.escape(gr.__version__)}"]
    try:
        import diffusers
        import torch

        versions += [f"torch {html.escape(torch.__version__)}", f"diffusers {html.escape(diffusers.__version__)}"]
    except ImportError:
        pass
    links.append("<a href='#' id='footer_reload_ui' onclick='location.reload();return false'>Reload UI</a>")
    items = " • ".join(links)
    return (f"<div class='easel-footer'><div class='footer-links'>{items}</div>"
            f"<div class='versions'>{' • '.join(versions)}</div></div>")


def _extension_tabs() -> list[tuple[Any, str, str]]:
    """Tabs from extensions' on_ui_tabs callbacks, when the callbacks module is present."""
    try:
        from modules import script_callbacks  # type: ignore[attr-defined]
    except ImportError:
        return []
    fn = getattr(script_callbacks, "ui_tabs_callback", None)
    if fn is None:
        return []
    try:
        return list(fn() or [])
    except Exception as e:
        log.error("an extension's UI tab failed: %s", e)
        return []


def create_ui(args: argparse.Namespace) -> gr.Blocks:
    """Build the whole page (not mounted)."""
    infotext_utils.reset()
    ui_config = UiConfig(shared.paths.ui_config_file)
    with gr.Blocks(title="Easel", analytics_enabled=False, fill_width=True) as demo:
        quick = quicksettings.Quicksettings().build()
        extra_networks.CheckpointSwitch().build(quick)
        with gr.Tabs(elem_id="tabs", selected="txt2img") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img") as tab_t2i:
                t2i = txt2img.build()
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img") as tab_i2i:
                i2i = img2img.build()
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png_info.build()
            for blocks, title, elem_id in _extension_tabs():
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings_tab = settings.build(skip=set(quick.components))
        gr.HTML(footer_html(args), elem_id="footer")

        for tab_name, panel in (("txt2img", t2i.out), ("img2img", i2i.out)):
            panel.gallery.easel_selection_inputs = [panel.selected, panel.generation_info]
            for target, button in panel.send_buttons.items():
                infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                    paste_button=button, tabname=target, source_text_component=panel.infotext,
                    source_image_component=panel.gallery, source_tabname=tab_name))

        def extra_outputs(target: str) -> list[tuple[Any, Any]]:
            if target == "txt2img":
                return [(tabs, lambda: gr.Tabs(selected="txt2img")),
                        (t2i.settings_tabs, lambda: gr.Tabs(selected="txt2img_generation"))]
            mode = 1 if target == "inpaint" else 0
            sub = img2img.MODE_TAB_IDS["inpaint" if target == "inpaint" else "img2img"]
            return [(tabs, lambda: gr.Tabs(selected="img2img")),
                    (i2i.settings_tabs, lambda: gr.Tabs(selected="img2img_generation")),
                    (i2i.mode_tabs, lambda: gr.Tabs(selected=sub)),
                    (i2i.mode, mode), (i2i.inpaint_controls, lambda: gr.Column(visible=mode > 0))]

        paste.connect_bindings(extra_outputs)

        ui_config.apply_tree("txt2img", tab_t2i)
        ui_config.apply_tree("img2img", tab_i2i)
        ui_config.save()

        setting_keys = list(settings_tab.components)
        quick_keys = list(quick.components)

        def on_load() -> list[Any]:
            return [*quick.current_values(), *settings.current_values(setting_keys)]

        demo.load(fn=on_load, outputs=[*(quick.components[k] for k in quick_keys),
                                       *settings_tab.components.values()],
                  show_progress="hidden", api_name=False)
    demo.queue(default_concurrency_limit=None)
    return demo


def _page_login_check(app: Any) -> Any:
    """login_check(request) for routes that belong to the page: True when the page has no login or
    the request carries the login cookie of the page mounted on `app` (Gradio's own check)."""

    def gradio_app() -> Any:
        for route in reversed(getattr(app, "routes", [])):
            inner = getattr(route, "app", None)
            if inner is not None and hasattr(inner, "cookie_id") and hasattr(inner, "tokens"):
                return inner
        return None

    def check(request: Any) -> bool:
        page = gradio_app()
        if page is None:
            return False
        if getattr(page, "auth", None) is None and getattr(page, "auth_dependency", None) is None:
            return True
        cookies = request.cookies
        token = cookies.get(f"access-token-{page.cookie_id}") or cookies.get(f"access-token-unsecure-{page.cookie_id}")
        return bool(token) and page.tokens.get(token) is not None

    return check


def mount(app: Any, args: argparse.Namespace) -> None:
    """Build the page and serve it at "/" on `app`, behind --gradio-auth when given."""
    demo = create_ui(args)
    shared.demo = demo
    auth = common.gradio_auth(args)
    allowed = [str(Path(shared.paths.outputs_dir))]
    # Routes of the page go before the mount at "/", which would otherwise answer for them.
    ui_extra_networks.add_routes(app, _page_login_check(app))
    gr.mount_gradio_app(
        app, demo, path="/", auth=auth, auth_message="Easel: please log in" if auth else None,
        theme=theme(), css=page_css(), head=page_head(args), footer_links=[], show_error=True,
        ssr_mode=False, allowed_paths=allowed, favicon_path=None, mcp_server=False, pwa=False,
    )
