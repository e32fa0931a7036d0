"""Saving generated images the way A1111 users know, plus the image helpers scripts call.

File layout (A1111's): ``<outdir>/<directories_filename_pattern>/NNNNN-<samples_filename_pattern>.png``,
the 5-digit counter continuing from the highest number in the folder (grids: ``grid-NNNN``), the
infotext in the PNG ``parameters`` chunk or the EXIF UserComment.

Unlike A1111, a save never overwrites anything, even when several threads or processes save into
the same folder at once: the counter value is claimed under a short-lived claim file, the final
name is created exclusively (``O_CREAT | O_EXCL``), and the encoded image is written to a hidden
temp file that is renamed over the reserved name, so a reader never sees a half-written image
and a failed encode leaves nothing behind.

Settings are read from ``modules.shared.opts`` at call time.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import importlib.util
import logging
import math
import os
import re
import string
import threading
import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
from PIL import Image, ImageColor, ImageOps, PngImagePlugin

from modules.infotext_utils import read_info_from_image  # noqa: F401  (A1111 has it here too)

log = logging.getLogger(__name__)

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
"""img2img "Resize mode" labels; the API sends the index."""


def _opt(key: str, default: Any) -> Any:
    from modules import shared

    return getattr(shared.opts, key, default)


def _callbacks() -> Any:
    """`modules.script_callbacks` when the project has it, so extensions' image hooks run."""
    if importlib.util.find_spec("modules.script_callbacks") is None:
        return None
    return importlib.import_module("modules.script_callbacks")


# --- grids -------------------------------------------------------------------------------------

