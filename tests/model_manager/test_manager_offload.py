"""The model manager with offloading on: where models are built, which get an offloader, and that
parking, switching and unloading never move an offloaded model's weights to the device.

"meta" plays the GPU for the manager (its device policy); the offload policy's devices are given.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from test_manager import SD1_KEYS, SD2_KEYS, SDXL_KEYS, write_st

from modules import cmd_args
from modules.devices import DevicePolicy
from modules.engine import offload
from modules.engine.model import DiffusionModel
from modules.engine.offload import OffloadMode, OffloadPolicy
from modules.model_manager import manager as manager_module
from modules.model_manager.manager import ModelManager
from modules.options import Options
from modules.paths import Paths, configs_path
from modules.shared_options import options_templates

CPU = torch.device("cpu")
META = torch.device("meta")


class Part(torch.nn.Linear):
    """A model component that records where the manager moves it."""

    def __init__(self) -> None:
        super().__init__(2, 2)
        self.moves: list[Any] = []

    def to(self, *args: Any, **kwargs: Any) -> Part:  # type: ignore[override]
        self.moves.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)


class VUNet(Part):
    """Answers the v-prediction probe like a v model."""

    config = SimpleNamespace(in_channels=4, cross_attention_dim=8, block_out_channels=(8, 8))

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,  # type: ignore[override]
                return_dict: bool = True) -> tuple[torch.Tensor]:
        return (-x - 1.0 + 0 * self.weight.sum(),)


class Loader:
    """Builds stand-in models and records the device each was asked to be built on."""

    def __init__(self) -> None:
        self.built_on: dict[str, torch.device] = {}

    def _model(self, family: str, name: str, device: torch.device) -> DiffusionModel:
        self.built_on[name] = device
        return DiffusionModel(family=family, unet=VUNet() if family == "sd2" else Part(), vae=Part(), text_encoder=Part(), tokenizer=None,
                              scheduler_config={"prediction_type": "epsilon"},
                              text_encoder_2=Part() if family == "sdxl" else None)

    def load_from_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                             dtype: torch.dtype, vae_dtype: torch.dtype, vae_device: torch.device | None = None,
                             source_name: str | None = None) -> DiffusionModel:
        assert vae_device == device
        family = Path(config_dir).name.split("-")[0] if Path(config_dir).parent == configs_path else "sd1"
        return self._model(family, str(source_name), device)

    def load_diffusers_folder(self, path: Path, *, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                              vae_device: torch.device | None = None) -> DiffusionModel:
        return self._model("sd1", Path(path).name, device)

    def load_vae_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                            dtype: torch.dtype, source_name: str | None = None) -> Part:
        self.built_on[str(source_name)] = device
        return Part()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    sd = tmp_path / "models" / "Stable-diffusion"
    write_st(sd / "alpha.safetensors", SD1_KEYS)
    write_st(sd / "xl.safetensors", SDXL_KEYS)
    folder = sd / "folder"
    write_st(folder / "unet" / "diffusion_pytorch_model.safetensors", {"w": (1,)})
    (folder / "model_index.json").write_text("{}", encoding="utf8")
    write_st(tmp_path / "models" / "VAE" / "other.safetensors", {"decoder.conv_out.weight": (3, 8, 3, 3)})
    return tmp_path


def manager(root: Path, loader: Loader, policy: OffloadPolicy) -> ModelManager:
    args = cmd_args.defaults()
    args.data_dir = str(root)
    args.no_hashing = True
    m = ModelManager(paths=Paths.from_args(args), opts=Options(options_templates), cmd_opts=args,
                     policy=DevicePolicy(META, torch.float32, torch.float32, META), loader=loader,
                     offload_policy=policy)
    m.opts.sd_checkpoints_limit = 3
    m.opts.sd_checkpoints_keep_in_cpu = True
    return m


def parts(model: DiffusionModel) -> list[Part]:
    return [p for p in (model.unet, model.vae, model.text_encoder, model.text_encoder_2) if p is not None]


def test_medvram_models_are_built_in_ram_and_never_moved(root: Path) -> None:
    loader = Loader()
    m = manager(root, loader, OffloadPolicy(medvram=True, execution_device=META))
    alpha = m.load("alpha")
    assert loader.built_on["alpha.safetensors"] == CPU
    assert alpha.offload is not None and alpha.offload.mode is OffloadMode.MEDVRAM
    assert alpha.device == META and alpha.storage_device == CPU
    xl = m.load("xl")  # alpha is parked: nothing to move
    assert xl.offload is not None
    assert m.load("alpha") is alpha  # back from the cache: still nothing to move
    m.unload()
    assert m.reload() is alpha
    assert all(p.moves == [] for model in (alpha, xl) for p in parts(model))
    assert all(p.weight.device == CPU for p in parts(alpha))
    with pytest.raises(ValueError, match="offloaded"):
        alpha.to(META)

    m.opts.sd_vae = "other.safetensors"
    assert m.reload_vae() is alpha
    assert loader.built_on["other.safetensors"] == CPU  # a new VAE goes to storage too
    assert alpha.vae.moves == [] and alpha.vae in alpha.offload._hooked
    m.close()


def test_medvram_sdxl_offloads_only_sdxl(root: Path) -> None:
    loader = Loader()
    m = manager(root, loader, OffloadPolicy(medvram_sdxl=True, execution_device=META))
    alpha = m.load("alpha")
    assert loader.built_on["alpha.safetensors"] == META and alpha.offload is None
    xl = m.load("xl")
    assert loader.built_on["xl.safetensors"] == CPU and xl.offload is not None
    assert alpha.unet.moves[-1] == CPU  # an ordinary model is parked in RAM as before
    # A diffusers folder's family is known only once built: built in RAM, then sent to the device.
    folder = m.load("folder")
    assert loader.built_on["folder"] == CPU and folder.offload is None
    assert all(p.moves and p.moves[0] == META for p in parts(folder))
    m.close()


def test_lowvram_applies_to_every_family(root: Path) -> None:
    loader = Loader()
    m = manager(root, loader, OffloadPolicy(lowvram=True, medvram=True, execution_device=META))
    for name in ("alpha", "xl", "folder"):
        model = m.load(name)
        assert model.offload is not None and model.offload.mode is OffloadMode.LOWVRAM
    assert set(loader.built_on.values()) == {CPU}
    m.close()


def test_without_flags_nothing_changes(root: Path) -> None:
    loader = Loader()
    m = manager(root, loader, OffloadPolicy())
    model = m.load("xl")
    assert model.offload is None and loader.built_on["xl.safetensors"] == META
    m.close()


def test_the_v_prediction_probe_runs_in_the_unet_stage(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_st(root / "models" / "Stable-diffusion" / "sd21.safetensors", SD2_KEYS)
    calls: list[tuple[dict[str, Any], list[str]]] = []
    real_probe = manager_module.probe_v_prediction

    def probe(unet: VUNet, **kwargs: Any) -> bool:
        offloader = unet.offloader  # set below, when the model is built
        calls.append((kwargs, [r.name for r in offloader._resident.values()]))
        return real_probe(unet, **kwargs)

    monkeypatch.setattr(manager_module, "probe_v_prediction", probe)
    real_attach = offload.attach
    monkeypatch.setattr(offload, "attach", lambda model, offloader: (
        setattr(model.unet, "offloader", offloader), real_attach(model, offloader)))
    m = manager(root, Loader(), OffloadPolicy(medvram=True, execution_device=CPU))
    model = m.load("sd21")
    assert model.prediction_type == "v_prediction"
    assert calls == [({"device": CPU}, ["unet"])]  # on the execution device, with the UNet placed
    m.close()
