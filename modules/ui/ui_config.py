"""`ui-config.json`: per-component UI defaults, as A1111 keeps them.

Keys are `"<tab>/<label>/<field>"`, e.g. `"txt2img/Sampling steps/value": 20` or
`"img2img/Width/maximum": 2048`. On start every labelled input's current default, minimum, maximum
and step are recorded (missing keys are added and the file written), and values already in the file
replace the built-in ones, so users tune the page by editing one JSON file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modules.options import atomic_write_text

log = logging.getLogger(__name__)

FIELDS = ("value", "minimum", "maximum", "step")


def _is_input(component: Any) -> bool:
    import gradio as gr

    return isinstance(component, (gr.Slider, gr.Number, gr.Checkbox, gr.Dropdown, gr.Radio, gr.Textbox,
                                  gr.CheckboxGroup))


class UiConfig:
    """Reads, fills and writes ui-config.json; `apply` binds it to the components of one tab."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {}
        self.changed = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.changed = True
            return
        try:
            loaded = json.loads(self.path.read_text(encoding="utf8"))
        except (OSError, json.JSONDecodeError) as e:
            log.error("%s could not be read (%s); using the built-in UI defaults", self.path, e)
            return
        if isinstance(loaded, dict):
            self.data = loaded
        else:
            log.error("%s does not hold a JSON object; using the built-in UI defaults", self.path)

    def value(self, key: str, default: Any) -> Any:
        """The configured value for `key`, recording `default` when the key is new."""
        if key not in self.data:
            self.data[key] = default
            self.changed = True
            return default
        return self.data[key]

    def apply(self, prefix: str, component: Any) -> None:
        """Record and apply default/min/max/step for one labelled input component."""
        import gradio as gr

        label = getattr(component, "label", None)
        if not label or not _is_input(component) or getattr(component, "interactive", None) is False:
            return
        if getattr(component, "visible", True) is False:
            return
        for field in FIELDS:
            if not hasattr(component, field):
                continue
            current = getattr(component, field)
            if field != "value" and current is None:
                continue
            if field == "value" and callable(current):
                continue
            if field == "value" and current is None and isinstance(component, gr.Textbox):
                current = ""
            key = f"{prefix}/{label}/{field}"
            wanted = self.value(key, current)
            if wanted != current:
                self._set(component, field, wanted)

    @staticmethod
    def _set(component: Any, field: str, wanted: Any) -> None:
        import gradio as gr

        if field == "value" and isinstance(component, (gr.Dropdown, gr.Radio)):
            choices = [c[1] if isinstance(c, (tuple, list)) else c for c in (component.choices or [])]
            values = wanted if isinstance(wanted, list) else [wanted]
            if choices and not getattr(component, "allow_custom_value", False) and any(
                    v not in choices for v in values):
                log.warning("ui-config: %r is not a choice of %r; keeping %r", wanted, component.label, component.value)
                return
        setattr(component, field, wanted)
        init_field = getattr(component, "init_field", None)
        if field == "value" and callable(init_field):
            init_field(wanted)  # e.g. the Script dropdown shows the chosen script's controls

    def apply_tree(self, prefix: str, block: Any) -> None:
        """Apply to every input under a layout block (a tab), depth first, in page order."""
        for child in getattr(block, "children", None) or []:
            self.apply(prefix, child)
            self.apply_tree(prefix, child)

    def save(self) -> None:
        """Write the file if keys were added (first start, new components)."""
        if not self.changed:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.data, indent=4, ensure_ascii=False))
            self.changed = False
        except OSError as e:
            log.warning("could not write %s: %s", self.path, e)
