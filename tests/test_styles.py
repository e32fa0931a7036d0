"""Prompt styles: A1111's merge rules, styles.csv reading and saving, and styles in a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modules import cmd_args, shared, styles
from modules.processing import StableDiffusionProcessingTxt2Img, process_images
from modules.styles import PromptStyle, StyleDatabase, apply_styles_to_prompt, merge_prompts

CSV = (
    "name,prompt,negative_prompt\r\n"
    'cinematic,"cinematic still of {prompt}, film grain","cartoon, drawing"\r\n'
    "sharp,highly detailed,blurry\r\n"
    "#comment,ignored,ignored\r\n"
    'ünïcode,"café au lait",\r\n'
)


def test_merge_rules() -> None:
    assert merge_prompts("cinematic still of {prompt}, film grain", "a cat") == "cinematic still of a cat, film grain"
    assert merge_prompts("highly detailed", "a cat ") == "a cat, highly detailed"
    assert merge_prompts("highly detailed", "") == "highly detailed"
    assert merge_prompts("", "a cat") == "a cat"
    assert apply_styles_to_prompt("a cat", ["{prompt}, x", "y"]) == "a cat, x, y"


def test_database_reads_applies_and_extracts(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8", newline="")
    db = StyleDatabase([path])
    assert db.names() == ["cinematic", "sharp", "ünïcode"]
    assert db.styles["sharp"] == PromptStyle("sharp", "highly detailed", "blurry", str(path))
    assert db.apply_styles_to_prompt("a cat", ["cinematic", "sharp"]) == \
        "cinematic still of a cat, film grain, highly detailed"
    assert db.apply_negative_styles_to_prompt("ugly", ["cinematic", "sharp", "missing"]) == \
        "ugly, cartoon, drawing, blurry"
    assert db.get_style_prompts(["sharp", "missing"]) == ["highly detailed", ""]
    assert db.api_list()[1] == {"name": "sharp", "prompt": "highly detailed", "negative_prompt": "blurry"}
    found, prompt, negative = db.extract_styles_from_prompt(
        "cinematic still of a cat, film grain, highly detailed", "ugly, cartoon, drawing, blurry")
    assert found == ["cinematic", "sharp"] and prompt == "a cat" and negative == "ugly"


def test_save_keeps_a_backup_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8", newline="")
    original = path.read_bytes()
    db = StyleDatabase([path])
    db.set_style("new, with comma", 'says "hi"\nsecond line', "neg")
    assert (tmp_path / "styles.csv.bak").read_bytes() == original
    again = StyleDatabase([path])
    assert again.styles["new, with comma"].prompt == 'says "hi"\nsecond line'
    assert again.names() == ["cinematic", "sharp", "ünïcode", "new, with comma"]
    assert path.read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert again.delete_style("sharp")
    assert "sharp" not in StyleDatabase([path]).styles
    with pytest.raises(ValueError):
        db.set_style("#hidden", "x", "y")


def test_several_files_and_new_styles_go_to_the_first(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nbase,b,\n", encoding="utf-8")
    (tmp_path / "styles-extra.csv").write_text("name,text\nold,legacy text\n", encoding="utf-8")
    db = StyleDatabase([tmp_path / "styles.csv", tmp_path / "styles-*.csv"])
    assert db.names() == ["base", "old"]
    assert db.styles["old"].prompt == "legacy text"
    db.set_style("fresh", "f", "")
    assert "fresh" in (tmp_path / "styles.csv").read_text(encoding="utf-8-sig")
    assert "fresh" not in (tmp_path / "styles-extra.csv").read_text(encoding="utf-8-sig")


def test_styles_apply_in_a_run(tmp_path: Path, tiny_models_dir: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    data = tmp_path / "data"
    data.mkdir()
    (data / "styles.csv").write_text(CSV, encoding="utf-8")
    shared.initialize(cmd_args.build_parser().parse_args(["--data-dir", str(data), "--models-dir", str(models)]))
    try:
        shared.opts.sd_model_checkpoint = "tiny-sd1.safetensors"
        assert styles.default_database().default_path == data / "styles.csv"
        p = StableDiffusionProcessingTxt2Img(prompt="a cat", negative_prompt="ugly", styles=["cinematic", "sharp"],
                                             seed=1, steps=1, width=64, height=64, sampler_name="Euler",
                                             do_not_save_samples=True, do_not_save_grid=True)
        res = process_images(p)
        assert res.all_prompts == ["cinematic still of a cat, film grain, highly detailed"]
        assert res.infotexts[0].startswith("cinematic still of a cat, film grain, highly detailed\n"
                                           "Negative prompt: ugly, cartoon, drawing, blurry\n")
    finally:
        shared.model_manager.close()
