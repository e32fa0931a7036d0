"""Persistent settings: `config.json` with A1111's keys, read by attribute (`opts.sd_vae`).

Options are declared with `OptionInfo` (default, label, UI component hints, section); extensions add
their own with `opts.add_option`. The file is written atomically (temp file + rename) so a crash
never leaves it half-written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class OptionInfo:
    """Declaration of one setting, with A1111's constructor and fluent helpers."""

    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: dict | Callable[[], dict] | None = None,
        onchange: Callable[[], None] | None = None,
        section: tuple[str, str] | None = None,
        refresh: Callable[[], None] | None = None,
        comment_before: str = "",
        comment_after: str = "",
        infotext: str | None = None,
        restrict_api: bool = False,
        category_id: str | None = None,
    ) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.category_id = category_id
        self.do_not_save = False
        self.reload_ui = False

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> OptionInfo:
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def needs_restart(self) -> OptionInfo:
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        self.reload_ui = True
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    """A block of text in the settings page, not a stored value."""

    def __init__(self, text: str) -> None:
        super().__init__(str(text).strip(), label="", component=None)
        self.do_not_save = True


def options_section(section_identifier: tuple[str, str], options_dict: dict[str, OptionInfo],
                    category_id: str | None = None) -> dict[str, OptionInfo]:
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        v.category_id = category_id
    return options_dict


class Options:
    """Attribute access to settings values backed by a JSON file."""

    typemap = {int: float}

    def __init__(self, data_labels: dict[str, OptionInfo], restricted_opts: set[str] | None = None) -> None:
        super().__setattr__("data_labels", dict(data_labels))
        super().__setattr__("data", {k: v.default for k, v in data_labels.items() if not v.do_not_save})
        super().__setattr__("restricted_opts", set(restricted_opts or ()))
        super().__setattr__("_lock", threading.RLock())
        super().__setattr__("filename", None)

    def __setattr__(self, key: str, value: Any) -> None:
        if key in ("data", "data_labels", "filename", "restricted_opts"):
            return super().__setattr__(key, value)
        if key in self.data or key in self.data_labels:
            self.set(key, value)
            return
        super().__setattr__(key, value)

    def __getattr__(self, item: str) -> Any:
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        labels = self.__dict__.get("data_labels", {})
        if item in labels:
            return labels[item].default
        raise AttributeError(f"no option named {item!r}")

    def __contains__(self, key: str) -> bool:
        return key in self.data or key in self.data_labels

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set an option; returns False when the value was refused or unchanged."""
        with self._lock:
            old = self.data.get(key, None)
            if old == value:
                return False
            info = self.data_labels.get(key)
            if info is not None and info.do_not_save:
                return False
            if is_api and info is not None and info.restrict_api:
                return False
            self.data[key] = value
            if run_callbacks and info is not None and info.onchange is not None:
                try:
                    info.onchange()
                except Exception:
                    self.data[key] = old
                    raise
            return True

    def get_default(self, key: str) -> Any:
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def add_option(self, key: str, info: OptionInfo) -> None:
        with self._lock:
            self.data_labels[key] = info
            if key not in self.data and not info.do_not_save:
                self.data[key] = info.default

    def same_type(self, x: Any, y: Any) -> bool:
        if x is None or y is None:
            return True
        tx = self.typemap.get(type(x), type(x))
        ty = self.typemap.get(type(y), type(y))
        return tx == ty

    def load(self, filename: str | os.PathLike) -> None:
        """Read a config file; a missing file means defaults, a corrupt one is reported and kept aside."""
        path = Path(filename)
        self.filename = path
        if not path.exists():
            return
        try:
            with open(path, encoding="utf8") as f:
                loaded = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            backup = path.with_suffix(path.suffix + ".corrupt")
            log.error("settings file %s could not be read (%s); using defaults, the file is kept as %s", path, e, backup)
            with contextlib.suppress(OSError):
                os.replace(path, backup)
            return
        if not isinstance(loaded, dict):
            log.error("settings file %s does not hold a JSON object; using defaults", path)
            return
        for k, v in loaded.items():
            info = self.data_labels.get(k)
            if info is not None and not self.same_type(info.default, v):
                log.warning("setting %s has type %s, expected %s; keeping the value", k, type(v).__name__,
                            type(info.default).__name__)
            self.data[k] = v

    def save(self, filename: str | os.PathLike | None = None) -> None:
        """Write all values as JSON (indent 4), atomically."""
        path = Path(filename or self.filename or "config.json")
        with self._lock:
            payload = json.dumps(self.data, indent=4, ensure_ascii=False)
        atomic_write_text(path, payload)

    def dumpjson(self) -> str:
        d = {k: self.data.get(k, v.default) for k, v in self.data_labels.items() if not v.do_not_save}
        d.update(self.data)
        return json.dumps(d)

    def as_dict(self) -> dict[str, Any]:
        """Every known option with its current value (defaults filled in)."""
        d = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        d.update(self.data)
        return d


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
