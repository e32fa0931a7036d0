"""The upscalers Easel has without extra packages: None, Lanczos and Nearest (A1111's names).

Both the Extras API and img2img scripts (SD upscale) pick an upscaler by name from `sd_upscalers()`.
Each entry has A1111's shape (`name`, `data_path`, `scale`, `scaler` with `upscale(img, scale,
data_path)`) because extensions read `shared.sd_upscalers` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

METHODS: dict[str, Image.Resampling | None] = {
    "None": None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}


class Upscaler:
    """Resizes an image by a factor with one PIL resampling filter (None: leaves it unchanged)."""

    def __init__(self, name: str, method: Image.Resampling | None) -> None:
        self.name = name
        self.method = method
        self.scalers: list[UpscalerData] = [UpscalerData(name, None, self)]

    def upscale(self, img: Image.Image, scale: float, selected_model: Any = None) -> Image.Image:
        if self.method is None or scale == 1:
            return img
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        return img.resize(size, resample=self.method)


@dataclass
class UpscalerData:
    name: str
    data_path: str | None
    scaler: Upscaler
    scale: float = 4
    model: Any = None


_UPSCALERS = [Upscaler(name, method) for name, method in METHODS.items()]


def sd_upscalers() -> list[UpscalerData]:
    """Every available upscaler, in A1111's order."""
    return [data for upscaler in _UPSCALERS for data in upscaler.scalers]


def names() -> list[str]:
    return [u.name for u in sd_upscalers()]


def find(name: str | None) -> UpscalerData | None:
    """The upscaler called `name` (any case; None or "" mean "None"), or None when there is none."""
    wanted = (name or "None").strip().lower()
    return next((u for u in sd_upscalers() if u.name.lower() == wanted), None)


def upscale(image: Image.Image, scale: float, name: str | None) -> Image.Image:
    """`image` enlarged by `scale` with the named upscaler; KeyError naming the available ones."""
    found = find(name)
    if found is None:
        raise KeyError(f"upscaler {name!r} not found; available upscalers: {', '.join(names())}")
    return found.scaler.upscale(image, scale, found.data_path)
