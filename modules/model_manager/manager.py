"""The model in service: which checkpoint is loaded, switching between them, and its VAE.

One `ModelManager` per process (`shared.model_manager`). It owns the checkpoint registry, a small
cache of loaded models (`sd_checkpoints_limit`), and the VAE choice. Switching is serialised by one
lock, so requests from several threads see either the old model or the new one, never a half-built
one; a load that fails leaves the previous model in service.

Loading a single-file checkpoint: a `<stem>.config/` diffusers folder beside it wins; otherwise the
architecture is detected from the keys (the header alone for .safetensors) and the bundled config of
that architecture is used. The file's sha256 is computed in a worker thread while the weights are
read and the modules built, so the "Model hash" of the infotext costs no extra wall time.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from modules import hashes
from modules.devices import DevicePolicy, torch_gc
from modules.engine import offload
from modules.engine.model import DiffusionModel
from modules.model_manager.arch import ModelArch, UnknownArchitectureError
from modules.model_manager.detect import (
    V_PRED_KEY,
    ZTSNR_KEY,
    ProbeCache,
    detect_arch,
    detect_from_file,
    probe_v_prediction,
    shapes_of,
)
from modules.model_manager.registry import CheckpointInfo, ModelRegistry, VaeInfo, is_demo_checkpoint
from modules.model_manager.safe_load import CheckpointReadError, read_state_dict
from modules.options import Options
from modules.paths import Paths

log = logging.getLogger(__name__)

VAE_AUTOMATIC = "Automatic"
VAE_NONE = "None"
_CPU = torch.device("cpu")


class LoaderFunctions(Protocol):
    """What the manager needs to build models (modules.model_manager.loader provides it)."""

    def load_from_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                             dtype: torch.dtype, vae_dtype: torch.dtype, vae_device: torch.device | None = None,
                             source_name: str | None = None) -> DiffusionModel: ...

    def load_diffusers_folder(self, path: Path, *, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                              vae_device: torch.device | None = None) -> DiffusionModel: ...

    def load_vae_state_dict(self, state_dict: dict[str, torch.Tensor], config_dir: Path, *, device: torch.device,
                            dtype: torch.dtype, source_name: str | None = None) -> Any: ...


class CheckpointNotFoundError(ValueError):
    """No checkpoint matches what was asked for."""


class VaeNotFoundError(ValueError):
    """The VAE named in settings or a request is not among the VAE files."""


class ModelLoadError(ValueError):
    """Building a model from a file failed for a reason other than reading or recognising it."""


@dataclass(frozen=True)
class VaeResolution:
    """Which VAE a checkpoint gets: `vae` None means the checkpoint's own (baked-in) VAE."""

    vae: VaeInfo | None
    source: str


@dataclass
class _Slot:
    """A loaded model and what the manager knows about how it was built."""

    info: CheckpointInfo
    model: DiffusionModel
    config_dir: Path
    arch: ModelArch | None
    on_device: bool = True
    vae_file: str | None = None


