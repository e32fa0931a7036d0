"""The Extensions tab: "Installed", "Available" and "Install from URL", as in A1111.

Installed lists every extension folder (built-in and the user's) with an enable checkbox per row,
its git details, its update status and whatever failed when it loaded. "Apply and restart UI" saves
the unchecked ones as `disabled_extensions` in config.json, updates those ticked for update, and
restarts the server process so the change takes effect (`modules.restart`); where the process cannot
restart itself the tab says the change applies at the next start. The page's script
(javascript/extensions.js) reads the checkboxes into hidden fields when a button is clicked.

Available reads the extension index only when "Load from:" is clicked (Easel fetches nothing on its
own); each entry has an Install button. Every management action (install, update, enable/disable)
is refused with the reason when `extensions.access_allowed()` is false; the lists still show.

The functions that compute the HTML and carry out the actions are plain functions of their inputs,
so they are tested without a browser; `build()` only lays out the components and wires them.
"""

from __future__ import annotations

import html
import json
import logging
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import gradio as gr

from modules import extensions, restart, shared

log = logging.getLogger(__name__)

INDEX_ORDERS = ("newest first", "oldest first", "a-z", "z-a", "internal order")
DISABLE_ALL_CHOICES = ("none", "extra", "all")
RESTART_MARKER = "data-easel-restart"
"""Attribute of the Apply result that tells the page's script to wait for the server to come back."""


# --- small HTML helpers --------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _note(message: str, kind: str = "note", extra: str = "") -> str:
    cls = "easel-error" if kind == "error" else "easel-note extensions-message"
    role = " role='alert'" if kind == "error" else ""
    return f"<div class='{cls}'{role}{extra}>{_esc(message)}</div>"


