"""The Extras operations the API offers: resizing with the built-in upscalers, as A1111's
`extra-single-image` / `extra-batch-images` do it.

Built-in upscalers are None (no upscaling), Lanczos and Nearest. Model upscalers (ESRGAN and
friends) need packages Easel does not install by default, so they are not listed and a request
naming one is answered with the names that are available.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from modules.api.errors import ApiError
from modules.api.models import ExtrasBaseRequest
from modules.infotext_utils import quote, read_info_from_image

UPSCALERS: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
MAX_SIDE = 16384


def upscaler_items() -> list[dict[str, object]]:
    """`GET /sdapi/v1/upscalers`, in A1111's shape (its built-in upscalers report scale 4)."""
    return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in UPSCALERS]


def find_upscaler(name: str | None) -> tuple[str, Image.Resampling | None]:
    """The upscaler called `name` (any case); 404 naming the ones there are."""
    wanted = (name or "None").strip().lower()
    for known, method in UPSCALERS.items():
        if known.lower() == wanted:
            return known, method
    raise ApiError(404, f"upscaler {name!r} not found; available upscalers: {', '.join(UPSCALERS)}",
                   "UpscalerNotFound")


@dataclass
class ExtrasResult:
    image: Image.Image
    geninfo: str | None
    info: dict[str, object]
    """what was done, in A1111's "Postprocess ..." terms"""

    @property
    def infotext(self) -> str:
        return ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in self.info.items() if v is not None)

    def text_chunks(self) -> dict[str, str]:
        """PNG text chunks for the result: the source's `parameters` travels separately; `extras`
        records the operation."""
        return {"extras": self.infotext} if self.info else {}


def _target_size(req: ExtrasBaseRequest, image: Image.Image) -> tuple[int, int, float]:
    if req.resize_mode == 1:
        w, h = int(req.upscaling_resize_w), int(req.upscaling_resize_h)
        if w < 1 or h < 1:
            raise ApiError(422, f"upscaling_resize_w/h are {w}x{h}; both must be at least 1", "InvalidParameterError")
        scale = max(w / image.width, h / image.height)
        return w, h, scale
    if req.resize_mode != 0:
        raise ApiError(422, f"resize_mode is {req.resize_mode!r}; it must be 0 (scale by) or 1 (scale to)",
                       "InvalidParameterError")
    scale = float(req.upscaling_resize)
    if not scale > 0:
        raise ApiError(422, f"upscaling_resize is {scale}; it must be more than 0", "InvalidParameterError")
    return round(image.width * scale), round(image.height * scale), scale


def _scaled(image: Image.Image, scale: float, method: Image.Resampling) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if max(size) > MAX_SIDE:
        raise ApiError(413, f"the result would be {size[0]}x{size[1]}; sides are limited to {MAX_SIDE}",
                       "RequestTooLarge")
    return image.resize(size, resample=method)


def _center_crop(image: Image.Image, w: int, h: int) -> Image.Image:
    left = (image.width - w) // 2
    top = (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def run_extras(req: ExtrasBaseRequest, image: Image.Image) -> ExtrasResult:
    """Upscale one image as the request says. Upscaler 1 "None" leaves the size alone (as in A1111);
    upscaler 2 is blended over upscaler 1's result with `extras_upscaler_2_visibility`."""
    geninfo, _items = read_info_from_image(image)
    name_1, method_1 = find_upscaler(req.upscaler_1)
    name_2, method_2 = find_upscaler(req.upscaler_2)
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    source = image.convert("RGBA" if has_alpha else "RGB")
    info: dict[str, object] = {}
    if method_1 is None:
        return ExtrasResult(source, geninfo, info)
    w, h, scale = _target_size(req, source)
    result = _scaled(source, scale, method_1)
    visibility = float(req.extras_upscaler_2_visibility or 0)
    if method_2 is not None and visibility > 0:
        second = _scaled(source, scale, method_2)
        result = Image.blend(result, second, min(1.0, visibility))
    if req.resize_mode == 1:
        # Scaled to cover the target; with upscaling_crop the overflow is cut off around the centre.
        info["Postprocess upscale to"] = f"{w}x{h}"
        if req.upscaling_crop:
            result = _center_crop(result, w, h)
            info["Postprocess crop to"] = f"{w}x{h}"
    else:
        info["Postprocess upscale by"] = scale
    info["Postprocess upscaler"] = name_1
    if method_2 is not None and visibility > 0:
        info["Postprocess upscaler 2"] = name_2
        info["Postprocess upscaler 2 visibility"] = visibility
    return ExtrasResult(result, geninfo, info)
