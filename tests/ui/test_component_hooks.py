"""before_component / after_component while the page is built (modules/ui/component_hooks.py)."""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr
import pytest
from gradio.component_meta import ComponentMeta

from modules import errors, script_callbacks, scripts
from modules.ui.component_hooks import component_hooks, constructor_kwargs, tab_scripts
from modules.ui_components import InputAccordion


@pytest.fixture
def events():
    """(phase, component type, kwargs) of every announced block; callbacks removed afterwards."""
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def before(component: Any, **kwargs: Any) -> None:
        seen.append(("before", type(component).__name__, kwargs))

    def after(component: Any, **kwargs: Any) -> None:
        seen.append(("after", type(component).__name__, kwargs))

    script_callbacks.on_before_component(before)
    script_callbacks.on_after_component(after)
    yield seen
    script_callbacks.remove_callbacks_for_function(before)
    script_callbacks.remove_callbacks_for_function(after)


def test_hooks_see_elem_id_label_and_value(events) -> None:
    with component_hooks(), gr.Blocks():
        with gr.Row(elem_id="hook_row"):
            slider = gr.Slider(1, 10, value=3, label="Steps", elem_id="hook_steps")
        gr.Textbox(label="no id")
    ours = [e for e in events if e[1] != "Form"]  # Gradio wraps inputs in Form blocks of its own
    # A layout's after-hook runs once it exists, before its children are made inside it.
    assert [(phase, kind, kw["elem_id"]) for phase, kind, kw in ours] == [
        ("before", "Row", "hook_row"), ("after", "Row", "hook_row"), ("before", "Slider", "hook_steps"),
        ("after", "Slider", "hook_steps"), ("before", "Textbox", None), ("after", "Textbox", None)]
    after_slider = ours[3][2]
    # Positional arguments are named and defaults filled in, as A1111's component kwargs were.
    assert after_slider["minimum"] == 1 and after_slider["maximum"] == 10
    assert after_slider["label"] == "Steps" and after_slider["value"] == 3
    assert ours[5][2]["value"] is None and ours[5][2]["label"] == "no id"
    assert slider.value == 3 and slider.elem_id == "hook_steps"


def test_hooks_are_removed_after_the_build(events) -> None:
    with component_hooks(), gr.Blocks():
        gr.Button("inside", elem_id="hook_inside")
    assert "__call__" not in ComponentMeta.__dict__
    with gr.Blocks():
        gr.Button("outside", elem_id="hook_outside")
    ids = {kw["elem_id"] for _, _, kw in events}
    assert "hook_inside" in ids and "hook_outside" not in ids


def test_only_the_building_thread_is_announced(events) -> None:
    made: list[Any] = []

    def elsewhere() -> None:
        made.append(gr.Button("update", elem_id="hook_other_thread", render=False))

    with component_hooks(), gr.Blocks():
        gr.Button("page", elem_id="hook_page")
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    ids = {kw["elem_id"] for _, _, kw in events}
    assert made and "hook_page" in ids and "hook_other_thread" not in ids


def test_a_raising_hook_is_reported_and_skipped(events) -> None:
    def broken(component: Any, **kwargs: Any) -> None:
        raise RuntimeError("hook broken on purpose")

    errors.clear()
    script_callbacks.on_after_component(broken)
    try:
        with component_hooks(), gr.Blocks():
            button = gr.Button("still made", elem_id="hook_survives")
    finally:
        script_callbacks.remove_callbacks_for_function(broken)
    assert button.value == "still made"
    assert ("after", "Button", "hook_survives") in [(p, k, kw["elem_id"]) for p, k, kw in events]
    reported = errors.get_exceptions()
    assert any("callbacks_after_component" in e["message"] and "hook broken on purpose" in e["traceback"]
               for e in reported)


def test_input_accordion_is_announced_once(events) -> None:
    with component_hooks(), gr.Blocks(), InputAccordion(False, label="Extra", elem_id="hook_acc"):
        gr.Textbox(label="inside", elem_id="hook_acc_text")
    after = [(kind, kw["elem_id"]) for phase, kind, kw in events if phase == "after"]
    assert after.count(("InputAccordion", "hook_acc")) == 1
    assert not [a for a in after if a[1] == "hook_acc" and a[0] != "InputAccordion"]


class _Attacher(scripts.Script):
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.on_after_component(self.attach, elem_id="hook_generate")

    def title(self) -> str:
        return "Attacher"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def attach(self, on: scripts.OnComponent) -> None:
        self.attached_to = on.component
        gr.Button("extra", elem_id="hook_attached")

    def before_component(self, component: Any, **kwargs: Any) -> None:
        self.seen.append(kwargs["elem_id"])

    def after_component(self, component: Any, **kwargs: Any) -> None:
        if kwargs["elem_id"] == "hook_fails":
            raise ValueError("script hook broken on purpose")


def test_tab_scripts_get_the_hooks_and_attach_by_elem_id() -> None:
    runner = scripts.ScriptRunner()
    script = _Attacher()
    script.filename = "attacher.py"
    runner.scripts = [script]
    runner.alwayson_scripts = [script]
    errors.clear()
    with component_hooks(), gr.Blocks():
        with tab_scripts(runner), gr.Row() as row:
            generate = gr.Button("Generate", elem_id="hook_generate")
            gr.Button("fails", elem_id="hook_fails")
        gr.Button("outside the tab", elem_id="hook_not_in_tab")
    assert scripts.scripts_current is None
    assert script.attached_to is generate
    ids = [c.elem_id for c in row.children]
    assert ids == ["hook_generate", "hook_attached", "hook_fails"]  # the extra button follows its target
    assert "hook_generate" in script.seen and "hook_not_in_tab" not in script.seen
    assert any("script hook broken on purpose" in e["traceback"] for e in errors.get_exceptions())


def test_constructor_kwargs_names_positional_arguments() -> None:
    kw = constructor_kwargs(gr.Dropdown, (["a", "b"],), {"label": "Pick"})
    assert kw["choices"] == ["a", "b"] and kw["label"] == "Pick" and kw["elem_id"] is None
    assert kw["value"] is None  # not given (Gradio's internal "first choice" marker is not passed on)
    assert constructor_kwargs(gr.Button, ("Go",), {"elem_id": "b"})["value"] == "Go"