def image_grid(imgs: Sequence[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """Paste images into a grid, row by row.

    Rows as in A1111: the ``n_rows`` setting when > 0; the batch size when 0; when -1, the rounded
    square root of the count, or with ``grid_prevent_empty_spots`` the largest divisor of the count
    not above its square root. Cells take the largest image size; smaller images are centred.
    """
    if not imgs:
        raise ValueError("image_grid needs at least one image")
    count = len(imgs)
    if rows is None:
        n_rows = int(_opt("n_rows", -1))
        if n_rows > 0:
            rows = n_rows
        elif n_rows == 0:
            rows = batch_size
        elif _opt("grid_prevent_empty_spots", False):
            rows = math.floor(math.sqrt(count))
            while count % rows != 0:
                rows -= 1
        else:
            rows = round(math.sqrt(count))
    rows = max(1, min(rows, count))
    cols = math.ceil(count / rows)

    imgs = list(imgs)
    callbacks = _callbacks()
    if callbacks is not None and hasattr(callbacks, "ImageGridLoopParams") and hasattr(callbacks, "image_grid_callback"):
        params = callbacks.ImageGridLoopParams(imgs, cols, rows)
        callbacks.image_grid_callback(params)
        imgs, cols, rows = params.imgs, params.cols, params.rows

    w = max(img.width for img in imgs)
    h = max(img.height for img in imgs)
    background = ImageColor.getcolor(_opt("grid_background_color", "#ffffff") or "#ffffff", "RGB")
    grid = Image.new("RGB", (cols * w, rows * h), color=background)
    for i, img in enumerate(imgs):
        dx = (w - img.width) // 2
        dy = (h - img.height) // 2
        grid.paste(img, box=(i % cols * w + dx, i // cols * h + dy))
    return grid


class GridAnnotation:
    """A label of a grid row or column; inactive labels (a prompt-matrix part that is off) are drawn
    struck through."""

    def __init__(self, text: str = "", is_active: bool = True) -> None:
        self.text = text
        self.is_active = is_active
        self.size: tuple[int, int] | None = None


def _label_font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # built into Pillow: no font file needed


def _wrap(draw: Any, text: str, font: Any, max_width: int) -> list[str]:
    """Greedy word wrap so each line fits `max_width` pixels."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate, font=font) > max_width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: Sequence[Sequence[GridAnnotation]],
                          ver_texts: Sequence[Sequence[GridAnnotation]], margin: int = 0) -> Image.Image:
    """Add column labels above and row labels left of a grid of `width` x `height` cells.

    `hor_texts[i]` are the lines for column i, `ver_texts[j]` those for row j (each line a
    GridAnnotation). `margin` is the gap between cells, as the grid was pasted with it.
    """
    from PIL import ImageDraw

    cols, rows = len(hor_texts), len(ver_texts)
    fontsize = max(12, (width + height) // 25)
    line_spacing = fontsize // 2
    font = _label_font(fontsize)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad_left = 0 if all(not any(a.text for a in row) for row in ver_texts) else int(width * 3 / 4)

    def lines_of(annotations: Sequence[GridAnnotation], max_width: int) -> list[tuple[str, bool]]:
        return [(line, a.is_active) for a in annotations for line in _wrap(probe, a.text, font, max_width)]

    hor_lines = [lines_of(t, width) for t in hor_texts]
    ver_lines = [lines_of(t, max(pad_left, 1)) for t in ver_texts]
    line_h = fontsize + line_spacing
    pad_top = 0 if all(not lines or all(not t for t, _ in lines) for lines in hor_lines) else \
        max(len(lines) for lines in hor_lines) * line_h + line_spacing * 2

    result = Image.new("RGB", (im.width + pad_left, im.height + pad_top), "white")
    result.paste(im, (pad_left, pad_top))
    draw = ImageDraw.Draw(result)

    def draw_block(lines: list[tuple[str, bool]], cx: float, cy: float, max_width: int) -> None:
        y = cy - len(lines) * line_h / 2
        for text, active in lines:
            fill = (0, 0, 0) if active else (153, 153, 153)
            draw.text((cx, y + line_h / 2), text, font=font, fill=fill, anchor="mm")
            if not active:
                tw = draw.textlength(text, font=font)
                draw.line((cx - tw / 2, y + line_h / 2, cx + tw / 2, y + line_h / 2), fill=fill, width=max(1, fontsize // 10))
            y += line_h

    if pad_top:
        for col in range(cols):
            cx = pad_left + (width + margin) * col + width / 2
            draw_block(hor_lines[col], cx, pad_top / 2, width)
    if pad_left:
        for row in range(rows):
            cy = pad_top + (height + margin) * row + height / 2
            draw_block(ver_lines[row], pad_left / 2, cy, pad_left)
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: Sequence[str],
                       margin: int = 0) -> Image.Image:
    """Labels for a prompt-matrix grid: the first half of the optional parts along the top, the
    rest down the left, each struck through where the cell leaves it out."""
    prompts = list(all_prompts[1:])
    boundary = math.ceil(len(prompts) / 2)
    prompts_horiz, prompts_vert = prompts[:boundary], prompts[boundary:]
    hor = [[GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(prompts_horiz)]
           for pos in range(1 << len(prompts_horiz))]
    ver = [[GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(prompts_vert)]
           for pos in range(1 << len(prompts_vert))]
    return draw_grid_annotations(im, width, height, hor, ver, margin)


Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])
"""Tiles of an image: ``tiles`` is a list of ``[y, tile_h, [[x, tile_w, tile_image], ...]]`` rows."""


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Cut an image into overlapping tiles spread evenly over it (SD upscale works tile by tile)."""
    w, h = image.size
    cols = max(1, math.ceil((w - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((h - overlap) / (tile_h - overlap)))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        row_tiles = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row_tiles.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, row_tiles])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """Join tiles from `split_grid` back, blending each overlap with a linear ramp."""
    overlap = grid.overlap

    def ramp(length_axis: int, other: int) -> Image.Image:
        values = (np.arange(overlap, dtype=np.float32) * 255 / max(overlap, 1)).astype(np.uint8)
        if length_axis == 1:
            return Image.fromarray(np.repeat(values.reshape(1, overlap), other, axis=0), "L")
        return Image.fromarray(np.repeat(values.reshape(overlap, 1), other, axis=1), "L")

    mask_w = ramp(1, grid.tile_h) if overlap else None
    mask_h = ramp(0, grid.image_w) if overlap else None
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0 or not overlap:
                line.paste(tile, (x, 0))
                continue
            line.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0 or not overlap:
            combined.paste(line, (0, y))
            continue
        combined.paste(line.crop((0, 0, line.width, overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, overlap, line.width, h)), (0, y + overlap))
    return combined


# --- resizing ----------------------------------------------------------------------------------

def _find_upscaler(name: str) -> Any:
    from modules import shared

    for upscaler in getattr(shared, "sd_upscalers", None) or []:
        if getattr(upscaler, "name", None) == name:
            return upscaler
    return None


def _resize(im: Image.Image, w: int, h: int, upscaler_name: str | None) -> Image.Image:
    """Resize to exactly w x h; an enlargement goes through the named upscaler when one is registered."""
    if upscaler_name and upscaler_name != "None" and im.mode != "L":
        scale = max(w / im.width, h / im.height)
        if scale > 1.0:
            upscaler = _find_upscaler(upscaler_name)
            if upscaler is None:
                log.warning("upscaler %r is not available; resizing with Lanczos", upscaler_name)
            else:
                im = upscaler.scaler.upscale(im, scale, upscaler.data_path)
    if im.size != (w, h):
        im = im.resize((w, h), resample=LANCZOS)
    return im


def _canvas_mode(im: Image.Image) -> str:
    return im.mode if im.mode in ("RGB", "RGBA", "L") else "RGB"


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None) -> Image.Image:
    """Fit an image to width x height by one of img2img's resize modes.

    0 "Just resize": stretch to the size. 1 "Crop and resize": scale to cover the size, centre,
    crop the overflow. 2 "Resize and fill": scale to fit inside, centre, and fill each empty band
    by stretching the image's outermost row or column across it (A1111's fill). 3 "Just resize
    (latent upscale)": the latent part happens in processing; here it is mode 0.
    Enlargements use ``upscaler_name`` (default: the ``upscaler_for_img2img`` setting) when such
    an upscaler is registered, else Lanczos. RGB, RGBA and L images keep their mode.
    """
    if upscaler_name is None:
        upscaler_name = _opt("upscaler_for_img2img", None)
    width, height = int(width), int(height)
    if resize_mode in (0, 3):
        return _resize(im, width, height, upscaler_name)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        # scale so the image covers the target; the larger relative side gets cropped
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = _resize(im, src_w, src_h, upscaler_name)
        result = Image.new(_canvas_mode(im), (width, height))
        result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return result

    if resize_mode != 2:
        raise ValueError(f"unknown resize mode {resize_mode!r}; expected 0..3")
    # scale so the image fits inside the target
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = _resize(im, src_w, src_h, upscaler_name)
    result = Image.new(_canvas_mode(im), (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        # bands above and below: stretch the top and bottom rows
        fill_h = height // 2 - src_h // 2
        if fill_h > 0:
            top = resized.resize((width, fill_h), box=(0, 0, width, 0))
            result.paste(top, box=(0, 0))
        bottom_h = height - (fill_h + src_h)
        if bottom_h > 0:
            bottom = resized.resize((width, bottom_h), box=(0, resized.height, width, resized.height))
            result.paste(bottom, box=(0, fill_h + src_h))
    elif ratio > src_ratio:
        # bands left and right: stretch the leftmost and rightmost columns
        fill_w = width // 2 - src_w // 2
        if fill_w > 0:
            left = resized.resize((fill_w, height), box=(0, 0, 0, height))
            result.paste(left, box=(0, 0))
        right_w = width - (fill_w + src_w)
        if right_w > 0:
            right = resized.resize((right_w, height), box=(resized.width, 0, resized.width, height))
            result.paste(right, box=(fill_w + src_w, 0))
    return result


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """Composite transparency onto a solid colour and return RGB (img2img inputs)."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_image(image: Image.Image | None) -> Image.Image | None:
    """Apply the EXIF orientation so a photo from a phone is upright."""
    if image is None:
        return None
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, TypeError, SyntaxError) as e:
        log.debug("could not apply the EXIF orientation: %s", e)
        return image


# --- file names --------------------------------------------------------------------------------

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
max_filename_part_length = 128
"""Longest prompt-derived part of a file name (A1111's ``--filenames-max-length`` default)."""

_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
_TAG = re.compile(r"\[([^\[\]]+)\]")
_TAG_ARGS = re.compile(r"<([^<>]*)>")
DEFAULT_DATETIME_FORMAT = "%Y%m%d%H%M%S"


def _max_part_length() -> int:
    from modules import shared

    value = getattr(shared.cmd_opts, "filenames_max_length", None)
    return int(value) if value else max_filename_part_length


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """Make text safe as part of a file name: no path separators or characters Windows forbids."""
    if text is None:
        return None
    from modules import shared

    if replace_spaces:
        text = text.replace(" ", "_")
    forbidden = "/" if getattr(shared.cmd_opts, "unix_filenames_sanitization", False) else INVALID_FILENAME_CHARS
    text = text.translate({ord(c): "_" for c in forbidden})
    text = text.lstrip(INVALID_FILENAME_PREFIX)[:_max_part_length()]
    return text.rstrip(INVALID_FILENAME_POSTFIX)


class _Skip:
    """Marker: the tag has no value here, and the literal text just before it goes too."""


SKIP = _Skip()


class FilenameGenerator:
    """Expands ``[tag]`` patterns of the file and folder name settings.

    A tag may carry arguments in angle brackets: ``[datetime<%Y%m%d><Europe/Paris>]``,
    ``[prompt_hash<12>]``, ``[hasprompt<cat|nocat><dog>]``. Unknown tags, and tags that need a
    processing object when there is none, stay in the name literally (as in A1111). Values come
    from ``p`` (A1111's processing object; any attribute may be missing).
    """

    def __init__(self, p: Any, seed: int | str | None, prompt: str | None, image: Image.Image | None,
                 zip: bool = False, basename: str = "") -> None:
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename
        self.replacements = {
            "basename": self._basename,
            "seed": self._seed,
            "seed_first": self._seed_first,
            "seed_last": self._seed_last,
            "steps": lambda: self._p_attr("steps"),
            "cfg": lambda: self._p_attr("cfg_scale"),
            "width": self._width,
            "height": self._height,
            "styles": self._styles,
            "sampler": self._sampler,
            "scheduler": self._scheduler,
            "sampler_scheduler": self._sampler_scheduler,
            "model_hash": self._model_hash,
            "model_name": self._model_name,
            "date": lambda: datetime.datetime.now().strftime("%Y-%m-%d"),
            "datetime": self._datetime,
            "job_timestamp": self._job_timestamp,
            "prompt_hash": lambda *args: self._hash(self.prompt or "", *args),
            "negative_prompt_hash": lambda *args: self._hash(self._p_text("negative_prompt"), *args),
            "full_prompt_hash": lambda *args: self._hash(
                f"{self._p_text('prompt')} {self._p_text('negative_prompt')}", *args),
            "prompt": lambda: sanitize_filename_part(self.prompt or ""),
            "prompt_spaces": lambda: sanitize_filename_part(self.prompt or "", replace_spaces=False),
            "prompt_words": self._prompt_words,
            "negative_prompt": lambda: sanitize_filename_part(self._p_text("negative_prompt")),
            "batch_number": self._batch_number,
            "batch_size": lambda: self._p_attr("batch_size"),
            "generation_number": self._generation_number,
            "hasprompt": self._hasprompt,
            "clip_skip": lambda: _opt("CLIP_stop_at_last_layers", 1),
            "randn_source": lambda: _opt("randn_source", "GPU"),
            "denoising": self._denoising,
            "user": self._user,
            "vae_filename": self._vae_filename,
            "image_hash": self._image_hash,
            "none": lambda: "",
        }

    # --- tag values ---
    def _p_attr(self, name: str, default: Any = None) -> Any:
        return None if self.p is None else getattr(self.p, name, default)

    def _p_text(self, name: str) -> str:
        value = self._p_attr(name, "")
        return value if isinstance(value, str) else ""

    def _basename(self) -> str:
        return self.basename or "img"

    def _seed(self) -> str:
        return "" if self.seed is None else str(self.seed)

    def _all_seeds(self) -> list:
        return list(self._p_attr("all_seeds", None) or [])

    def _seed_first(self) -> Any:
        if self.p is None:
            return None
        seeds = self._all_seeds()
        if int(self._p_attr("batch_size", 1) or 1) == 1 or not seeds:
            return self._seed()
        return seeds[0]

    def _seed_last(self) -> Any:
        if self.p is None:
            return None
        seeds = self._all_seeds()
        if int(self._p_attr("batch_size", 1) or 1) == 1 or not seeds:
            return SKIP
        return seeds[-1]

    def _width(self) -> Any:
        return self.image.width if self.image is not None else self._p_attr("width")

    def _height(self) -> Any:
        return self.image.height if self.image is not None else self._p_attr("height")

    def _styles(self) -> Any:
        if self.p is None:
            return None
        styles = [s for s in (self._p_attr("styles", None) or []) if s != "None"]
        return sanitize_filename_part(", ".join(styles) or "None", replace_spaces=False)

    def _sampler(self) -> Any:
        name = self._p_attr("sampler_name")
        return None if name is None else sanitize_filename_part(str(name), replace_spaces=False)

    def _scheduler_label(self) -> str | None:
        scheduler = self._p_attr("scheduler")
        sampler = self._p_attr("sampler_name")
        if scheduler is None:
            return None
        scheduler = str(scheduler)
        if scheduler == "Automatic" and sampler is not None:
            scheduler = _default_scheduler_of(str(sampler)) or scheduler
        return scheduler.capitalize()

    def _scheduler(self) -> Any:
        label = self._scheduler_label()
        return SKIP if label is None else sanitize_filename_part(label, replace_spaces=False)

    def _sampler_scheduler(self) -> Any:
        sampler = self._p_attr("sampler_name")
        label = self._scheduler_label()
        if sampler is None or label is None:
            return SKIP
        return sanitize_filename_part(f"{sampler} {label}", replace_spaces=False)

    def _model(self) -> Any:
        return self._p_attr("sd_model")

    def _model_hash(self) -> str:
        value = self._p_attr("sd_model_hash")
        if value is None:
            value = getattr(self._model(), "sd_model_hash", None)
        return "" if value is None else str(value)

    def _model_name(self) -> str:
        value = self._p_attr("sd_model_name")
        if value is None:
            info = getattr(self._model(), "sd_checkpoint_info", None)
            value = getattr(info, "name_for_extra", None)
        return sanitize_filename_part("" if value is None else str(value), replace_spaces=False) or ""

    def _datetime(self, *args: str) -> str:
        fmt = args[0] if args and args[0] else DEFAULT_DATETIME_FORMAT
        zone = None
        if len(args) > 1 and args[1]:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                zone = ZoneInfo(args[1])
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
        now = datetime.datetime.now().astimezone(zone)
        try:
            text = now.strftime(fmt)
        except (ValueError, TypeError):
            text = now.strftime(DEFAULT_DATETIME_FORMAT)
        return sanitize_filename_part(text, replace_spaces=False) or ""

    def _job_timestamp(self) -> str:
        value = self._p_attr("job_timestamp")
        if value is None:
            from modules import shared

            value = shared.state.job_timestamp
        return str(value)

    @staticmethod
    def _hash(text: str, *args: str) -> str:
        length = int(args[0]) if args and args[0] else 8
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]

    def _prompt_words(self) -> str:
        words = [w for w in _NONLETTERS.split(self.prompt or "") if w]
        if not words:
            words = ["empty"]
        limit = int(_opt("directories_max_prompt_words", 8))
        return sanitize_filename_part(" ".join(words[:limit]), replace_spaces=False) or ""

    def _batch_number(self) -> Any:
        if self.p is None:
            return None
        if int(self._p_attr("batch_size", 1) or 1) == 1 or self.zip:
            return SKIP
        return int(self._p_attr("batch_index", 0) or 0) + 1

    def _generation_number(self) -> Any:
        if self.p is None:
            return None
        batch_size = int(self._p_attr("batch_size", 1) or 1)
        n_iter = int(self._p_attr("n_iter", 1) or 1)
        if (n_iter == 1 and batch_size == 1) or self.zip:
            return SKIP
        iteration = int(self._p_attr("iteration", 0) or 0)
        return iteration * batch_size + int(self._p_attr("batch_index", 0) or 0) + 1

    def _hasprompt(self, *args: str) -> Any:
        if self.p is None or self.prompt is None:
            return None
        lower = self.prompt.lower()
        out = ""
        for arg in args:
            if not arg:
                continue
            expected, _, default = arg.partition("|")
            expected = expected.lower()
            if expected in lower:
                out += expected
            else:
                out += default
        return sanitize_filename_part(out)

    def _denoising(self) -> Any:
        value = self._p_attr("denoising_strength")
        return value if value else SKIP

    def _user(self) -> Any:
        value = self._p_attr("user")
        return SKIP if value is None else sanitize_filename_part(str(value), replace_spaces=False)

    def _vae_filename(self) -> str:
        name = self._p_attr("sd_vae_name")
        if name is None:
            name = getattr(self._model(), "vae_name", None)
        if not name:
            return "NoneType"
        parts = os.path.basename(str(name)).split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]

    def _image_hash(self, *args: str) -> Any:
        if self.image is None:
            return None
        length = int(args[0]) if args and args[0] else None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[:length]

    # --- expansion ---
    def apply(self, x: str) -> str:
        """Expand every ``[tag]`` of a pattern."""
        out: list[str] = []
        pos = 0
        for m in _TAG.finditer(x):
            text = x[pos:m.start()]
            pos = m.end()
            body = m.group(1)
            args = _TAG_ARGS.findall(body)
            name = body.split("<", 1)[0] if args else body
            fn = self.replacements.get(name.lower())
            value = None
            if fn is not None:
                try:
                    value = fn(*args)
                except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
                    log.warning("could not put [%s] into a file name: %s", body, e)
                    value = None
            if value is SKIP:
                continue  # drops the separator written before this tag, too
            out.append(text + (f"[{body}]" if value is None else str(value)))
        out.append(x[pos:])
        return "".join(out)


def _default_scheduler_of(sampler_name: str) -> str | None:
    """The schedule a sampler uses under "Automatic", when the sampler registry is available."""
    if importlib.util.find_spec("modules.sd_samplers") is None:
        return None
    samplers = importlib.import_module("modules.sd_samplers")
    find = getattr(samplers, "find_sampler_config", None)
    config = find(sampler_name) if callable(find) else None
    options = getattr(config, "options", None) or {}
    value = options.get("scheduler") if isinstance(options, dict) else None
    return str(value) if value else None


def _sequence_number_of(filename: str, basename: str) -> int | None:
    """The counter at the start of a file name (after ``<basename>-``), or None."""
    prefix = f"{basename}-" if basename else ""
    if not filename.startswith(prefix):
        return None
    head = os.path.splitext(filename[len(prefix):])[0].split("-")[0]
    if not head.isdigit() or not head.isascii():
        return None
    return int(head)


def get_next_sequence_number(path: str | os.PathLike, basename: str) -> int:
    """The counter for the next file: one more than the highest in the folder, 0 for a new folder.

    Any file name starting with ``<basename>-NNN`` (or ``NNN`` without a basename) counts,
    whatever follows, so numbering continues across filename patterns.
    """
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    numbers = [n for n in (_sequence_number_of(name, basename) for name in names) if n is not None]
    return max(numbers, default=-1) + 1


# --- exclusive file name reservation -----------------------------------------------------------

_reserve_lock = threading.Lock()
_CLAIM_STALE_SECONDS = 60.0
_MAX_ATTEMPTS = 10000


def _create_exclusive(path: str) -> bool:
    """Create an empty file that did not exist; False when the name is taken."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _take_claim(claim: str) -> bool:
    """Claim a counter value for the moment it takes to check and reserve it.

    Claims left by a process that died mid-save are taken over once they are old.
    """
    if _create_exclusive(claim):
        return True
    try:
        age = time.time() - os.path.getmtime(claim)
    except FileNotFoundError:
        return _create_exclusive(claim)
    if age > _CLAIM_STALE_SECONDS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim)
        return _create_exclusive(claim)
    return False


def _reserve_numbered(path: str, basename: str, decoration: str, extension: str) -> str:
    """Reserve ``<counter><decoration>.<extension>`` with a counter no other file in path uses.

    The claim file makes check-then-create atomic between processes: whoever holds the claim for
    N looks for existing files numbered N and, if there are none, creates its file under that
    number before releasing the claim; a later claimant of N then sees that file.
    """
    with _reserve_lock:
        number = get_next_sequence_number(path, basename)
        for _ in range(_MAX_ATTEMPTS):
            stem = f"{number:05}" if not basename else f"{basename}-{number:04}"
            claim = os.path.join(path, f".{stem}.claim")
            if not _take_claim(claim):
                number += 1
                continue
            try:
                taken = [n for n in (_sequence_number_of(x, basename) for x in os.listdir(path)) if n is not None]
                if number in taken:
                    number = max(number + 1, max(taken) + 1)
                    continue
                fullfn = os.path.join(path, f"{stem}{decoration}.{extension}")
                if _create_exclusive(fullfn):
                    return fullfn
                number += 1
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claim)
    raise OSError(f"could not find a free file number in {path}")


def reserve_new_file(fullfn: str) -> str:
    """Reserve a given name, or ``<name>-1``, ``<name>-2``, ... when it is taken (an empty file is
    created there at once, so two savers never get the same name); returns the name reserved."""
    stem, ext = os.path.splitext(fullfn)
    candidate = fullfn
    for n in range(1, _MAX_ATTEMPTS):
        if _create_exclusive(candidate):
            return candidate
        candidate = f"{stem}-{n}{ext}"
    raise OSError(f"could not find a free file name for {fullfn}")


def _fit_name(decoration: str, fixed: str, path: str) -> str:
    """Shorten the decoration so the whole file name fits the file system's name length."""
    try:
        limit = os.statvfs(path).f_namemax if hasattr(os, "statvfs") else 255
    except OSError:
        limit = 255
    limit = max(32, limit - 8)  # room for a "-N" collision suffix
    while decoration and len((decoration + fixed).encode("utf-8")) > limit:
        decoration = decoration[:-1]
    return decoration


# --- encoding ----------------------------------------------------------------------------------

def _image_format(extension: str) -> str:
    fmt = Image.registered_extensions().get(f".{extension.lower()}")
    if fmt is None:
        raise ValueError(f"unsupported image format: {extension!r}")
    return fmt


def _exif_with_comment(text: str) -> bytes:
    import piexif
    import piexif.helper

    return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text, encoding="unicode")}})


