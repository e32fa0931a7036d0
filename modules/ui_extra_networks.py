"""The extra-networks pages of txt2img/img2img: cards for LoRAs, embeddings and checkpoints.

Each page lists the files of one kind as cards (preview picture, name, a tooltip with what the file
says about itself). Clicking a card is handled in the browser (``javascript/extra-networks.js``):
LoRA and embedding cards add their prompt text to the tab's prompt (or take it out again when it is
already there), checkpoint cards switch the checkpoint through the page's hidden checkpoint field.
The search box filters cards in the browser by the words in their ``data-search`` attribute; the
same rule (`matches`) hides cards when a page is rendered with a query already typed.

Previews are the pictures users keep beside their model files, ``<stem>.png``,
``<stem>.preview.png`` (and .jpg / .jpeg / .webp / .gif). They are served by
``/sd_extra_networks/thumb?filename=...``, which answers only for such a picture of a file that is
listed on one of the pages, and only to a browser that passed the page's login.

A user's notes about a file live in ``<stem>.json`` beside it, as in A1111: "activation text" (added
to the prompt with the LoRA tag), "preferred weight" (the tag's weight), "negative text" (added to
the negative prompt) and "description" (shown on the card's tooltip).
"""

from __future__ import annotations

import html
import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse

log = logging.getLogger(__name__)

__all__ = [
    "PAGES",
    "THUMB_ROUTE",
    "ExtraNetworkItem",
    "add_routes",
    "checkpoint_items",
    "embedding_items",
    "find_preview",
    "format_weight",
    "is_allowed_preview",
    "items_for_page",
    "listed_model_files",
    "lora_items",
    "lora_prompt_name",
    "lora_tag",
    "lora_tooltip",
    "matches",
    "preview_candidates",
    "read_user_metadata",
    "refresh_page",
    "render_cards",
    "search_terms",
    "thumb_url",
]

THUMB_ROUTE = "/sd_extra_networks/thumb"
PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
PAGES: dict[str, str] = {"lora": "Lora", "textual_inversion": "Textual Inversion", "checkpoints": "Checkpoints"}
"""page id -> tab title, in A1111's order of the card pages"""

_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                ".gif": "image/gif"}


@dataclass
class ExtraNetworkItem:
    """One card."""

    page: str
    name: str
    filename: str
    prompt: str = ""
    """text a click adds to the prompt (empty for checkpoints)"""
    negative_prompt: str = ""
    checkpoint: str = ""
    """checkpoint title a click switches to (checkpoint cards only)"""
    search: list[str] = field(default_factory=list)
    tooltip: str = ""
    preview: str | None = None
    disabled: bool = False
    """listed but not usable now (an embedding of another model family)"""


# --- pure helpers ------------------------------------------------------------------------------------------
def preview_candidates(model_file: str | os.PathLike) -> list[Path]:
    """Where a preview of `model_file` may be: ``<stem>.<ext>`` and ``<stem>.preview.<ext>`` beside it."""
    path = Path(model_file)
    stem = path.name if path.is_dir() else path.stem
    out = []
    for ext in PREVIEW_EXTENSIONS:
        out.append(path.with_name(stem + ext))
        out.append(path.with_name(stem + ".preview" + ext))
    return out


def find_preview(model_file: str | os.PathLike) -> Path | None:
    """The first existing preview picture of `model_file`, or None."""
    for candidate in preview_candidates(model_file):
        if candidate.is_file():
            return candidate
    return None


def is_allowed_preview(requested: str | os.PathLike, model_files: Iterable[str | os.PathLike]) -> bool:
    """True when `requested` is an existing preview picture of one of `model_files`.

    Both sides are compared as real paths, so ``..`` segments and links cannot reach anything
    that is not a picture sitting beside a listed model file.
    """
    try:
        wanted = os.path.realpath(os.fspath(requested))
    except (TypeError, ValueError):
        return False
    if Path(wanted).suffix.lower() not in PREVIEW_EXTENSIONS or not os.path.isfile(wanted):
        return False
    for model_file in model_files:
        for candidate in preview_candidates(model_file):
            if os.path.realpath(candidate) == wanted:
                return True
    return False


