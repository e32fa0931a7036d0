"""Image-side preparation for img2img and inpainting: masks, crop regions, masked-content fill, overlays.

Everything here works on PIL images and numpy arrays only; the VAE and the sampler never appear. Processing
asks `plan_inpaint` what to encode (`init_image`), where to blend in latent space (`latent_mask`) and how to
put the generated picture back (`apply_overlay`), so that pixels outside the mask come out exactly as they
went in.

Conventions follow A1111 so masks, API requests and results carry over unchanged:
- white (255) in a mask means "repaint";
- an RGBA mask whose alpha is not fully opaque is read from its alpha channel (a painted stroke over a
  transparent canvas), any other mask from its luminance;
- "Only masked" inpainting works on the mask's bounding box, grown by the padding and widened to the
  processing aspect ratio, and pastes the result back into the full picture;
- "Masked content" codes: 0 fill, 1 original, 2 latent noise, 3 latent nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageColor, ImageOps

from modules import images

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

INPAINT_FILL = 0
INPAINT_ORIGINAL = 1
INPAINT_LATENT_NOISE = 2
INPAINT_LATENT_NOTHING = 3

# Radii (pixels) of the successive estimates in `fill`: coarse ones reach far into large holes, fine ones
# make the colour continue right at the border of the hole.
_FILL_RADII = (256, 64, 16, 4, 2, 1)


# --- crop regions -------------------------------------------------------------------------------------------


def get_crop_region(mask: Image.Image, pad: int = 0) -> Box:
    """Bounding box (x1, y1, x2, y2; x2/y2 exclusive) of the non-zero pixels of `mask`, grown by `pad`.

    The box is clamped to the image. An empty mask gives the whole image, so callers always receive a usable
    region (use `mask.getbbox()` first when an empty mask needs different handling).
    """
    gray = mask if mask.mode == "L" else mask.convert("L")
    width, height = gray.size
    box = gray.getbbox()
    if box is None:
        return 0, 0, width, height
    x1, y1, x2, y2 = box
    pad = max(int(pad), 0)
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, width), min(y2 + pad, height)


def _grow_span(lo: int, hi: int, extra: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) by `extra` pixels, split evenly, then slide it back inside [0, limit)."""
    lo -= extra // 2
    hi += extra - extra // 2
    if hi > limit:  # ran past the far edge: slide towards the origin
        lo -= hi - limit
        hi = limit
    if lo < 0:  # ran past the near edge: slide away from it (may overshoot again when the image is too small)
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


def expand_crop_region(
    crop_region: Box, processing_width: int, processing_height: int, image_width: int, image_height: int
) -> Box:
    """Grow `crop_region` to the aspect ratio of the processing size, staying inside the image.

    Only the short side grows (a 128x32 region processed at 512x512 becomes 128x128); the region slides
    rather than shrinks at the image borders, and is clipped only when the image itself is too small.
    """
    x1, y1, x2, y2 = crop_region
    region_w, region_h = x2 - x1, y2 - y1
    if region_w <= 0 or region_h <= 0 or processing_width <= 0 or processing_height <= 0:
        return x1, y1, x2, y2
    target_ratio = processing_width / processing_height
    if region_w / region_h > target_ratio:
        extra = int(region_w / target_ratio - region_h)
        y1, y2 = _grow_span(y1, y2, extra, image_height)
    else:
        extra = int(region_h * target_ratio - region_w)
        x1, x2 = _grow_span(x1, x2, extra, image_width)
    return x1, y1, x2, y2


# --- flattening ------------------------------------------------------------------------------------------------


def _background_color() -> str:
    from modules import shared  # read at call time: settings change while the server runs

    return str(getattr(shared.opts, "img2img_background_color", "#ffffff") or "#ffffff")


def _flatten(image: Image.Image, background: str) -> Image.Image:
    """RGB version of `image`; transparent parts are composited over `background` (a CSS colour)."""
    if image.mode in ("LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    try:
        ImageColor.getrgb(background)
    except ValueError:
        log.warning("invalid img2img background colour %r, using white", background)
        background = "#ffffff"
    return images.flatten(image, background)


# --- masks ------------------------------------------------------------------------------------------------------


def _mask_to_gray(mask: Image.Image, round_mask: bool) -> Image.Image:
    """Read a user mask of any mode as L, the way A1111 does.

    A mask with a not fully opaque alpha channel is the alpha channel (editors send strokes on a
    transparent canvas); with `round_mask` that alpha is thresholded so anti-aliased stroke edges do not
    leave half-repainted pixels. Every other mask is its luminance, unthresholded.
    """
    if mask.mode in ("LA", "PA", "La", "RGBa") or (mask.mode == "P" and "transparency" in mask.info):
        mask = mask.convert("RGBA")
    if mask.mode == "RGBA":
        alpha = mask.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda v: 255 if v > 128 else 0) if round_mask else alpha
    return mask.convert("L")


