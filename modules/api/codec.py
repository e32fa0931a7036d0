"""Images in and out of the API: base64 (or `data:` URL) to PIL, PIL to base64 with infotext.

Decoding checks the image's size from its header before the pixels are read, so a small body that
unpacks into a huge image is refused without allocating it. URLs are not fetched: Easel makes no
network requests on a client's behalf.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Mapping

import piexif
import piexif.helper
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from modules.api.errors import ApiError

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def _strip_data_url(data: str, what: str) -> str:
    if data.startswith("data:"):
        head, sep, rest = data.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, f"{what}: a data URL must be base64 encoded (data:image/png;base64,...)",
                           "InvalidImage")
        return rest
    return data


def decode_base64_to_image(data: str, *, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """A PIL image from base64 text or a `data:image/...;base64,` URL; 400 naming `what` otherwise."""
    if not isinstance(data, str) or not data.strip():
        raise ApiError(400, f"{what} is empty; send a base64-encoded image", "InvalidImage")
    text = data.strip()
    if text.startswith(("http://", "https://")):
        raise ApiError(400, f"{what} is a URL; Easel does not fetch images, send the image base64-encoded",
                       "InvalidImage")
    text = _strip_data_url(text, what)
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} is not valid base64", "InvalidImage") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ApiError(413, f"{what} is {image.width}x{image.height}, more than the {max_pixels} pixels "
                                    "a request may hold (setting api_max_pixels)", "ImageTooLarge")
            image.load()
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise ApiError(400, f"{what} could not be decoded as an image: {e}", "InvalidImage") from None
    return image


def encode_pil_to_base64(image: Image.Image, infotext: str | None = None, *, fmt: str = "png",
                         extra_text: Mapping[str, str] | None = None) -> str:
    """Encode as `fmt` (png, jpg, webp) with the infotext where A1111 puts it: the PNG `parameters`
    chunk (plus `extra_text` chunks), or the EXIF UserComment for JPEG and WebP."""
    fmt = fmt.lower() if fmt and fmt.lower() in FORMATS else "png"
    buf = io.BytesIO()
    if FORMATS[fmt] == "PNG":
        chunks = PngImagePlugin.PngInfo()
        has_chunks = False
        if infotext:
            chunks.add_text("parameters", infotext)
            has_chunks = True
        for k, v in (extra_text or {}).items():
            chunks.add_text(k, v)
            has_chunks = True
        image.save(buf, format="PNG", pnginfo=chunks if has_chunks else None)
    else:
        from modules import shared

        if image.mode not in ("RGB", "L") and FORMATS[fmt] == "JPEG":
            image = image.convert("RGB")
        kwargs: dict = {"quality": int(getattr(shared.opts, "jpeg_quality", 80) or 80)}
        if FORMATS[fmt] == "WEBP" and getattr(shared.opts, "webp_lossless", False):
            kwargs = {"lossless": True}
        if infotext:
            comment = piexif.helper.UserComment.dump(infotext, encoding="unicode")
            kwargs["exif"] = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
        image.save(buf, format=FORMATS[fmt], **kwargs)
    return base64.b64encode(buf.getvalue()).decode("ascii")

