"""UI translations: `localizations/<name>.json` files mapping English UI strings to another language.

They come from `<data>/localizations/` (or --localizations-dir) and from every enabled extension's
`localizations/` folder; on a name clash the later one wins (extensions after the data folder,
in extension order), as in A1111. The `localization` setting names the one to use; the page gets
its mapping as `window.localization` (`head_script`) and javascript/localization.js translates the
visible text with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

NONE = "None"
"""The setting's value for "no translation"."""

_listeners: dict[str, Callable[[], None]] = {}


def files_in(folder: Path) -> list[Path]:
    """The `*.json` files of a folder, sorted by name; none when the folder is missing."""
    if not folder.is_dir():
        return []
    return sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".json"),
                  key=lambda f: f.name.lower())


def collect(files: Iterable[Path]) -> dict[str, Path]:
    """Name (file stem) -> file; a later file replaces an earlier one of the same name."""
    found: dict[str, Path] = {}
    for f in files:
        found[f.stem] = Path(f)
    return found


def available() -> dict[str, Path]:
    """The localizations this instance can use: the data folder's, then the enabled extensions'."""
    from modules import extensions, shared

    own = files_in(Path(shared.paths.localizations_dir))
    return collect([*own, *(Path(f) for f in extensions.localization_files())])


def names() -> list[str]:
    """The setting's choices: "None" and every available localization, by name."""
    return [NONE, *sorted(available(), key=str.lower)]


def read_mapping(path: Path) -> dict[str, str]:
    """A localization file's English -> translation pairs.

    A file that cannot be read or is not a JSON object is logged (with its name) and counts as empty,
    so a broken translation never stops the page from loading. Entries whose key or value is not a
    string are left out.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.error("localization file %s could not be read: %s; it is ignored", path, e)
        return {}
    if not isinstance(data, dict):
        log.error("localization file %s does not hold a JSON object of English -> translation strings; "
                  "it is ignored", path)
        return {}
    mapping = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    if len(mapping) != len(data):
        log.warning("localization file %s: %d entries are not text -> text and are ignored",
                    path, len(data) - len(mapping))
    return mapping


def load(name: str | None) -> dict[str, str]:
    """The mapping of the localization called `name`; empty for "None" or an unknown name."""
    if not name or name == NONE:
        return {}
    path = available().get(name)
    if path is None:
        log.warning("localization %r is not installed (have: %s); the UI stays in English",
                    name, ", ".join(sorted(available())) or "none")
        return {}
    return read_mapping(path)


def current() -> dict[str, str]:
    """The mapping chosen in the settings."""
    from modules import shared

    return load(str(getattr(shared.opts, "localization", NONE) or NONE))


def script_json(mapping: dict[str, str]) -> str:
    """The mapping as a JavaScript literal that is safe inside an HTML <script> element.

    `<`, `>` and `&` are written as \\u escapes (so "</script>" or "<!--" in a translation cannot end
    or confuse the element), as are U+2028/U+2029, which older engines refuse in string literals.
    """
    text = json.dumps(mapping, ensure_ascii=False, sort_keys=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def head_script(mapping: dict[str, str] | None = None) -> str:
    """`<script>window.localization = {...}</script>` for the page head; "" without a localization."""
    mapping = current() if mapping is None else mapping
    if not mapping:
        return ""
    return f"<script>window.localization = {script_json(mapping)};</script>"


def on_change(key: str, callback: Callable[[], None]) -> None:
    """Call `callback` whenever the `localization` setting changes (the page rebuilds its head);
    registering again under the same key replaces the earlier callback (a rebuilt page)."""
    _listeners[key] = callback


def notify_changed() -> None:
    """The setting's onchange: tell the listeners; one that fails is logged, the others still run."""
    for callback in list(_listeners.values()):
        try:
            callback()
        except Exception:
            log.exception("updating the page for the new localization failed")
