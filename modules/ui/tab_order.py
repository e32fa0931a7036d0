"""The page's top-level tabs in the order and visibility the settings ask for.

`ui_tab_order` names tabs to put first, in that order; the others keep their place after them.
`hidden_tabs` hides tabs (they are still built, so what links to them keeps working). Settings is
never hidden: it is where the choice is undone. The page is built once per server start, so both
take effect after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules import shared

SETTINGS = "Settings"


@dataclass(eq=False)
class PageTab:
    title: str
    tab_id: str
    build: Callable[[], Any]
    shown: bool = True


def arrange(tabs: list[PageTab]) -> list[PageTab]:
    """`tabs` sorted by ui_tab_order (a stable sort), with `shown` set from hidden_tabs.

    Also records their titles in `shared.tab_names`, the choices of both settings."""
    shared.tab_names = [t.title for t in tabs]
    order = {title: i for i, title in enumerate(shared.opts.ui_tab_order or [])}
    hidden = set(shared.opts.hidden_tabs or []) - {SETTINGS}
    arranged = sorted(tabs, key=lambda t: order.get(t.title, len(order)))
    for tab in arranged:
        tab.shown = tab.title not in hidden
    return arranged


def choices(key: str, *, hideable: bool = False) -> dict[str, list[str]]:
    """component_args for ui_tab_order / hidden_tabs: the page's tab titles, plus any saved title
    the page no longer has (an extension's tab, say), so the saved value still shows."""
    names = [n for n in shared.tab_names if not (hideable and n == SETTINGS)]
    saved = [v for v in getattr(shared.opts, key, None) or [] if v not in names]
    return {"choices": [*names, *saved]}
