"""The Gradio page: top bar, the txt2img / img2img / PNG Info / Settings tabs, footer; mounted at "/".

`mount(app, args)` builds the page and mounts it on the FastAPI app that also serves the REST API
(the API's routes are registered first, so they win over the page's catch-all mount). The page
loads nothing from the internet: the theme uses system font stacks, and the page's own script and
style sheet (`javascript/*.js`, `style.css`) are inlined, followed by those of the enabled extensions.
Extensions' on_ui_tabs tabs come after the built-in tabs, then the Extensions tab and Settings; the
ui_tab_order and hidden_tabs settings reorder and hide them (tab_order.py).
"""

from __future__ import annotations

import argparse
import html
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from modules import errors, extensions, infotext_utils, localization, script_callbacks, shared, ui_extra_networks
from modules.paths import script_path
from modules.ui import (
    common,
    extensions_tab,
    extra_networks,
    img2img,
    model_size,
    page_options,
    paste,
    png_info,
    quicksettings,
    settings,
    tab_order,
    txt2img,
)
from modules.ui.component_hooks import component_hooks
from modules.ui.tab_order import PageTab
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
    """Easel's style.css, then each enabled extension's style.css (so theirs can override ours)."""
    path = script_path / "style.css"
    try:
        parts = [path.read_text(encoding="utf8")]
    except OSError:
        log.warning("style sheet %s is missing", path)
        parts = []
    for css in extensions.css_files():
        try:
            parts.append(f"/* {Path(css).parent.name}/style.css */\n{Path(css).read_text(encoding='utf8')}")
        except OSError as e:
            log.warning("could not read %s: %s", css, e)
    return "\n".join(parts)


def _script_tag(path: Path) -> str:
    """An inline <script> with a file's code; "</script" inside it would end the tag early."""
    code = path.read_text(encoding="utf8").replace("</script", "<\\/script")
    kind = " type=\"module\"" if path.suffix == ".mjs" else ""
    return f"<script{kind}>\n{code}\n</script>"


def page_head(args: argparse.Namespace) -> str:
    """<script> tags for the page: the theme choice, the scripts in javascript/, then the enabled
    extensions' javascript/*.js (and *.mjs, as modules)."""
    parts = []
    if getattr(args, "theme", None) in ("light", "dark"):
        # Gradio picks light/dark from the __theme query parameter; add it once, as A1111 does.
        parts.append("<script>(function(){var u=new URL(window.location.href);"
                     f"if(u.searchParams.get('__theme')!=='{args.theme}'){{u.searchParams.set('__theme','{args.theme}');"
                     "window.location.replace(u.toString());}})();</script>")
    # The chosen localization's mapping, before javascript/localization.js reads it.
    l10n = localization.head_script()
    if l10n:
        parts.append(l10n)
    folder = script_path / "javascript"
    own = sorted(folder.glob("*.js")) if folder.is_dir() else []
    # Easel's scripts first, then those of the enabled extensions (their javascript/*.js and *.mjs).
    for js in [*own, *(Path(f) for f in extensions.javascript_files())]:
        try:
            parts.append(_script_tag(js))
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


def _report_tab(owner: str, message: str) -> None:
    errors.report(f"Extension {owner}: {message}; the tab is left out")
    extensions.record_error(owner, "on_ui_tabs", message)


@dataclass
class ExtensionTab:
    owner: str
    blocks: Any
    title: str
    elem_id: str


def _extension_tabs() -> list[ExtensionTab]:
    """Tabs from extensions' on_ui_tabs callbacks, each given as (blocks, title, elem_id).

    Called before the page's own Blocks is opened, as A1111 does: an extension builds its tab as a
    Blocks of its own, which the page then renders inside a Tab. A callback that raises, or an item
    that is not such a triple, is reported under the extension's name and left out.
    """
    tabs: list[ExtensionTab] = []
    for owner, items in script_callbacks.ui_tabs_by_owner():
        for item in items:
            if not (isinstance(item, (tuple, list)) and len(item) == 3):
                _report_tab(owner, f"on_ui_tabs returned {item!r}, not (blocks, title, elem_id)")
                continue
            blocks, title, elem_id = item
            if not isinstance(blocks, gr.Blocks):
                _report_tab(owner, f"the tab {title!r} has no gr.Blocks to show (got {type(blocks).__name__})")
                continue
            tabs.append(ExtensionTab(owner, blocks, str(title), str(elem_id)))
    return tabs


