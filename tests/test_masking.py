"""Image-side img2img/inpaint preparation: crop regions, fill, masks, plans and the final composite."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.masking import (
    InpaintPlan,
    apply_overlay,
    expand_crop_region,
    fill,
    get_crop_region,
    plan_img2img,
    plan_inpaint,
    prepare_mask,
)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


def rect_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """L mask, 255 inside `box` (x1, y1, x2, y2; x2/y2 exclusive)."""
    mask = Image.new("L", (width, height), 0)
    x1, y1, x2, y2 = box
    ImageDraw.Draw(mask).rectangle((x1, y1, x2 - 1, y2 - 1), fill=255)
    return mask


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int32)


def inpaint(image, mask, **overrides) -> InpaintPlan:
    args = dict(
        width=image.width,
        height=image.height,
        resize_mode=0,
        mask_blur_x=0,
        mask_blur_y=0,
        invert=False,
        full_res=False,
        full_res_padding=0,
        inpainting_fill=1,
        background="#ffffff",
    )
    args.update(overrides)
    return plan_inpaint(image, mask, **args)


# --- crop regions ---------------------------------------------------------------------------------------------


def test_crop_region_is_the_exclusive_bounding_box_grown_by_padding_and_clamped():
    mask = rect_mask(100, 80, (30, 20, 50, 45))
    assert get_crop_region(mask) == (30, 20, 50, 45)
    assert get_crop_region(mask, 10) == (20, 10, 60, 55)
    assert get_crop_region(mask, 40) == (0, 0, 90, 80)


def test_crop_region_of_an_empty_mask_is_the_whole_image():
    assert get_crop_region(Image.new("L", (64, 48)), 8) == (0, 0, 64, 48)


def test_crop_region_reads_non_l_masks():
    mask = rect_mask(40, 40, (5, 6, 7, 8)).convert("RGB")
    assert get_crop_region(mask) == (5, 6, 7, 8)


def test_expand_crop_region_grows_the_short_side_to_the_processing_ratio():
    assert expand_crop_region((100, 200, 228, 232), 512, 512, 1024, 1024) == (100, 152, 228, 280)
    assert expand_crop_region((100, 100, 132, 228), 512, 512, 1024, 1024) == (52, 100, 180, 228)
    x1, y1, x2, y2 = expand_crop_region((10, 10, 110, 30), 768, 512, 400, 300)
    assert (x2 - x1) / (y2 - y1) == pytest.approx(768 / 512, abs=0.02)


def test_expand_crop_region_slides_inside_the_image_at_the_borders():
    # Touching the top edge: the region slides down instead of leaving the image.
    assert expand_crop_region((100, 0, 228, 32), 512, 512, 1024, 1024) == (100, 0, 228, 128)
    # Touching the bottom-right corner.
    assert expand_crop_region((900, 1000, 1024, 1024), 512, 512, 1024, 1024) == (900, 900, 1024, 1024)
    # Image too small for the ratio: clipped to the image, never outside it.
    assert expand_crop_region((0, 10, 200, 20), 512, 512, 200, 50) == (0, 0, 200, 50)


# --- fill -----------------------------------------------------------------------------------------------------


def red_square_on_blue(size: int = 96) -> tuple[Image.Image, Image.Image]:
    image = Image.new("RGB", (size, size), (0, 0, 255))
    box = (size // 3, size // 3, 2 * size // 3, 2 * size // 3)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 0, 0))
    return image, rect_mask(size, size, box)


def test_fill_removes_the_masked_content_and_keeps_the_rest():
    image, mask = red_square_on_blue()
    filled = arr(fill(image, mask))
    inside = arr(mask) == 255
    assert filled[inside][:, 0].max() <= 2  # no red left at all
    assert filled[inside][:, 2].min() >= 250  # blue continues into the hole
    assert np.array_equal(filled[~inside], arr(image)[~inside])


def test_fill_continues_colours_smoothly_from_the_border():
    gradient = np.zeros((64, 128, 3), dtype=np.uint8)
    gradient[..., 0] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]
    gradient[:, :, 1] = 200  # hidden content that differs strongly from the surroundings
    image = Image.fromarray(gradient)
    pixels = gradient.copy()
    pixels[:, 40:88, 1] = 0
    image = Image.fromarray(pixels)
    mask = rect_mask(128, 64, (40, 0, 88, 64))
    filled = arr(fill(image, mask))
    assert filled[:, 40:88, 1].min() >= 190  # the green of the surroundings, not the hidden black
    # Next to each border the fill takes the colour of the pixels just outside it.
    assert abs(filled[32, 40, 0] - pixels[32, 39, 0]) <= 12
    assert abs(filled[32, 87, 0] - pixels[32, 88, 0]) <= 12
    # Across the hole red moves from the left colour to the right one without jumps.
    row = filled[32, 38:90, 0]
    assert np.abs(np.diff(row)).max() <= 12
    assert row[0] < row[-1]


def test_fill_of_a_fully_masked_picture_is_black():
    image = noise_image(32, 32)
    assert arr(fill(image, Image.new("L", (32, 32), 255))).max() == 0


def test_fill_with_an_empty_mask_changes_nothing():
    image = noise_image(40, 24)
    assert np.array_equal(arr(fill(image, Image.new("L", (40, 24)))), arr(image))


# --- prepare_mask ---------------------------------------------------------------------------------------------


def test_rgba_alpha_mask_and_l_mask_prepare_the_same():
    mask_l = rect_mask(64, 64, (10, 12, 40, 50))
    stroke = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    stroke.paste(Image.new("RGBA", (64, 64), (255, 255, 255, 255)), mask=mask_l)
    opaque = mask_l.convert("RGBA")  # fully opaque: read from luminance
    kwargs = dict(size=(64, 64), blur_x=3, blur_y=2, invert=False)
    expected = arr(prepare_mask(mask_l, **kwargs))
    assert np.array_equal(arr(prepare_mask(stroke, **kwargs)), expected)
    assert np.array_equal(arr(prepare_mask(opaque, **kwargs)), expected)
    assert np.array_equal(arr(prepare_mask(mask_l.convert("1"), **kwargs)), expected)


def test_alpha_mask_is_rounded_only_when_asked():
    alpha = np.array([[0, 100, 129, 200]], dtype=np.uint8)
    rgba = np.zeros((1, 4, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    mask = Image.fromarray(rgba, mode="RGBA")
    rounded = prepare_mask(mask, size=(4, 1), blur_x=0, blur_y=0, invert=False, round_mask=True)
    soft = prepare_mask(mask, size=(4, 1), blur_x=0, blur_y=0, invert=False, round_mask=False)
    assert arr(rounded).tolist() == [[0, 0, 255, 255]]
    assert arr(soft).tolist() == [[0, 100, 129, 200]]


def test_prepare_mask_inverts():
    mask = rect_mask(16, 16, (4, 4, 8, 8))
    inverted = arr(prepare_mask(mask, size=(16, 16), blur_x=0, blur_y=0, invert=True))
    assert np.array_equal(inverted, 255 - arr(mask))


def test_mask_of_another_size_is_resized():
    small = rect_mask(32, 32, (8, 8, 24, 24))
    prepared = prepare_mask(small, size=(64, 64), blur_x=0, blur_y=0, invert=False)
    assert prepared.size == (64, 64)
    assert set(np.unique(arr(prepared))) == {0, 255}  # a binary mask stays binary
    assert get_crop_region(prepared) == (16, 16, 48, 48)


def test_mask_blur_follows_the_separate_radii():
    mask = rect_mask(64, 64, (24, 24, 56, 56))
    none = arr(prepare_mask(mask, size=(64, 64), blur_x=0, blur_y=0, invert=False))
    assert np.array_equal(none, arr(mask))
    only_x = arr(prepare_mask(mask, size=(64, 64), blur_x=4, blur_y=0, invert=False))
    assert only_x[10, :].max() == 0  # nothing leaks vertically
    assert 0 < only_x[32, 22] < 255  # but it does horizontally
    assert only_x[40, 40] == 255
    both = arr(prepare_mask(mask, size=(64, 64), blur_x=4, blur_y=4, invert=False))
    assert 0 < both[22, 32] < 255 and 0 < both[32, 22] < 255
    # The blur reaches about 2.5 sigma, not further.
    assert both[32, 24 - 11] == 0 and both[32, 24 - 9] > 0


# --- plans and the composite --------------------------------------------------------------------------------------


@pytest.mark.parametrize("blur", [0, 4])
@pytest.mark.parametrize("invert", [False, True])
def test_whole_picture_keeps_every_unmasked_pixel(blur, invert):
    image = noise_image(128, 96, seed=1)
    mask = rect_mask(128, 96, (30, 20, 100, 76))
    plan = inpaint(image, mask, mask_blur_x=blur, mask_blur_y=blur, invert=invert)
    assert plan.init_image.size == (128, 96) and plan.init_image.mode == "RGB"
    assert plan.latent_mask.size == (128, 96) and plan.latent_mask.mode == "L"
    assert plan.crop_region is None and plan.paste_to is None

    result = noise_image(128, 96, seed=2)
    out = arr(apply_overlay(result, plan))
    keep = arr(plan.latent_mask) == 0
    assert keep.sum() > 1500
    assert np.array_equal(out[keep], arr(image)[keep])
    repaint = arr(plan.latent_mask) >= 128  # whole picture: the generated content covers the soft edge
    assert repaint.sum() > 2000
    assert np.array_equal(out[repaint], arr(result)[repaint])
    if invert:
        assert keep[48, 64] and not keep[2, 2]
    else:
        assert keep[2, 2] and not keep[48, 64]


@pytest.mark.parametrize("blur", [0, 4])
@pytest.mark.parametrize("invert", [False, True])
def test_only_masked_keeps_every_unmasked_pixel(blur, invert):
    image = noise_image(160, 120, seed=3)
    mask = rect_mask(160, 120, (50, 40, 70, 60))
    plan = inpaint(
        image, mask, width=64, height=32, mask_blur_x=blur, mask_blur_y=blur, invert=invert,
        full_res=True, full_res_padding=8,
    )
    assert plan.init_image.size == (64, 32) and plan.latent_mask.size == (64, 32)
    assert plan.overlay.size == (160, 120)

    out = arr(apply_overlay(noise_image(64, 32, seed=4), plan))
    assert out.shape == (120, 160, 3)
    keep = arr(plan.overlay_mask) == 0
    assert np.array_equal(out[keep], arr(image)[keep])
    assert not np.array_equal(out, arr(image))
    if not invert:
        x1, y1, x2, y2 = plan.crop_region
        outside = np.ones((120, 160), dtype=bool)
        outside[y1:y2, x1:x2] = False
        assert np.array_equal(out[outside], arr(image)[outside])
        assert (out[48, 60] != arr(image)[48, 60]).any()


def test_only_masked_crop_includes_padding_and_matches_the_processing_ratio():
    image = noise_image(400, 300)
    mask = rect_mask(400, 300, (100, 100, 140, 120))
    plan = inpaint(image, mask, width=96, height=64, full_res=True, full_res_padding=16)
    x1, y1, x2, y2 = plan.crop_region
    assert x1 <= 84 and y1 <= 84 and x2 >= 156 and y2 >= 136
    assert (x2 - x1) / (y2 - y1) == pytest.approx(96 / 64, abs=0.02)
    assert plan.paste_to == (x1, y1, x2 - x1, y2 - y1)
    # The init image is the crop of the original, scaled up to the processing size.
    crop = image.crop(plan.crop_region).resize((96, 64), Image.Resampling.LANCZOS)
    assert np.abs(arr(plan.init_image) - arr(crop)).mean() < 3
    # The latent mask is the crop of the mask, aligned with the init image.
    sx, sy = 96 / (x2 - x1), 64 / (y2 - y1)
    core = plan.latent_mask.point(lambda v: 255 if v >= 128 else 0)
    expected = ((100 - x1) * sx, (100 - y1) * sy, (140 - x1) * sx, (120 - y1) * sy)
    assert get_crop_region(core) == pytest.approx(expected, abs=1.5)


def test_only_masked_pastes_the_generated_picture_into_the_crop():
    image = Image.new("RGB", (200, 200), (10, 20, 30))
    mask = rect_mask(200, 200, (80, 80, 120, 120))
    plan = inpaint(image, mask, width=64, height=64, full_res=True, full_res_padding=0)
    out = arr(apply_overlay(Image.new("RGB", (64, 64), (250, 0, 0)), plan))
    assert out[100, 100].tolist() == [250, 0, 0]
    assert out[10, 10].tolist() == [10, 20, 30]


def test_whole_picture_with_a_resize_mode_works_at_the_processing_size():
    image = noise_image(120, 60, seed=5)
    mask = rect_mask(120, 60, (50, 20, 70, 40))
    plan = inpaint(image, mask, width=64, height=64, resize_mode=1, mask_blur_x=4, mask_blur_y=4)
    resized = plan_img2img(image, width=64, height=64, resize_mode=1)
    assert np.array_equal(arr(plan.init_image), arr(resized))
    assert plan.overlay.size == (64, 64)
    out = arr(apply_overlay(noise_image(64, 64, seed=6), plan))
    keep = arr(plan.overlay)[..., 3] == 255
    assert keep.sum() > 2000
    assert np.array_equal(out[keep], arr(resized)[keep])


def test_rgba_mask_and_l_mask_give_the_same_plan():
    image = noise_image(80, 80, seed=7)
    mask_l = rect_mask(80, 80, (20, 30, 50, 60))
    stroke = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    stroke.paste(Image.new("RGBA", (80, 80), (255, 255, 255, 255)), mask=mask_l)
    for full_res in (False, True):
        a = inpaint(image, mask_l, width=64, height=64, mask_blur_x=4, mask_blur_y=4, full_res=full_res,
                    full_res_padding=4, inpainting_fill=0)
        b = inpaint(image, stroke, width=64, height=64, mask_blur_x=4, mask_blur_y=4, full_res=full_res,
                    full_res_padding=4, inpainting_fill=0)
        assert a.crop_region == b.crop_region and a.paste_to == b.paste_to
        for name in ("init_image", "latent_mask", "overlay", "overlay_mask"):
            assert np.array_equal(arr(getattr(a, name)), arr(getattr(b, name))), name


def test_mask_of_another_size_than_the_image_is_resized_in_the_plan():
    image = noise_image(128, 128, seed=8)
    plan = inpaint(image, rect_mask(64, 64, (16, 16, 32, 32)), full_res=True, width=64, height=64)
    assert plan.overlay_mask.size == (128, 128)
    assert get_crop_region(plan.overlay_mask) == (32, 32, 64, 64)


def test_masked_content_fill_replaces_the_masked_pixels_of_the_init_image():
    image, mask = red_square_on_blue(96)
    filled = inpaint(image, mask, inpainting_fill=0)
    original = inpaint(image, mask, inpainting_fill=1)
    inside = arr(mask) == 255
    assert arr(filled.init_image)[inside][:, 0].max() <= 2
    assert np.array_equal(arr(original.init_image), arr(image))
    assert filled.inpainting_fill == 0 and original.inpainting_fill == 1
    # Only masked: the fill happens on the crop at the processing size.
    cropped = inpaint(image, mask, width=64, height=64, full_res=True, full_res_padding=8, inpainting_fill=0)
    hole = arr(cropped.latent_mask) == 255
    assert hole.sum() > 500 and arr(cropped.init_image)[hole][:, 0].max() <= 2
    # Latent noise / nothing are passed through; like A1111 their init pixels are filled as well.
    for code in (2, 3):
        plan = inpaint(image, mask, inpainting_fill=code)
        assert plan.inpainting_fill == code
        assert arr(plan.init_image)[inside][:, 0].max() <= 2


def test_fill_of_a_picture_larger_than_the_processing_size_happens_after_scaling_down():
    image, mask = red_square_on_blue(192)
    plan = inpaint(image, mask, width=64, height=64, inpainting_fill=0)
    hole = arr(plan.latent_mask) == 255
    assert hole.sum() > 300
    assert arr(plan.init_image)[hole][:, 0].mean() < 8  # scaling blends the edge a little, the rest is gone
    assert arr(plan.init_image)[24:40, 24:40, 0].max() <= 2


def test_latent_mask_override_drives_fill_and_latent_blending():
    image, _ = red_square_on_blue(64)  # red at 21..42
    user_mask = rect_mask(64, 64, (28, 28, 36, 36))
    override = rect_mask(32, 32, (8, 8, 24, 24))  # 16..48 at full size: the whole square
    plan = inpaint(image, user_mask, inpainting_fill=0, latent_mask=override)
    assert plan.latent_mask.size == (64, 64)
    assert get_crop_region(plan.latent_mask.point(lambda v: 255 if v >= 128 else 0)) == (16, 16, 48, 48)
    # The fill followed the override: even the red outside the user's mask is gone.
    assert arr(plan.init_image)[16:48, 16:48, 0].max() <= 2
    # The overlay still follows the user's mask.
    assert arr(plan.overlay)[32, 32, 3] == 0 and arr(plan.overlay)[22, 22, 3] == 255

def test_empty_mask():
    image = noise_image(64, 64, seed=9)
    empty = Image.new("L", (64, 64))
    whole = inpaint(image, empty, mask_blur_x=4, mask_blur_y=4)
    assert np.array_equal(arr(apply_overlay(noise_image(64, 64, seed=10), whole)), arr(image))
    # "Only masked" with nothing masked runs as plain img2img, as in A1111.
    only = inpaint(image, empty, width=32, height=32, full_res=True, full_res_padding=32)
    assert only.latent_mask is None and only.overlay is None and only.crop_region is None
    assert only.comment
    assert only.init_image.size == (32, 32)
    result = noise_image(32, 32, seed=11)
    assert np.array_equal(arr(apply_overlay(result, only)), arr(result))


def test_full_mask():
    image = noise_image(64, 48, seed=12)
    full = Image.new("L", (64, 48), 255)
    result = noise_image(64, 48, seed=13)
    whole = inpaint(image, full, mask_blur_x=4, mask_blur_y=4)
    assert np.array_equal(arr(apply_overlay(result, whole)), arr(result))
    only = inpaint(image, full, width=64, height=48, full_res=True, full_res_padding=32)
    assert only.crop_region == (0, 0, 64, 48)
    assert np.array_equal(arr(apply_overlay(result, only)), arr(result))
    assert arr(inpaint(image, full, inpainting_fill=0).init_image).max() == 0


def test_inpaint_flattens_a_transparent_init_image_on_the_background():
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    plan = inpaint(image, rect_mask(32, 32, (0, 0, 8, 8)), background="#000080")
    assert arr(plan.overlay)[20, 20].tolist() == [0, 0, 128, 255]


# --- plain img2img ------------------------------------------------------------------------------------------------


def test_plan_img2img_composites_transparency_on_the_configured_background():
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    out = plan_img2img(image, width=20, height=10, resize_mode=0)
    assert out.mode == "RGB"
    assert arr(out)[5, 5].tolist() == [255, 255, 255]  # the img2img_background_color default
    assert arr(out)[0, 0].tolist() == [255, 0, 0]
    assert arr(plan_img2img(image, width=20, height=10, resize_mode=0, background="#00ff00"))[5, 5].tolist() == [
        0, 255, 0
    ]


def test_plan_img2img_resize_modes():
    image = Image.new("RGB", (100, 50), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 9, 49), fill=(255, 0, 0))  # red left band
    for mode in (0, 1, 2, 3):
        assert plan_img2img(image, width=64, height=64, resize_mode=mode).size == (64, 64)
    just = arr(plan_img2img(image, width=64, height=64, resize_mode=0))
    crop = arr(plan_img2img(image, width=64, height=64, resize_mode=1))
    fit = arr(plan_img2img(image, width=64, height=64, resize_mode=2))
    assert just[32, 2, 0] > 200  # stretched: the red band survives
    assert crop[32, 2, 0] < 60  # cropped: the centre keeps blue only
    assert fit[2, 2, 0] > 200 and fit[62, 2, 0] > 200  # fitted, the margins repeat the edge rows
    assert fit[2, 40].tolist() == [0, 0, 255]

