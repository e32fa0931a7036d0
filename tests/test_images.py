"""Image saving (names, folders, metadata, no overwrites under concurrency), grids and resizing."""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from modules import images, shared
from modules.images import FilenameGenerator, get_next_sequence_number, image_grid, resize_image, save_image
from modules.infotext_utils import parse_generation_parameters, read_info_from_image

INFOTEXT = 'a cat, 日本語\nNegative prompt: bad\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 16x16'
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def opts(monkeypatch: pytest.MonkeyPatch):
    """Set settings for one test; they are restored afterwards."""

    def set_opts(**values: object) -> None:
        for key, value in values.items():
            monkeypatch.setitem(shared.opts.data, key, value)

    set_opts(save_to_dirs=False, grid_save_to_dirs=False, samples_filename_pattern="", save_images_add_number=True,
             enable_pnginfo=True, save_txt=False, jpeg_quality=80, webp_lossless=False, n_rows=-1,
             directories_filename_pattern="[date]")
    return set_opts


def _img(color: str = "red", size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _p(**kw: object) -> types.SimpleNamespace:
    defaults = dict(seed=123, steps=20, cfg_scale=7.0, width=512, height=768, sampler_name="Euler a",
                    scheduler="Karras", prompt="a cat", negative_prompt="bad hands", all_seeds=[123, 124],
                    batch_size=1, n_iter=1, batch_index=0, iteration=0, sd_model_hash="6ce0161689",
                    sd_model_name="v1-5-pruned-emaonly", denoising_strength=None, job_timestamp="20240802101010",
                    styles=[], user=None)
    defaults.update(kw)
    return types.SimpleNamespace(**defaults)


# --- names and numbering -----------------------------------------------------------------------

def test_first_file_is_00000_and_numbers_continue(tmp_path: Path, opts) -> None:
    fn0, txt = save_image(_img(), tmp_path, "", 123, "a cat", info=INFOTEXT)
    fn1, _ = save_image(_img(), tmp_path, "", 124, "a cat", info=INFOTEXT)
    assert txt is None
    assert os.path.basename(fn0) == "00000-123-a cat.png"  # default pattern without dirs: [seed]-[prompt_spaces]
    assert os.path.basename(fn1) == "00001-124-a cat.png"
    assert _visible(tmp_path) == ["00000-123-a cat.png", "00001-124-a cat.png"]


def test_numbering_continues_after_other_patterns(tmp_path: Path, opts) -> None:
    for name in ("00007-123.png", "00003-other-pattern.jpg", "notes.txt", "grid-0042.png", "12ab.png"):
        (tmp_path / name).write_bytes(b"x")
    assert get_next_sequence_number(tmp_path, "") == 8
    assert get_next_sequence_number(tmp_path, "grid") == 43
    assert get_next_sequence_number(tmp_path / "missing", "") == 0
    opts(samples_filename_pattern="[seed]")
    fn, _ = save_image(_img(), tmp_path, "", 5, "p")
    assert os.path.basename(fn) == "00008-5.png"
    assert (tmp_path / "00007-123.png").read_bytes() == b"x"


def test_date_folder_when_saving_to_dirs(tmp_path: Path, opts) -> None:
    opts(save_to_dirs=True)
    fn, _ = save_image(_img(), tmp_path, "", 1741860054, "a cat")
    today = datetime.date.today().isoformat()
    assert Path(fn) == tmp_path / today / "00000-1741860054.png"  # default pattern with dirs: [seed]
    # no_prompt switches the dated folder off, as in A1111
    fn2, _ = save_image(_img(), tmp_path, "", 7, "x", no_prompt=True)
    assert Path(fn2).parent == tmp_path


def test_directory_pattern_cannot_leave_the_output_folder(tmp_path: Path, opts) -> None:
    opts(save_to_dirs=True, directories_filename_pattern="../../[seed]/./sub")
    fn, _ = save_image(_img(), tmp_path / "out", "", 9, "p")
    assert Path(fn) == tmp_path / "out" / "9" / "sub" / "00000-9.png"


def test_grid_names(tmp_path: Path, opts) -> None:
    g0, _ = save_image(_img(), tmp_path, "grid", 123, "a cat", short_filename=True, grid=True)
    g1, _ = save_image(_img(), tmp_path, "grid", 124, "a cat", short_filename=True, grid=True)
    ext, _ = save_image(_img(), tmp_path, "grid", 125, "a cat", grid=True)
    assert [os.path.basename(x) for x in (g0, g1, ext)] == ["grid-0000.png", "grid-0001.png",
                                                          "grid-0002-125-a cat.png"]
    # grids do not disturb the image counter and vice versa
    img, _ = save_image(_img(), tmp_path, "", 1, "p")
    assert os.path.basename(img) == "00000-1-p.png"


def test_grid_folder_follows_grid_setting(tmp_path: Path, opts) -> None:
    opts(grid_save_to_dirs=True, save_to_dirs=False)
    fn, _ = save_image(_img(), tmp_path, "grid", 1, "p", short_filename=True, grid=True)
    assert Path(fn).parent.name == datetime.date.today().isoformat()


def test_fixed_names_never_overwrite(tmp_path: Path, opts) -> None:
    first, _ = save_image(_img("red"), tmp_path, "", forced_filename="fixed")
    second, _ = save_image(_img("blue"), tmp_path, "", forced_filename="fixed")
    assert os.path.basename(first) == "fixed.png"
    assert os.path.basename(second) == "fixed-1.png"
    assert Image.open(first).getpixel((0, 0)) == (255, 0, 0)

    opts(save_images_add_number=False, samples_filename_pattern="[seed]")
    a, _ = save_image(_img(), tmp_path / "n", "", 77, "p")
    b, _ = save_image(_img(), tmp_path / "n", "", 77, "p")
    assert [os.path.basename(a), os.path.basename(b)] == ["77.png", "77-1.png"]


def test_suffix_and_override_pattern(tmp_path: Path, opts) -> None:
    p = _p(override_settings={"samples_filename_pattern": "[steps]-[sampler]"})
    fn, _ = save_image(_img(), tmp_path, "", 123, "a cat", p=p, suffix="-before-highres-fix")
    assert os.path.basename(fn) == "00000-20-Euler a-before-highres-fix.png"


def test_long_prompt_is_cut_and_sanitized(tmp_path: Path, opts) -> None:
    prompt = 'a/b\\c:d*e?f"g<h>i|j#k ' + "word " * 100
    fn, _ = save_image(_img(), tmp_path, "", 1, prompt)
    name = os.path.basename(fn)
    assert Path(fn).parent == tmp_path
    assert name.startswith("00000-1-a_b_c_d_e_f_g_h_i_j_k word")
    assert len(name) <= len("00000-1-") + 128 + len(".png")


# --- filename pattern tags ---------------------------------------------------------------------

def test_filename_tags() -> None:
    p = _p()
    image = _img(size=(64, 32))
    gen = FilenameGenerator(p, 123, "A cat, sitting: on (the) mat!", image)
    assert gen.apply("[seed]-[steps]-[cfg]-[width]x[height]") == "123-20-7.0-64x32"
    assert gen.apply("[sampler]|[scheduler]|[sampler_scheduler]") == "Euler a|Karras|Euler a Karras"
    assert gen.apply("[model_hash]-[model_name]") == "6ce0161689-v1-5-pruned-emaonly"
    assert gen.apply("[prompt_words]") == "A cat sitting on the mat"
    assert gen.apply("[prompt]") == "A_cat,_sitting__on_(the)_mat!"
    assert gen.apply("[prompt_spaces]") == "A cat, sitting_ on (the) mat!"
    assert gen.apply("[negative_prompt]") == "bad_hands"
    expected_hash = hashlib.sha256(b"A cat, sitting: on (the) mat!").hexdigest()
    assert gen.apply("[prompt_hash]") == expected_hash[:8]
    assert gen.apply("[prompt_hash<12>]") == expected_hash[:12]
    assert gen.apply("[job_timestamp]") == "20240802101010"
    assert gen.apply("[datetime<%Y>]") == str(datetime.datetime.now().year)
    assert len(gen.apply("[datetime]")) == 14
    assert gen.apply("[date]") == datetime.date.today().isoformat()
    assert gen.apply("x[none]y") == "xy"
    assert gen.apply("[unknown_tag]-[seed]") == "[unknown_tag]-123"
    assert gen.apply("[SEED]") == "123"  # tags are case-insensitive
    assert gen.apply("[clip_skip]") == str(shared.opts.CLIP_stop_at_last_layers)
    assert gen.apply("[hasprompt<cat|nocat><dog|nodog>]") == "catnodog"
    assert gen.apply("[image_hash<6>]") == hashlib.sha256(image.tobytes()).hexdigest()[:6]


def test_tags_that_vanish_take_their_separator() -> None:
    single = FilenameGenerator(_p(), 123, "p", None)
    # batch of one: no batch number, seed_last or denoising, and the '-' before them goes too
    assert single.apply("[seed]-[batch_number]-[seed_last]-[denoising]") == "123"
    assert single.apply("[seed_first]") == "123"
    batch = FilenameGenerator(_p(batch_size=2, n_iter=3, batch_index=1, iteration=2, denoising_strength=0.5),
                              124, "p", None)
    assert batch.apply("[seed]-[batch_number]-[generation_number]-[seed_first]-[seed_last]-[denoising]") == \
        "124-2-6-123-124-0.5"
    assert FilenameGenerator(None, 5, "p", None).apply("[seed]-[steps]") == "5-[steps]"


# --- formats and metadata ----------------------------------------------------------------------

@pytest.mark.parametrize("extension", ["png", "jpg", "jpeg", "webp"])
def test_metadata_readable_in_every_format(tmp_path: Path, opts, extension: str) -> None:
    fn, _ = save_image(_img(mode="RGBA"), tmp_path, "", 123, "a cat", extension=extension, info=INFOTEXT)
    assert fn.endswith(f".{extension}")
    with Image.open(fn) as image:
        geninfo, _ = read_info_from_image(image)
        if extension in ("jpg", "jpeg"):
            assert image.mode == "RGB"  # alpha dropped for JPEG
    assert geninfo == INFOTEXT
    assert parse_generation_parameters(geninfo)["Seed"] == "123"


def test_png_keeps_existing_info_items(tmp_path: Path, opts) -> None:
    existing = {"extras": "Postprocess upscaler: R-ESRGAN 4x+", "parameters": "old"}
    fn, _ = save_image(_img(), tmp_path, "", 1, "p", info=INFOTEXT, existing_info=existing)
    with Image.open(fn) as image:
        geninfo, items = read_info_from_image(image)
    assert geninfo == INFOTEXT
    assert items == {"extras": "Postprocess upscaler: R-ESRGAN 4x+"}
    assert existing["parameters"] == "old"  # the caller's dict is not modified

    fn2, _ = save_image(_img(), tmp_path, "", 1, "p", info="Postprocess upscaler: x", pnginfo_section_name="extras",
                        existing_info={"parameters": INFOTEXT})
    with Image.open(fn2) as image:
        geninfo, items = read_info_from_image(image)
    assert geninfo == INFOTEXT
    assert items == {"extras": "Postprocess upscaler: x"}


def test_jpeg_exif_is_utf16_big_endian_like_a1111(tmp_path: Path, opts) -> None:
    import piexif

    fn, _ = save_image(_img(), tmp_path, "", 1, "p", extension="jpg", info="Steps: 20")
    raw = piexif.load(fn)["Exif"][piexif.ExifIFD.UserComment]
    assert raw == b"UNICODE\0" + "Steps: 20".encode("utf-16-be")


def test_pnginfo_disabled_and_save_txt(tmp_path: Path, opts) -> None:
    opts(enable_pnginfo=False)
    for extension in ("png", "jpg", "webp"):
        fn, _ = save_image(_img(), tmp_path, "", 1, "p", extension=extension, info=INFOTEXT)
        with Image.open(fn) as image:
            assert read_info_from_image(image)[0] is None
    opts(enable_pnginfo=True, save_txt=True)
    fn, txt = save_image(_img(), tmp_path / "t", "", 1, "p", info=INFOTEXT)
    assert txt == os.path.splitext(fn)[0] + ".txt"
    assert Path(txt).read_text(encoding="utf8") == INFOTEXT + "\n"


def test_jpeg_quality_and_webp_lossless_settings(tmp_path: Path, opts) -> None:
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    opts(jpeg_quality=95)
    high, _ = save_image(noisy, tmp_path, "", 1, "p", extension="jpg")
    opts(jpeg_quality=10)
    low, _ = save_image(noisy, tmp_path, "", 2, "p", extension="jpg")
    assert os.path.getsize(high) > os.path.getsize(low)
    opts(webp_lossless=True)
    lossless, _ = save_image(noisy, tmp_path, "", 3, "p", extension="webp")
    with Image.open(lossless) as image:
        assert image.convert("RGB").tobytes() == noisy.tobytes()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_files_get_normal_permissions(tmp_path: Path, opts) -> None:
    umask = os.umask(0)
    os.umask(umask)
    opts(save_txt=True)
    fn, txt = save_image(_img(), tmp_path, "", 1, "p", info=INFOTEXT)
    assert txt is not None
    for path in (fn, txt):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not a temp file's private 0600


def test_unknown_format_creates_nothing(tmp_path: Path, opts) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        save_image(_img(), tmp_path, "", 1, "p", extension="nope")
    assert list(tmp_path.iterdir()) == []


# --- atomicity and concurrency -----------------------------------------------------------------

def test_failed_encode_leaves_no_file(tmp_path: Path, opts) -> None:
    with pytest.raises(ValueError):
        save_image(Image.new("RGB", (0, 0)), tmp_path, "", 1, "p")  # Pillow cannot encode an empty image
    assert list(tmp_path.iterdir()) == []
    fn, _ = save_image(_img(), tmp_path, "", 1, "p")
    assert os.path.basename(fn) == "00000-1-p.png"  # the failed save did not use up a number


def test_encoder_failing_mid_write_leaves_no_file(tmp_path: Path, opts, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(image, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise OSError("disk full")

    monkeypatch.setattr(images, "_write_image", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_image(_img(), tmp_path, "", 1, "p")
    assert list(tmp_path.iterdir()) == []  # neither the reserved name nor the temp file


def test_concurrent_threads_get_distinct_numbers(tmp_path: Path, opts) -> None:
    count = 20
    barrier = threading.Barrier(count)

    def save(i: int) -> str:
        barrier.wait()
        return save_image(_img(size=(24, 24)), tmp_path, "", 1000 + i, "same prompt", info=f"Seed: {i}")[0]

    with ThreadPoolExecutor(max_workers=count) as pool:
        names = list(pool.map(save, range(count)))
    assert len(set(names)) == count
    assert sorted(os.path.basename(n)[:5] for n in names) == [f"{i:05}" for i in range(count)]
    assert len(list(tmp_path.iterdir())) == count  # no temp or claim files left over
    for name in names:
        with Image.open(name) as image:
            image.load()
            assert image.size == (24, 24)


_WORKER = """
import sys
from PIL import Image
from modules import images, shared
shared.opts.data.update(save_to_dirs=False, samples_filename_pattern="", save_images_add_number=True)
folder, tag = sys.argv[1], sys.argv[2]
for i in range(int(sys.argv[3])):
    images.save_image(Image.new("RGB", (8, 8), "blue"), folder, "", f"{tag}{i}", "p")
"""


def test_concurrent_processes_get_distinct_numbers(tmp_path: Path) -> None:
    per_process, processes = 8, 3
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), f"w{k}x", str(per_process)],
                              cwd=REPO_ROOT, env=env) for k in range(processes)]
    assert all(proc.wait(timeout=60) == 0 for proc in procs)
    names = _visible(tmp_path)
    assert len(names) == per_process * processes
    assert sorted(n[:5] for n in names) == [f"{i:05}" for i in range(per_process * processes)]
    assert len(list(tmp_path.iterdir())) == len(names)


