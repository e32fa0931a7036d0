"""The model manager: switching, caching, failures, hashing, VAE choice; with a fake loader and with
the real loader on tiny models."""

from __future__ import annotations

import gc
import hashlib
import shutil
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import write_single_file

from modules import cmd_args, hashes
from modules.devices import DevicePolicy
from modules.engine.model import DiffusionModel
from modules.model_manager import manager as manager_module
from modules.model_manager.arch import UnknownArchitectureError
from modules.model_manager.manager import (
    CheckpointNotFoundError,
    ModelLoadError,
    ModelManager,
    VaeNotFoundError,
)
from modules.model_manager.safe_load import CheckpointReadError, UnsafeCheckpointError, read_safetensors_header
from modules.options import Options
from modules.paths import Paths, configs_path
from modules.shared_options import options_templates

CPU = torch.device("cpu")
POLICY = DevicePolicy(CPU, torch.float32, torch.float32, CPU)

# --- fixtures: files with real key layouts (tiny tensors), and a loader that records its calls ----

SD1_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (8,),
    "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
}
SD2_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "cond_stage_model.model.ln_final.weight": (8,),
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (24, 8),
    "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
}
SDXL_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (8,),
    "conditioner.embedders.1.model.ln_final.weight": (8,),
    "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
}
LORA_KEYS = {"lora_unet_x.lora_down.weight": (4, 8), "lora_unet_x.lora_up.weight": (8, 4)}
VAE_KEYS = {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)}


def write_st(path: Path, keys: dict[str, tuple[int, ...]], seed: int = 0, extra: dict[str, torch.Tensor] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=g) for k, shape in keys.items()}
    tensors.update(extra or {})
    save_file(tensors, path)
    return path


