"""Prompt styles: named prompt / negative-prompt fragments kept in ``styles.csv``.

The file has A1111's layout, a CSV with the header ``name,prompt,negative_prompt`` (very old files
have ``name,text``); rows whose name starts with ``#`` are ignored. A style's text either holds a
``{prompt}`` placeholder, which the user's prompt replaces, or is appended to the prompt after
``", "``. Several styles apply in the order given.

`StyleDatabase` keeps A1111's class name and methods because extensions and the UI call them
(`shared.prompt_styles` in A1111). It can read several files (``--styles-file`` may be given more
than once and may hold wildcards); each style remembers its file and is saved back into it. Saving
keeps the previous version as ``<file>.bak`` and replaces the file atomically, so a crash mid-write
never leaves a truncated styles file.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from modules.options import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "PromptStyle",
    "StyleDatabase",
    "apply_styles_to_prompt",
    "default_database",
    "extract_style_text_from_prompt",
    "merge_prompts",
]

PLACEHOLDER = "{prompt}"
FIELDS = ("name", "prompt", "negative_prompt")
DIVIDER_PATH = "do_not_save"
"""`path` of the separator rows shown between files in the UI list; never written anywhere."""


class PromptStyle(NamedTuple):
    name: str
    prompt: str | None
    negative_prompt: str | None
    path: str | None = None


def merge_prompts(style_prompt: str | None, prompt: str) -> str:
    """One style applied to a prompt: fill ``{prompt}``, else append with ", " (empty parts dropped)."""
    style_prompt = style_prompt or ""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, styles: Iterable[str | None]) -> str:
    """Style texts applied one after the other, in order."""
    for style in styles:
        prompt = merge_prompts(style, prompt)
    return prompt


def extract_style_text_from_prompt(style_text: str | None, prompt: str) -> tuple[bool, str]:
    """Undo `merge_prompts`: (True, the prompt without the style) when the prompt carries the style."""
    text = prompt.strip()
    style = (style_text or "").strip()
    if PLACEHOLDER in style:
        left, _, right = style.partition(PLACEHOLDER)
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            return True, text[len(left):len(text) - len(right)]
        return False, prompt
    if text.endswith(style):
        rest = text[:len(text) - len(style)]
        if rest.endswith(", "):
            rest = rest[:-2]
        return True, rest
    return False, prompt


def _extract_original_prompts(style: PromptStyle, prompt: str, negative_prompt: str) -> tuple[bool, str, str]:
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative_prompt
    ok, positive = extract_style_text_from_prompt(style.prompt, prompt)
    if not ok:
        return False, prompt, negative_prompt
    ok, negative = extract_style_text_from_prompt(style.negative_prompt, negative_prompt)
    if not ok:
        return False, prompt, negative_prompt
    return True, positive, negative


def _is_pattern(name: str) -> bool:
    return "*" in name or "?" in name


class StyleDatabase:
    """The styles of one or more CSV files (A1111's ``StyleDatabase``)."""

    def __init__(self, paths: Sequence[str | Path] | str | Path) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths: list[Path] = [Path(p) for p in paths] or [Path("styles.csv")]
        self.no_style = PromptStyle("None", "", "", None)
        self.styles: dict[str, PromptStyle] = {}
        self.all_styles_files: list[Path] = []
        self._lock = threading.RLock()
        first = self.paths[0]
        if _is_pattern(first.name):
            # A wildcard first: the first file it matches takes new styles, else styles.csv beside it.
            self.default_path = next(iter(sorted(first.parent.glob(first.name))), first.parent / "styles.csv")
            self.paths.insert(0, self.default_path)
        else:
            self.default_path = first
        self.prompt_fields = [f for f in PromptStyle._fields if f != "path"]
        self.reload()

    # --- reading ----------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read every styles file again."""
        with self._lock:
            files: list[Path] = []
            for pattern in self.paths:
                matches = sorted(pattern.parent.glob(pattern.name)) if _is_pattern(pattern.name) else [pattern]
                for f in matches:
                    if f not in files:
                        files.append(f)
            self.all_styles_files = files
            self.styles = {}
            for f in files:
                if len(files) > 1:
                    divider = f" {f.stem.upper()} ".center(40, "-")
                    self.styles[divider] = PromptStyle(divider, None, None, DIVIDER_PATH)
                if f.is_file():
                    self.load_from_csv(f)

    def load_from_csv(self, path: str | Path) -> None:
        """Add the styles of one CSV file (later rows replace earlier ones of the same name)."""
        path = Path(path)
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                for row in csv.DictReader(f, skipinitialspace=True):
                    name = (row.get("name") or "").strip() if row else ""
                    if not name or name.startswith("#"):
                        continue
                    prompt = row.get("prompt") if "prompt" in row else row.get("text")
                    negative = row.get("negative_prompt") or ""
                    self.styles[name] = PromptStyle(name, prompt or "", negative, str(path))
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            log.error("styles file %s could not be read: %s", path, e)

    # --- A1111's query methods ----------------------------------------------------------------------------
    def get_style_prompts(self, styles: Iterable[str]) -> list[str | None]:
        return [self.styles.get(s, self.no_style).prompt for s in styles]

    def get_negative_style_prompts(self, styles: Iterable[str]) -> list[str | None]:
        return [self.styles.get(s, self.no_style).negative_prompt for s in styles]

    def apply_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_style_prompts(styles))

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_negative_style_prompts(styles))

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """Styles whose text the prompts end with (or wrap), removed: (names in apply order, prompt,
        negative prompt). Used when pasting infotext with the "infotext_styles" setting."""
        found: list[str] = []
        candidates = [s for s in self.styles.values() if s.path != DIVIDER_PATH]
        while True:
            for style in candidates:
                ok, new_prompt, new_negative = _extract_original_prompts(style, prompt, negative_prompt)
                if ok:
                    prompt, negative_prompt = new_prompt, new_negative
                    candidates.remove(style)
                    found.append(style.name)
                    break
            else:
                break
        return list(reversed(found)), prompt, negative_prompt

    # --- editing and saving ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Selectable style names (the UI dropdown; separator rows left out)."""
        return [name for name, s in self.styles.items() if s.path != DIVIDER_PATH]

    def api_list(self) -> list[dict[str, str | None]]:
        """``GET /sdapi/v1/prompt-styles``: [{name, prompt, negative_prompt}]."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in self.styles.values() if s.path != DIVIDER_PATH]

    def set_style(self, name: str, prompt: str, negative_prompt: str, *, save: bool = True) -> PromptStyle:
        """Create or replace a style (the UI's "save style"); it keeps its file, new ones go to the default."""
        name = name.strip()
        if not name or name.startswith("#"):
            raise ValueError("a style needs a name that does not start with '#'")
        with self._lock:
            old = self.styles.get(name)
            if old is not None and old.path == DIVIDER_PATH:
                raise ValueError(f"{name!r} is a separator, not a style")
            path = old.path if old is not None and old.path else str(self.default_path)
            style = PromptStyle(name, prompt, negative_prompt, path)
            self.styles[name] = style
            if save:
                self.save_styles()
            return style

    def delete_style(self, name: str, *, save: bool = True) -> bool:
        with self._lock:
            style = self.styles.get(name)
            if style is None or style.path == DIVIDER_PATH:
                return False
            del self.styles[name]
            if save:
                self.save_styles()
            return True

    def get_style_paths(self) -> set[str]:
        """Every file a style belongs to, and the default file (styles without one move there)."""
        with self._lock:
            for name, style in list(self.styles.items()):
                if not style.path:
                    self.styles[name] = style._replace(path=str(self.default_path))
            out = {str(self.default_path)}
            out.update(s.path for s in self.styles.values() if s.path)
            out.discard(DIVIDER_PATH)
            return out

    def save_styles(self, path: str | Path | None = None) -> None:
        """Write every file back; each previous version is kept as ``<file>.bak``.

        `path` is accepted for A1111 compatibility and ignored: styles go to the files they came from.
        """
        with self._lock:
            for target in sorted(self.get_style_paths()):
                rows = [s for s in self.styles.values() if s.path == target]
                buf = io.StringIO(newline="")
                writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\r\n")
                writer.writeheader()
                for s in rows:
                    writer.writerow({"name": s.name, "prompt": s.prompt or "", "negative_prompt": s.negative_prompt or ""})
                file = Path(target)
                file.parent.mkdir(parents=True, exist_ok=True)
                if file.is_file():
                    shutil.copy2(file, file.with_name(file.name + ".bak"))
                # utf-8-sig as A1111 writes it, so spreadsheet programs read non-ASCII text correctly.
                atomic_write_text(file, "\ufeff" + buf.getvalue())


# --- the instance's database -----------------------------------------------------------------------------
_default: StyleDatabase | None = None
_default_key: tuple[str, ...] | None = None
_default_lock = threading.Lock()


def style_files() -> list[Path]:
    """``--styles-file`` values, else ``<data-dir>/styles.csv`` (A1111's default)."""
    from modules import shared

    given = getattr(shared.cmd_opts, "styles_file", None) or []
    if isinstance(given, (str, Path)):
        given = [given]
    if given:
        return [Path(g) if Path(g).is_absolute() else shared.paths.data_dir / g for g in given]
    return [shared.paths.data_dir / "styles.csv"]


def default_database() -> StyleDatabase:
    """This instance's styles (A1111's ``shared.prompt_styles``), re-created when the files change."""
    global _default, _default_key
    files = style_files()
    key = tuple(str(f) for f in files)
    with _default_lock:
        if _default is None or _default_key != key:
            _default = StyleDatabase(files)
            _default_key = key
        return _default
