"""The loaded model bundle the engine works on.

A `DiffusionModel` holds diffusers/transformers components and what the engine needs to know about
them. It is built by the model manager and is the object A1111 extensions see as `shared.sd_model`
(hence the `is_sd1` / `is_sdxl` / `sd_checkpoint_info` attributes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DiffusionModel:
    family: str
    """'sd1', 'sd2' or 'sdxl'"""
    unet: Any
    """diffusers UNet2DConditionModel"""
    vae: Any
    """diffusers AutoencoderKL"""
    text_encoder: Any
    """transformers CLIPTextModel (SDXL: CLIP ViT-L)"""
    tokenizer: Any
    scheduler_config: dict[str, Any]
    """the model's own scheduler config: betas, prediction type, timestep spacing"""
    text_encoder_2: Any = None
    """SDXL: CLIPTextModelWithProjection (OpenCLIP ViT-bigG)"""
    tokenizer_2: Any = None
    baked_vae: Any = None
    """the VAE from the checkpoint itself, kept while an external VAE is in use"""
    sd_checkpoint_info: Any = None
    """modules.sd_models.CheckpointInfo of the file this model came from"""
    sd_model_hash: str | None = None
    vae_name: str | None = None
    """file name of the external VAE in use (None: the checkpoint's own)"""
    vae_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    offload: Any = None
    """modules.engine.offload.Offloader when the weights live in RAM and move to the GPU to run
    (--medvram / --lowvram), else None"""

    # --- what the engine asks -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model computes: noise, latents and text embeddings are made here."""
        if self.offload is not None:
            return self.offload.execution_device
        return self.unet.device

    @property
    def storage_device(self) -> torch.device:
        """Where the weights live between uses: the execution device unless offloaded."""
        if self.offload is not None:
            return self.offload.storage_device
        return self.unet.device

    def device_of(self, part: Any) -> torch.device:
        """Where `part` (a component of this model) computes: where its inputs must go."""
        if self.offload is not None:
            return self.offload.execution_device
        return next(part.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def is_inpaint(self) -> bool:
        """A 9-channel UNet: 4 noisy latent + 1 mask + 4 masked-image latent channels."""
        return self.in_channels == 9

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    # --- A1111 attribute names -------------------------------------------------------------------
    @property
    def is_sd1(self) -> bool:
        return self.family == "sd1"

    @property
    def is_sd2(self) -> bool:
        return self.family == "sd2"

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def is_sdxl_inpaint(self) -> bool:
        return self.is_sdxl and self.is_inpaint

    @property
    def is_sd3(self) -> bool:
        return False

    @property
    def parameterization(self) -> str:
        return "v" if self.prediction_type == "v_prediction" else "eps"

    def to(self, device: torch.device) -> DiffusionModel:
        """Move every weight to `device` (not for offloaded models: their weights stay in storage)."""
        if self.offload is not None:
            raise ValueError("an offloaded model's weights stay on its storage device; it cannot be moved with to()")
        for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2):
            if m is not None:
                m.to(device)
        return self