class Part(torch.nn.Module):
    """A stand-in model component that records where it is moved."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.moves: list[Any] = []

    def to(self, *args: Any, **kwargs: Any) -> Part:  # type: ignore[override]
        self.moves.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)


class VUNet(Part):
    """Answers the v-prediction probe like a v model."""

    config = SimpleNamespace(in_channels=4, cross_attention_dim=8, block_out_channels=(8, 8))

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True) -> tuple[torch.Tensor]:
        return (-x - 1.0,)


class FakeLoader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Path]] = []
        self.fail_with: BaseException | None = None
        self.before_build: Any = None
        self.unet_class: type[Part] = Part
        self.active = 0
        self.max_active = 0
        self.threads: list[str] = []

    def _model(self, family: str, name: str) -> DiffusionModel:
        return DiffusionModel(family=family, unet=self.unet_class(f"unet:{name}"), vae=Part(f"vae:{name}"),
                              text_encoder=Part(f"te:{name}"), tokenizer=None,
                              scheduler_config={"prediction_type": "epsilon"})

    def _enter(self, kind: str, name: str, config_dir: Path) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.threads.append(threading.current_thread().name)
        self.calls.append((kind, name, Path(config_dir)))
        try:
            if self.before_build is not None:
                self.before_build()
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            self.active -= 1

    def load_from_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                             dtype: torch.dtype, vae_dtype: torch.dtype, vae_device: torch.device | None = None,
                             source_name: str | None = None) -> DiffusionModel:
        assert state_dict and all(isinstance(v, torch.Tensor) for v in state_dict.values())
        self._enter("single", str(source_name), config_dir)
        family = Path(config_dir).name.split("-")[0] if Path(config_dir).parent == configs_path else "sd1"
        return self._model(family, str(source_name))

    def load_diffusers_folder(self, path: Path, *, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                              vae_device: torch.device | None = None) -> DiffusionModel:
        self._enter("diffusers", Path(path).name, Path(path))
        return self._model("sd1", Path(path).name)

    def load_vae_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                            dtype: torch.dtype, source_name: str | None = None) -> Part:
        self.calls.append(("vae", str(source_name), Path(config_dir)))
        return Part(f"external-vae:{source_name}")


def make_args(data_dir: Path, **overrides: Any) -> Any:
    args = cmd_args.defaults()
    args.data_dir = str(data_dir)
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def make_manager(root: Path, loader: Any = None, opts: Options | None = None, *, real_loader: bool = False,
                 **flags: Any) -> ModelManager:
    """A manager over the data root `root`: with a FakeLoader unless `real_loader`."""
    args = make_args(root, **flags)
    paths = Paths.from_args(args)
    if loader is None and not real_loader:
        loader = FakeLoader()
    return ModelManager(paths=paths, opts=opts or Options(options_templates), cmd_opts=args, policy=POLICY,
                        loader=loader)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    sd = tmp_path / "models" / "Stable-diffusion"
    write_st(sd / "alpha.safetensors", SD1_KEYS, seed=1)
    write_st(sd / "sub" / "beta.safetensors", SD1_KEYS, seed=2)
    write_st(sd / "xl.safetensors", SDXL_KEYS, seed=3)
    return tmp_path


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def mgr(root: Path, loader: FakeLoader) -> ModelManager:
    m = make_manager(root, loader)
    yield m
    m.close()


# --- listing and lookups --------------------------------------------------------------------------


def test_lists_and_finds_checkpoints(mgr: ModelManager) -> None:
    assert [i.name for i in mgr.checkpoints()] == ["alpha.safetensors", "sub/beta.safetensors", "xl.safetensors"]
    beta = mgr.get_checkpoint("beta")
    assert beta is not None and beta.name == "sub/beta.safetensors"
    assert mgr.get_checkpoint("sub_beta") is beta
    assert mgr.get_checkpoint("nope") is None
    with pytest.raises(CheckpointNotFoundError) as info:
        mgr.require_checkpoint("nope")
    assert "'nope'" in str(info.value) and "alpha.safetensors" in str(info.value)


def test_switch_by_title_name_short_and_full_hash(mgr: ModelManager, loader: FakeLoader) -> None:
    model = mgr.load("alpha.safetensors")
    alpha = mgr.current_info
    assert alpha is not None and model.sd_checkpoint_info is alpha
    full = hashlib.sha256(Path(alpha.filename).read_bytes()).hexdigest()
    assert model.sd_model_hash == full[:10] == alpha.shorthash
    assert mgr.opts.sd_model_checkpoint == f"alpha.safetensors [{full[:10]}]" == alpha.title
    assert loader.calls[-1][2] == configs_path / "sd1"

    mgr.load("sub/beta.safetensors")
    beta = mgr.current_info
    assert beta is not None and beta.name == "sub/beta.safetensors"
    assert beta.sha256 is not None
    mgr.load(alpha.shorthash)  # type: ignore[arg-type]
    assert mgr.current_info is alpha
    mgr.load(beta.sha256)
    assert mgr.current_info is beta
    mgr.load(alpha.title)
    assert mgr.current_info is alpha
    xl = mgr.load("xl")
    assert xl.family == "sdxl" and loader.calls[-1][2] == configs_path / "sdxl"
    assert mgr.status == "ready"


def test_loading_the_model_in_service_again_does_nothing(mgr: ModelManager, loader: FakeLoader) -> None:
    callbacks: list[DiffusionModel] = []
    mgr.on_model_loaded.append(callbacks.append)
    first = mgr.load("alpha")
    assert mgr.load("alpha") is first
    assert len([c for c in loader.calls if c[0] == "single"]) == 1
    assert callbacks == [first]


def test_hash_is_computed_while_the_model_is_built(mgr: ModelManager, loader: FakeLoader,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hashing_started = threading.Event()
    real = hashes.calculate_sha256
    hash_threads: list[str] = []

    def slow_hash(filename: Any) -> str:
        hash_threads.append(threading.current_thread().name)
        hashing_started.set()
        return real(filename)

    def wait_for_hash() -> None:
        # The build only proceeds once hashing is under way in another thread: run one after the
        # other, this would time out.
        assert hashing_started.wait(5), "hashing did not run concurrently with loading"

    monkeypatch.setattr(hashes, "calculate_sha256", slow_hash)
    loader.before_build = wait_for_hash
    model = mgr.load("alpha")
    assert model.sd_model_hash is not None
    assert hash_threads and hash_threads[0] != loader.threads[0]


def test_no_hashing_flag(root: Path, loader: FakeLoader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashes, "calculate_sha256", lambda f: pytest.fail("hashed despite --no-hashing"))
    m = make_manager(root, loader, no_hashing=True)
    model = m.load("alpha")
    assert model.sd_model_hash is None
    assert m.opts.sd_model_checkpoint == "alpha.safetensors"
    m.close()


def test_hashes_are_cached_across_manager_instances(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_manager(root)
    h = first.load("alpha").sd_model_hash
    first.close()

    monkeypatch.setattr(hashes, "calculate_sha256", lambda f: pytest.fail("hashed again after a restart"))
    hashes._caches.clear()  # a new process has no in-memory cache object
    second = make_manager(root)
    info = second.get_checkpoint("alpha")
    assert info is not None and info.shorthash == h
    assert second.get_checkpoint(h) is info  # findable by hash right after listing
    assert second.load(info).sd_model_hash == h
    second.close()


# --- failures -------------------------------------------------------------------------------------


def _evil_ckpt(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Evil()}, path)
    return path


def _assert_previous_in_service(mgr: ModelManager, model: DiffusionModel, title: str) -> None:
    assert mgr.current_model(load=False) is model
    assert mgr.current_info is not None and mgr.current_info.title == title
    assert mgr.opts.sd_model_checkpoint == title
    assert mgr.status.startswith("error: ")
    # Still usable: its modules are intact and on the device.
    assert model.unet.weight.device == CPU


def test_failed_loads_leave_the_previous_model_in_service(root: Path, mgr: ModelManager, loader: FakeLoader) -> None:
    sd = root / "models" / "Stable-diffusion"
    marker = root / "pwned"
    _evil_ckpt(sd / "evil.ckpt", marker)
    (sd / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    write_st(sd / "a-lora.safetensors", LORA_KEYS)
    write_st(sd / "gone.safetensors", SD1_KEYS, seed=9)
    mgr.refresh()
    (sd / "gone.safetensors").unlink()

    model = mgr.load("alpha")
    title = mgr.current_info.title  # type: ignore[union-attr]

    with pytest.raises(UnsafeCheckpointError) as info:
        mgr.load("evil.ckpt")
    assert "evil.ckpt" in str(info.value)
    assert not marker.exists()
    _assert_previous_in_service(mgr, model, title)

    with pytest.raises(CheckpointReadError, match="corrupt"):
        mgr.load("corrupt.safetensors")
    _assert_previous_in_service(mgr, model, title)

    with pytest.raises(UnknownArchitectureError) as unknown:
        mgr.load("a-lora")
    assert "a-lora.safetensors" in str(unknown.value) and "LoRA" in str(unknown.value)
    _assert_previous_in_service(mgr, model, title)

    with pytest.raises(CheckpointReadError, match="gone"):
        mgr.load("gone.safetensors")
    _assert_previous_in_service(mgr, model, title)

    loader.fail_with = RuntimeError("shape mismatch in conv_in")
    with pytest.raises(ModelLoadError) as failed:
        mgr.load("beta")
    assert "beta.safetensors" in str(failed.value) and "shape mismatch" in str(failed.value)
    _assert_previous_in_service(mgr, model, title)

    loader.fail_with = None
    assert mgr.load("beta").sd_checkpoint_info.name == "sub/beta.safetensors"
    assert mgr.status == "ready"


class Benign:
    """Harmless, but not on the unpickling allowlist."""


def test_unsafe_pickle_allowed_with_flag(root: Path, loader: FakeLoader) -> None:
    sd = root / "models" / "Stable-diffusion"
    sd_tensors = {k: torch.zeros(s) for k, s in SD1_KEYS.items()}
    torch.save({"state_dict": sd_tensors, "extra": Benign()}, sd / "custom.ckpt")
    strict = make_manager(root, loader)
    with pytest.raises(UnsafeCheckpointError):
        strict.load("custom.ckpt")
    lenient = make_manager(root, loader, disable_safe_unpickle=True)
    assert lenient.load("custom.ckpt").family == "sd1"
    strict.close()
    lenient.close()


# --- cache limit ----------------------------------------------------------------------------------


def test_limit_two_keeps_both_and_parks_the_older(mgr: ModelManager, loader: FakeLoader) -> None:
    mgr.opts.sd_checkpoints_limit = 2
    mgr.opts.sd_checkpoints_keep_in_cpu = True
    a = mgr.load("alpha")
    b = mgr.load("beta")
    assert mgr.loaded_models() == [a, b]
    assert CPU in a.unet.moves  # parked
    builds = len(loader.calls)
    assert mgr.load("alpha") is a  # from the cache, no rebuild
    assert len(loader.calls) == builds
    assert mgr.loaded_models() == [b, a]
    c = mgr.load("xl")
    assert mgr.loaded_models() == [a, c]  # b was least recently used


def test_limit_one_drops_the_older(mgr: ModelManager) -> None:
    mgr.opts.sd_checkpoints_limit = 1
    a = mgr.load("alpha")
    ref = weakref.ref(a.unet)
    del a
    b = mgr.load("beta")
    gc.collect()
    assert mgr.loaded_models() == [b]
    assert ref() is None, "the older model is still referenced"


def test_unload_and_reload(mgr: ModelManager, loader: FakeLoader) -> None:
    a = mgr.load("alpha")
    ref = weakref.ref(a.unet)
    del a
    mgr.unload()
    gc.collect()
    assert mgr.current_model(load=False) is None
    assert ref() is None  # on a CPU device, unloading frees the memory
    assert mgr.current_info is not None and mgr.current_info.name == "alpha.safetensors"
    again = mgr.reload()
    assert again is not None and again.sd_checkpoint_info.name == "alpha.safetensors"
    assert mgr.current_model(load=False) is again


def test_unload_parks_on_an_accelerator(root: Path, loader: FakeLoader) -> None:
    m = make_manager(root, loader)
    m.policy = DevicePolicy(torch.device("meta"), torch.float32, torch.float32, torch.device("meta"))
    model = m.load("alpha")
    m.unload()
    assert model.unet.moves[-1] == CPU
    assert m.current_model(load=False) is None
    builds = len(loader.calls)
    assert m.reload() is model  # brought back from RAM, not read again
    assert len(loader.calls) == builds
    assert model.unet.moves[-1] == torch.device("meta")
    m.close()


def test_callbacks_run_after_each_switch_and_errors_are_contained(mgr: ModelManager) -> None:
    seen: list[str] = []

    def broken(model: DiffusionModel) -> None:
        raise RuntimeError("extension bug")

    mgr.on_model_loaded.append(broken)
    mgr.on_model_loaded.append(lambda m: seen.append(m.sd_checkpoint_info.name))
    mgr.load("alpha")
    mgr.load("beta")
    assert seen == ["alpha.safetensors", "sub/beta.safetensors"]


def test_concurrent_switching_is_serialised(mgr: ModelManager, loader: FakeLoader) -> None:
    loader.before_build = lambda: time.sleep(0.01)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(2):
                model = mgr.load(name)
                assert model.sd_checkpoint_info.name_for_extra == name
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("alpha", "beta", "xl")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert loader.max_active == 1
    assert len(mgr.loaded_models()) == 1


# --- start-up -------------------------------------------------------------------------------------


def test_background_load_of_the_default_checkpoint(mgr: ModelManager) -> None:
    future = mgr.load_in_background()
    model = future.result(timeout=30)
    assert model is not None and model.sd_checkpoint_info.name == "alpha.safetensors"  # the first one
    assert mgr.status == "ready"


def test_default_checkpoint_from_settings_then_ckpt_flag(root: Path, loader: FakeLoader) -> None:
    opts = Options(options_templates)
    opts.sd_model_checkpoint = "sub/beta.safetensors [0123456789]"  # stale hash: found by name
    m = make_manager(root, loader, opts=opts)
    assert m.default_checkpoint().name == "sub/beta.safetensors"  # type: ignore[union-attr]
    opts.sd_model_checkpoint = "deleted.safetensors [0123456789]"
    assert m.default_checkpoint().name == "alpha.safetensors"  # type: ignore[union-attr]

    outside = write_st(root / "elsewhere" / "given.safetensors", SD1_KEYS, seed=5)
    flagged = make_manager(root, loader, opts=opts, ckpt=str(outside))
    assert flagged.default_checkpoint().filename == str(outside)  # type: ignore[union-attr]
    assert flagged.current_model().sd_checkpoint_info.name == "given.safetensors"  # type: ignore[union-attr]
    m.close()
    flagged.close()


def test_shipped_demo_model_is_the_default_only_when_alone(tmp_path: Path, loader: FakeLoader) -> None:
    folder = tmp_path / "models" / "Stable-diffusion"
    write_st(folder / "easel-demo.safetensors", SD1_KEYS, seed=7)  # sorts before "zeta"
    alone = make_manager(tmp_path, loader)
    assert alone.default_checkpoint().name == "easel-demo.safetensors"  # type: ignore[union-attr]
    alone.close()
    write_st(folder / "zeta.safetensors", SD1_KEYS, seed=8)
    with_own = make_manager(tmp_path, loader)
    assert with_own.default_checkpoint().name == "zeta.safetensors"  # type: ignore[union-attr]
    assert [c.name for c in with_own.registry.checkpoints] == ["easel-demo.safetensors", "zeta.safetensors"]
    with_own.close()


def test_no_checkpoints_status_says_where_to_put_one(tmp_path: Path) -> None:
    m = make_manager(tmp_path)
    assert m.load_in_background().result(timeout=30) is None
    assert m.status.startswith("error: ")
    assert str(tmp_path / "models" / "Stable-diffusion") in m.status
    assert m.current_model() is None
    m.close()


def test_background_load_failure_goes_to_status(root: Path, loader: FakeLoader) -> None:
    loader.fail_with = RuntimeError("out of memory")
    m = make_manager(root, loader)
    assert m.load_in_background().result(timeout=30) is None
    assert m.status.startswith("error: ") and "out of memory" in m.status
    m.close()


# --- SD 2.x prediction type -----------------------------------------------------------------------


def test_sd2_v_probe_runs_once_per_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_st(root / "models" / "Stable-diffusion" / "sd21.safetensors", SD2_KEYS, seed=4)
    probes: list[int] = []
    real_probe = manager_module.probe_v_prediction

    def counting(unet: Any) -> bool:
        probes.append(1)
        return real_probe(unet)

    monkeypatch.setattr(manager_module, "probe_v_prediction", counting)
    loader = FakeLoader()
    loader.unet_class = VUNet
    m = make_manager(root, loader)
    model = m.load("sd21")
    assert loader.calls[-1][2] == configs_path / "sd2"
    assert model.prediction_type == "v_prediction" and model.extra["arch"] == "sd2-v"
    assert probes == [1]
    m.close()

    again = make_manager(root, loader)  # a restart: the answer comes from the cache
    assert again.load("sd21").prediction_type == "v_prediction"
    assert probes == [1]
    again.close()


def test_v_pred_key_and_yaml_settle_the_prediction_type_without_probe(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = root / "models" / "Stable-diffusion"
    write_st(sd / "xlv.safetensors", SDXL_KEYS, extra={"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)})
    write_st(sd / "sd2y.safetensors", SD2_KEYS)
    (sd / "sd2y.yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    monkeypatch.setattr(manager_module, "probe_v_prediction", lambda unet: pytest.fail("probe should not run"))
    m = make_manager(root)
    xlv = m.load("xlv")
    assert xlv.prediction_type == "v_prediction" and xlv.scheduler_config["rescale_betas_zero_snr"] is True
    assert m.load("sd2y").prediction_type == "v_prediction"
    m.close()


# --- VAE ------------------------------------------------------------------------------------------


@pytest.fixture
def vae_root(root: Path) -> Path:
    sd = root / "models" / "Stable-diffusion"
    write_st(sd / "alpha.vae.safetensors", VAE_KEYS, seed=11)
    write_st(root / "models" / "VAE" / "shared.safetensors", VAE_KEYS, seed=12)
    write_st(root / "models" / "VAE" / "beta-tuned.safetensors", VAE_KEYS, seed=13)
    return root


def test_vae_choices(vae_root: Path) -> None:
    m = make_manager(vae_root)
    assert m.vae_choices() == ["Automatic", "None", "alpha.vae.safetensors", "beta-tuned.safetensors",
                               "shared.safetensors"]
    m.close()


def test_vae_automatic_none_named_and_swap(vae_root: Path, loader: FakeLoader) -> None:
    m = make_manager(vae_root, loader)
    model = m.load("alpha")  # Automatic: alpha.vae.safetensors sits beside alpha.safetensors
    baked = model.baked_vae
    assert isinstance(baked, Part) and baked.tag == "vae:alpha.safetensors"
    assert model.vae.tag == "external-vae:alpha.vae.safetensors"
    vae_file = vae_root / "models" / "Stable-diffusion" / "alpha.vae.safetensors"
    assert model.vae_name == "alpha.vae.safetensors"
    assert model.vae_hash == hashlib.sha256(vae_file.read_bytes()).hexdigest()[:10]
    assert loader.calls[-1] == ("vae", "alpha.vae.safetensors", configs_path / "sd1")

    unet = model.unet
    builds = len([c for c in loader.calls if c[0] == "single"])
    m.opts.sd_vae = "None"
    assert m.reload_vae() is model
    assert model.vae is baked and model.baked_vae is None
    assert model.vae_name is None and model.vae_hash is None

    m.opts.sd_vae = "shared.safetensors"
    m.reload_vae()
    assert model.vae.tag == "external-vae:shared.safetensors" and model.baked_vae is baked
    assert model.unet is unet
    assert len([c for c in loader.calls if c[0] == "single"]) == builds  # only the VAE changed

    m.opts.sd_vae = "missing.safetensors"
    with pytest.raises(VaeNotFoundError) as info:
        m.reload_vae()
    assert "missing.safetensors" in str(info.value) and "shared.safetensors" in str(info.value)
    assert model.vae.tag == "external-vae:shared.safetensors"  # unchanged

    m.opts.sd_vae = "Automatic"
    beta = m.load("beta")  # prefix rule: beta-tuned.safetensors starts with "beta"
    assert beta.vae_name == "beta-tuned.safetensors"
    xl = m.load("xl")  # nothing named like it: its own
    assert xl.vae_name is None and xl.baked_vae is None
    m.close()


def test_vae_path_flag_wins(vae_root: Path, loader: FakeLoader) -> None:
    forced = write_st(vae_root / "forced" / "forced-vae.safetensors", VAE_KEYS, seed=14)
    opts = Options(options_templates)
    opts.sd_vae = "shared.safetensors"
    m = make_manager(vae_root, loader, opts=opts, vae_path=str(forced))
    assert m.load("alpha").vae_name == "forced-vae.safetensors"
    m.close()


def test_broken_vae_does_not_block_a_switch(vae_root: Path, loader: FakeLoader) -> None:
    (vae_root / "models" / "VAE" / "shared.safetensors").write_bytes(b"garbage")
    opts = Options(options_templates)
    opts.sd_vae = "shared.safetensors"
    m = make_manager(vae_root, loader, opts=opts)
    model = m.load("alpha")
    assert model.vae_name is None and model.vae.tag == "vae:alpha.safetensors"
    with pytest.raises(CheckpointReadError):
        m.reload_vae()
    m.close()


# --- the real loader on tiny models ---------------------------------------------------------------


@pytest.fixture
def tiny_manager(tiny_models_dir: Path, tmp_path: Path) -> ModelManager:
    m = make_manager(tmp_path, real_loader=True, models_dir=str(tiny_models_dir))
    yield m
    m.close()


def test_real_loader_switches_between_tiny_models(tiny_manager: ModelManager) -> None:
    assert manager_module.importlib.import_module("modules.model_manager.loader") is tiny_manager.loader
    names = [i.name for i in tiny_manager.checkpoints()]
    assert {"tiny-sd1.safetensors", "tiny-sdxl.safetensors", "tiny-sd1-diffusers"} <= set(names)
    sd1 = tiny_manager.load("tiny-sd1")
    assert sd1.family == "sd1" and sd1.sd_model_hash is not None
    assert sd1.extra["config_dir"].endswith("tiny-sd1.config")
    conv_in = sd1.unet.conv_in.weight.detach().clone()
    del sd1
    xl = tiny_manager.load("tiny-sdxl.safetensors")
    assert xl.family == "sdxl" and xl.text_encoder_2 is not None
    assert tiny_manager.current_info.name == "tiny-sdxl.safetensors"  # type: ignore[union-attr]
    diffusers = tiny_manager.load("tiny-sd1-diffusers")
    assert diffusers.family == "sd1" and diffusers.sd_model_hash is not None
    # The same weights as tiny-sd1, read from the other layout.
    assert torch.equal(diffusers.unet.conv_in.weight.detach(), conv_in)
    assert len(tiny_manager.loaded_models()) == 1


def test_real_loader_vae_swap(tiny_manager: ModelManager) -> None:
    model = tiny_manager.load("tiny-sd1")
    own = model.vae
    tiny_manager.opts.sd_vae = "tiny-vae.safetensors"
    tiny_manager.reload_vae()
    assert model.vae is not own and model.baked_vae is own
    assert model.vae_name == "tiny-vae.safetensors" and len(model.vae_hash or "") == 10
    w = "decoder.conv_out.weight"
    assert not torch.equal(model.vae.state_dict()[w], own.state_dict()[w])
    tiny_manager.opts.sd_vae = "None"
    tiny_manager.reload_vae()
    assert model.vae is own and model.vae_name is None


def test_detection_on_tiny_single_files(tiny_models_dir: Path) -> None:
    from modules.model_manager.detect import detect_from_file

    sd = tiny_models_dir / "Stable-diffusion"
    assert detect_from_file(sd / "tiny-sd1.safetensors").value == "sd1"
    assert detect_from_file(sd / "tiny-sd1-inpaint.safetensors").value == "sd1-inpaint"
    # SD 2.x eps and v files have the same keys; only an (optional) `v_pred` marker tells them apart.
    header, _ = read_safetensors_header(sd / "tiny-sd2v.safetensors")
    assert detect_from_file(sd / "tiny-sd2v.safetensors").value == ("sd2-v" if "v_pred" in header else "sd2")
    assert detect_from_file(sd / "tiny-sdxl.safetensors").value == "sdxl"


def test_real_loader_ckpt_and_failure_without_config(tiny_models_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    sd = models / "Stable-diffusion"
    write_single_file(sd, "tiny-ckpt", "sd1", seed=0, ckpt=True)
    sd.mkdir(parents=True, exist_ok=True)
    # The same tiny weights without their config folder: detected as SD 1.x, but they do not fit the
    # full-size bundled config, so the load fails with a message naming the file.
    shutil.copy(tiny_models_dir / "Stable-diffusion" / "tiny-sd1.safetensors", sd / "orphan.safetensors")
    m = make_manager(tmp_path, real_loader=True)
    model = m.load("tiny-ckpt.ckpt")
    assert model.family == "sd1" and model.sd_checkpoint_info.name == "tiny-ckpt.ckpt"
    with pytest.raises(CheckpointReadError) as info:
        m.load("orphan")
    assert "orphan.safetensors" in str(info.value)
    assert m.current_model(load=False) is model
    m.close()


# --- the A1111-named faces: modules.sd_models and modules.sd_vae -----------------------------------


@pytest.fixture
def faces(vae_root: Path, loader: FakeLoader, monkeypatch: pytest.MonkeyPatch) -> ModelManager:
    from modules import shared

    m = make_manager(vae_root, loader)
    monkeypatch.setattr(shared, "model_manager", m)
    monkeypatch.setattr(shared, "cmd_opts", m.cmd_opts)
    yield m
    m.close()


def test_sd_models_face(faces: ModelManager, vae_root: Path) -> None:
    from modules import sd_models

    titles = list(sd_models.checkpoints_list)
    assert titles == ["alpha.safetensors", "sub/beta.safetensors", "xl.safetensors"]
    assert sd_models.checkpoints_list["alpha.safetensors"].name_for_extra == "alpha"
    assert sd_models.checkpoint_aliases["sub_beta"].name == "sub/beta.safetensors"
    assert sd_models.checkpoint_tiles() == titles
    assert sd_models.checkpoint_tiles(use_short=True) == ["alpha", "beta", "xl"]
    assert sd_models.get_closet_checkpoint_match("bet").name == "sub/beta.safetensors"  # type: ignore[union-attr]
    assert sd_models.get_closet_checkpoint_match("zzz") is None
    alpha_file = vae_root / "models" / "Stable-diffusion" / "alpha.safetensors"
    assert sd_models.model_hash(alpha_file) == sd_models.checkpoints_list["alpha.safetensors"].hash

    write_st(vae_root / "models" / "Stable-diffusion" / "gamma.safetensors", SD1_KEYS, seed=21)
    assert "gamma.safetensors" not in sd_models.checkpoints_list
    sd_models.list_models()
    assert "gamma.safetensors" in sd_models.checkpoints_list

    assert sd_models.select_checkpoint().name == "alpha.safetensors"
    model = sd_models.load_model()
    assert model.sd_checkpoint_info.name == "alpha.safetensors"
    assert sd_models.model_data.sd_model is model
    assert sd_models.model_data.loaded_sd_models == [model]
    # A1111's settings onchange: the option names the new checkpoint, reload_model_weights follows it.
    faces.opts.set("sd_model_checkpoint", "gamma.safetensors")
    switched = sd_models.reload_model_weights()
    assert switched.sd_checkpoint_info.name == "gamma.safetensors"
    assert sd_models.reload_model_weights(info=sd_models.checkpoints_list["xl.safetensors"]).family == "sdxl"
    sd_models.unload_model_weights()
    assert faces.current_model(load=False) is None
    sd = sd_models.read_state_dict(alpha_file)
    assert set(sd) == set(SD1_KEYS)
    assert sd_models.read_metadata_from_safetensors(alpha_file) == {}


def test_sd_vae_face(faces: ModelManager, vae_root: Path) -> None:
    from modules import sd_models, sd_vae

    assert list(sd_vae.vae_dict) == ["alpha.vae.safetensors", "beta-tuned.safetensors", "shared.safetensors"]
    alpha = vae_root / "models" / "Stable-diffusion" / "alpha.safetensors"
    near = vae_root / "models" / "Stable-diffusion" / "alpha.vae.safetensors"
    assert sd_vae.find_vae_near_checkpoint(alpha) == str(near)
    assert sd_vae.resolve_vae(alpha).tuple() == (str(near), "found near the checkpoint")
    faces.opts.sd_vae = "None"
    assert sd_vae.resolve_vae(alpha).vae is None
    faces.opts.sd_vae = "Automatic"

    model = sd_models.load_model(sd_models.checkpoints_list["alpha.safetensors"])
    assert sd_vae.get_loaded_vae_name() == "alpha.vae.safetensors"
    assert sd_vae.get_loaded_vae_hash() == model.vae_hash and model.vae_hash
    assert sd_vae.loaded_vae_file == str(near)
    assert sd_vae.base_vae is model.baked_vae is not None
    sd_vae.reload_vae_weights(vae_file=None)
    assert sd_vae.get_loaded_vae_name() is None and sd_vae.loaded_vae_file is None
    sd_vae.reload_vae_weights(vae_file=sd_vae.vae_dict["shared.safetensors"])
    assert sd_vae.get_loaded_vae_name() == "shared.safetensors"
    sd_vae.reload_vae_weights()  # back to what the settings resolve to
    assert sd_vae.get_loaded_vae_name() == "alpha.vae.safetensors"

    write_st(vae_root / "models" / "VAE" / "late.safetensors", VAE_KEYS, seed=30)
    sd_vae.refresh_vae_list()
    assert "late.safetensors" in sd_vae.vae_dict
    assert faces.vae_choices()[-1] == "shared.safetensors" and "late.safetensors" in faces.vae_choices()


def test_shared_initialize_wires_the_manager(tiny_models_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from modules import devices, shared

    for name in ("cmd_opts", "paths", "opts", "state", "model_manager", "device"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    for name in ("device", "dtype", "dtype_unet", "dtype_vae"):
        monkeypatch.setattr(devices, name, getattr(devices, name))
    shared.initialize(make_args(tmp_path, models_dir=str(tiny_models_dir)))
    manager = shared.model_manager
    assert manager is not None
    try:
        model = shared.sd_model  # loaded on first use: the first checkpoint in the list
        assert model is manager.current_model(load=False)
        assert model.sd_checkpoint_info is manager.checkpoints()[0]
        assert shared.opts.sd_model_checkpoint == model.sd_checkpoint_info.title
    finally:
        manager.close()


def test_ensure_follows_settings_changed_without_callbacks(vae_root: Path, loader: FakeLoader) -> None:
    m = make_manager(vae_root, loader)
    assert m.ensure().sd_checkpoint_info.name == "alpha.safetensors"  # type: ignore[union-attr]
    # A per-request override sets options without callbacks; the next ensure() catches up.
    m.opts.set("sd_model_checkpoint", "sub/beta.safetensors", run_callbacks=False)
    m.opts.set("sd_vae", "shared.safetensors", run_callbacks=False)
    model = m.ensure(m.opts.sd_model_checkpoint)
    assert model is not None and model.sd_checkpoint_info.name == "sub/beta.safetensors"
    assert model.vae_name == "shared.safetensors"
    m.opts.set("sd_vae", "None", run_callbacks=False)
    assert m.ensure(m.opts.sd_model_checkpoint) is model and model.vae_name is None
    # A checkpoint that no longer exists: the default one, as A1111 does.
    m.opts.set("sd_model_checkpoint", "deleted.safetensors [0123456789]", run_callbacks=False)
    assert m.ensure("deleted.safetensors [0123456789]").sd_checkpoint_info.name == "alpha.safetensors"  # type: ignore[union-attr]
    m.close()
    assert make_manager(vae_root / "empty-data-root").ensure() is None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_real_models_are_parked_and_restored_on_the_device(tiny_models_dir: Path, tmp_path: Path,
                                                           device: str) -> None:
    dev = torch.device(device)
    src = tiny_models_dir / "Stable-diffusion"
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    for stem in ("tiny-sd1", "tiny-sd1-inpaint"):
        shutil.copy(src / f"{stem}.safetensors", sd / f"{stem}.safetensors")
        shutil.copytree(src / f"{stem}.config", sd / f"{stem}.config")
    shutil.copy(src / "tiny-sd1.safetensors", sd / "orphan.safetensors")  # no config: fails in the loader
    m = make_manager(tmp_path, real_loader=True)
    m.policy = DevicePolicy(dev, torch.float32, torch.float32, dev)
    m.opts.sd_checkpoints_limit = 2
    m.opts.sd_checkpoints_keep_in_cpu = True

    a = m.load("tiny-sd1")
    assert a.unet.device.type == dev.type and a.vae.device.type == dev.type
    b = m.load("tiny-sd1-inpaint")
    assert b.unet.device.type == dev.type
    assert a.unet.device.type == "cpu" and a.text_encoder.device.type == "cpu" and a.vae.device.type == "cpu"

    assert m.load("tiny-sd1") is a  # from the cache, back on the device
    assert a.unet.device.type == dev.type and b.unet.device.type == "cpu"

    # A failing load first makes room (b, not in service, goes; a is parked), then puts a back.
    with pytest.raises(CheckpointReadError, match="orphan"):
        m.load("orphan")
    assert m.current_model(load=False) is a
    assert a.unet.device.type == dev.type and a.vae.device.type == dev.type
    assert m.loaded_models() == [a]
    m.close()