# --- grids -------------------------------------------------------------------------------------

COLORS = ["red", "green", "blue", "yellow", "white", "cyan", "magenta"]


def _colors(n: int, size: tuple[int, int] = (10, 10)) -> list[Image.Image]:
    return [_img(COLORS[i], size) for i in range(n)]


def test_grid_rows_rule(opts) -> None:
    assert image_grid(_colors(4)).size == (20, 20)  # round(sqrt(4)) = 2 rows
    assert image_grid(_colors(3)).size == (20, 20)  # round(sqrt(3)) = 2 rows, 2 columns, one empty cell
    assert image_grid(_colors(6)).size == (30, 20)
    opts(grid_prevent_empty_spots=True)
    assert image_grid(_colors(3)).size == (30, 10)  # a divisor of 3 not above sqrt(3): 1 row
    assert image_grid(_colors(6)).size == (30, 20)
    opts(grid_prevent_empty_spots=False, n_rows=0)
    assert image_grid(_colors(6), batch_size=3).size == (20, 30)
    opts(n_rows=1)
    assert image_grid(_colors(3)).size == (30, 10)
    assert image_grid(_colors(4), rows=4).size == (10, 40)
    assert image_grid(_colors(2), rows=5).size == (10, 20)  # never more rows than images


def test_grid_placement_and_mixed_sizes(opts) -> None:
    grid = image_grid(_colors(3))
    assert grid.getpixel((5, 5)) == (255, 0, 0)
    assert grid.getpixel((15, 5)) == (0, 128, 0)
    assert grid.getpixel((5, 15)) == (0, 0, 255)
    assert grid.getpixel((15, 15)) == (255, 255, 255)  # empty cell: background
    mixed = image_grid([_img("red", (10, 10)), _img("blue", (4, 4))], rows=1)
    assert mixed.size == (20, 10)
    assert mixed.getpixel((15, 5)) == (0, 0, 255)  # smaller image centred in its cell
    assert mixed.getpixel((11, 1)) == (255, 255, 255)


