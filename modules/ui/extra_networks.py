"""The card pages (Lora / Textual Inversion / Checkpoints) as tabs beside "Generation", A1111 1.x style.

The cards' HTML and the file listings are in `modules.ui_extra_networks`; clicks and the search box
are handled in the browser by ``javascript/extra-networks.js``. A checkpoint card switches the
checkpoint through one hidden field and button for the whole page (`CheckpointSwitch`), which does
what choosing it in the top bar's dropdown does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules import ui_extra_networks
from modules.ui.common import REFRESH_SYMBOL
from modules.ui_components import ToolButton

log = logging.getLogger(__name__)

CHECKPOINT_FIELD_ID = "extra_networks_checkpoint"
CHECKPOINT_BUTTON_ID = "extra_networks_checkpoint_apply"


@dataclass
class ExtraNetworksPages:
    tab: str
    cards: dict[str, Any] = field(default_factory=dict)
    searches: dict[str, Any] = field(default_factory=dict)
    refresh_buttons: dict[str, Any] = field(default_factory=dict)
    tabs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ExtraNetworksPages:
        """One gr.Tab per page; call inside the `gr.Tabs` that holds the "Generation" tab."""
        tab = self.tab
        for page, title in ui_extra_networks.PAGES.items():
            with gr.Tab(title, id=f"{tab}_{page}", elem_id=f"{tab}_{page}_tab",
                        elem_classes="extra-network-tab") as page_tab:
                with gr.Row(elem_classes="extra-network-controls", equal_height=True):
                    search = gr.Textbox(label="Search", show_label=False, placeholder="Search...",
                                        elem_id=f"{tab}_{page}_extra_search", elem_classes="extra-network-search",
                                        container=False, scale=5, lines=1, max_lines=1)
                    refresh = ToolButton(REFRESH_SYMBOL, elem_id=f"{tab}_{page}_extra_refresh",
                                         tooltip="Rescan the folder")
                cards = gr.HTML(ui_extra_networks.refresh_page(tab, page), elem_id=f"{tab}_{page}_cards_html",
                                elem_classes="extra-network-pane")
            self.cards[page], self.searches[page] = cards, search
            self.refresh_buttons[page], self.tabs[page] = refresh, page_tab

            def rescan(query: str, page: str = page) -> str:
                return ui_extra_networks.refresh_page(tab, page, query or "", rescan=True)

            def show(query: str, page: str = page) -> str:
                return ui_extra_networks.refresh_page(tab, page, query or "")

            refresh.click(fn=rescan, inputs=[search], outputs=[cards], show_progress="hidden",
                          concurrency_limit=None, api_name=False)
            page_tab.select(fn=show, inputs=[search], outputs=[cards], show_progress="hidden",
                            concurrency_limit=None, api_name=False)
        return self


@dataclass
class CheckpointSwitch:
    """The hidden field + button a checkpoint card fills and clicks."""

    title: Any = None
    button: Any = None
    event: Any = None

    def build(self, quick: Any) -> CheckpointSwitch:
        from modules.ui import quicksettings

        # In the page (so the script can fill and click them) but never shown: style.css hides the row.
        with gr.Row(elem_id="extra_networks_hidden", elem_classes="easel-hidden"):
            self.title = gr.Textbox(label="Checkpoint to switch to", elem_id=CHECKPOINT_FIELD_ID, visible="hidden")
            self.button = gr.Button("Switch checkpoint", elem_id=CHECKPOINT_BUTTON_ID, visible="hidden")

        def switch(title: str) -> tuple[Any, str]:
            from modules import shared

            status = quicksettings.select_checkpoint(title)
            mm = shared.model_manager
            chosen = mm.get_checkpoint(title) if mm is not None and title else None
            # The chosen one, even while the previous model is still the loaded one.
            value = chosen.title if chosen is not None else quicksettings.current_checkpoint_title()
            return gr.Dropdown(choices=quicksettings.checkpoint_titles(), value=value), status

        self.event = self.button.click(fn=switch, inputs=[self.title], outputs=[quick.checkpoint, quick.status],
                                       show_progress="hidden", concurrency_limit=None, api_name=False)
        return self
