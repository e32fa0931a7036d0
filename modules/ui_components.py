"""Small layout and input components under the names A1111 extensions import.

Extensions build their UIs with `FormRow`, `FormGroup`, `ToolButton`, `InputAccordion` and
`ResizeHandleRow` from this module, so these names and their constructor arguments must keep working.
They are thin subclasses of Gradio's own blocks: the browser renders them as the Gradio block named by
`get_block_name`, and the extra CSS classes give them the compact look of a settings form.
"""

from __future__ import annotations

import inspect
from typing import Any

import gradio as gr


def _with_class(kwargs: dict[str, Any], cls: str) -> dict[str, Any]:
    classes = kwargs.get("elem_classes") or []
    if isinstance(classes, str):
        classes = [classes]
    kwargs["elem_classes"] = [*classes, cls]
    return kwargs


def _config_signature(cls: type, base: type) -> type:
    """Give `cls.__init__` the signature of the Gradio class it extends.

    Gradio serialises a block's properties by reading the parameter names of `type(self).__init__`;
    a subclass whose constructor is `(value, *args, **kwargs)` would send no elem_id, classes or
    scale to the browser. With the base signature every property the base knows is sent.
    """
    cls.__init__.__signature__ = inspect.signature(base.__init__)  # type: ignore[attr-defined]
    return cls


class FormComponent:
    """Marker mixin: a component that sits in a form row (A1111 name)."""

    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self) -> type[gr.Row] | None:
        return FormRow


class ToolButton(gr.Button, FormComponent):
    """A square icon button that sits beside an input (🎲, ♻️, 🔄, ⇅ ...)."""

    def __init__(self, value: str = "", *args: Any, **kwargs: Any) -> None:
        # A1111's ToolButton takes a tooltip; Gradio buttons have none, so it is kept for the page script.
        self.tooltip = kwargs.pop("tooltip", None)
        kwargs = _with_class(kwargs, "tool")
        kwargs.setdefault("min_width", 40)
        kwargs.setdefault("scale", 0)
        super().__init__(value, *args, **kwargs)

    def get_block_name(self) -> str:
        return "button"


class ResizeHandleRow(gr.Row):
    """A row whose two columns share the width (the output column keeps a readable minimum)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**_with_class(kwargs, "resize-handle-row"))

    def get_block_name(self) -> str:
        return "row"


class FormRow(gr.Row, FormComponent):
    """A row of form inputs without the gaps Gradio puts between stand-alone blocks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**_with_class(kwargs, "form-row"))

    def get_block_name(self) -> str:
        return "row"


class FormColumn(gr.Column, FormComponent):
    def get_block_name(self) -> str:
        return "column"


class FormGroup(gr.Group, FormComponent):
    def get_block_name(self) -> str:
        return "group"


class FormHTML(gr.HTML, FormComponent):
    def get_block_name(self) -> str:
        return "html"


class FormColorPicker(gr.ColorPicker, FormComponent):
    def get_block_name(self) -> str:
        return "colorpicker"


class DropdownMulti(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "multiselect": True})

    def get_block_name(self) -> str:
        return "dropdown"


class DropdownEditable(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "allow_custom_value": True})

    def get_block_name(self) -> str:
        return "dropdown"


class InputAccordion(gr.Checkbox):
    """An accordion that is also a boolean input: its value says whether it is open.

    Scripts use it as `with InputAccordion(False, label="Hires. fix") as enable:` and pass `enable`
    as an input; the value follows the user's opening and closing of the accordion, and setting the
    value (e.g. from pasted parameters) opens or closes it.
    """

    global_index = 0

    def __init__(self, value: bool, **kwargs: Any) -> None:
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        checkbox_args = {
            **kwargs,
            "elem_id": f"{self.accordion_id}-checkbox",
            "visible": False,
        }
        super().__init__(value, **checkbox_args)
        accordion_args = {
            "label": kwargs.get("label", "Accordion"),
            "elem_id": self.accordion_id,
            "elem_classes": ["input-accordion"],
            "open": bool(value),
        }
        self.accordion = gr.Accordion(**accordion_args)
        self.accordion.expand(fn=lambda: True, outputs=[self], queue=False, show_progress="hidden")
        self.accordion.collapse(fn=lambda: False, outputs=[self], queue=False, show_progress="hidden")
        self.change(fn=lambda v: gr.Accordion(open=bool(v)), inputs=[self], outputs=[self.accordion],
                    queue=False, show_progress="hidden")

    def extra(self) -> gr.Column:
        """A column in the accordion's header area for extra controls (kept for A1111 scripts)."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self) -> InputAccordion:
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self) -> str:
        return "checkbox"


for _cls, _base in ((ToolButton, gr.Button), (ResizeHandleRow, gr.Row), (FormRow, gr.Row),
                    (DropdownMulti, gr.Dropdown), (DropdownEditable, gr.Dropdown), (InputAccordion, gr.Checkbox)):
    _config_signature(_cls, _base)
