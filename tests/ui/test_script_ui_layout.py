"""How a tab lays out its scripts' inputs (ScriptRunner.prepare_ui / setup_ui_for_section / setup_ui)
and how the values the page sends reach the scripts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from modules import scripts


class SeedSection(scripts.Script):
    section = "seed"

    def title(self) -> str:
        return "Seed section"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return [gr.Checkbox(label="Seed extra", value=True)]

    def process(self, p: Any, flag: bool) -> None:
        p.calls.append(("seed section", flag))


class Accordion(scripts.Script):
    def title(self) -> str:
        return "Accordion"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        with gr.Accordion("Accordion", open=False):
            level = gr.Slider(0, 10, value=2, label="Level")
            name = gr.Textbox(label="Name", value="x")
        return [level, name]

    def process(self, p: Any, level: float, name: str) -> None:
        p.calls.append(("accordion", level, name))


class HooksOnly(scripts.Script):
    def title(self) -> str:
        return "Hooks only"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible


class Pick(scripts.Script):
    def title(self) -> str:
        return "Pick"

    def ui(self, is_img2img: bool) -> list[Any]:
        return [gr.Textbox(label="Pick text", value="a"), gr.Number(label="Pick n", value=1)]

    def run(self, p: Any, text: str, n: float) -> Any:
        p.calls.append(("pick", text, n))
        return "processed by Pick"


class Other(scripts.Script):
    def title(self) -> str:
        return "Other"

    def ui(self, is_img2img: bool) -> list[Any]:
        return [gr.Checkbox(label="Other flag")]


class Img2ImgOnly(scripts.Script):
    def title(self) -> str:
        return "Img2img only"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> scripts.ScriptRunner:
    data = [scripts.ScriptClassData(cls, f"/nowhere/{cls.__name__}.py", "/nowhere", None)  # type: ignore[arg-type]
            for cls in (Pick, SeedSection, Accordion, HooksOnly, Other, Img2ImgOnly)]
    monkeypatch.setattr(scripts, "scripts_data", data)
    r = scripts.ScriptRunner()
    r.initialize_scripts(is_img2img=False)
    with gr.Blocks():
        r.prepare_ui()
        gr.Number(label="Seed")  # the page's own settings come first ...
        r.setup_ui_for_section("seed")  # ... with a section's scripts where that section is
        with gr.Column(elem_id="txt2img_script_container"):
            r.setup_ui()
    return r


def _by_title(r: scripts.ScriptRunner, title: str) -> scripts.Script:
    script = r.script(title)
    assert script is not None
    return script


def test_inputs_follow_page_order_with_the_dropdown_in_slot_0(runner: scripts.ScriptRunner) -> None:
    dropdown = runner.inputs[0]
    assert isinstance(dropdown, gr.Dropdown) and dropdown.elem_id == "script_list" and dropdown.label == "Script"
    assert [c[0] for c in dropdown.choices] == ["None", "Pick", "Other"]  # Img2img only: not on this tab
    seed, acc, hooks, pick, other = (_by_title(runner, t) for t in ("Seed section", "Accordion", "Hooks only",
                                                                      "Pick", "Other"))
    assert (seed.args_from, seed.args_to) == (1, 2)  # created first, at its section
    assert (acc.args_from, acc.args_to) == (2, 4)
    assert (hooks.args_from, hooks.args_to) == (4, 4)
    assert (pick.args_from, pick.args_to) == (4, 6)
    assert (other.args_from, other.args_to) == (6, 7)
    assert len(runner.inputs) == 7
    for script in (seed, acc, pick, other):
        assert runner.inputs[script.args_from:script.args_to] == script.controls
    assert [c.label for c in runner.inputs[1:]] == ["Seed extra", "Level", "Name", "Pick text", "Pick n", "Other flag"]


def test_groups_selectable_hidden_always_on_shown_and_no_empty_box(runner: scripts.ScriptRunner) -> None:
    assert _by_title(runner, "Accordion").group.visible is True
    assert _by_title(runner, "Hooks only").group.visible is False  # nothing to show: no empty box
    assert _by_title(runner, "Pick").group.visible is False
    assert _by_title(runner, "Other").group.visible is False
    # ui-config.json choosing a script shows its controls from the start.
    runner.dropdown.init_field("Other")
    assert _by_title(runner, "Other").group.visible is True and _by_title(runner, "Pick").group.visible is False
    runner.dropdown.init_field("None")
    assert _by_title(runner, "Other").group.visible is False


def test_page_values_reach_the_selected_script_and_the_always_on_hooks(runner: scripts.ScriptRunner) -> None:
    values = [runner.selectable_scripts.index(_by_title(runner, "Pick")) + 1, False, 7, "mine", "hello", 3, True]
    p = SimpleNamespace(calls=[], script_args=None, scripts=None)
    runner.prepare_ui_run(p, tuple(values))
    assert p.scripts is runner and p.script_args == values
    runner.process(p)
    assert p.calls == [("seed section", False), ("accordion", 7, "mine")]
    assert runner.run(p, *p.script_args) == "processed by Pick"
    assert p.calls[-1] == ("pick", "hello", 3)
    p.script_args[0] = 0
    assert runner.run(p, *p.script_args) is None  # "None" chosen: the plain generation runs


def test_script_field_of_pasted_parameters(runner: scripts.ScriptRunner) -> None:
    field = next(f for f in runner.infotext_fields if f[0] is runner.dropdown)
    assert field[1]({"Script": "Pick"}) == "Pick"
    assert field[1]({"Steps": "20"}) == "None"
    assert field[1]({"Script": "Not installed here"}) == "None"


def test_a_second_build_lays_out_afresh(runner: scripts.ScriptRunner) -> None:
    with gr.Blocks():
        runner.prepare_ui()
        runner.setup_ui()
    acc = _by_title(runner, "Accordion")
    seed = _by_title(runner, "Seed section")
    assert (seed.args_from, acc.args_from) == (1, 2)  # no seed section this time: it joins the rest
    assert len(runner.inputs) == 7 and runner.inputs[0] is runner.dropdown
