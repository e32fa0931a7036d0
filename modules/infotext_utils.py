"""Infotext: the generation-parameters text A1111 writes into every image, and reading it back.

Layout of an infotext (what Civitai, image browsers and users paste around)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>      (only when non-empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ...

Writing must be byte-compatible with A1111 (fixed key order, JSON quoting of values holding
``,``, ``:`` or a newline); reading must be tolerant, because infotexts come from every A1111
version, from forks and from hand edits. Where it is stored: the PNG ``parameters`` text chunk,
the EXIF UserComment of JPEG/WebP/AVIF files, the GIF comment.

The old module name ``modules.generation_parameters_copypaste`` refers to this same module.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
"""A1111's order of the base keys of the parameters line. After them come the extra parameters
(hires fix, inpainting, scripts, extensions) in the order they were added, then these:"""

INFOTEXT_TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# One "Key: value" pair of the parameters line. The key starts with a word character and has at
# least two characters of word characters, spaces, '-' and '/'; the value is either a JSON string
# (a double-quoted run in which backslash escapes the next character) or everything up to the next
# comma. Same grammar as A1111's reader, so both split every line the same way.
_PARAM_PAIR = re.compile(
    r"""
    \s*
    (?P<key> \w [\w \-/]+ )
    : \s*
    (?P<value> " (?: \\. | [^\\"] )+ " | [^,]* )
    (?: , | $ )
    """,
    re.VERBOSE,
)
_SIZE_VALUE = re.compile(r"^(\d+)x(\d+)$")

# Keys Pillow puts into Image.info that describe the container, not the picture's story; A1111
# hides the same ones from the PNG Info tab.
IGNORED_INFO_KEYS = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
    "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity",
    "photoshop", "transparency", "gamma", "aspect", "xmp", "adobe", "adobe_transform",
    "interlace", "srgb",
})

_EXIF_USER_COMMENT = 0x9286
_EXIF_IFD_POINTER = 0x8769


# --- quoting -----------------------------------------------------------------------------------

def quote(value: object) -> str:
    """Format one value for the parameters line.

    A value holding a comma, a colon or a newline would break the line's ``Key: value, ...``
    grammar, so it is written as a JSON string; anything else is written as is.
    """
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote`: a double-quoted JSON string is decoded; anything else comes back unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


# --- writing -----------------------------------------------------------------------------------

def order_params(
    base: Mapping[str, object],
    extra: Mapping[str, object] | None = None,
    version: str | None = None,
    user: str | None = None,
) -> dict[str, object]:
    """Merge base and extra parameters into A1111's key order.

    Base keys come first, sorted by `INFOTEXT_KEY_ORDER` (base keys unknown to that order follow
    in their own order); then the extra keys in insertion order; then Version and User. A key
    present in both base and extra keeps its base position and takes the extra value, which is
    what A1111's ``{**base, **extra}`` literal does. Version and User always come from the
    arguments: None removes them.
    """
    rank = {k: i for i, k in enumerate(INFOTEXT_KEY_ORDER)}
    known = sorted((k for k in base if k in rank), key=rank.__getitem__)
    unknown = [k for k in base if k not in rank]
    result: dict[str, object] = {k: base[k] for k in known + unknown}
    for k, v in (extra or {}).items():
        result[k] = v
    for key, value in (("Version", version), ("User", user)):
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Compose an infotext exactly as A1111's ``create_infotext`` lays it out.

    ``params`` must already be in A1111's order (see `order_params`). None values are dropped; a
    value equal to its key is written as the bare key (flags such as ``Tiling``); the rest go
    through `quote`. As in A1111 the whole text is stripped, so an empty prompt leaves no blank
    first line.
    """
    pairs = ", ".join(
        key if key == value else f"{key}: {quote(value)}"
        for key, value in params.items()
        if value is not None
    )
    negative = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt or ''}{negative}\n{pairs}".strip()


# --- reading -----------------------------------------------------------------------------------

def _param_pairs(line: str) -> list[tuple[str, str]]:
    return [(m.group("key"), m.group("value")) for m in _PARAM_PAIR.finditer(line) if m.group(0)]


def _uses_emphasis(text: str) -> bool:
    """True when the prompt has an unescaped ``(`` or ``[``, i.e. attention weights or editing."""
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "([":
            return True
    return False