def format_weight(weight: float | int | str) -> str:
    """A tag weight as people write it: 1 not 1.0, 0.75 not 0.7500000001."""
    value = float(weight)
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def lora_tag(name: str, weight: float | int | str = 1) -> str:
    return f"<lora:{name}:{format_weight(weight)}>"


def lora_prompt_name(name: str, alias: str, forbidden_aliases: Iterable[str], preferred: str) -> str:
    """The name a LoRA tag uses: the alias from the file unless the setting says "Filename" or the
    alias also names another file (then only the file name reaches this one)."""
    if preferred == "Filename" or not alias or alias == name or alias in set(forbidden_aliases):
        return name
    return alias


def read_user_metadata(model_file: str | os.PathLike) -> dict[str, Any]:
    """The user's ``<stem>.json`` notes beside a model file ({} when absent or unreadable)."""
    path = Path(model_file)
    stem = path.name if path.is_dir() else path.stem
    notes = path.with_name(stem + ".json")
    if not notes.is_file():
        return {}
    try:
        data = json.loads(notes.read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        log.warning("could not read %s: %s", notes, e)
        return {}
    return data if isinstance(data, dict) else {}


def _tag_summary(metadata: dict[str, Any], limit: int = 6) -> str:
    """The most frequent training tags (kohya's ss_tag_frequency)."""
    raw = metadata.get("ss_tag_frequency")
    try:
        freq = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ""
    if not isinstance(freq, dict):
        return ""
    counts: dict[str, int] = {}
    for tags in freq.values():
        if isinstance(tags, dict):
            for tag, n in tags.items():
                try:
                    counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + int(n)
                except (TypeError, ValueError):
                    continue
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return ", ".join(tag for tag, _ in top if tag)


def lora_tooltip(name: str, filename: str, metadata: dict[str, Any], sd_version: str = "",
                 user: dict[str, Any] | None = None) -> str:
    """A short plain-text summary of a LoRA for the card's tooltip."""
    user = user or {}
    lines = [name]
    if user.get("description"):
        lines.append(str(user["description"]))
    if sd_version and sd_version != "Unknown":
        lines.append(f"Base: {sd_version}")
    labels = (("ss_output_name", "Output name"), ("ss_sd_model_name", "Trained on"),
              ("ss_base_model_version", "Base model"), ("ss_network_module", "Network"),
              ("ss_network_dim", "Dim"), ("ss_network_alpha", "Alpha"), ("ss_resolution", "Resolution"),
              ("ss_num_train_images", "Images"), ("ss_num_epochs", "Epochs"), ("ss_training_comment", "Comment"))
    for key, label in labels:
        value = metadata.get(key)
        if value not in (None, "", "None"):
            lines.append(f"{label}: {value}")
    tags = _tag_summary(metadata)
    if tags:
        lines.append(f"Tags: {tags}")
    if user.get("activation text"):
        lines.append(f"Activation text: {user['activation text']}")
    if user.get("preferred weight"):
        lines.append(f"Preferred weight: {user['preferred weight']}")
    lines.append(filename)
    return "\n".join(lines)


def search_terms(item: ExtraNetworkItem) -> str:
    """What the search box matches against: names, alias, path, all lower case."""
    return " ".join([item.name, item.filename, *item.search]).lower()


def matches(item: ExtraNetworkItem, query: str) -> bool:
    """Every word of the query occurs in the card's search terms (case does not matter)."""
    terms = search_terms(item)
    return all(word in terms for word in (query or "").lower().split())


def thumb_url(preview: str | os.PathLike) -> str:
    """The page's URL of a preview; the modification time makes an edited picture load again."""
    try:
        mtime = int(os.path.getmtime(preview))
    except OSError:
        mtime = 0
    return f"{THUMB_ROUTE}?filename={urllib.parse.quote(os.fspath(preview))}&mtime={mtime}"


def _initials(name: str) -> str:
    words = [w for w in name.replace("-", " ").replace("_", " ").split() if w]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def render_cards(items: Sequence[ExtraNetworkItem], tab: str, page: str, query: str = "") -> str:
    """The HTML of one page's cards (every value escaped; behaviour lives in the page script)."""
    esc = html.escape
    if not items:
        title = PAGES.get(page, page)
        return (f"<div class='extra-network-empty' id='{esc(tab)}_{esc(page)}_cards_empty'>No {esc(title)} files "
                "found. Put them into their models folder and press 🔄.</div>")
    cards = []
    for item in items:
        hidden = "" if matches(item, query) else " style='display:none'"
        classes = "extra-network-card" + (" card-disabled" if item.disabled else "")
        if item.preview:
            picture = (f"<img class='card-preview' src='{esc(thumb_url(item.preview))}' loading='lazy' "
                       f"alt='{esc(item.name)}'>")
        else:
            picture = f"<div class='card-preview card-no-preview'><span>{esc(_initials(item.name))}</span></div>"
        cards.append(
            f"<div class='{classes}' role='button' tabindex='0' data-tab='{esc(tab)}' data-page='{esc(page)}' "
            f"data-name='{esc(item.name)}' data-prompt='{esc(item.prompt)}' "
            f"data-neg='{esc(item.negative_prompt)}' data-checkpoint='{esc(item.checkpoint)}' "
            f"data-search='{esc(search_terms(item))}' title='{esc(item.tooltip)}'{hidden}>"
            f"{picture}<div class='card-name'>{esc(item.name)}</div></div>")
    return (f"<div class='extra-network-cards' id='{esc(tab)}_{esc(page)}_cards' data-tab='{esc(tab)}' "
            f"data-page='{esc(page)}'>{''.join(cards)}</div>")


# --- the instance's files ----------------------------------------------------------------------------------
def _opt(name: str, default: Any) -> Any:
    from modules import shared

    return getattr(shared.opts, name, default) if shared.opts is not None else default


def lora_items(*, rescan: bool = False) -> list[ExtraNetworkItem]:
    """Cards of the LoRA folder(s)."""
    from modules import networks

    registry = networks.default_registry()
    if rescan:
        registry.refresh()
    forbidden = registry.forbidden_aliases()
    preferred = str(_opt("lora_preferred_name", "Alias from file"))
    items = []
    for entry in sorted(registry.files(), key=lambda e: e.name.lower()):
        user = read_user_metadata(entry.filename)
        prompt_name = lora_prompt_name(entry.name, entry.alias, forbidden, preferred)
        weight = user.get("preferred weight") or 1
        try:
            tag = lora_tag(prompt_name, weight)
        except (TypeError, ValueError):
            tag = lora_tag(prompt_name, 1)
        activation = str(user.get("activation text") or "").strip()
        preview = find_preview(entry.filename)
        items.append(ExtraNetworkItem(
            page="lora", name=entry.name, filename=entry.filename,
            prompt=f"{tag} {activation}" if activation else tag,
            negative_prompt=str(user.get("negative text") or "").strip(),
            search=[entry.alias, entry.shorthash or ""],
            tooltip=lora_tooltip(entry.name, entry.filename, entry.metadata, entry.sd_version, user),
            preview=str(preview) if preview else None))
    return items


def embedding_items(*, rescan: bool = False) -> list[ExtraNetworkItem]:
    """Cards of the embeddings folder; those of another model family are shown dimmed."""
    from modules import textual_inversion

    if rescan:
        textual_inversion.refresh_embeddings()
    else:
        textual_inversion.list_embeddings()
    db = textual_inversion.default_database()
    items = []
    groups = ((db.loaded, False), (db.skipped, True))
    for group, disabled in groups:
        for name, emb in group.items():
            filename = emb.filename or name
            user = read_user_metadata(filename) if emb.filename else {}
            lines = [name]
            if user.get("description"):
                lines.append(str(user["description"]))
            lines.append(f"Vectors: {emb.vectors}, width: {emb.shape}")
            if emb.step:
                lines.append(f"Trained steps: {emb.step}")
            if emb.sd_checkpoint_name:
                lines.append(f"Trained on: {emb.sd_checkpoint_name}")
            if disabled:
                lines.append("Not usable with the current model.")
            lines.append(filename)
            preview = find_preview(filename) if emb.filename else None
            items.append(ExtraNetworkItem(
                page="textual_inversion", name=name, filename=filename, prompt=name,
                search=[emb.shorthash or ""], tooltip="\n".join(lines),
                preview=str(preview) if preview else None, disabled=disabled))
    items.sort(key=lambda i: (i.disabled, i.name.lower()))
    return items


def checkpoint_items(*, rescan: bool = False) -> list[ExtraNetworkItem]:
    """Cards of the checkpoints; a click makes one the checkpoint of the next job."""
    from modules import shared

    mm = shared.model_manager
    if mm is None:
        return []
    if rescan:
        mm.refresh()
    items = []
    for info in mm.checkpoints():
        user = read_user_metadata(info.filename)
        lines = [info.title]
        if user.get("description"):
            lines.append(str(user["description"]))
        metadata = getattr(info, "metadata", None) or {}
        for key in ("modelspec.title", "modelspec.architecture", "ss_sd_model_name"):
            if metadata.get(key):
                lines.append(f"{key.split('.')[-1]}: {metadata[key]}")
        lines.append(info.filename)
        preview = find_preview(info.filename)
        items.append(ExtraNetworkItem(
            page="checkpoints", name=info.name_for_extra, filename=info.filename, checkpoint=info.title,
            search=[info.title, getattr(info, "shorthash", None) or ""], tooltip="\n".join(lines),
            preview=str(preview) if preview else None))
    return items


_PAGE_ITEMS: dict[str, Callable[..., list[ExtraNetworkItem]]] = {
    "lora": lora_items, "textual_inversion": embedding_items, "checkpoints": checkpoint_items,
}


def items_for_page(page: str, *, rescan: bool = False) -> list[ExtraNetworkItem]:
    """The cards of one page; a page whose listing fails shows none rather than breaking the tab."""
    try:
        return _PAGE_ITEMS[page](rescan=rescan)
    except Exception as e:  # a broken file or folder must not take the whole UI down
        log.error("listing %s failed: %s", page, e)
        return []


def refresh_page(tab: str, page: str, query: str = "", *, rescan: bool = False) -> str:
    """The cards' HTML for a page, optionally after rescanning its folder."""
    return render_cards(items_for_page(page, rescan=rescan), tab, page, query)


def listed_model_files() -> list[str]:
    """Every model file some page lists (what previews may belong to)."""
    from modules import shared, textual_inversion

    files: list[str] = []
    try:
        from modules import networks

        files += [entry.filename for entry in networks.default_registry().files()]
    except Exception as e:  # keep serving the other kinds
        log.warning("LoRA listing failed: %s", e)
    try:
        db = textual_inversion.default_database()
        if not db.loaded and not db.skipped:
            textual_inversion.list_embeddings()
        files += [emb.filename for emb in (*db.loaded.values(), *db.skipped.values()) if emb.filename]
    except Exception as e:
        log.warning("embedding listing failed: %s", e)
    if shared.model_manager is not None:
        files += [info.filename for info in shared.model_manager.checkpoints()]
    return files


# --- the preview route -------------------------------------------------------------------------------------
def add_routes(app: Any, login_check: Callable[[Any], bool]) -> None:
    """Register the preview route on `app` (before the page is mounted at "/", which would shadow it).

    login_check(request) says whether the request comes from a browser that passed the page's login.
    """
    def thumb(request: Request, filename: str = "") -> FileResponse:
        if not login_check(request):
            raise HTTPException(status_code=401, detail="Not authenticated")
        if not filename or not is_allowed_preview(filename, listed_model_files()):
            raise HTTPException(status_code=404, detail="No such preview")
        path = os.path.realpath(filename)
        media = _MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})

    app.add_api_route(THUMB_ROUTE, thumb, methods=["GET"], include_in_schema=False)
