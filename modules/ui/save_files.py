"""The Save and Zip buttons under the gallery, as in A1111.

Save writes the shown images again, each with its infotext and under the usual naming rules, into
the Save folder (`outdir_save`, log/images in the data folder by default), and adds a line per
image to `log.csv` there. With `save_selected_only` and an image selected, only that one is saved.
Zip does the same and also packs the saved files into one .zip there, named by
`grid_zip_filename_pattern`. What was written is offered for download.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PIL import Image

from modules import images, shared
from modules.infotext_utils import parse_generation_parameters

LOG_FIELDS = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
              "sd_model_name", "sd_model_hash"]
DEFAULT_ZIP_PATTERN = "[datetime]_[[model_name]]_[seed]-[seed_last]"
DOWNLOADS_KEPT_S = 3600


@dataclass
class Saved:
    files: list[str]  # the saved images (and .txt infotexts, with save_txt), then the .zip when made
    downloads: list[str]  # copies of `files` the page may offer (see _offer)


def save_folder() -> Path:
    folder = Path(shared.opts.outdir_save or "log/images")
    return folder if folder.is_absolute() else shared.paths.data_dir / folder


def _pick(values: Any, index: int, fallback: Any) -> Any:
    if isinstance(values, list) and values:
        return values[min(max(index, 0), len(values) - 1)]
    return fallback


def _append_log(folder: Path, rows: list[dict[str, Any]]) -> None:
    path = folder / "log.csv"
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _offer(files: list[str]) -> list[str]:
    """Copies of `files` in a temporary folder for the page to hand out: the page only serves files
    from the folders it was started with, and the Save folder is a setting that may change."""
    root = Path(tempfile.gettempdir()) / f"easel-downloads-{os.getpid()}"
    if root.is_dir():
        for old in root.iterdir():
            if time.time() - old.stat().st_mtime > DOWNLOADS_KEPT_S:
                shutil.rmtree(old, ignore_errors=True)
    root.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root))
    out = []
    for f in files:
        target = folder / os.path.basename(f)
        shutil.copyfile(f, target)
        out.append(str(target))
    return out


def save_files(info_json: str, items: list[str], selected: int | None, make_zip: bool) -> Saved:
    """Save the gallery's images (`items`: their files, in gallery order) as the Save/Zip buttons do.

    Raises ValueError with a message for the page when there is nothing to save."""
    if not items:
        raise ValueError("There are no images to save; generate some first.")
    try:
        info = json.loads(info_json or "{}")
    except json.JSONDecodeError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    opts = shared.opts
    first = int(info.get("index_of_first_image", 0) or 0)
    texts = info.get("infotexts") or []
    if selected is not None and opts.save_selected_only and 0 <= int(selected) < len(items):
        indices = [int(selected)]
    else:
        indices = list(range(len(items)))
    # The naming rules read generation values from a processing object; the info JSON has them.
    p = SimpleNamespace(**info)
    folder = save_folder()
    files: list[str] = []
    rows: list[dict[str, Any]] = []
    for index in indices:
        with Image.open(items[index]) as im:
            image = im.copy()
        infotext = str(texts[index]) if index < len(texts) else ""
        is_grid = index < first
        pos = index - first
        seed = info.get("seed") if is_grid else _pick(info.get("all_seeds"), pos, info.get("seed"))
        prompt = info.get("prompt") if is_grid else _pick(info.get("all_prompts"), pos, info.get("prompt"))
        negative = info.get("negative_prompt") if is_grid else _pick(
            info.get("all_negative_prompts"), pos, info.get("negative_prompt"))
        fullfn, txt = images.save_image(image, folder, "", seed=seed, prompt=prompt, extension=opts.samples_format,
                                        info=infotext or None, grid=is_grid, p=p,
                                        save_to_dirs=bool(opts.use_save_to_dirs_for_ui))
        files.append(fullfn)
        if txt:
            files.append(txt)
        params = parse_generation_parameters(infotext) if infotext else {}
        rows.append({
            "prompt": prompt or "", "seed": seed if seed is not None else "",
            "width": params.get("Size-1", info.get("width", image.width)),
            "height": params.get("Size-2", info.get("height", image.height)),
            "sampler": params.get("Sampler", info.get("sampler_name", "")),
            "cfgs": params.get("CFG scale", info.get("cfg_scale", "")), "steps": params.get("Steps", info.get("steps", "")),
            "filename": os.path.relpath(fullfn, folder), "negative_prompt": negative or "",
            "sd_model_name": info.get("sd_model_name", ""), "sd_model_hash": info.get("sd_model_hash", ""),
        })
    _append_log(folder, rows)
    if make_zip:
        first_seed = rows[0]["seed"] if rows else None
        namegen = images.FilenameGenerator(p, first_seed, rows[0]["prompt"] if rows else "", None, zip=True)
        name = namegen.apply(opts.grid_zip_filename_pattern or DEFAULT_ZIP_PATTERN)
        name = images.sanitize_filename_part(name, replace_spaces=False) or "images"
        zip_path = images.reserve_new_file(str(folder / f"{name}.zip"))
        try:
            with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for f in files:
                    archive.write(f, arcname=os.path.basename(f))
        except BaseException:
            Path(zip_path).unlink(missing_ok=True)  # no half-written archive is left behind
            raise
        files.append(zip_path)
    return Saved(files=files, downloads=_offer(files))
