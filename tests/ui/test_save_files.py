"""The gallery's Save and Zip buttons: files in the Save folder with their infotext, log.csv, the zip."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from modules import shared
from modules.ui.save_files import LOG_FIELDS, save_files


def _gallery(tmp_path: Path) -> tuple[str, list[str]]:
    """A batch of two with its grid first, as the gallery shows it, and the info JSON beside it."""
    texts = [f"{prompt}\nNegative prompt: blur\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 64x48, "
             "Model: tiny" for prompt, seed in (("a cat", 11), ("a cat", 11), ("a dog", 12))]
    info = {"prompt": "a cat", "all_prompts": ["a cat", "a dog"], "negative_prompt": "blur",
            "all_negative_prompts": ["blur", "blur"], "seed": 11, "all_seeds": [11, 12], "width": 64, "height": 48,
            "sampler_name": "Euler", "cfg_scale": 7, "steps": 4, "batch_size": 2, "sd_model_name": "tiny",
            "sd_model_hash": "0123456789", "index_of_first_image": 1, "infotexts": texts}
    items = []
    for i, color in enumerate(("white", "red", "blue")):
        path = tmp_path / "gallery" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (128 if i == 0 else 64, 48), color).save(path)
        items.append(str(path))
    return json.dumps(info), items


def _log_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "log.csv", encoding="utf8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == LOG_FIELDS
        return list(reader)


def test_save_all_writes_images_with_infotext_and_a_log_line_each(instance, tmp_path):
    info, items = _gallery(tmp_path)
    saved = save_files(info, items, None, make_zip=False)
    folder = instance / "log" / "images"
    assert [Path(f).parent for f in saved.files] == [folder] * 3
    for f, expected_color, seed in zip(saved.files, ((255, 255, 255), (255, 0, 0), (0, 0, 255)), (11, 11, 12),
                                       strict=True):
        with Image.open(f) as im:
            assert im.getpixel((0, 0)) == expected_color
            assert f"Seed: {seed}" in im.info["parameters"]
    assert [Path(f).name for f in saved.files] == ["00000-11.png", "00001-11.png", "00002-12.png"]
    rows = _log_rows(folder)
    assert [(r["prompt"], r["seed"], r["filename"]) for r in rows] == [
        ("a cat", "11", Path(saved.files[0]).name), ("a cat", "11", Path(saved.files[1]).name),
        ("a dog", "12", Path(saved.files[2]).name)]
    assert rows[2]["negative_prompt"] == "blur" and rows[2]["sd_model_hash"] == "0123456789"
    assert (rows[2]["width"], rows[2]["height"], rows[2]["sampler"], rows[2]["steps"]) == ("64", "48", "Euler", "4")
    # The page is handed copies (outside the Save folder) with the same bytes.
    assert [Path(d).read_bytes() for d in saved.downloads] == [Path(f).read_bytes() for f in saved.files]
    assert all(folder not in Path(d).parents for d in saved.downloads)


def test_selected_image_only_unless_the_setting_says_all(instance, tmp_path):
    info, items = _gallery(tmp_path)
    saved = save_files(info, items, 2, make_zip=False)
    assert len(saved.files) == 1
    with Image.open(saved.files[0]) as im:
        assert "Seed: 12" in im.info["parameters"] and im.getpixel((0, 0)) == (0, 0, 255)
    shared.opts.set("save_selected_only", False)
    assert len(save_files(info, items, 2, make_zip=False).files) == 3
    assert len(_log_rows(instance / "log" / "images")) == 4  # appended, one header


def test_zip_packs_the_saved_files_and_never_replaces_one(instance, tmp_path):
    info, items = _gallery(tmp_path)
    shared.opts.set("grid_zip_filename_pattern", "[model_name]-[seed]-[seed_last]")
    first = save_files(info, items, None, make_zip=True)
    second = save_files(info, items, None, make_zip=True)
    assert Path(first.files[-1]).name == "tiny-11-12.zip" and Path(second.files[-1]).name == "tiny-11-12-1.zip"
    with zipfile.ZipFile(first.files[-1]) as archive:
        assert archive.namelist() == [Path(f).name for f in first.files[:-1]]
        assert archive.read(Path(first.files[1]).name) == Path(first.files[1]).read_bytes()


def test_nothing_to_save_is_refused_and_writes_nothing(instance):
    with pytest.raises(ValueError, match="no images to save"):
        save_files("{}", [], None, make_zip=True)
    assert not (instance / "log").exists()