def _old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """First-pass size A1111 (before 1.0) chose on its own: about 512x512 pixels, multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def restore_old_hires_fix_params(res: dict[str, Any]) -> None:
    """Convert hires infotexts of old A1111 versions, which named the first pass size.

    Old form: ``Size`` is the final size and ``First pass size`` the first pass (0x0 meaning
    "pick one automatically"). New form: ``Size`` is the first pass and ``Hires resize`` the
    final size. With the setting ``use_old_hires_fix_width_height`` the hires target is pasted
    as the size instead.
    """
    from modules import shared

    if getattr(shared.opts, "use_old_hires_fix_width_height", False):
        hires_width = int(res.get("Hires resize-1", 0))
        hires_height = int(res.get("Hires resize-2", 0))
        if hires_width and hires_height:
            res["Size-1"] = hires_width
            res["Size-2"] = hires_height
            return

    first_w = res.get("First pass size-1")
    first_h = res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(first_w), int(first_h)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if first_w == 0 or first_h == 0:
        first_w, first_h = _old_hires_fix_first_pass_dimensions(width, height)
    res["Size-1"] = first_w
    res["Size-2"] = first_h
    res["Hires resize-1"] = width
    res["Hires resize-2"] = height


def _parse_version(text: object) -> Any:
    """A1111 version string -> comparable version; forks' strings that do not parse give None."""
    if not isinstance(text, str):
        return None
    from packaging.version import InvalidVersion, Version

    m = re.match(r"([^-]+-[^-]+)-.*", text)
    if m:
        text = m.group(1)
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _backcompat(res: dict[str, Any]) -> None:
    """Flag behaviours of the A1111 version that wrote the infotext, so pasting reproduces it."""
    from packaging.version import Version

    from modules import shared

    if not getattr(shared.opts, "auto_backcompat", True):
        return
    ver = _parse_version(res.get("Version"))
    if ver is None:
        return
    if ver < Version("1.6.0") and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < Version("1.6.0") and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < Version("1.7.0.post225"):
        res["Downcast alphas_cumprod"] = True
    if ver < Version("1.8.0") and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