def test_split_and_combine_grid_round_trip() -> None:
    source = Image.effect_noise((300, 200), 60).convert("RGB")
    grid = images.split_grid(source, tile_w=128, tile_h=128, overlap=32)
    assert all(tile.size == (128, 128) for _, _, row in grid.tiles for _, _, tile in row)
    combined = images.combine_grid(grid)
    diff = max(abs(a - b) for a, b in zip(combined.tobytes(), source.tobytes(), strict=True))
    assert diff <= 1


# --- resizing ----------------------------------------------------------------------------------

def _bands(size: tuple[int, int], colors: list[str], vertical: bool = True) -> Image.Image:
    im = Image.new("RGB", size)
    n = len(colors)
    for i, color in enumerate(colors):
        if vertical:
            im.paste(Image.new("RGB", (size[0] // n, size[1]), color), (i * size[0] // n, 0))
        else:
            im.paste(Image.new("RGB", (size[0], size[1] // n), color), (0, i * size[1] // n))
    return im


def test_resize_just_resize(opts) -> None:
    out = resize_image(0, _img(size=(100, 50)), 64, 64)
    assert out.size == (64, 64)
    assert resize_image(3, _img(size=(100, 50)), 40, 30).size == (40, 30)  # latent mode: plain resize here


def test_resize_crop_keeps_the_centre(opts) -> None:
    source = _bands((300, 100), ["green", "red", "blue"])
    out = resize_image(1, source, 100, 100)
    assert out.size == (100, 100)
    for xy in ((2, 2), (50, 50), (97, 97)):
        assert out.getpixel(xy) == (255, 0, 0)
    tall = resize_image(1, _bands((100, 300), ["green", "red", "blue"], vertical=False), 50, 50)
    assert tall.size == (50, 50)
    assert tall.getpixel((25, 25)) == (255, 0, 0)


def test_resize_fill_stretches_the_edges(opts) -> None:
    wide = _bands((100, 50), ["red", "blue"], vertical=False)  # top half red, bottom half blue
    out = resize_image(2, wide, 100, 100)
    assert out.size == (100, 100)
    assert out.getpixel((50, 5)) == (255, 0, 0)  # band above: the top row stretched
    assert out.getpixel((50, 30)) == (255, 0, 0)  # the image itself, placed at y=25
    assert out.getpixel((50, 70)) == (0, 0, 255)
    assert out.getpixel((50, 95)) == (0, 0, 255)  # band below: the bottom row stretched

    tall = _bands((50, 100), ["green", "yellow"])  # left half green, right half yellow
    out = resize_image(2, tall, 100, 100)
    assert out.getpixel((5, 50)) == (0, 128, 0)
    assert out.getpixel((95, 50)) == (255, 255, 0)


def test_resize_keeps_mask_and_alpha_modes(opts) -> None:
    assert resize_image(1, _img("white", (40, 20), mode="L"), 16, 16).mode == "L"
    assert resize_image(2, Image.new("RGBA", (40, 20), (1, 2, 3, 4)), 16, 16).mode == "RGBA"
    with pytest.raises(ValueError):
        resize_image(7, _img(), 8, 8)


def test_flatten_and_fix_image() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert images.flatten(rgba, "#00ff00").getpixel((0, 0)) == (0, 255, 0)
    assert images.fix_image(None) is None
    assert images.fix_image(_img()).size == (16, 16)
