"""Extension hooks around the creation of the page's Gradio blocks (A1111's before/after_component).

While `component_hooks()` is active on a thread, every Gradio component or layout block that thread
creates is announced to extensions: `scripts.before_component(block, **kwargs)` just before its
constructor runs and `scripts.after_component(block, **kwargs)` just after (each also runs the
`script_callbacks` on_before/after_component callbacks and, inside a txt2img/img2img tab, that tab's
scripts, see `tab_scripts`). `kwargs` are the constructor's arguments, positional ones named, with
the defaults filled in: `kwargs["elem_id"]` is always there, and so are `label` and `value` for every
component that takes them (A1111 handed extensions its components' base-class arguments, which
carried them too). That is how extensions attach their own controls to Easel's widgets, e.g. a
button after the one with elem_id "txt2img_generate". A block's after-hook runs once it exists, so
what a hook creates lands beside it in the enclosing layout.

Gradio 6 builds every component and layout through `ComponentMeta`, so the hook is a `__call__` on
that metaclass, present only while some thread builds a page and acting only on that thread:
components made later (event handlers return `gr.Button(visible=...)` updates) are not announced.
A hook that raises is reported with its extension's name and skipped by `modules.scripts`; a failure
of the dispatch itself is logged and never stops the page from being built.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Iterator
from typing import Any

from gradio.component_meta import ComponentMeta
from gradio.components.dropdown import DefaultValue

log = logging.getLogger(__name__)

_lock = threading.Lock()
_building: dict[int, int] = {}
"""thread id -> how many `component_hooks()` contexts that thread has entered"""
_local = threading.local()
_signatures: dict[type, inspect.Signature | None] = {}


def _elem_ids_under_construction() -> list[str]:
    stack = getattr(_local, "elem_ids", None)
    if stack is None:
        stack = _local.elem_ids = []
    return stack


def _signature(cls: type) -> inspect.Signature | None:
    if cls not in _signatures:
        try:
            _signatures[cls] = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            _signatures[cls] = None
    return _signatures[cls]


def constructor_kwargs(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every argument of `cls(*args, **kwargs)` by name, defaults included; `elem_id` always present."""
    sig = _signature(cls)
    out: dict[str, Any] = {}
    bound = None
    if sig is not None:
        try:
            bound = sig.bind_partial(None, *args, **kwargs)  # None stands for self
        except TypeError:
            bound = None
    if bound is None:
        out.update(kwargs)
    else:
        given = set(bound.arguments)
        bound.apply_defaults()
        self_name = next(iter(sig.parameters))
        for name, value in bound.arguments.items():
            if name == self_name:
                continue
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                out.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                # Gradio's "first choice" sentinel means no value was given.
                out[name] = None if name not in given and isinstance(value, DefaultValue) else value
    out.setdefault("elem_id", None)
    return out


def _announce(which: str, component: Any, kwargs: dict[str, Any]) -> None:
    from modules import scripts

    try:
        getattr(scripts, which)(component, **kwargs)
    except Exception:
        log.exception("%s hooks failed for %s (elem_id %r)", which, type(component).__name__, kwargs.get("elem_id"))


def _hooked_call(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """`ComponentMeta.__call__` while hooks are on: before-hooks, construction, after-hooks."""
    if threading.get_ident() not in _building:
        return type.__call__(cls, *args, **kwargs)
    named = constructor_kwargs(cls, args, kwargs)
    elem_id = named.get("elem_id")
    stack = _elem_ids_under_construction()
    # A block its outer widget makes under the same id (InputAccordion's accordion) is that widget,
    # already announced: extensions see each elem_id once.
    announce = not (elem_id is not None and elem_id in stack)
    component = cls.__new__(cls) if cls.__new__ is object.__new__ else cls.__new__(cls, *args, **kwargs)
    if announce:
        _announce("before_component", component, named)
    stack.append(elem_id)
    try:
        if isinstance(component, cls):
            component.__init__(*args, **kwargs)
    finally:
        stack.pop()
    if announce:
        _announce("after_component", component, named)
    return component


@contextlib.contextmanager
def component_hooks() -> Iterator[None]:
    """Announce the Gradio blocks this thread creates inside the block to extensions; undone on exit."""
    ident = threading.get_ident()
    with _lock:
        if not _building:
            ComponentMeta.__call__ = _hooked_call  # type: ignore[method-assign,assignment]
        _building[ident] = _building.get(ident, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _building[ident] -= 1
            if not _building[ident]:
                del _building[ident]
            if not _building and "__call__" in ComponentMeta.__dict__:
                del ComponentMeta.__call__


def hooks_active() -> bool:
    """True while creating a component on this thread announces it."""
    return threading.get_ident() in _building and "__call__" in ComponentMeta.__dict__


@contextlib.contextmanager
def tab_scripts(runner: Any) -> Iterator[None]:
    """Inside the block the scripts of `runner` (a tab's ScriptRunner) also get the hooks, as A1111's
    `scripts.scripts_current` gives them to the scripts of the tab being built."""
    from modules import scripts

    previous = scripts.scripts_current
    scripts.scripts_current = runner
    try:
        yield
    finally:
        scripts.scripts_current = previous