def _render_extension_tab(tab: ExtensionTab) -> None:
    """The extension's Blocks, inside the Tab made for it; an error message in its place if it fails."""
    try:
        tab.blocks.render()
    except Exception as e:
        entry = errors.report(f"Extension {tab.owner}: its tab {tab.title!r} could not be shown", exc_info=True)
        extensions.record_error(tab.owner, "on_ui_tabs", f"{type(e).__name__}: {e}", entry.traceback)
        gr.HTML(f"<div class='easel-error'>This tab of {html.escape(tab.owner)} could not be shown: "
                f"{html.escape(str(e))}</div>")


def create_ui(args: argparse.Namespace) -> gr.Blocks:
    """Build the whole page (not mounted)."""
    infotext_utils.reset()
    # Extensions prepare before the page exists, and build their tabs as Blocks of their own
    # (whose components are announced to before/after_component hooks like the page's).
    script_callbacks.before_ui_callback()
    with component_hooks():
        ext_tabs = _extension_tabs()
    ui_config = UiConfig(shared.paths.ui_config_file)
    # Extensions see the page being built (before_component / after_component) and attach to it.
    with component_hooks(), gr.Blocks(title="Easel", analytics_enabled=False, fill_width=True) as demo:
        options_box = page_options.build()
        quick = quicksettings.Quicksettings().build()
        checkpoint_switch = extra_networks.CheckpointSwitch().build(quick)
        t2i_tab = PageTab("txt2img", "txt2img", txt2img.build)
        i2i_tab = PageTab("img2img", "img2img", img2img.build)
        settings_page = PageTab("Settings", "settings", lambda: settings.build(skip=set(quick.components)))
        page_tabs = tab_order.arrange([
            t2i_tab, i2i_tab, PageTab("PNG Info", "pnginfo", png_info.build),
            *(PageTab(t.title, t.elem_id, partial(_render_extension_tab, t)) for t in ext_tabs),
            PageTab("Extensions", "extensions", extensions_tab.build), settings_page])
        built: dict[PageTab, tuple[gr.Tab, Any]] = {}
        # Every row of tabs wraps (overflow_behavior) rather than hiding tabs behind a "More tabs" menu:
        # extensions add tabs and extra-network pages, and each should stay in sight.
        first = next(t.tab_id for t in page_tabs if t.shown)
        with gr.Tabs(elem_id="tabs", selected=first, overflow_behavior="wrap") as tabs:
            for page_tab in page_tabs:
                with gr.Tab(page_tab.title, id=page_tab.tab_id, elem_id=f"tab_{page_tab.tab_id}",
                            visible=page_tab.shown) as tab:
                    built[page_tab] = (tab, page_tab.build())
        (tab_t2i, t2i), (tab_i2i, i2i), settings_tab = built[t2i_tab], built[i2i_tab], built[settings_page][1]
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
        # After ui-config is applied: the sliders' values are the configured defaults to come back to.
        model_size.connect(demo, quick.checkpoint, [t2i.params.width, t2i.params.height,
                                                    i2i.params.width, i2i.params.height])

        setting_keys = list(settings_tab.components)
        quick_keys = list(quick.components)

        def on_load() -> list[Any]:
            return [*quick.current_values(), *settings.current_values(setting_keys), page_options.options_json()]

        # The page's controls hold the options' values only once this load event has answered; then
        # the page script runs the extensions' onUiLoaded callbacks and marks <html data-ui-loaded>
        # (what is typed after it will not be replaced).
        loaded = demo.load(fn=on_load, outputs=[*(quick.components[k] for k in quick_keys),
                                                *settings_tab.components.values(), options_box],
                           show_progress="hidden", api_name=False)
        page_options.on_load(loaded)
        page_options.follow([*quick.changes, checkpoint_switch.event, settings_tab.applied], options_box)
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
    # A changed localization reaches the next page load without a restart (the head is in the config).
    localization.on_change("page", lambda: demo.config.__setitem__("head", page_head(args)))
