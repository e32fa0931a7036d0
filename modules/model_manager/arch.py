"""The model architectures Easel knows, and what each needs to be built.

Each architecture has a bundled diffusers config folder in `configs/<name>/` (model_index.json,
component configs and tokenizer files, no weights) so single-file checkpoints load offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from modules.paths import configs_path


class ModelArch(str, Enum):
    SD1 = "sd1"
    SD1_INPAINT = "sd1-inpaint"
    SD2 = "sd2"
    SD2_V = "sd2-v"
    SD2_INPAINT = "sd2-inpaint"
    SDXL = "sdxl"
    SDXL_INPAINT = "sdxl-inpaint"

    @property
    def family(self) -> str:
        """'sd1', 'sd2' or 'sdxl'."""
        return self.value.split("-")[0]

    @property
    def is_inpaint(self) -> bool:
        return self.value.endswith("-inpaint")

    @property
    def prediction_type(self) -> str:
        return "v_prediction" if self is ModelArch.SD2_V else "epsilon"

    @property
    def config_dir(self) -> Path:
        return configs_path / self.value

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    ModelArch.SD1: "SD 1.x",
    ModelArch.SD1_INPAINT: "SD 1.x inpainting",
    ModelArch.SD2: "SD 2.x",
    ModelArch.SD2_V: "SD 2.x v-prediction",
    ModelArch.SD2_INPAINT: "SD 2.x inpainting",
    ModelArch.SDXL: "SDXL",
    ModelArch.SDXL_INPAINT: "SDXL inpainting",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and configuration come from."""

    weights: Path
    """a single-file checkpoint, or a diffusers folder"""
    config_dir: Path
    """diffusers config folder used to build the components (bundled, or `<stem>.config/`)"""
    arch: ModelArch | None
    """detected architecture; None when a `<stem>.config/` override names a non-standard model"""


class UnknownArchitectureError(ValueError):
    """The state dict matches none of the supported architectures."""