def _write_image(image: Image.Image, fp: IO[bytes], extension: str, geninfo: str | None,
                 pnginfo: dict[str, Any] | None, pnginfo_section_name: str) -> None:
    """Encode an image with its metadata the way A1111 stores it for each format."""
    ext = extension.lower().lstrip(".")
    fmt = _image_format(ext)
    enable = bool(_opt("enable_pnginfo", True))
    quality = int(_opt("jpeg_quality", 80))
    if ext == "png":
        chunks = None
        if enable:
            items = dict(pnginfo or {})
            if geninfo is not None:
                items[pnginfo_section_name] = geninfo
            chunks = PngImagePlugin.PngInfo()
            for k, v in items.items():
                chunks.add_text(str(k), str(v))
        image.save(fp, format=fmt, pnginfo=chunks)
    elif ext in ("jpg", "jpeg", "webp", "avif"):
        if image.mode == "I;16":
            image = image.point(lambda v: v * (255 / 65535)).convert("L" if ext in ("jpg", "jpeg") else "RGB")
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        kwargs: dict[str, Any] = {"quality": quality}
        if ext == "webp":
            kwargs["lossless"] = bool(_opt("webp_lossless", False))
        if enable and geninfo is not None:
            kwargs["exif"] = _exif_with_comment(geninfo)
        image.save(fp, format=fmt, **kwargs)
    elif ext == "gif":
        kwargs = {"comment": geninfo} if enable and geninfo is not None else {}
        image.save(fp, format=fmt, **kwargs)
    else:
        image.save(fp, format=fmt)