def _gaussian_kernel(sigma: float) -> np.ndarray:
    # Same support as A1111 (OpenCV kernel size 2*int(2.5*sigma + 0.5) + 1) so blurred edges reach as far.
    radius = int(2.5 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _blur_axis(pixels: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of a uint8 array along one axis, mirrored at the borders, rounded back to uint8."""
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    pad = [(0, 0)] * pixels.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(pixels.astype(np.float64), pad, mode="reflect" if pixels.shape[axis] > 1 else "edge")
    length = pixels.shape[axis]
    out = np.zeros(pixels.shape, dtype=np.float64)
    for tap, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(tap, tap + length), axis=axis)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """Gaussian blur of an L mask with separate horizontal and vertical radii (0 = no blur on that axis)."""
    pixels = np.asarray(mask.convert("L"))
    if blur_x > 0:
        pixels = _blur_axis(pixels, float(blur_x), axis=1)
    if blur_y > 0:
        pixels = _blur_axis(pixels, float(blur_y), axis=0)
    return Image.fromarray(pixels, mode="L")


def prepare_mask(
    mask: Image.Image,
    *,
    size: tuple[int, int],
    blur_x: int,
    blur_y: int,
    invert: bool,
    round_mask: bool = True,
) -> Image.Image:
    """Turn a user mask into the L mask inpainting works with: 255 = repaint.

    Any mode is accepted (see `_mask_to_gray`); a mask of another size than `size` is resized to it;
    `invert` ("Inpaint not masked") swaps repaint and keep; the blur is applied last, at `size`, so it is
    measured in pixels of the picture being inpainted.
    """
    gray = _mask_to_gray(mask, round_mask)
    size = (int(size[0]), int(size[1]))
    if gray.size != size:
        binary = set(gray.getextrema()) <= {0, 255}
        gray = gray.resize(size, resample=Image.Resampling.LANCZOS)
        if binary:
            # A black-and-white mask stays black-and-white at the new size: no lanczos ringing at its edges.
            gray = gray.point(lambda v: 255 if v > 127 else 0)
    if invert:
        gray = ImageOps.invert(gray)
    return blur_mask(gray, blur_x, blur_y)


# --- masked content: fill -----------------------------------------------------------------------------------


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a window of 2*radius+1 along the last axis, counting pixels outside the image as zero."""
    length = values.shape[-1]
    lead = values.shape[:-1]
    sums = np.cumsum(values, axis=-1)
    # Prefix sums extended so that a window sum is one subtraction of two slices: `radius` + 1 zeros in
    # front (windows starting before the image) and `radius` copies of the total behind (windows ending after).
    extended = np.concatenate(
        [np.zeros((*lead, radius + 1), dtype=values.dtype), sums, np.broadcast_to(sums[..., -1:], (*lead, radius))], axis=-1
    )
    window = extended[..., 2 * radius + 1 : 2 * radius + 1 + length] - extended[..., :length]
    window /= 2 * radius + 1
    return window


def _smooth(planes: np.ndarray, sigma: float) -> np.ndarray:
    """Near-gaussian blur of (C, H, W) float planes: three box passes per axis, zero outside the image.

    Zero padding is what the normalised averaging in `fill` needs: outside pixels carry neither colour nor
    weight. Box passes keep the cost independent of the radius; wide radii run on a box-reduced copy and
    are scaled back bilinearly, which is all a blur that wide needs.
    """
    height, width = planes.shape[1:]
    factor = max(1, int(sigma // 3))
    if factor > 1:
        small_size = (max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor)))
        planes = _resize_planes(planes, small_size, Image.Resampling.BOX)
        sigma /= factor
    box_radius = max(1, round((math.sqrt(4.0 * sigma * sigma + 1.0) - 1.0) / 2.0))
    # Passes run along the contiguous last axis (running sums are several times faster there).
    for _ in range(3):
        planes = _box_mean(planes, box_radius)
    planes = np.ascontiguousarray(planes.transpose(0, 2, 1))
    for _ in range(3):
        planes = _box_mean(planes, box_radius)
    planes = np.ascontiguousarray(planes.transpose(0, 2, 1))
    if factor > 1:
        planes = _resize_planes(planes, (width, height), Image.Resampling.BILINEAR)
    return planes


def _resize_planes(planes: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize (C, H, W) float planes to `size` (width, height) through PIL's float images."""
    resized = [
        np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize(size, resample=resample))
        for plane in planes
    ]
    return np.stack(resized)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Replace the masked area (255) with colours diffused inwards from the unmasked pixels around it.

    "Masked content: fill" starts the sampler from a neutral guess instead of the content being replaced.
    Each pixel's colour is a weighted average of the mostly unmasked pixels near it, taken at shrinking
    radii: the wide averages reach the middle of large holes, the narrow ones make colours continue smoothly
    from the border. Pixels masked at half or more never serve as a source (on a blurred or resampled mask
    edge they still carry the content being replaced), so no trace of the original masked content remains;
    unmasked pixels come back unchanged and partly masked ones are blended with the fill.
    """
    # float32 halves the memory traffic of the blurs; their rounding stays far below one colour level.
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)  # (3, H, W)
    gray = mask.convert("L")
    if gray.size != image.size:
        gray = gray.resize(image.size, resample=Image.Resampling.LANCZOS)
    keep = 1.0 - np.asarray(gray, dtype=np.float32)[None] / 255.0  # (1, H, W)

    source = np.clip(2.0 * keep - 1.0, 0.0, 1.0)
    if source.sum() <= 0:  # only soft edges are left: take what there is
        source = keep
    total = source.sum(dtype=np.float64)
    if total <= 0:  # nothing to diffuse from: black, as A1111 gives for a fully masked picture
        return Image.new("RGB", image.size)
    mean = (rgb * source).sum(axis=(1, 2), dtype=np.float64) / total
    estimate = np.broadcast_to(mean[:, None, None], rgb.shape).copy()

    weighted = np.concatenate([rgb * source, source], axis=0)
    for radius in _FILL_RADII:
        smoothed = _smooth(weighted, radius)
        weight = smoothed[3:]
        known = weight > 1e-4  # below that the window holds (almost) no source: nothing to learn there
        local = np.divide(smoothed[:3], weight, out=np.zeros_like(rgb), where=known)
        # Trust the local average where at least half of the window holds sources; fade out beyond.
        confidence = np.clip(weight * 2.0, 0.0, 1.0) * known
        estimate += confidence * (local - estimate)

    out = rgb * keep + estimate * (1.0 - keep)
    pixels = np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


# --- planning -------------------------------------------------------------------------------------------------


@dataclass
class InpaintPlan:
    """What processing needs for one init image of an inpainting job.

    `latent_mask` and `overlay` are None only when "Only masked" met an empty mask: like A1111, the job
    then runs as plain img2img on the whole picture (`comment` says so, for the infotext comments).
    """

    init_image: Image.Image
    """RGB, (width, height): the pixels to encode with the VAE."""
    latent_mask: Image.Image | None
    """L, (width, height), aligned with init_image; 255 = repaint. Processing scales it to latent size."""
    crop_region: Box | None
    """(x1, y1, x2, y2) of the original picture that init_image covers ("Only masked"), else None."""
    paste_to: Box | None
    """(x, y, w, h) where the generated picture goes back into the original ("Only masked"), else None."""
    overlay: Image.Image | None
    """RGBA at the output size: the input pixels, opaque where they must be kept, composited last."""
    overlay_mask: Image.Image | None
    """L, the mask the overlay was cut with (A1111 saves it as the "-mask" image)."""
    inpainting_fill: int
    """Masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing (2 and 3 act on latents)."""
    comment: str = ""


def plan_img2img(
    image: Image.Image, *, width: int, height: int, resize_mode: int, background: str | None = None
) -> Image.Image:
    """Plain img2img init image: transparency flattened onto the background colour, then resized.

    `background` defaults to the `img2img_background_color` setting (white).
    """
    flat = _flatten(image, background if background is not None else _background_color())
    return images.resize_image(resize_mode, flat, width, height)


def plan_inpaint(
    image: Image.Image,
    mask: Image.Image,
    *,
    width: int,
    height: int,
    resize_mode: int,
    mask_blur_x: int,
    mask_blur_y: int,
    invert: bool,
    full_res: bool,
    full_res_padding: int,
    inpainting_fill: int,
    round_mask: bool = True,
    latent_mask: Image.Image | None = None,
    background: str | None = None,
) -> InpaintPlan:
    """Prepare one init image and its mask for inpainting (see `InpaintPlan`).

    Whole picture: image and mask are resized with `resize_mode`; the overlay keeps the input wherever the
    blurred mask is below half (A1111 doubles the mask for the overlay in this mode, so the generated
    content fills the soft edge). Only masked (`full_res`): the mask's bounding box plus
    `full_res_padding`, widened to the processing aspect ratio, is cut from the original picture and scaled
    to (width, height); the overlay is at the original size and keeps the input wherever the blurred mask
    is 0. `latent_mask` overrides the mask used for fill and latent blending (scripts such as outpainting
    set it), as `p.latent_mask` does in A1111.
    """
    flat = _flatten(image, background if background is not None else _background_color())
    overlay_mask = prepare_mask(
        mask, size=flat.size, blur_x=mask_blur_x, blur_y=mask_blur_y, invert=invert, round_mask=round_mask
    )

    crop_region: Box | None = None
    paste_to: Box | None = None
    if full_res:
        if overlay_mask.getbbox() is None:
            return InpaintPlan(
                init_image=images.resize_image(resize_mode, flat, width, height),
                latent_mask=None,
                crop_region=None,
                paste_to=None,
                overlay=None,
                overlay_mask=None,
                inpainting_fill=inpainting_fill,
                comment='Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.',
            )
        crop_region = get_crop_region(overlay_mask, full_res_padding)
        crop_region = expand_crop_region(crop_region, width, height, flat.width, flat.height)
        x1, y1, x2, y2 = crop_region
        paste_to = (x1, y1, x2 - x1, y2 - y1)
        # The crop is scaled with "resize and fill": its ratio already matches, so at most a pixel of margin.
        source_image, source_mask, scale_mode = flat.crop(crop_region), overlay_mask.crop(crop_region), 2
        init_image = images.resize_image(scale_mode, source_image, width, height)
        overlay_base = flat
    else:
        source_image, source_mask, scale_mode = flat, overlay_mask, resize_mode
        init_image = overlay_base = images.resize_image(resize_mode, flat, width, height)

    work_mask = images.resize_image(scale_mode, source_mask, width, height)
    if not full_res:
        doubled = np.minimum(np.asarray(work_mask, dtype=np.uint16) * 2, 255).astype(np.uint8)
        overlay_mask = Image.fromarray(doubled, mode="L")
    overlay = overlay_base.convert("RGBA")
    overlay.putalpha(ImageOps.invert(overlay_mask))

    if latent_mask is not None:
        work_mask = latent_mask.convert("L")
        if work_mask.size != (width, height):
            work_mask = work_mask.resize((width, height), resample=Image.Resampling.LANCZOS)

    # A1111 fills for every mode but "original": for the latent modes the filled pixels only matter where
    # the rounded latent mask keeps the encoded image, and there they should not echo the old content.
    if inpainting_fill != INPAINT_ORIGINAL:
        if latent_mask is None and source_image.width * source_image.height <= width * height:
            # Fill before scaling up: resampling would otherwise smear masked content into the pixels just
            # outside the mask, the very pixels the fill grows from. Larger sources are filled after scaling
            # down, which also keeps the cost bounded by the processing size.
            init_image = images.resize_image(scale_mode, fill(source_image, source_mask), width, height)
        else:
            init_image = fill(init_image, work_mask)

    return InpaintPlan(
        init_image=init_image,
        latent_mask=work_mask,
        crop_region=crop_region,
        paste_to=paste_to,
        overlay=overlay,
        overlay_mask=overlay_mask,
        inpainting_fill=inpainting_fill,
    )


def _composite(base: Image.Image, overlay: Image.Image) -> Image.Image:
    """`overlay` (RGBA) over an opaque RGB `base`; where the overlay is opaque its pixels come out exactly."""
    below = np.asarray(base, dtype=np.uint32)
    above = np.asarray(overlay, dtype=np.uint32)
    alpha = above[..., 3:]
    mixed = (above[..., :3] * alpha + below * (255 - alpha) + 127) // 255
    return Image.fromarray(mixed.astype(np.uint8), mode="RGB")


def apply_overlay(result: Image.Image, plan: InpaintPlan) -> Image.Image:
    """Put a generated picture (width x height) back: uncrop it for "Only masked", then lay the overlay on top.

    The returned RGB image has the overlay's size; outside the mask it equals the input pixel for pixel.
    """
    result = result.convert("RGB")
    if plan.overlay is None:
        return result
    if plan.paste_to is not None:
        x, y, w, h = plan.paste_to
        base = plan.overlay.convert("RGB")
        base.paste(images.resize_image(1, result, w, h), (x, y))
    elif result.size != plan.overlay.size:
        base = result.resize(plan.overlay.size, resample=Image.Resampling.LANCZOS)
    else:
        base = result
    return _composite(base, plan.overlay)
