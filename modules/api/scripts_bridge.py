"""Where API requests meet the script system (A1111's selectable and always-on scripts).

Everything the API needs from scripts goes through the functions here: the lists for
`/sdapi/v1/scripts` and `/script-info`, and `resolve_scripts`, which checks a request's
`script_name` / `alwayson_scripts` (titles in any case; an unknown one is a 422 naming the known
ones) and `attach`, which gives the processing object the tab's runner and an argument list as
A1111's API builds it: every script's component defaults, the selected script's index in slot 0,
the request's `script_args` and each always-on script's `args` over their slices.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from modules.api.errors import ApiError


def _runner(is_img2img: bool) -> Any:
    """The script runner of a tab (`modules.scripts.scripts_txt2img` / `scripts_img2img`), or None."""
    if importlib.util.find_spec("modules.scripts") is None:
        return None
    module = importlib.import_module("modules.scripts")
    return getattr(module, "scripts_img2img" if is_img2img else "scripts_txt2img", None)


def _scripts_of(runner: Any, attr: str) -> list[Any]:
    return list(getattr(runner, attr, None) or []) if runner is not None else []


def _title(script: Any) -> str:
    title = script.title() if callable(getattr(script, "title", None)) else getattr(script, "name", "")
    return str(title or "")


def script_names(is_img2img: bool) -> list[str]:
    """Lower-case titles of the selectable scripts of a tab (A1111's `/scripts` lists)."""
    return [_title(s).lower() for s in _scripts_of(_runner(is_img2img), "selectable_scripts")]


def script_info() -> list[dict[str, Any]]:
    """`/script-info`: every script of both tabs with its arguments (label, value, range, choices)."""
    out: list[dict[str, Any]] = []
    for is_img2img in (False, True):
        runner = _runner(is_img2img)
        if runner is None or not getattr(runner, "scripts", None):
            continue
        ensure = getattr(runner, "ensure_inputs", None)
        if ensure is not None:
            ensure()
        for script in _scripts_of(runner, "scripts"):
            api_info = getattr(script, "api_info", None)
            if api_info is not None:
                info = api_info if isinstance(api_info, dict) else getattr(api_info, "__dict__", {})
                out.append(dict(info))
    return out


@dataclass
class ScriptSelection:
    """What a request asked of the script system, checked against the scripts that exist."""

    runner: Any = None
    script: Any = None
    script_args: list[Any] = field(default_factory=list)
    alwayson: dict[str, Any] = field(default_factory=dict)


def _find(scripts: list[Any], name: str) -> Any:
    wanted = name.strip().lower()
    return next((s for s in scripts if _title(s).lower() == wanted), None)


def resolve_scripts(script_name: str | None, script_args: list[Any] | None, alwayson_scripts: dict[str, Any] | None,
                    *, is_img2img: bool) -> ScriptSelection:
    """Check the scripts a request names; 422 naming an unknown one and the known ones."""
    runner = _runner(is_img2img)
    tab = "img2img" if is_img2img else "txt2img"
    selection = ScriptSelection(runner=runner, script_args=list(script_args or []))
    if script_name:
        selectable = _scripts_of(runner, "selectable_scripts")
        script = _find(selectable, script_name)
        if script is None:
            known = ", ".join(_title(s) for s in selectable) or "none"
            raise ApiError(422, f"Script '{script_name}' not found; {tab} scripts: {known}", "ScriptNotFound")
        selection.script = script
    for title, payload in (alwayson_scripts or {}).items():
        alwayson = [s for s in _scripts_of(runner, "scripts") if getattr(s, "alwayson", False)]
        script = _find(alwayson, title)
        if script is None:
            known = ", ".join(_title(s) for s in alwayson) or "none"
            raise ApiError(422, f"always-on script '{title}' not found; {tab} always-on scripts: {known}",
                           "ScriptNotFound")
        args = payload.get("args", []) if isinstance(payload, dict) else []
        selection.alwayson[_title(script)] = {"script": script, "args": list(args)}
    return selection


def attach(p: Any, selection: ScriptSelection) -> None:
    """Give the processing object its scripts: the runner lays out the argument vector
    (`prepare_api_run`); always-on scripts then run for the request even when it names none."""
    if selection.runner is None or not getattr(selection.runner, "scripts", None):
        return
    prepare = getattr(selection.runner, "prepare_api_run", None)
    if prepare is None:
        raise ApiError(501, "the script system cannot take API requests (no prepare_api_run)", "ScriptsUnavailable")
    prepare(p, selection.script, selection.script_args,
            {title: entry["args"] for title, entry in selection.alwayson.items()})