def _atomic_write(fullfn: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a hidden temp file beside fullfn, then rename it onto fullfn.

    The temp file is created like any new file (permissions from the umask), so the result is
    as readable as a file written directly.
    """
    directory = os.path.dirname(fullfn) or "."
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, fullfn)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_into(image: Image.Image, fullfn: str, extension: str, geninfo: str | None,
                pnginfo: dict[str, Any] | None, pnginfo_section_name: str) -> None:
    """Encode an image into fullfn atomically."""
    _atomic_write(fullfn, lambda f: _write_image(image, f, extension, geninfo, pnginfo, pnginfo_section_name))


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str | os.PathLike,
                            extension: str | None = None, existing_pnginfo: dict[str, Any] | None = None,
                            pnginfo_section_name: str = "parameters") -> None:
    """Write an image to a chosen file with its infotext (A1111's helper; replaces that file)."""
    filename = os.fspath(filename)
    if extension is None:
        extension = os.path.splitext(filename)[1]
    _write_into(image, filename, extension.lstrip("."), geninfo, existing_pnginfo, pnginfo_section_name)


# --- save_image --------------------------------------------------------------------------------

def _safe_dirname(dirname: str) -> str:
    """Keep a folder pattern's result inside the output folder: no root, no '..' parts."""
    parts = [part for part in re.split(r"[\\/]+", dirname) if part not in ("", ".", "..")]
    return os.path.join(*parts) if parts else ""


def save_image(
    image: Image.Image,
    path: str | os.PathLike,
    basename: str,
    seed: int | str | None = None,
    prompt: str | None = None,
    extension: str = "png",
    info: str | None = None,
    short_filename: bool = False,
    no_prompt: bool = False,
    grid: bool = False,
    pnginfo_section_name: str = "parameters",
    p: Any = None,
    existing_info: dict[str, Any] | None = None,
    forced_filename: str | None = None,
    suffix: str = "",
    save_to_dirs: bool | None = None,
) -> tuple[str, str | None]:
    """Save an image under A1111's naming rules; returns (image file, infotext .txt file or None).

    ``path`` is the output folder; with ``save_to_dirs`` (default: the ``save_to_dirs`` setting,
    or ``grid_save_to_dirs`` for grids) a sub-folder from ``directories_filename_pattern`` is
    used. The name is ``NNNNN-<pattern>`` (``<basename>-NNNN-<pattern>`` when a basename such
    as "grid" is given; no pattern with ``short_filename`` or without a seed), or exactly
    ``forced_filename``. An existing file is never replaced: a taken number moves on to the next,
    a taken fixed name gets ``-1``, ``-2``... ``info`` goes into the PNG chunk
    ``pnginfo_section_name`` (with ``existing_info``'s other items) or into the EXIF UserComment.
    """
    path = os.fspath(path)
    extension = (extension or "png").lower().lstrip(".")
    _image_format(extension)  # reject an unknown format before anything is created

    # JPEG and WebP cannot hold images this large; PNG can.
    if (extension in ("jpg", "jpeg") and max(image.size) > 65535) or (extension == "webp" and max(image.size) > 16383):
        log.warning("image of %dx%d is too large for %s; saving as PNG", image.width, image.height, extension)
        extension = "png"

    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)

    if save_to_dirs is None:
        save_to_dirs = bool(_opt("grid_save_to_dirs", True)) if grid else (
            bool(_opt("save_to_dirs", True)) and not no_prompt)
    if save_to_dirs:
        pattern = _opt("directories_filename_pattern", "[date]") or "[prompt_words]"
        dirname = _safe_dirname(namegen.apply(pattern).lstrip(" ").rstrip("\\ /"))
        if dirname:
            path = os.path.join(path, dirname)
    os.makedirs(path, exist_ok=True)

    if forced_filename is None:
        if short_filename or seed is None:
            decoration: str | None = ""
        else:
            override = getattr(p, "override_settings", None)
            decoration = override.get("samples_filename_pattern") if isinstance(override, dict) else None
        if decoration is None:
            decoration = _opt("samples_filename_pattern", "") or (
                "[seed]" if _opt("save_to_dirs", True) else "[seed]-[prompt_spaces]")
        decoration = namegen.apply(decoration) + suffix
        decoration = decoration.replace("/", "_").replace("\\", "_")
        add_number = bool(_opt("save_images_add_number", True)) or decoration == ""
        if decoration and add_number:
            decoration = f"-{decoration}"
        if add_number:
            counter_width = 5 if not basename else len(basename) + 5
            decoration = _fit_name(decoration, "0" * counter_width + f".{extension}", path)
            fullfn = _reserve_numbered(path, basename, decoration, extension)
        else:
            decoration = _fit_name(decoration, f".{extension}", path)
            fullfn = reserve_new_file(os.path.join(path, f"{decoration}.{extension}"))
    else:
        fullfn = reserve_new_file(os.path.join(path, f"{forced_filename}.{extension}"))

    pnginfo = dict(existing_info or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info

    reserved = fullfn
    try:
        callbacks = _callbacks()
        params = None
        if callbacks is not None and all(hasattr(callbacks, name) for name in (
                "ImageSaveParams", "before_image_saved_callback", "image_saved_callback")):
            params = callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
            callbacks.before_image_saved_callback(params)
            image, pnginfo = params.image, params.pnginfo
            if os.path.abspath(params.filename) != os.path.abspath(reserved):
                # an extension chose another name: reserve that one instead
                os.makedirs(os.path.dirname(os.path.abspath(params.filename)), exist_ok=True)
                fullfn = reserve_new_file(os.fspath(params.filename))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(reserved)
                reserved = fullfn
            extension = os.path.splitext(fullfn)[1].lstrip(".").lower() or extension
        info = pnginfo.get(pnginfo_section_name, None)
        others = {k: v for k, v in pnginfo.items() if k != pnginfo_section_name}
        _write_into(image, fullfn, extension, info, others, pnginfo_section_name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reserved)
        raise

    txt_fullfn = None
    if _opt("save_txt", False) and info is not None:
        txt_fullfn = f"{os.path.splitext(fullfn)[0]}.txt"
        payload = f"{info}\n".encode()
        _atomic_write(txt_fullfn, lambda f: f.write(payload))

    if params is not None:
        params.filename = fullfn
        callbacks.image_saved_callback(params)

    return fullfn, txt_fullfn