_DEFAULTS_WHEN_ABSENT: tuple[tuple[str, object], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
"""Absent keys mean the A1111 default was in use; these are filled in before the hires conversion."""

_DEFAULTS_AFTER_HIRES: tuple[tuple[str, object], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """Read an infotext into a dict of infotext labels plus ``Prompt`` and ``Negative prompt``.

    A1111-compatible: the last line is the parameters line only when it holds at least three
    ``Key: value`` pairs (otherwise it is part of the prompt); lines before one starting with
    ``Negative prompt:`` are the prompt, that line and the following ones the negative prompt.
    ``WxH`` values become ``Key-1``/``Key-2``. Values stay strings, as in A1111; absent keys get
    A1111's defaults. ``skip_fields`` (default: the ``infotext_skip_pasting`` setting) are removed.
    """
    from modules import shared

    if skip_fields is None:
        skip_fields = list(getattr(shared.opts, "infotext_skip_pasting", []) or [])

    text = (x or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    *lines, last_line = text.split("\n")
    if len(_param_pairs(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)

    res: dict[str, Any] = {}
    for key, raw in _param_pairs(last_line):
        if raw == "":
            # A1111 skips empty values (its reader fails on them), so the default applies instead.
            continue
        value = unquote(raw) if raw[0] == '"' and raw[-1] == '"' else raw.rstrip()
        size = _SIZE_VALUE.match(value)
        if size is not None:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value

    prompt = "\n".join(prompt_lines)
    negative_prompt = "\n".join(negative_lines)
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    # An infotext without Clip skip was made with clip skip 1: the writer leaves the default out.
    res.setdefault("Clip skip", "1")

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, default in _DEFAULTS_WHEN_ABSENT:
        res.setdefault(key, default)

    restore_old_hires_fix_params(res)

    for key, default in _DEFAULTS_AFTER_HIRES:
        res.setdefault(key, default)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    if "Emphasis" not in res and (_uses_emphasis(prompt) or _uses_emphasis(negative_prompt)):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)

    _backcompat(res)

    for key in skip_fields:
        res.pop(key, None)
    return res


# --- storage -----------------------------------------------------------------------------------

def _decode_utf16(body: bytes) -> str:
    """UTF-16 of unknown byte order: A1111 (piexif) writes big-endian, some tools little-endian."""
    if body.startswith(b"\xfe\xff"):
        return body[2:].decode("utf-16-be", errors="replace")
    if body.startswith(b"\xff\xfe"):
        return body[2:].decode("utf-16-le", errors="replace")
    if len(body) % 2:
        body = body[:-1]
    # ASCII characters have a zero high byte: first in big-endian, second in little-endian.
    zeros_even = body[0::2].count(0)
    zeros_odd = body[1::2].count(0)
    order = ("utf-16-le", "utf-16-be") if zeros_odd > zeros_even else ("utf-16-be", "utf-16-le")
    for encoding in order:
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    return body.decode(order[0], errors="replace")


def decode_user_comment(raw: bytes | str) -> str:
    """Decode an EXIF UserComment: an 8-byte character-code header, then the text."""
    if isinstance(raw, str):
        return raw.rstrip("\0")
    header, body = raw[:8], raw[8:]
    if header == b"UNICODE\0":
        text = _decode_utf16(body)
    elif header == b"ASCII\0\0\0":
        # The standard says ASCII; many writers put UTF-8 there.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("latin-1")
    elif header == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    elif header == b"\0" * 8:
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _exif_user_comment(image: Image.Image, exif_bytes: bytes) -> bytes | None:
    """The raw UserComment of an image's EXIF block, or None."""
    import piexif

    try:
        exif = piexif.load(exif_bytes)
        comment = exif.get("Exif", {}).get(piexif.ExifIFD.UserComment)
        if comment:
            return comment
    except (ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as e:
        log.debug("piexif could not read the EXIF block (%s); trying Pillow", e)
    try:
        comment = image.getexif().get_ifd(_EXIF_IFD_POINTER).get(_EXIF_USER_COMMENT)
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        return None
    if isinstance(comment, str):
        comment = comment.encode("utf-8")
    return comment or None


# NovelAI's sampler identifiers -> A1111's sampler names, for converting its PNGs.
_NOVELAI_SAMPLERS = {
    "k_euler_ancestral": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpm_fast": "DPM fast",
    "k_dpm_adaptive": "DPM adaptive",
    "ddim": "DDIM",
    "plms": "PLMS",
}


def _novelai_infotext(image: Image.Image, items: Mapping[str, Any]) -> str | None:
    """NovelAI stores its parameters as JSON; turn them into an A1111 infotext as A1111 does."""
    try:
        info = json.loads(items["Comment"])
        sampler = _NOVELAI_SAMPLERS.get(str(info.get("sampler", "")).lower(), "Euler a")
        return (
            f"{items.get('Description', '')}\n"
            f"{NEGATIVE_PROMPT_PREFIX} {info['uc']}\n"
            f"Steps: {info['steps']}, Sampler: {sampler}, CFG scale: {info['scale']}, Seed: {info['seed']}, "
            f"Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337"
        )
    except (KeyError, TypeError, ValueError) as e:
        log.warning("could not convert NovelAI parameters: %s", e)
        return None


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """The infotext stored in an image (or None) and the image's other text items.

    Sources, as in A1111: the PNG ``parameters`` chunk; the EXIF UserComment (JPEG, WebP, AVIF,
    also PNG eXIf), which wins when present; the GIF/JPEG ``comment``. The other items are the
    remaining string entries of ``image.info`` (other PNG text chunks such as ``extras``), without
    container details like ``dpi`` or ``icc_profile``.
    """
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if isinstance(geninfo, bytes):
        geninfo = geninfo.decode("utf-8", errors="replace")

    exif_bytes = items.pop("exif", None)
    exif_comment = _exif_user_comment(image, exif_bytes) if exif_bytes else None
    if exif_comment:
        text = decode_user_comment(exif_comment)
        if text:
            geninfo = text
    elif geninfo is None and items.get("comment") is not None:
        comment = items.pop("comment")
        geninfo = comment.decode("utf-8", errors="replace") if isinstance(comment, bytes) else str(comment)

    others = {
        k: v for k, v in items.items()
        if isinstance(k, str) and isinstance(v, str) and k not in IGNORED_INFO_KEYS
    }
    if others.get("Software") == "NovelAI" and "Comment" in others:
        converted = _novelai_infotext(image, others)
        if converted is not None:
            geninfo = converted
    return geninfo, others


# --- settings overrides ------------------------------------------------------------------------

infotext_to_setting_name_mapping: list[tuple[str, str]] = []
"""Extra (infotext label, setting key) pairs; kept for extensions written against old A1111.
New code declares the label with ``OptionInfo(..., infotext="Label")`` instead."""


def _setting_mapping() -> list[tuple[str, str]]:
    from modules import shared

    labels = shared.opts.data_labels
    return [(info.infotext, key) for key, info in labels.items() if info.infotext] + list(
        infotext_to_setting_name_mapping)


def cast_setting_value(key: str, value: object) -> object:
    """Convert an infotext string to the type of the setting's default (bool, int, float, str)."""
    from modules import shared

    default = shared.opts.get_default(key)
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        try:
            return int(value) if not isinstance(value, str) else int(float(value))
        except ValueError:
            return value
    if isinstance(default, float):
        try:
            return float(value)  # type: ignore[arg-type]
        except ValueError:
            return value
    if isinstance(default, str):
        return str(value)
    return value


def get_override_settings(params: Mapping[str, Any], *, skip_fields: Iterable[str] | None = None,
                          ) -> list[tuple[str, str, Any]]:
    """Settings that pasting these parameters would change: (infotext label, setting key, value).

    Values equal to the current setting are left out, as are labels in ``skip_fields``; the
    checkpoint is left alone while the ``disable_weights_auto_swap`` setting is on (A1111 default).
    """
    from modules import shared

    skip = set(skip_fields or ())
    result = []
    for label, key in _setting_mapping():
        if label in skip:
            continue
        value = params.get(label)
        if value is None:
            continue
        if key == "sd_model_checkpoint" and getattr(shared.opts, "disable_weights_auto_swap", True):
            continue
        value = cast_setting_value(key, value)
        if value == getattr(shared.opts, key, None):
            continue
        result.append((label, key, value))
    return result


def create_override_settings_dict(text_pairs: Iterable[str]) -> dict[str, Any]:
    """``["Clip skip: 2", "ENSD: 31337"]`` -> ``{"CLIP_stop_at_last_layers": 2, ...}``."""
    params = {}
    for pair in text_pairs:
        key, sep, value = pair.partition(":")
        if sep:
            params[key] = value.strip()
    result: dict[str, Any] = {}
    for label, key in _setting_mapping():
        value = params.get(label)
        if value is not None:
            result[key] = cast_setting_value(key, value)
    return result


# --- paste registrations -----------------------------------------------------------------------
# Scripts and extensions declare which of their UI components an infotext label fills; the UI
# connects the registered buttons. These registries are plain data, free of any UI toolkit.

class PasteField(tuple):
    """(component, infotext label or function of the parsed params), optionally with an API field."""

    def __new__(cls, component: Any, target: str | Callable[[dict], Any], *, api: str | None = None) -> PasteField:
        return super().__new__(cls, (component, target))

    def __init__(self, component: Any, target: str | Callable[[dict], Any], *, api: str | None = None) -> None:
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


class ParamBinding:
    """A "send to <tab>" button and where its infotext and image come from."""

    def __init__(self, paste_button: Any, tabname: str, source_text_component: Any = None,
                 source_image_component: Any = None, source_tabname: str | None = None,
                 override_settings_component: Any = None, paste_field_names: list[str] | None = None) -> None:
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


paste_fields: dict[str, dict[str, Any]] = {}
registered_param_bindings: list[ParamBinding] = []


def reset() -> None:
    paste_fields.clear()
    registered_param_bindings.clear()


def add_paste_fields(tabname: str, init_img: Any, fields: list | None, override_settings_component: Any = None) -> None:
    """Register the components of a tab that pasted parameters fill in."""
    if fields:
        for i, field in enumerate(fields):
            if not isinstance(field, PasteField):
                fields[i] = PasteField(*field)
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding) -> None:
    registered_param_bindings.append(binding)