class ModelManager:
    """Checkpoint list, loaded-model cache, switching and VAE selection for one process."""

    def __init__(
        self,
        paths: Paths,
        opts: Options,
        cmd_opts: argparse.Namespace,
        policy: DevicePolicy,
        loader: LoaderFunctions | None = None,
        *,
        hash_cache: hashes.HashCache | None = None,
        offload_policy: offload.OffloadPolicy | None = None,
    ) -> None:
        self.paths = paths
        self.opts = opts
        self.cmd_opts = cmd_opts
        self.policy = policy
        self._offload_policy = offload_policy
        self._loader = loader
        self.hash_cache = hash_cache if hash_cache is not None else hashes.cache_for(paths.cache_dir)
        self.probe_cache = ProbeCache(Path(paths.cache_dir) / "model_probes.json")
        ckpt_arg = getattr(cmd_opts, "ckpt", None)
        self.registry = ModelRegistry(
            ckpt_dirs=tuple(paths.ckpt_dirs),
            vae_dirs=tuple(paths.vae_dirs),
            lora_dir=paths.lora_dir,
            embeddings_dir=paths.embeddings_dir,
            hash_cache=self.hash_cache,
            extra_checkpoints=(Path(ckpt_arg),) if ckpt_arg else (),
            no_hashing=self.no_hashing,
        )
        self.on_model_loaded: list[Callable[[DiffusionModel], None]] = []
        """Called with the model after every switch (errors are logged, not raised)."""

        self._lock = threading.RLock()
        self._slots: list[_Slot] = []
        """loaded models, least recently used first"""
        self._current: _Slot | None = None
        self._current_info: CheckpointInfo | None = None
        """the checkpoint in service, kept while it is unloaded"""
        self._unloaded = False
        self._status = "idle"
        self._scanned = False
        self._background: ThreadPoolExecutor | None = None
        self._hasher: ThreadPoolExecutor | None = None

    # --- flags --------------------------------------------------------------------------------------
    @property
    def no_hashing(self) -> bool:
        return bool(getattr(self.cmd_opts, "no_hashing", False))

    @property
    def allow_unsafe(self) -> bool:
        return bool(getattr(self.cmd_opts, "disable_safe_unpickle", False))

    @property
    def offload_policy(self) -> offload.OffloadPolicy:
        """--medvram / --medvram-sdxl / --lowvram on this device (given explicitly: any devices)."""
        if self._offload_policy is not None:
            return self._offload_policy
        return offload.policy_from_args(self.cmd_opts, self.policy)

    @offload_policy.setter
    def offload_policy(self, value: offload.OffloadPolicy | None) -> None:
        self._offload_policy = value

    @property
    def loader(self) -> LoaderFunctions:
        if self._loader is None:
            # Imported on first use: building models pulls in diffusers, which listing does not need.
            self._loader = importlib.import_module("modules.model_manager.loader")  # type: ignore[assignment]
        assert self._loader is not None
        return self._loader

    # --- listing ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rescan the model folders."""
        self.registry.refresh()
        self._scanned = True

    def _ensure_scanned(self) -> None:
        if not self._scanned:
            self.refresh()

    def checkpoints(self) -> list[CheckpointInfo]:
        self._ensure_scanned()
        return list(self.registry.checkpoints)

    def vaes(self) -> list[VaeInfo]:
        self._ensure_scanned()
        return list(self.registry.vaes)

    def loras(self) -> list[Path]:
        self._ensure_scanned()
        return list(self.registry.loras)

    def embeddings(self) -> list[Path]:
        self._ensure_scanned()
        return list(self.registry.embeddings)

    def get_checkpoint(self, query: str | CheckpointInfo | None) -> CheckpointInfo | None:
        """The checkpoint a title, name, stem, hash, "name [hash]" or path designates, else the
        closest title containing the query; None when nothing matches."""
        if isinstance(query, CheckpointInfo):
            return query
        if not query:
            return None
        self._ensure_scanned()
        return self.registry.find_checkpoint(str(query))

    def require_checkpoint(self, query: str | CheckpointInfo | None) -> CheckpointInfo:
        info = self.get_checkpoint(query)
        if info is not None:
            return info
        titles = [i.title for i in self.registry.checkpoints]
        if not titles:
            raise CheckpointNotFoundError(f"checkpoint {query!r} not found: there are no checkpoints; {self._where_to_put()}")
        raise CheckpointNotFoundError(f"checkpoint {query!r} not found; known checkpoints: {', '.join(titles)}")

    def _where_to_put(self) -> str:
        return f"put a .safetensors (or .ckpt) Stable Diffusion model in {self.paths.sd_models_dir}"

    def default_checkpoint(self) -> CheckpointInfo | None:
        """What to load when nothing is asked for: --ckpt, else the `sd_model_checkpoint` setting when
        it resolves, else the first checkpoint in the list (A1111's order) other than the small demo
        model Easel ships, which is the default only when there is nothing else."""
        self._ensure_scanned()
        ckpt_arg = getattr(self.cmd_opts, "ckpt", None)
        if ckpt_arg:
            info = self.registry.find_checkpoint(str(Path(ckpt_arg).absolute()))
            if info is not None:
                return info
        wanted = self.opts.sd_model_checkpoint
        if wanted:
            info = self.registry.find_checkpoint(str(wanted))
            if info is not None:
                return info
            log.warning("checkpoint %r from the settings was not found; using the first one", wanted)
        checkpoints = self.registry.checkpoints
        own = [c for c in checkpoints if not is_demo_checkpoint(c)]
        return (own or checkpoints or [None])[0]

    # --- state --------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """"idle", "loading <title>", "ready" or "error: <message>", for the UI."""
        return self._status

    @property
    def current_info(self) -> CheckpointInfo | None:
        return self._current_info

    def loaded_models(self) -> list[DiffusionModel]:
        with self._lock:
            return [s.model for s in self._slots]

    def current_model(self, load: bool = True) -> DiffusionModel | None:
        """The model in service. With `load`, loads one if none is (waiting for a load under way);
        returns None only when there is no checkpoint at all."""
        slot = self._current
        if slot is not None and slot.on_device and not self._unloaded:
            return slot.model
        if not load:
            return None
        with self._lock:
            slot = self._current
            if slot is not None and slot.on_device and not self._unloaded:
                return slot.model
            info = self._current_info or self.default_checkpoint()
            if info is None:
                self._status = f"error: no checkpoint found: {self._where_to_put()}"
                return None
            return self.load(info)

    def ensure(self, query: str | CheckpointInfo | None = None) -> DiffusionModel | None:
        """The model a generation should use, brought in line with the settings: the checkpoint
        `query` designates (default: the `sd_model_checkpoint` setting; one that no longer exists falls
        back to the first checkpoint, as A1111 does) with the VAE `sd_vae` resolves to. Settings
        changed without callbacks (per-request overrides) take effect here. None without checkpoints."""
        with self._lock:
            info = self.get_checkpoint(query) if query is not None else None
            if info is None:
                if query:
                    log.warning("checkpoint %r not found; using the default one", query)
                info = self.default_checkpoint()
            if info is None:
                self._status = f"error: no checkpoint found: {self._where_to_put()}"
                return None
            model = self.load(info)
            slot = self._current
            if slot is not None:
                self._apply_vae_quietly(slot)
            return model

    # --- switching ----------------------------------------------------------------------------------
    def load(self, query_or_info: str | CheckpointInfo, *, force: bool = False) -> DiffusionModel:
        """Put a checkpoint in service and return its model. A cached model is reused unless `force`.
        On failure the previous model stays in service and the error (naming the file) is raised."""
        with self._lock:
            try:
                info = self.require_checkpoint(query_or_info)
            except CheckpointNotFoundError as e:
                self._status = f"error: {e}"
                raise
            cached = next((s for s in self._slots if s.info.filename == info.filename), None)
            if cached is not None and not force:
                if cached is self._current and cached.on_device and not self._unloaded:
                    # Already in service; the title may have gained its hash since.
                    self.opts.set("sd_model_checkpoint", info.title, run_callbacks=False)
                    return cached.model
                self._activate(cached)
                return cached.model

            previous = self._current if not self._unloaded else None
            self._status = f"loading {info.title}"
            try:
                slot = self._build(info, previous, replacing=cached)
            except Exception as e:
                self._status = f"error: {e}"
                log.error("loading %s failed: %s", info.filename, e)
                raise
            if cached is not None:
                self._drop(cached)
            self._slots.append(slot)
            self._activate(slot)
            return slot.model

    def _activate(self, slot: _Slot) -> None:
        """Make a loaded model the one in service: device placement, cache limit, settings, callbacks."""
        if slot in self._slots:
            self._slots.remove(slot)
        self._slots.append(slot)
        self._current = slot
        self._current_info = slot.info
        self._unloaded = False
        if not slot.on_device:
            self._to_device(slot)
        self._enforce_limit()
        keep_in_cpu = bool(self.opts.sd_checkpoints_keep_in_cpu)
        for other in self._slots:
            if other is not slot and other.on_device and keep_in_cpu:
                self._park(other)
        self._apply_vae_quietly(slot)
        self.opts.set("sd_model_checkpoint", slot.info.title, run_callbacks=False)
        self._status = "ready"
        for callback in list(self.on_model_loaded):
            try:
                callback(slot.model)
            except Exception:
                log.exception("on_model_loaded callback %r failed", callback)

    def _limit(self) -> int:
        try:
            return max(1, int(self.opts.sd_checkpoints_limit))
        except (TypeError, ValueError):
            return 1

    def _enforce_limit(self, extra: int = 0) -> None:
        """Drop the least recently used models not in service until `extra` more fit the limit."""
        while len(self._slots) + extra > self._limit():
            victim = next((s for s in self._slots if s is not self._current), None)
            if victim is None:
                break
            log.info("unloading %s (over the limit of %d loaded checkpoints)", victim.info.title, self._limit())
            self._drop(victim)

    def _drop(self, slot: _Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        if self._current is slot:
            self._current = None
        slot.model = None  # type: ignore[assignment]
        torch_gc()  # collects the model's reference cycles, then returns cached device memory

    def _park(self, slot: _Slot) -> None:
        """Move a model to the CPU, keeping it loaded (a no-op where the device is the CPU, and for an
        offloaded model, whose weights are in RAM already)."""
        if slot.model.offload is None:
            _move_model(slot.model, _CPU, _CPU)
        slot.on_device = False

    def _to_device(self, slot: _Slot) -> None:
        if slot.model.offload is None:  # an offloaded model's parts move to the device only to run
            _move_model(slot.model, self.policy.device, self.policy.vae_device)
        slot.on_device = True

    def _build(self, info: CheckpointInfo, previous: _Slot | None, *, replacing: _Slot | None) -> _Slot:
        path = Path(info.filename)
        if not path.exists():
            raise CheckpointReadError(f"checkpoint file not found: {path}")
        hash_job = self._start_hashing(info)
        parked_previous = False

        def make_room() -> None:
            # Models not in service go first; the one in service is parked on the CPU rather than
            # dropped, so it can come back if this load fails.
            nonlocal parked_previous
            self._enforce_limit(extra=1 if replacing is None else 0)
            if previous is not None and previous.on_device and self.policy.device.type != "cpu":
                self._park(previous)
                parked_previous = True

        offload_policy = self.offload_policy

        def device_kw(family: str | None) -> dict[str, Any]:
            # Offloaded models are built in storage (RAM): a model bigger than the GPU still loads.
            if offload_policy.builds_in_storage(family):
                storage = offload_policy.storage_device
                return {"device": storage, "dtype": self.policy.dtype, "vae_dtype": self.policy.vae_dtype,
                        "vae_device": storage}
            return {"device": self.policy.device, "dtype": self.policy.dtype, "vae_dtype": self.policy.vae_dtype,
                    "vae_device": self.policy.vae_device}

        arch: ModelArch | None = None
        markers: set[str] = set()
        try:
            if info.is_diffusers:
                make_room()
                config_dir = path
                model = self._call_loader("load_diffusers_folder", path, path, **device_kw(None))
            else:
                override = info.config_dir_override
                if override is None and info.is_safetensors:
                    arch = detect_from_file(path)  # header only: fails fast, before reading GBs
                state_dict = read_state_dict(path, allow_unsafe=self.allow_unsafe)
                if override is None and arch is None:
                    arch = detect_arch(shapes_of(state_dict), source=str(path))
                for key in (V_PRED_KEY, ZTSNR_KEY):
                    if state_dict.pop(key, None) is not None:
                        markers.add(key)
                config_dir = override if override is not None else arch.config_dir  # type: ignore[union-attr]
                make_room()
                try:
                    model = self._call_loader("load_from_state_dict", path, state_dict, config_dir,
                                              source_name=path.name,
                                              **device_kw(arch.family if arch is not None else None))
                finally:
                    # The modules own their weights now; the dict's references only hold memory.
                    state_dict.clear()
                    del state_dict
            self._place_new_model(info, model, offload_policy, arch.family if arch is not None else None)
        except BaseException:
            if parked_previous and previous is not None and previous.model is not None:
                self._to_device(previous)
            raise

        slot = _Slot(info=info, model=model, config_dir=Path(config_dir), arch=arch)
        model.sd_checkpoint_info = info
        model.sd_model_hash = self._finish_hashing(info, hash_job)
        if arch is not None:
            model.extra["arch"] = arch.value
        model.extra["config_dir"] = str(config_dir)
        self._settle_prediction_type(slot, markers)
        return slot

    def _place_new_model(self, info: CheckpointInfo, model: DiffusionModel, policy: offload.OffloadPolicy,
                         family_hint: str | None) -> None:
        """Attach the offloader the model's family calls for. A model built in storage (on the
        `family_hint` known before building) that turns out not to need one (--medvram-sdxl, not
        SDXL) goes to the device."""
        offloader = policy.offloader_for(model.family)
        if offloader is not None:
            offload.attach(model, offloader)
            log.info("%s stays in RAM and runs on the device part by part (%s)", info.title, offloader.describe())
        elif policy.builds_in_storage(family_hint):
            _move_model(model, self.policy.device, self.policy.vae_device)

    def _call_loader(self, name: str, path: Path, *args: Any, **kwargs: Any) -> DiffusionModel:
        try:
            return getattr(self.loader, name)(*args, **kwargs)
        except (CheckpointReadError, UnknownArchitectureError, ModelLoadError):
            raise
        except Exception as e:
            raise ModelLoadError(f"{path} could not be loaded: {type(e).__name__}: {e}") from e

    # --- hashing ------------------------------------------------------------------------------------
    def _start_hashing(self, info: CheckpointInfo) -> Future[str | None] | None:
        if info.sha256 is not None or self.no_hashing:
            return None
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="easel-hash")
        return self._hasher.submit(info.calculate_shorthash)

    def _finish_hashing(self, info: CheckpointInfo, job: Future[str | None] | None) -> str | None:
        if job is not None:
            try:
                job.result()
            except OSError as e:
                log.warning("could not hash %s: %s", info.filename, e)
        return info.shorthash

    # --- prediction type ----------------------------------------------------------------------------
    def _settle_prediction_type(self, slot: _Slot, markers: set[str]) -> None:
        """Fix the scheduler's prediction type where the keys alone could not tell it."""
        model = slot.model
        config = model.scheduler_config
        if ZTSNR_KEY in markers:
            config["rescale_betas_zero_snr"] = True
        if V_PRED_KEY in markers:
            config["prediction_type"] = "v_prediction"
            return
        if slot.info.is_diffusers or slot.info.config_dir_override is not None:
            return  # the model's own config says it
        from_yaml = _prediction_type_from_yaml(Path(slot.info.filename))
        if from_yaml is not None:
            config["prediction_type"] = from_yaml
            return
        if slot.arch is not ModelArch.SD2:
            return
        key = self._probe_key(slot.info)
        known = self.probe_cache.get(key)
        if known is None:
            log.info("probing %s for v-prediction", slot.info.title)
            # an offloaded UNet computes on the execution device, not where its weights are
            where = {"device": model.device} if model.offload is not None else {}
            with offload.stage(model, "unet"):
                known = "v_prediction" if probe_v_prediction(model.unet, **where) else "epsilon"
            self.probe_cache.put(key, known)
        config["prediction_type"] = known
        if known == "v_prediction":
            model.extra["arch"] = ModelArch.SD2_V.value

    def _probe_key(self, info: CheckpointInfo) -> str:
        if info.sha256:
            return f"prediction_type/{info.sha256}"
        st = Path(info.filename).stat()
        return f"prediction_type/{info.filename}|{st.st_size}|{st.st_mtime_ns}"

    # --- background start-up ------------------------------------------------------------------------
    def load_in_background(self) -> Future[DiffusionModel | None]:
        """Load the default checkpoint in a worker thread. Never raises: problems end up in `status`
        (with no checkpoints at all, the status says where to put one) and the future gives None."""
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-model-load")
        return self._background.submit(self._load_at_start)

    def _load_at_start(self) -> DiffusionModel | None:
        try:
            self.refresh()
            info = self.default_checkpoint()
            if info is None:
                self._status = f"error: no checkpoint found: {self._where_to_put()}"
                log.warning("no checkpoint found: %s", self._where_to_put())
                return None
            return self.load(info)
        except Exception as e:
            log.exception("loading the start-up checkpoint failed")
            if not self._status.startswith("error:"):
                self._status = f"error: {e}"
            return None

    # --- unload / reload ----------------------------------------------------------------------------
    def unload(self) -> None:
        """Take the model out of service (A1111's unload-checkpoint). It is parked in RAM when
        `sd_checkpoints_keep_in_cpu` is on and the device is not the CPU; otherwise every loaded model
        is dropped so the memory is really freed. The next `reload()` or `current_model()` brings the
        same checkpoint back."""
        with self._lock:
            if self._current is None:
                return
            if self.opts.sd_checkpoints_keep_in_cpu and self.policy.device.type != "cpu":
                for slot in self._slots:
                    if slot.on_device:
                        self._park(slot)
            else:
                for slot in list(self._slots):
                    self._drop(slot)
            self._unloaded = True
            self._status = "idle"

    def reload(self, force: bool = False) -> DiffusionModel | None:
        """Bring the checkpoint in service back (after `unload`), or the default one; with `force`,
        read it from its file again."""
        with self._lock:
            info = self._current_info or self.default_checkpoint()
            if info is None:
                self._status = f"error: no checkpoint found: {self._where_to_put()}"
                return None
            return self.load(info, force=force)

    def close(self) -> None:
        """Stop the worker threads (tests and shutdown)."""
        for pool in (self._background, self._hasher):
            if pool is not None:
                pool.shutdown(wait=True)
        self._background = self._hasher = None

    # --- VAE ----------------------------------------------------------------------------------------
    def vae_choices(self) -> list[str]:
        return [VAE_AUTOMATIC, VAE_NONE, *(v.name for v in self.vaes())]

    def find_vae(self, name: str) -> VaeInfo:
        self._ensure_scanned()
        vae = self.registry.find_vae(name)
        if vae is None and os.path.isabs(name) and Path(name).is_file():
            vae = VaeInfo(str(Path(name)), Path(name).name)
        if vae is None:
            known = ", ".join(v.name for v in self.registry.vaes) or "none"
            folders = ", ".join(str(p) for p in self.paths.vae_dirs)
            raise VaeNotFoundError(f"VAE {name!r} not found; known VAEs: {known} (VAE folders: {folders})")
        return vae

    def resolve_vae(self, info: CheckpointInfo, choice: str | None = None) -> VaeResolution:
        """The VAE for a checkpoint: --vae-path, else the choice (`sd_vae` by default): "None" is the
        checkpoint's own, a file name is that file, "Automatic" a VAE named like the checkpoint
        (beside it or in models/VAE) or else its own. The checkpoint's user metadata may name one."""
        self._ensure_scanned()
        vae_path = getattr(self.cmd_opts, "vae_path", None)
        if vae_path:
            path = Path(vae_path).absolute()
            if not path.is_file():
                raise VaeNotFoundError(f"VAE file given with --vae-path does not exist: {path}")
            return VaeResolution(self.registry.find_vae(str(path)) or VaeInfo(str(path), path.name),
                                 "from commandline argument")
        choice = self.opts.sd_vae if choice is None else choice
        choice = choice or VAE_AUTOMATIC
        if choice == VAE_NONE:
            return VaeResolution(None, "from settings")
        overrides = bool(self.opts.sd_vae_overrides_per_model_preferences)
        if choice != VAE_AUTOMATIC and overrides:
            return VaeResolution(self.find_vae(choice), "from settings")
        preferred = info.user_metadata().get("vae")
        if isinstance(preferred, str) and preferred and preferred != VAE_AUTOMATIC:
            if preferred == VAE_NONE:
                return VaeResolution(None, "from user metadata")
            found = self.registry.find_vae(preferred)
            if found is not None:
                return VaeResolution(found, "from user metadata")
            log.warning("VAE %r named in the metadata of %s was not found", preferred, info.name)
        near = self.registry.vaes_near_checkpoint(info.filename)
        if near:
            return VaeResolution(near[0], "found near the checkpoint")
        if choice != VAE_AUTOMATIC:
            return VaeResolution(self.find_vae(choice), "from settings")
        return VaeResolution(None, "the checkpoint's own")

    def reload_vae(self, choice: str | None = None) -> DiffusionModel | None:
        """Swap only the VAE of the model in service to what the settings (or `choice`) resolve to.
        Errors leave the current VAE in place. Returns the model (None when none is loaded)."""
        with self._lock:
            slot = self._current
            if slot is None:
                return None
            self._apply_vae(slot, self.resolve_vae(slot.info, choice))
            return slot.model

    def _apply_vae_quietly(self, slot: _Slot) -> None:
        """VAE choice while switching checkpoints: a broken VAE must not block the switch."""
        try:
            self._apply_vae(slot, self.resolve_vae(slot.info))
        except Exception as e:
            log.error("VAE for %s could not be applied, using the checkpoint's own: %s", slot.info.title, e)
            self._apply_vae(slot, VaeResolution(None, "fallback"))

    def _apply_vae(self, slot: _Slot, resolution: VaeResolution) -> None:
        model = slot.model
        target = resolution.vae
        if target is None:
            if model.baked_vae is not None:
                model.vae = model.baked_vae
                model.baked_vae = None
            model.vae_name = None
            model.vae_hash = None
            slot.vae_file = None
            return
        if slot.vae_file == target.filename:
            return
        log.info("loading VAE %s (%s)", target.name, resolution.source)
        job: Future[str] | None = None
        if not self.no_hashing:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="easel-hash")
            job = self._hasher.submit(self.hash_cache.sha256, target.filename, target.hash_title)
        state_dict = read_state_dict(target.filename, allow_unsafe=self.allow_unsafe)
        if model.offload is not None:
            device = model.storage_device
        else:
            device = self.policy.vae_device if slot.on_device else _CPU
        try:
            vae = self._call_loader("load_vae_state_dict", target.path, state_dict, slot.config_dir,
                                    device=device, dtype=self.policy.vae_dtype, source_name=target.name)
        finally:
            state_dict.clear()
            del state_dict
        vae_hash: str | None = None
        if job is not None:
            try:
                vae_hash = job.result()[:10]
            except OSError as e:
                log.warning("could not hash VAE %s: %s", target.filename, e)
        if model.baked_vae is None:
            model.baked_vae = model.vae
        model.vae = vae
        if model.offload is not None:
            model.offload.prepare(model)
        model.vae_name = target.name
        model.vae_hash = vae_hash
        slot.vae_file = target.filename
        model.extra["vae_file"] = target.filename


def _move_model(model: DiffusionModel, device: torch.device, vae_device: torch.device) -> None:
    for module in (model.unet, model.text_encoder, model.text_encoder_2):
        if module is not None:
            module.to(device)
    for module in (model.vae, model.baked_vae):
        if module is not None:
            module.to(vae_device)


_YAML_PARAMETERIZATION = re.compile(r"^\s*parameterization\s*:\s*[\"']?(\w+)[\"']?", re.MULTILINE)


def _prediction_type_from_yaml(checkpoint: Path) -> str | None:
    """A1111 users mark v-prediction models with an LDM/SGM `<stem>.yaml` beside the file (SD 2.x:
    `parameterization: "v"`, SDXL: a `VScaling` denoiser); honour it so they need no probe and no new
    file. Only the prediction type is taken from it: the architecture still comes from the keys."""
    yaml_file = checkpoint.with_suffix(".yaml")
    try:
        text = yaml_file.read_text(encoding="utf8", errors="replace")
    except OSError:
        return None
    match = _YAML_PARAMETERIZATION.search(text)
    if (match is not None and match.group(1).lower() == "v") or "VScaling" in text:
        return "v_prediction"
    return "epsilon"
