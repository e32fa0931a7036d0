"""Extras (postprocessing) scripts, A1111's `modules.scripts_postprocessing`.

Extensions define `ScriptPostprocessing` subclasses next to their generation scripts; the loader
collects them (`modules.scripts.postprocessing_scripts_data`) and `ScriptPostprocessingRunner` runs
them on an image in `order`, each with the arguments given under its name.
"""

from __future__ import annotations

import logging
from typing import Any

from modules import errors

log = logging.getLogger(__name__)


class PostprocessedImage:
    """The image an extras script works on; `info` collects what it did for the infotext."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.info: dict[str, Any] = {}
        self.shared = type("Shared", (), {"target_width": None, "target_height": None})()
        self.extra_images: list[Any] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes: set[str] | None = None) -> str:
        suffix = "-".join(self.nametags)
        return f"-{suffix}" if suffix else ""

    def create_copy(self, new_image: Any, *, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> PostprocessedImage:
        pp = PostprocessedImage(new_image)
        pp.info = dict(self.info)
        pp.nametags = list(self.nametags) + list(nametags or [])
        pp.disable_processing = disable_processing
        return pp


class ScriptPostprocessing:
    """Base class of extras scripts: `name`, `order`, `ui()` returning {arg name: component},
    `process(pp, **args)` changing `pp.image` and `pp.info`."""

    filename: str | None = None
    controls: dict[str, Any] | None = None
    args_from: int | None = None
    args_to: int | None = None
    order = 1000
    name: str | None = None
    group: Any = None

    def ui(self) -> dict[str, Any] | None:
        return None

    def process(self, pp: PostprocessedImage, **args: Any) -> None:
        """Change pp.image (and record what was done in pp.info)."""

    def process_firstpass(self, pp: PostprocessedImage, **args: Any) -> None:
        """Before any script's process(): set pp.shared.target_width/height etc."""

    def postprocess(self, filenames: list[str]) -> None:
        """After every image was processed and saved."""

    def image_changed(self) -> None:
        pass


class ScriptPostprocessingRunner:
    """The loaded extras scripts, in `order`."""

    def __init__(self) -> None:
        from modules import scripts

        self.scripts: list[ScriptPostprocessing] = []
        for data in scripts.postprocessing_scripts_data:
            try:
                script = data.script_class()
                script.filename = data.path
                self.scripts.append(script)
            except Exception:
                errors.report(f"Error initializing extras script {data.path}", exc_info=True)
        self.scripts.sort(key=lambda s: (s.order, s.name or ""))

    def script(self, name: str) -> ScriptPostprocessing | None:
        wanted = name.lower()
        return next((s for s in self.scripts if (s.name or "").lower() == wanted), None)

    def run(self, pp: PostprocessedImage, args: dict[str, dict[str, Any]]) -> None:
        """Run the scripts named in `args` (name -> keyword arguments) on `pp`; a failing script is
        reported and the others go on."""
        chosen = [(s, args[s.name]) for s in self.scripts if s.name in args]
        for script, kw in chosen:
            try:
                script.process_firstpass(pp, **kw)
            except Exception:
                errors.report(f"Error in extras script {script.name} (first pass)", exc_info=True)
        for script, kw in chosen:
            if pp.disable_processing:
                break
            try:
                script.process(pp, **kw)
            except Exception:
                errors.report(f"Error in extras script {script.name}", exc_info=True)

    def postprocess(self, filenames: list[str], args: dict[str, dict[str, Any]]) -> None:
        for script in self.scripts:
            if script.name in args:
                try:
                    script.postprocess(filenames)
                except Exception:
                    errors.report(f"Error in extras script {script.name} (postprocess)", exc_info=True)
