"""Size sliders that follow the demo model: its own size while it is the checkpoint in use, the
configured size back when another checkpoint is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from modules import cmd_args, shared
from modules.ui import model_size


@pytest.fixture
def checkpoints(tmp_path: Path):
    """A checkpoint folder with a stand-in for the demo model (its config folder says 64) and another."""
    folder = tmp_path / "models" / "Stable-diffusion"
    tiny_models.write_single_file(folder, "easel-demo", "sd1", 0)
    vae_config = folder / "easel-demo.config" / "vae" / "config.json"
    vae_config.write_text(json.dumps({**json.loads(vae_config.read_text()), "sample_size": 64}))
    tiny_models.write_single_file(folder, "tiny-sd1", "sd1", 1)
    args = cmd_args.build_parser().parse_args(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path / "models"),
                                               "--no-hashing"])
    shared.initialize(args, load_settings=False)
    yield shared.model_manager
    shared.initialize(cmd_args.defaults(), load_settings=False)


def _values(updates: list[dict]) -> list[object]:
    return [u.get("value", "unchanged") for u in updates]


def test_demo_size_while_the_demo_is_in_use(checkpoints) -> None:
    demo = checkpoints.get_checkpoint("easel-demo.safetensors")
    other = checkpoints.get_checkpoint("tiny-sd1.safetensors")
    assert model_size.demo_resolution(demo) == 64 and model_size.demo_resolution(other) is None
    # choosing the demo: its size; choosing another: the configured size back where the demo's was shown
    assert _values(model_size.sizes_on_switch(demo.title, [512, 512], [512, 768])) == [64, 64]
    assert _values(model_size.sizes_on_switch(other.title, [512, 512], [64, 768])) == [512, "unchanged"]
    # on a page load nothing changes while another checkpoint is the one in use (it is the default here)
    assert _values(model_size.sizes_on_load(2)) == ["unchanged", "unchanged"]
