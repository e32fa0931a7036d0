"""Latents to pixels and back, with a NaN guard, and the cheap live-preview approximation.

Half-precision VAEs (SDXL's especially) can overflow to NaN. When a decode or encode in half
precision produces NaN and `auto_fp32` is on, the VAE is moved to fp32 for good and the call is
retried, as A1111's "Automatically revert VAE to 32-bit floats" does.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from modules.devices import NansException
from modules.engine import offload
from modules.engine.model import DiffusionModel

log = logging.getLogger(__name__)


def _vae_param(model: DiffusionModel) -> torch.Tensor:
    return next(model.vae.parameters())


def _upcast_vae(model: DiffusionModel) -> None:
    log.warning("VAE produced NaN values in %s; switching it to float32", _vae_param(model).dtype)
    model.vae.to(torch.float32)


@torch.inference_mode()
def decode(model: DiffusionModel, latents: torch.Tensor, *, auto_fp32: bool = True) -> torch.Tensor:
    """Latents (B, 4, h, w), unscaled as the sampler produces them -> images (B, 3, H, W) in [0, 1], float32 CPU."""
    with offload.stage(model, "vae"):
        for attempt in range(2):
            dtype = _vae_param(model).dtype
            x = (latents / model.vae_scaling_factor).to(device=model.device_of(model.vae), dtype=dtype)
            images = model.vae.decode(x).sample.float()
            if not torch.isnan(images).any():
                return (images / 2 + 0.5).clamp(0, 1).cpu()
            if attempt == 0 and auto_fp32 and dtype != torch.float32:
                _upcast_vae(model)
                continue
            break
    raise NansException("The VAE produced an image made of NaN values. Try --no-half-vae, or another VAE.")


@torch.inference_mode()
def encode(model: DiffusionModel, images: torch.Tensor, *, auto_fp32: bool = True) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> scaled latents (the distribution's mean), float32 on the model's device.

    The mean is used instead of a sample so that an image always encodes to the same latents,
    whatever seed or batch it is in.
    """
    with offload.stage(model, "vae"):
        for attempt in range(2):
            dtype = _vae_param(model).dtype
            x = (images * 2 - 1).to(device=model.device_of(model.vae), dtype=dtype)
            latents = model.vae.encode(x).latent_dist.mean.float()
            if not torch.isnan(latents).any():
                return (latents * model.vae_scaling_factor).to(model.device)
            if attempt == 0 and auto_fp32 and dtype != torch.float32:
                _upcast_vae(model)
                continue
            break
    raise NansException("The VAE produced NaN values while encoding the image. Try --no-half-vae, or another VAE.")


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [0, 1] -> RGB PIL images."""
    arr = (images.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in arr]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> (B, 3, H, W) float in [0, 1]."""
    arrs = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def _preview_map(model: DiffusionModel) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear map latent channels -> RGB for this model's VAE, fitted once by least squares.

    A few synthetic colour images are encoded; each latent pixel is paired with the mean colour of
    the pixel block it covers. Fitting per model works for any VAE (the test and demo models too)
    and costs one small encode.
    """
    cached = model.extra.get("preview_map")
    if cached is not None:
        return cached
    size = 8 * model.vae_scale_factor
    gen = torch.Generator().manual_seed(0)
    # Smooth random colour fields plus flat primaries: enough spread to pin down a 4x3 map.
    coarse = torch.rand(12, 3, 4, 4, generator=gen)
    fields = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    flats = torch.eye(3).repeat(2, 1)[:, :, None, None].expand(-1, -1, size, size) * torch.tensor(
        [1.0] * 3 + [0.5] * 3)[:, None, None, None]
    images = torch.cat([fields, flats.clone()], dim=0)
    latents = encode(model, images, auto_fp32=True).float().cpu()
    f = model.vae_scale_factor
    colours = torch.nn.functional.avg_pool2d(images, f) * 2 - 1
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    ones = torch.ones(x.shape[0], 1)
    sol = torch.linalg.lstsq(torch.cat([x, ones], dim=1), y).solution
    result = (sol[:-1].contiguous(), sol[-1].contiguous())
    model.extra["preview_map"] = result
    return result


def approx_preview(model: DiffusionModel, latents: torch.Tensor) -> Image.Image:
    """A cheap RGB preview of the first latent of a batch (a linear map, no VAE decode)."""
    weights, bias = _preview_map(model)
    x = latents[0].float().cpu()
    rgb = torch.einsum("chw,cr->hwr", x, weights) + bias
    arr = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().byte().numpy()
    img = Image.fromarray(arr, "RGB")
    f = model.vae_scale_factor
    return img.resize((img.width * f, img.height * f), Image.NEAREST)
