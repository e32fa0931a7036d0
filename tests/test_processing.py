"""process_images end to end on tiny checkpoints loaded through the model manager."""

from __future__ import annotations

import datetime
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules import cmd_args, infotext_utils, shared
from modules.engine import samplers
from modules.model_manager.safe_load import UnsafeCheckpointError
from modules.processing import (
    InvalidParameterError,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)


@pytest.fixture
def easel(tmp_path: Path, tiny_models_dir: Path):  # type: ignore[no-untyped-def]
    """An initialised instance over a copy of the tiny models tree and a temporary data dir."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path / "data"), "--models-dir", str(models)])
    shared.initialize(args)
    shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
    shared.opts.live_previews_enable = False
    yield tmp_path
    if shared.model_manager is not None:
        shared.model_manager.close()


def txt2img(**kw) -> StableDiffusionProcessingTxt2Img:  # type: ignore[no-untyped-def]
    base = dict(prompt="a red circle", negative_prompt="", seed=1, steps=3, cfg_scale=7.0, width=64, height=64,
                sampler_name="Euler a", scheduler="Automatic")
    base.update(kw)
    return StableDiffusionProcessingTxt2Img(**base)


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_txt2img_saves_a_png_with_a1111_infotext(easel: Path) -> None:
    res = process_images(txt2img(seed=1234, negative_prompt="blurry, ugly"))
    day = datetime.date.today().strftime("%Y-%m-%d")
    out = easel / "data" / "outputs" / "txt2img-images" / day
    files = sorted(os.listdir(out))
    assert files == ["00000-1234.png"]
    info = shared.model_manager.current_info
    expected = (
        "a red circle\n"
        "Negative prompt: blurry, ugly\n"
        f"Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 64x64, "
        f"Model hash: {info.shorthash}, Model: tiny-sd1, RNG: CPU, Version: easel-0.1.0"
    )
    assert res.infotexts == [expected]
    with Image.open(out / files[0]) as im:
        text, _ = infotext_utils.read_info_from_image(im)
        assert text == expected
        assert im.size == (64, 64)
    parsed = infotext_utils.parse_generation_parameters(text)
    assert parsed["Seed"] == "1234" and parsed["Size-1"] == "64" and parsed["Sampler"] == "Euler a"
    assert parsed["Negative prompt"] == "blurry, ugly"
    # a second run continues the counter
    process_images(txt2img(seed=1235))
    assert sorted(os.listdir(out)) == ["00000-1234.png", "00001-1235.png"]
    assert (easel / "data" / "params.txt").read_text() == res.infotexts[0].replace("1234", "1235").replace(
        "blurry, ugly", "").replace("Negative prompt: \n", "")


def test_batches_make_a_grid_and_seeds_count_up(easel: Path) -> None:
    res = process_images(txt2img(seed=10, batch_size=2, n_iter=2))
    assert res.all_seeds == [10, 11, 12, 13]
    assert res.index_of_first_image == 1 and len(res.images) == 5
    day = datetime.date.today().strftime("%Y-%m-%d")
    grids = os.listdir(easel / "data" / "outputs" / "txt2img-grids" / day)
    assert grids == ["grid-0000.png"]
    samples = sorted(os.listdir(easel / "data" / "outputs" / "txt2img-images" / day))
    assert samples == ["00000-10.png", "00001-11.png", "00002-12.png", "00003-13.png"]
    info = __import__("json").loads(res.js())
    assert info["all_seeds"] == [10, 11, 12, 13] and info["index_of_first_image"] == 1
    assert len(info["infotexts"]) == 5 and "Seed: 12," in info["infotexts"][3]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ SDE"])
def test_a_seed_gives_the_same_picture_at_any_batch_size(easel: Path, sampler: str) -> None:
    batch = process_images(txt2img(seed=50, batch_size=3, sampler_name=sampler, do_not_save_samples=True,
                                   do_not_save_grid=True))
    single = process_images(txt2img(seed=51, batch_size=1, sampler_name=sampler, do_not_save_samples=True))
    images = batch.images[batch.index_of_first_image:]
    assert np.abs(arr(images[1]) - arr(single.images[0])).max() <= 1
    assert np.abs(arr(images[0]) - arr(images[1])).max() > 5


def test_variation_seed_and_size_land_in_the_infotext(easel: Path) -> None:
    res = process_images(txt2img(seed=3, subseed=99, subseed_strength=0.25, seed_resize_from_w=96,
                                 seed_resize_from_h=64, do_not_save_samples=True))
    text = res.infotexts[0]
    assert "Variation seed: 99, Variation seed strength: 0.25, Seed resize from: 96x64" in text
    plain = process_images(txt2img(seed=3, do_not_save_samples=True))
    assert np.abs(arr(res.images[0]) - arr(plain.images[0])).max() > 0


def test_clip_skip_and_legacy_sampler_names(easel: Path) -> None:
    shared.opts.CLIP_stop_at_last_layers = 2
    res = process_images(txt2img(sampler_name="DPM++ 2M Karras", do_not_save_samples=True))
    text = res.infotexts[0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in text
    assert "Clip skip: 2," in text


def test_override_settings_apply_for_one_run(easel: Path) -> None:
    res = process_images(txt2img(override_settings={"CLIP_stop_at_last_layers": 3}, do_not_save_samples=True))
    assert "Clip skip: 3" in res.infotexts[0]
    assert shared.opts.CLIP_stop_at_last_layers == 1


def test_switching_checkpoint_by_override_and_back(easel: Path) -> None:
    res = process_images(txt2img(override_settings={"sd_model_checkpoint": "tiny-sd2v"}, do_not_save_samples=True))
    assert "Model: tiny-sd2v" in res.infotexts[0]
    res = process_images(txt2img(do_not_save_samples=True))
    assert "Model: tiny-sd1," in res.infotexts[0]


def test_sdxl_generates(easel: Path) -> None:
    shared.opts.sd_model_checkpoint = "tiny-sdxl"
    res = process_images(txt2img(width=64, height=96, do_not_save_samples=True))
    assert res.images[0].size == (64, 96)
    assert "Model: tiny-sdxl" in res.infotexts[0]


def test_interrupt_stops_within_a_step_and_saves_nothing_half_done(easel: Path) -> None:
    p = txt2img(steps=20, n_iter=3)
    seen: list[int] = []

    def stop_after_two(info) -> None:  # type: ignore[no-untyped-def]
        seen.append(info.step)
        if len(seen) == 2:
            shared.state.interrupt()

    p.step_callback = stop_after_two
    res = process_images(p)
    assert len(seen) == 2  # the loop checked before the third step
    assert res.images == []
    assert not (easel / "data" / "outputs" / "txt2img-images").exists()


def test_skip_moves_to_the_next_batch(easel: Path) -> None:
    p = txt2img(steps=4, n_iter=2, seed=7, do_not_save_grid=True)
    calls: list[int] = []

    def skip_first(info) -> None:  # type: ignore[no-untyped-def]
        calls.append(info.step)
        if len(calls) == 1:
            shared.state.skip()

    p.step_callback = skip_first
    res = process_images(p)
    assert [int(t.split("Seed: ")[1].split(",")[0]) for t in res.infotexts] == [8]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", 100, "multiple of 8"),
        ("height", 4104, "between 64 and 4096"),
        ("steps", 0, "steps is 0"),
        ("steps", 151, "between 1 and 150"),
        ("cfg_scale", 31.0, "cfg_scale"),
        ("sampler_name", "Euler z", "Euler z"),
        ("scheduler", "Wobbly", "Wobbly"),
    ],
)
def test_bad_input_names_the_value(easel: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        process_images(txt2img(**{field: value}))
    assert not (easel / "data" / "outputs").exists()


def test_unknown_sampler_lists_the_known_ones(easel: Path) -> None:
    with pytest.raises(samplers.UnknownSamplerError) as e:
        process_images(txt2img(sampler_name="Eulr"))
    assert "DPM++ 2M" in str(e.value)


def _picture() -> Image.Image:
    a = np.zeros((64, 64, 3), dtype=np.uint8)
    a[:, :, 2] = 200
    a[8:24, 8:56, 0] = 230
    return Image.fromarray(a)


def _mask() -> Image.Image:
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 24, 48, 56))
    return m


def test_img2img_runs_part_of_the_steps_and_writes_denoising(easel: Path) -> None:
    p = StableDiffusionProcessingImg2Img(init_images=[_picture()], prompt="a house", seed=4, steps=10,
                                         denoising_strength=0.5, width=64, height=64, sampler_name="Euler")
    seen: list[int] = []
    p.step_callback = lambda info: seen.append(info.step)
    res = process_images(p)
    assert len(seen) == 5
    assert "Denoising strength: 0.5" in res.infotexts[0]
    day = datetime.date.today().strftime("%Y-%m-%d")
    assert os.listdir(easel / "data" / "outputs" / "img2img-images" / day) == ["00000-4.png"]


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sd1-inpaint"])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_keeps_pixels_outside_the_mask(easel: Path, checkpoint: str, full_res: bool) -> None:
    shared.opts.sd_model_checkpoint = checkpoint
    picture, mask = _picture(), _mask()
    p = StableDiffusionProcessingImg2Img(init_images=[picture], mask=mask, mask_blur=4, inpainting_fill=1,
                                         inpaint_full_res=full_res, inpaint_full_res_padding=8,
                                         prompt="a red circle", seed=4, steps=6, denoising_strength=0.9,
                                         width=64, height=64, sampler_name="Euler a", do_not_save_samples=True)
    res = process_images(p)
    text = res.infotexts[0]
    assert "Mask blur: 4" in text and "Masked content" not in text
    assert ("Inpaint area: Only masked, Masked area padding: 8" in text) == full_res
    parsed = infotext_utils.parse_generation_parameters(text)
    assert parsed["Inpaint area"] == ("Only masked" if full_res else "Whole picture")
    out = arr(res.images[0])
    blurred_reach = np.zeros((64, 64), dtype=bool)
    blurred_reach[16 - 12:56 + 12, 16 - 12:48 + 12] = True  # the mask grown by the blur's reach
    outside = ~blurred_reach
    assert np.array_equal(out[outside], arr(picture)[outside])
    inside = np.zeros((64, 64), dtype=bool)
    inside[28:52, 20:44] = True
    assert np.abs(out[inside] - arr(picture)[inside]).mean() > 3


def test_inpainting_checkpoint_draws_txt2img_and_plain_img2img(easel: Path) -> None:
    """A 9-channel inpainting UNet also serves txt2img and unmasked img2img: everything counts as
    masked (mask of ones, blanked picture latents), as A1111 feeds such models."""
    from modules.engine import vae
    from modules.processing import inpaint_conditioning

    shared.opts.sd_model_checkpoint = "tiny-sd1-inpaint"
    res = process_images(txt2img(seed=3, do_not_save_samples=True))
    assert shared.model_manager.current_info.model_name == "tiny-sd1-inpaint"
    assert res.images[0].size == (64, 64) and "Seed: 3" in res.infotexts[0]
    model = shared.model_manager.ensure()
    cond = inpaint_conditioning(model, torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
    assert cond.shape[1] == 1 + model.latent_channels and torch.all(cond[:, :1] == 1)
    assert torch.allclose(cond[:, 1:], vae.encode(model, torch.zeros(1, 3, 64, 64)))

    def img2img() -> StableDiffusionProcessingImg2Img:
        return StableDiffusionProcessingImg2Img(init_images=[_picture()], prompt="x", seed=2, steps=4, width=64,
                                                height=64, denoising_strength=0.6, sampler_name="Euler",
                                                do_not_save_samples=True)

    blanked = process_images(img2img())
    assert "Conditional mask weight" not in blanked.infotexts[0]
    shared.opts.inpainting_mask_weight = 0.0
    kept = process_images(img2img())
    assert "Conditional mask weight: 0.0" in kept.infotexts[0]
    assert not np.array_equal(arr(blanked.images[0]), arr(kept.images[0]))


def test_mask_of_another_size_is_resized(easel: Path) -> None:
    p = StableDiffusionProcessingImg2Img(init_images=[_picture()], mask=_mask().resize((128, 128)), mask_blur=0,
                                         prompt="x", seed=1, steps=3, width=64, height=64, sampler_name="Euler",
                                         inpaint_full_res=False, do_not_save_samples=True)
    res = process_images(p)
    out, pic = arr(res.images[0]), arr(_picture())
    assert np.array_equal(out[:16], pic[:16])


def test_refused_pickle_leaves_the_model_in_service(easel: Path) -> None:
    process_images(txt2img(do_not_save_samples=True))
    before = shared.model_manager.current_info.title
    evil = Path(shared.paths.ckpt_dirs[0]) / "evil.ckpt"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned > " + str(evil.with_suffix(".txt")),))

    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"w": Payload()}}, f)
    shared.model_manager.refresh()
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt"):
        process_images(txt2img(override_settings={"sd_model_checkpoint": "evil.ckpt"}, do_not_save_samples=True))
    assert not evil.with_suffix(".txt").exists()
    assert shared.model_manager.current_info.title == before
    res = process_images(txt2img(do_not_save_samples=True))
    assert res.images and "Model: tiny-sd1" in res.infotexts[0]


def test_invalid_parameter_error_is_a_value_error() -> None:
    assert issubclass(InvalidParameterError, ValueError)
    with pytest.raises(InvalidParameterError, match=r"denoising_strength is 1\.5"):
        StableDiffusionProcessingImg2Img(init_images=[_picture()], denoising_strength=1.5).validate()
    assert torch.get_default_dtype() == torch.float32


def test_prompt_syntax_reaches_the_engine(easel: Path) -> None:
    plain = process_images(txt2img(prompt="a cat", seed=5, do_not_save_samples=True))
    weighted = process_images(txt2img(prompt="a (cat:1.4)", seed=5, do_not_save_samples=True))
    assert np.abs(arr(plain.images[0]) - arr(weighted.images[0])).max() > 0
    assert "Emphasis" not in weighted.infotexts[0]
    shared.opts.emphasis = "No norm"
    res = process_images(txt2img(prompt="a (cat:1.4)", seed=5, do_not_save_samples=True))
    assert "Emphasis: No norm" in res.infotexts[0]


def test_an_unknown_lora_is_stripped_reported_and_the_run_goes_on(easel: Path) -> None:
    tagged = process_images(txt2img(prompt="a cat <lora:nosuchnet:0.8>", seed=5, do_not_save_samples=True))
    plain = process_images(txt2img(prompt="a cat ", seed=5, do_not_save_samples=True))
    assert np.array_equal(arr(tagged.images[0]), arr(plain.images[0]))
    assert "nosuchnet" in tagged.comments
    assert tagged.infotexts[0].startswith("a cat <lora:nosuchnet:0.8>\n")
    assert "Lora hashes" not in tagged.infotexts[0]


def _zero_snr_copy(easel: Path) -> str:
    # A1111 marks zero-terminal-SNR checkpoints with an empty "ztsnr" key; the loader reads it.
    from safetensors.torch import load_file, save_file

    folder = easel / "models" / "Stable-diffusion"
    state = load_file(folder / "tiny-sd1.safetensors")
    state["ztsnr"] = torch.zeros(0)
    save_file(state, folder / "tiny-sd1-ztsnr.safetensors")
    shutil.copytree(folder / "tiny-sd1.config", folder / "tiny-sd1-ztsnr.config")
    shared.model_manager.refresh()
    return "tiny-sd1-ztsnr.safetensors"


def test_automatic_schedule_on_a_zero_terminal_snr_model_is_trailing(easel: Path) -> None:
    name = _zero_snr_copy(easel)
    over = {"sd_model_checkpoint": name}
    auto = process_images(txt2img(sampler_name="DPM++ 2M", scheduler="Automatic", override_settings=over))
    assert "Schedule type: SGM Uniform" in auto.infotexts[0]
    chosen = process_images(txt2img(sampler_name="DPM++ 2M", scheduler="Karras", override_settings=over))
    assert "Schedule type: Karras" in chosen.infotexts[0]
    legacy = process_images(txt2img(sampler_name="DPM++ 2M Karras", scheduler=None, override_settings=over))
    assert "Schedule type: Karras" in legacy.infotexts[0]
    plain = process_images(txt2img(sampler_name="DPM++ 2M", scheduler="Automatic"))  # an ordinary model
    assert "Schedule type: Karras" in plain.infotexts[0]
