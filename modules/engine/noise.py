"""Initial noise, one image at a time, from CPU generators.

Each image's noise comes from `torch.Generator("cpu").manual_seed(seed)` drawn at that image's own
shape, so a seed gives the same picture at any batch size and on any device (A1111's "CPU" RNG
source produces the same numbers). Variation seeds blend two such noises by spherical interpolation;
"resize seed from" draws the noise at another size and pastes it centred into the target, so a
composition found at one size survives a change of size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

cpu = torch.device("cpu")


def randn(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise of `shape` from a fresh CPU generator seeded with `seed`."""
    generator = torch.Generator(cpu).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(tuple(shape), generator=generator, device=cpu, dtype=torch.float32)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (t=0) to `high` (t=1), per column along dim 1.

    Normalising along dim 1 of a (C, H, W) noise tensor is what A1111 does; keeping the same axis
    makes "Variation seed" infotexts reproduce the same pictures.
    """
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - t) + high * t
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def _paste_centered(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Copy the overlapping centre of `source` into the centre of `target` (both C, H, W)."""
    dx = (target.shape[2] - source.shape[2]) // 2
    dy = (target.shape[1] - source.shape[1]) // 2
    w = min(target.shape[2], source.shape[2])
    h = min(target.shape[1], source.shape[1])
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    out = target.clone()
    out[:, ty:ty + h, tx:tx + w] = source[:, sy:sy + h, sx:sx + w]
    return out


def image_noise(
    seed: int,
    shape: Sequence[int],
    *,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Noise for one image. shape is (C, H, W) in latent units; seed_resize_from is (h, w) in latent units."""
    shape = tuple(shape)
    noise_shape = shape
    if seed_resize_from is not None and seed_resize_from[0] > 0 and seed_resize_from[1] > 0:
        noise_shape = (shape[0], int(seed_resize_from[0]), int(seed_resize_from[1]))

    noise = randn(seed, noise_shape)
    if subseed is not None and subseed_strength:
        noise = slerp(float(subseed_strength), noise, randn(subseed, noise_shape))
    if noise_shape != shape:
        noise = _paste_centered(randn(seed, shape), noise)
    return noise


def batch_noise(
    seeds: Sequence[int],
    shape: Sequence[int],
    *,
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
    device: torch.device = cpu,
) -> torch.Tensor:
    """Stack of per-image noises (B, C, H, W), moved to `device` as float32."""
    items = [
        image_noise(
            seed,
            shape,
            subseed=None if subseeds is None else subseeds[i],
            subseed_strength=subseed_strength,
            seed_resize_from=seed_resize_from,
        )
        for i, seed in enumerate(seeds)
    ]
    return torch.stack(items).to(device)