def _link(url: str | None, text: str | None = None) -> str:
    """A link for web URLs; anything else (a file:// or scp-style remote) as plain text."""
    if not url:
        return ""
    shown = _esc(text if text is not None else url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return f"<a href='{_esc(url)}' target='_blank' rel='noopener noreferrer'>{shown}</a>"
    return f"<span class='extension-remote'>{shown}</span>"


def _date(timestamp: int | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def access_note() -> str:
    """Why management is off, or '' when it is allowed."""
    if extensions.access_allowed():
        return ""
    try:
        extensions.check_access()
    except extensions.ExtensionAccessError as e:
        return _note(str(e).capitalize() + ".", "error")
    return ""


def disabled_mode_note() -> str:
    """A1111's hint when every (extra) extension is off by a flag or the "Disable all" setting."""
    if getattr(shared.cmd_opts, "disable_all_extensions", False):
        return _note('All extensions are off because of --disable-all-extensions; remove the flag to load them.')
    if getattr(shared.cmd_opts, "disable_extra_extensions", False):
        return _note('Extensions other than the built-in ones are off because of --disable-extra-extensions.')
    mode = str(getattr(shared.opts, "disable_all_extensions", "none") or "none")
    if mode != "none":
        return _note(f'"Disable all extensions" is set to "{mode}"; set it to "none" to load them again.')
    return ""


# --- Installed -----------------------------------------------------------------------------------------

def _disabled_names() -> list[str]:
    return [str(n) for n in (getattr(shared.opts, "disabled_extensions", None) or [])]


def _update_cell(ext: extensions.Extension, allowed: bool) -> str:
    if ext.is_builtin:
        return "<span class='extension-status'>built-in</span>"
    status = ext.status or ""
    if ext.can_update:
        disabled = "" if allowed else " disabled"
        return (f"<label class='extension-update-label'><input type='checkbox' class='extension-update' "
                f"name='update_{_esc(ext.name)}' data-extension='{_esc(ext.name)}' checked{disabled}> "
                f"{_esc(status or 'behind HEAD')}</label>")
    if status.startswith("error"):
        first = status.splitlines()[0] if status else status
        return f"<span class='extension-status extension-status-error' title='{_esc(status)}'>{_esc(first)}</span>"
    return f"<span class='extension-status'>{_esc(status)}</span>"


def _errors_html(ext: extensions.Extension) -> str:
    items = ext.errors
    if not items:
        return ""
    rows = "".join(f"<li><b>{_esc(e.what)}</b>: {_esc(e.exception)}</li>" for e in items[-5:])
    return f"<ul class='extension-errors'>{rows}</ul>"


def installed_table(disabled: list[str] | None = None) -> str:
    """The Installed table. `disabled`: the names to show unchecked (default: the saved setting), so a
    re-render keeps the user's unsaved choices."""
    unchecked = set(_disabled_names() if disabled is None else disabled)
    allowed = extensions.access_allowed()
    if not extensions.extensions:
        return "<div class='easel-note' id='extensions_none'>No extensions are installed.</div>"
    rows = []
    for ext in extensions.extensions:
        ext.read_info_from_repo()
        checked = "" if ext.name in unchecked else " checked"
        lock = "" if allowed else " disabled"
        classes = ["extension-row"]
        if ext.name in unchecked:
            classes.append("extension-disabled")
        if ext.errors:
            classes.append("extension-failed")
        badge = " <span class='extension-badge'>built-in</span>" if ext.is_builtin else ""
        version = (f"<span title='{_esc(ext.commit_hash)}'>{_esc(ext.version)}</span>" if ext.version else "")
        rows.append(
            f"<tr class='{' '.join(classes)}' data-extension='{_esc(ext.name)}'>"
            f"<td class='extension-enable-cell'><input type='checkbox' class='extension-enable' "
            f"name='enable_{_esc(ext.name)}' data-extension='{_esc(ext.name)}' "
            f"title='Load this extension'{checked}{lock}></td>"
            f"<td class='extension-name'><span>{_esc(ext.name)}</span>{badge}{_errors_html(ext)}</td>"
            f"<td class='extension-url'>{_link(ext.remote)}</td>"
            f"<td>{_esc(ext.branch)}</td>"
            f"<td class='extension-version'>{version}</td>"
            f"<td class='extension-date'>{_esc(_date(ext.commit_date))}</td>"
            f"<td class='extension-update-cell'>{_update_cell(ext, allowed)}</td></tr>")
    return ("<table id='extensions' class='extensions-table'><thead><tr><th title='Enabled'>On</th>"
            "<th>Extension</th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Update</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _names_from_json(text: str, what: str) -> list[str]:
    """The JSON list of names the page's script sent; a clear error for anything else."""
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError as e:
        raise extensions.ExtensionManagementError(f"the list of {what} is not valid JSON: {e}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise extensions.ExtensionManagementError(f"the list of {what} must be a JSON list of names")
    known = {e.name for e in extensions.extensions}
    unknown = [v for v in value if v not in known]
    if unknown:
        raise extensions.ExtensionManagementError(f"no extension named {', '.join(unknown)} is installed")
    return value


@dataclass
class ApplyResult:
    message: str
    table: str
    restarting: bool = False


def apply_changes(disabled_json: str, update_json: str, disable_all: str | None) -> ApplyResult:
    """Update the ticked extensions, save the disabled list (and "Disable all extensions"), then
    restart when the process can; otherwise say the change applies at the next start."""
    try:
        extensions.check_access()
        disabled = _names_from_json(disabled_json, "extensions to disable")
        to_update = _names_from_json(update_json, "extensions to update")
        if disable_all is not None and disable_all not in DISABLE_ALL_CHOICES:
            raise extensions.ExtensionManagementError(
                f'"Disable all extensions" must be one of {", ".join(DISABLE_ALL_CHOICES)}, not {disable_all!r}')
    except (extensions.ExtensionAccessError, extensions.ExtensionManagementError) as e:
        return ApplyResult(_note(str(e), "error"), installed_table())
    failed = []
    for name in to_update:
        try:
            extensions.update(name)
        except extensions.ExtensionManagementError as e:
            extensions.record_error(name, "update", str(e))
            failed.append(f"{name}: {e}")
    extensions.set_disabled(disabled, disable_all)
    summary = f"Saved: {len(disabled)} extension(s) disabled"
    if to_update:
        summary += f", {len(to_update) - len(failed)} updated"
    summary += "."
    if failed:
        summary += " Update failed for " + "; ".join(failed) + "."
    if restart.is_restartable():
        restart.request_restart()
        message = _note(summary + " Restarting Easel; the page reloads when it is back.", extra=f" {RESTART_MARKER}='1'")
        return ApplyResult(message, installed_table(), restarting=True)
    return ApplyResult(_note(summary + " The change applies at the next start of Easel."), installed_table())


def check_for_updates(disabled_json: str) -> tuple[str, str]:
    """(message, table): `git fetch` every user extension that is a git checkout."""
    try:
        pending = _names_from_json(disabled_json, "extensions to disable")
    except extensions.ExtensionManagementError:
        pending = None
    try:
        statuses = extensions.check_updates()
    except extensions.ExtensionAccessError as e:
        return _note(str(e), "error"), installed_table(pending)
    for name, status in statuses.items():
        ext = extensions.find_extension(name)
        if ext is not None:
            ext.status = status  # with the reason, where the check failed
    behind = [n for n, s in statuses.items() if s.startswith("behind")]
    failed = [n for n, s in statuses.items() if s.startswith("error")]
    parts = [f"Checked {len(statuses)} extension(s)"]
    parts.append(f"{len(behind)} can be updated ({', '.join(behind)}); tick them and use Apply" if behind
                 else "none has new commits")
    if failed:
        parts.append(f"the check failed for {', '.join(failed)}")
    return _note("; ".join(parts) + "."), installed_table(pending)


# --- Install from URL ----------------------------------------------------------------------------------

def install(url: str, branch: str = "", dirname: str = "") -> tuple[bool, str]:
    """Clone `url` into extensions/ and run its install.py; (ok, message HTML)."""
    url = (url or "").strip()
    if not url:
        return False, _note("Enter the URL of the extension's git repository.", "error")
    name_hint = (dirname or "").strip() or None
    before = {e.name: len(e.errors) for e in extensions.extensions}
    try:
        ext = extensions.install_from_url(url, (branch or "").strip() or None, name_hint)
    except (extensions.ExtensionAccessError, extensions.ExtensionManagementError) as e:
        return False, _note(f"Could not install {url}: {e}", "error")
    except OSError as e:
        return False, _note(f"Could not install {url}: {e}", "error")
    new_errors = [e for e in ext.errors[before.get(ext.name, 0):] if e.what == "install.py"]
    if new_errors:
        return True, _note(f"Installed {ext.name} into {ext.path}, but its install.py failed: "
                           f"{new_errors[-1].exception}. See the Installed tab and the log.", "error")
    later = ("use \"Apply and restart UI\" in the Installed tab to load it" if restart.is_restartable()
             else "it loads at the next start of Easel")
    return True, _note(f"Installed {ext.name} into {ext.path}; {later}.")


# --- Available -----------------------------------------------------------------------------------------

def check_index_url(url: str) -> str:
    """The index URL to read (the default when empty); a clear error for what urllib cannot read."""
    url = (url or "").strip() or extensions.index_url()
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{url!r} is not an http(s):// or file:// URL of an extension index")
    return url


def _installed_keys() -> tuple[set[str], set[str]]:
    urls, names = set(), set()
    for ext in extensions.extensions:
        names.add(ext.name.lower())
        ext.read_info_from_repo()
        if ext.remote:
            urls.add(_url_key(ext.remote))
    return urls, names


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git").lower()


def _is_installed(item: dict[str, Any], urls: set[str], names: set[str]) -> bool:
    url = str(item.get("url", ""))
    folder = url.strip().rstrip("/").rsplit("/", 1)[-1].removesuffix(".git").lower()
    return _url_key(url) in urls or (bool(folder) and folder in names)


def filter_and_sort(items: list[dict[str, Any]], search: str = "", order: str = "newest first") -> list[dict[str, Any]]:
    """Index entries whose name, description or tags contain every word of `search`, in `order`."""
    words = (search or "").lower().split()

    def text(item: dict[str, Any]) -> str:
        tags = item.get("tags") or []
        return " ".join([str(item.get("name", "")), str(item.get("description", "")),
                         *(str(t) for t in (tags if isinstance(tags, list) else []))]).lower()

    chosen = [i for i in items if all(w in text(i) for w in words)]
    if order == "newest first":
        chosen.sort(key=lambda i: str(i.get("added", "")), reverse=True)
    elif order == "oldest first":
        chosen.sort(key=lambda i: str(i.get("added", "")))
    elif order == "a-z":
        chosen.sort(key=lambda i: str(i.get("name", "")).lower())
    elif order == "z-a":
        chosen.sort(key=lambda i: str(i.get("name", "")).lower(), reverse=True)
    return chosen


def available_table(items: list[dict[str, Any]], search: str = "", order: str = "newest first") -> str:
    if not items:
        return ""
    allowed = extensions.access_allowed()
    urls, names = _installed_keys()
    rows = []
    shown = filter_and_sort(items, search, order)
    for item in shown:
        url = str(item.get("url", ""))
        tags = item.get("tags") or []
        tag_html = "".join(f"<span class='extension-tag'>{_esc(t)}</span>"
                           for t in (tags if isinstance(tags, list) else []))
        if _is_installed(item, urls, names):
            action = "<button class='extension-install' disabled>Installed</button>"
        else:
            lock = "" if allowed else " disabled title='Extension management is disabled on this server'"
            action = f"<button class='extension-install' data-url='{_esc(url)}'{lock}>Install</button>"
        added = f"<div class='extension-added'>Added: {_esc(item.get('added'))}</div>" if item.get("added") else ""
        rows.append(f"<tr><td class='extension-name'>{_link(url, str(item.get('name') or url))}"
                    f"<div class='extension-tags'>{tag_html}</div></td>"
                    f"<td class='extension-description'>{_esc(item.get('description'))}{added}</td>"
                    f"<td class='extension-action'>{action}</td></tr>")
    if not rows:
        return "<div class='easel-note'>No extension in the index matches the search.</div>"
    count = f"<div class='easel-note'>{len(shown)} of {len(items)} extensions.</div>" if len(shown) < len(items) else ""
    return (f"{count}<table id='available_extensions' class='extensions-table'><thead><tr><th>Extension</th>"
            f"<th>Description</th><th>Action</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def load_available(url: str, search: str = "", order: str = "newest first") -> tuple[str, list[dict[str, Any]], str]:
    """(message, index entries, table) for the index at `url`; with no network, a message saying so."""
    try:
        url = check_index_url(url)
    except ValueError as e:
        return _note(str(e), "error"), [], ""
    index = extensions.load_index(url)
    if not index.ok:
        return _note(index.error, "error"), [], ""
    message = _note(f"Loaded {len(index.extensions)} extensions from {url}.")
    return message, index.extensions, available_table(index.extensions, search, order)


# --- the tab -------------------------------------------------------------------------------------------

@dataclass
class ExtensionsTab:
    installed_html: Any = None
    installed_info: Any = None
    apply: Any = None
    check: Any = None
    disable_all: Any = None
    index_url: Any = None
    available_html: Any = None
    available_result: Any = None
    install_url: Any = None
    install_result: Any = None


def build() -> ExtensionsTab:
    """Lay out the three sub-tabs and wire them (inside the page's "Extensions" tab)."""
    tab = ExtensionsTab()
    restartable = restart.is_restartable()
    with gr.Tabs(elem_id="tabs_extensions", overflow_behavior="wrap"):
        with gr.Tab("Installed", id="installed", elem_id="extensions_installed_tab"):
            with gr.Row(elem_id="extensions_installed_top", equal_height=True):
                tab.apply = gr.Button("Apply and restart UI" if restartable else "Apply", variant="primary",
                                      elem_id="extensions_apply", scale=0)
                tab.check = gr.Button("Check for updates", elem_id="extensions_check", scale=0)
                tab.disable_all = gr.Radio(list(DISABLE_ALL_CHOICES), label="Disable all extensions",
                                           value=str(getattr(shared.opts, "disable_all_extensions", "none") or "none"),
                                           elem_id="extensions_disable_all", scale=0, min_width=260)
            with gr.Row(elem_classes="easel-hidden"):
                disabled_list = gr.Textbox(elem_id="extensions_disabled_list", visible="hidden")
                update_list = gr.Textbox(elem_id="extensions_update_list", visible="hidden")
            tab.installed_info = gr.HTML(_installed_info, elem_id="extensions_installed_info")
            tab.installed_html = gr.HTML(installed_table, elem_id="extensions_installed_html")

        with gr.Tab("Available", id="available", elem_id="extensions_available_tab"):
            with gr.Row(elem_id="extensions_available_top", equal_height=True):
                load = gr.Button("Load from:", variant="primary", elem_id="extensions_index_load", scale=0,
                                 min_width=130)
                tab.index_url = gr.Textbox(value=extensions.index_url(), label="Extension index URL",
                                           show_label=False, container=False, elem_id="extensions_index_url", scale=1)
            with gr.Row(elem_id="extensions_available_filters", equal_height=True):
                search = gr.Textbox(label="Search", elem_id="extensions_search", scale=1)
                order = gr.Radio(list(INDEX_ORDERS), value=INDEX_ORDERS[0], label="Order",
                                 elem_id="extensions_sort", scale=1)
            with gr.Row(elem_classes="easel-hidden"):
                to_install = gr.Textbox(elem_id="extension_to_install", visible="hidden")
                install_index_button = gr.Button("Install", elem_id="install_extension_button", visible="hidden")
            items = gr.State([])
            tab.available_result = gr.HTML(
                "<div class='easel-note'>Nothing is read from the internet until you click \"Load from:\".</div>",
                elem_id="extensions_available_result")
            tab.available_html = gr.HTML(elem_id="extensions_available_html")

        with gr.Tab("Install from URL", id="install_from_url", elem_id="extensions_install_from_url_tab"):
            tab.install_url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for the default branch",
                                elem_id="extension_install_branch")
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                 elem_id="extension_install_dirname")
            install_button = gr.Button("Install", variant="primary", elem_id="extension_install_button")
            tab.install_result = gr.HTML(elem_id="extension_install_result")

    def on_apply(disabled_json: str, update_json: str, disable_all: str) -> list[str]:
        result = apply_changes(disabled_json, update_json, disable_all)
        return [result.message, result.table]

    tab.apply.click(fn=on_apply, js="(d, u, a) => extensions_apply(d, u, a)",
                    inputs=[disabled_list, update_list, tab.disable_all],
                    outputs=[tab.installed_info, tab.installed_html], show_progress="minimal", api_name=False
                    ).then(fn=None, js="(info) => easelAwaitRestart(info)", inputs=[tab.installed_info],
                           outputs=[], api_name=False)
    tab.check.click(fn=lambda disabled: list(check_for_updates(disabled)), js="(d) => extensions_check(d)",
                    inputs=[disabled_list], outputs=[tab.installed_info, tab.installed_html],
                    show_progress="minimal", api_name=False)

    load.click(fn=load_available, inputs=[tab.index_url, search, order],
               outputs=[tab.available_result, items, tab.available_html], show_progress="minimal", api_name=False)
    for control in (search, order):
        control.change(fn=available_table, inputs=[items, search, order], outputs=[tab.available_html],
                       show_progress="hidden", api_name=False)

    def on_install_from_index(url: str, entries: list[dict[str, Any]], words: str, how: str) -> list[str]:
        _ok, message = install(url)
        return [message, available_table(entries, words, how), installed_table()]

    install_index_button.click(fn=on_install_from_index, inputs=[to_install, items, search, order],
                               outputs=[tab.available_result, tab.available_html, tab.installed_html],
                               show_progress="minimal", api_name=False)

    def on_install(url: str, branch_name: str, folder: str) -> list[Any]:
        ok, message = install(url, branch_name, folder)
        return ["" if ok else url, message, installed_table()]

    install_button.click(fn=on_install, inputs=[tab.install_url, branch, dirname],
                         outputs=[tab.install_url, tab.install_result, tab.installed_html],
                         show_progress="minimal", api_name=False)
    return tab


def _installed_info() -> str:
    """The notes above the Installed table: why management is off, why extensions are off."""
    return access_note() + disabled_mode_note()
