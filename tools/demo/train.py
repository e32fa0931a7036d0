"""Train the demo model: the VAE first, then the UNet and the text encoder together; export it.

    python -m tools.demo.train                       # full run (about 2 h 15 min on an idle 2-core CPU)
    python -m tools.demo.train --smoke --work-dir /tmp/demo --export /tmp/demo/easel-demo.safetensors
    python -m tools.demo.train --unet-steps 40000 --unet-batch 128   # a longer run on a GPU

Resumable: the whole training state (weights, EMA weights, optimiser states, stage, step, measured
timings) is written to `<work-dir>/state.pt` every `--checkpoint-every` steps and at the end of each
stage; running the same command again continues where it stopped. Deterministic given `--seed`:
the data of step `s` are the generator's samples `s*B .. s*B+B-1`, and the noise, timesteps and
caption dropout of step `s` come from a generator seeded with (seed, stage, s), so a resumed run
takes exactly the steps an uninterrupted one would (up to floating-point reduction order).

Device: CUDA when present (bf16 autocast where supported), else the CPU (bf16 autocast when the CPU
computes bf16 natively, as Easel's device policy decides). Weights stay fp32; the export is fp16.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import modules  # noqa: F401  (offline environment before diffusers/transformers are imported)
from tools.demo import model as demo_model
from tools.demo import shapes as sh
from tools.demo.captions import parse_caption
from tools.demo.dataset import make_batch

DEFAULT_WORK_DIR = Path("outputs/demo-training")
DEFAULT_EXPORT = Path("models/Stable-diffusion/easel-demo.safetensors")
STATE_FORMAT = 2
VAE_STATE_FORMATS = (1, 2)  # formats whose VAE stage --vae-from can take (2 added the caption probe)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the result (stored in the state file; a resume must match it)."""

    seed: int = 0
    vae_steps: int = 2000
    vae_batch: int = 24
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-4
    unet_steps: int = 9000
    unet_batch: int = 32
    unet_lr: float = 4e-4
    warmup: int = 300
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    caption_probe_weight: float = 0.1
    caption_swap: float = 0.5  # share of the samples noised less than caption_swap_below given a wrong caption
    caption_swap_below: int = 400
    resolution: int = 64


# What the VAE stage depends on; the rest only matters once the UNet stage has begun.
VAE_SETTINGS = frozenset({"seed", "vae_steps", "vae_batch", "vae_lr", "vae_kl_weight", "resolution"})

# Settings added since state files were first written, with the value a run made before then trained
# with (the feature off), so such a run resumes only with them off.
SETTINGS_BEFORE_THEY_EXISTED: dict[str, float | int] = {"caption_swap": 0.0, "caption_swap_below": 0}

VAE_DIMENSIONS = ("resolution", "vae_channels", "vae_norm_groups", "latent_channels")

# TrainSettings fields the command line may set (besides --seed).
INT_OPTIONS = ("vae_steps", "vae_batch", "unet_steps", "unet_batch", "warmup", "caption_swap_below")
FLOAT_OPTIONS = ("vae_lr", "unet_lr", "ema_decay", "caption_swap")

SMOKE = TrainSettings(vae_steps=3, vae_batch=4, unet_steps=3, unet_batch=4, warmup=0, ema_decay=0.5)


def _swap_captions(captions: list[str], timesteps: torch.Tensor, share: float, below: int,
                   gen: torch.Generator) -> list[str]:
    """Give a `share` of the samples noised less than `below` another sample's caption.

    Captions here say nearly everything about a picture, so a model trained only on matching pairs
    leans on the text at every noise level, and classifier-free guidance then redraws an img2img
    source at low denoising to match a new prompt. When the text is sometimes wrong on nearly clean
    inputs, the model learns to take what is visible from the picture there and the text from the
    early, noisy steps, which is how img2img strength is meant to work."""
    n = len(captions)
    picked = (torch.rand(n, generator=gen) < share) & (timesteps < below)
    shift = int(torch.randint(1, max(2, n), (1,), generator=gen))
    return [captions[(i + shift) % n] if picked[i] else c for i, c in enumerate(captions)]


def pick_device(name: str = "auto") -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None). CUDA first; the CPU autocasts to bf16 only where native."""
    from modules.devices import cpu_has_native_bf16

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda")
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.device("cpu"), torch.bfloat16 if cpu_has_native_bf16() else None


def _step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    value = np.random.SeedSequence([seed, {"vae": 1, "unet": 2, "scale": 3}[stage], step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(value))


def _pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)


class _StepBatches(torch.utils.data.Dataset):
    """Item `s` is the batch of step `s`: a pure function of the step, so worker processes can build
    batches ahead in any order without changing what the run sees."""

    def __init__(self, seed: int, batch: int, steps: int, size: int) -> None:
        self.seed, self.batch, self.steps, self.size = seed, batch, steps, size

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[np.ndarray, list[str]]:
        return make_batch(self.seed, step * self.batch, self.batch, size=self.size)


def _as_is(item: Any) -> Any:
    return item


def step_batches(seed: int, batch: int, first_step: int, steps: int, size: int,
                 workers: int = 0) -> Iterator[tuple[np.ndarray, list[str]]]:
    """The batches of steps `first_step .. steps-1`, built in `workers` processes (0: inline)."""
    data = _StepBatches(seed, batch, steps, size)
    if workers <= 0:
        for step in range(first_step, steps):
            yield data[step]
        return
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(first_step, steps), num_workers=workers,
                                         prefetch_factor=4, persistent_workers=False,
                                         collate_fn=_as_is)
    yield from loader


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then a cosine decay to a tenth of it at `total`."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _alphas_cumprod(scheduler_config: dict[str, Any]) -> torch.Tensor:
    """SD's scaled-linear schedule, as diffusers' schedulers compute it from the same config."""
    n = int(scheduler_config["num_train_timesteps"])
    start, end = float(scheduler_config["beta_start"]), float(scheduler_config["beta_end"])
    if scheduler_config.get("beta_schedule") != "scaled_linear":
        raise ValueError("the demo model trains with the scaled_linear schedule")
    betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    if scheduler_config.get("rescale_betas_zero_snr"):
        # Shift and scale sqrt(alphas_cumprod) so the first step keeps its value and the last is 0.
        root = alphas_cumprod.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        alphas_cumprod = ((root - last) * first / (first - last)) ** 2
    return alphas_cumprod.float()


PROBED: dict[str, tuple[str, ...]] = {
    "position": sh.POSITIONS,
    "shape": sh.SHAPES,
    "color": sh.COLORS,
    "size": sh.SIZES,
    "background": sh.COLORS,
}
"""What the caption probe reads from the text encoder's pooled state (first shape named, background)."""


def caption_labels(caption: str) -> list[int]:
    """The probed attributes a caption names, as class indices (-100 where it names none)."""
    spec = parse_caption(caption) if caption else None
    first = spec.shapes[0] if spec is not None and spec.shapes else None
    values = {name: getattr(first, name, None) for name in PROBED}
    values["background"] = spec.background if spec is not None else None
    return [classes.index(values[name]) if values[name] in classes else -100 for name, classes in PROBED.items()]


class CaptionProbe(torch.nn.Module):
    """Linear read-outs of the caption's attributes from the text encoder's pooled (end-of-text) state,
    trained only to shape the encoder and never exported.

    Without it the jointly trained encoder gives the UNet no usable sense of position: a UNet trained
    on pure-noise inputs against frozen encoder states placed shapes at chance (~10%) after 400 steps,
    while the same UNet given one extra token holding only the position placed 95% right by step 200;
    training the encoder along with a 0.1-weighted position read-out did as well (98% by step 200),
    training it without one reached 23% by step 300.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, len(classes)) for classes in PROBED.values())

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = [torch.nn.functional.cross_entropy(head(pooled), labels[:, i], ignore_index=-100)
                  for i, head in enumerate(self.heads) if bool((labels[:, i] >= 0).any())]
        return torch.stack(losses).mean() if losses else pooled.sum() * 0.0


class Trainer:
    """One training run in a work folder."""

    def __init__(self, settings: TrainSettings, work_dir: Path, *, device: str = "auto", log_every: int = 50,
                 checkpoint_every: int = 500, model_config: demo_model.DemoModelConfig | None = None,
                 data_workers: int | None = None) -> None:
        self.settings = settings
        self.work_dir = Path(work_dir)
        self.state_path = self.work_dir / "state.pt"
        self.device, self.autocast = pick_device(device)
        if self.device.type == "cpu":
            # As the weights settle, subnormal floats appear and x86 computes them up to 10x slower:
            # the VAE stage went from 0.45 to 1.6 s per step (and worse) without this.
            torch.set_flush_denormal(True)
        if data_workers is None:  # a GPU outruns one process drawing pictures; a 2-core CPU does not
            data_workers = min(6, (os.cpu_count() or 2) - 1) if self.device.type == "cuda" else 0
        self.data_workers = data_workers
        self.log_every = max(1, log_every)
        self.checkpoint_every = max(1, checkpoint_every)
        self.model_config = model_config or demo_model.DemoModelConfig(resolution=settings.resolution)
        self.components = demo_model.build_components(self.model_config, seed=settings.seed)
        self.vae = self.components["vae"].to(self.device)
        self.unet = self.components["unet"].to(self.device)
        self.text_encoder = self.components["text_encoder"].to(self.device)
        self.tokenizer = self.components["tokenizer"]
        self.alphas_cumprod = _alphas_cumprod(self.components["scheduler_config"]).to(self.device)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=settings.vae_lr, betas=(0.9, 0.99),
                                         weight_decay=0.0)
        with torch.random.fork_rng(devices=[]):  # seeded like the components: the run stays deterministic
            torch.manual_seed(settings.seed + 1)
            self.probe = CaptionProbe(self.model_config.text_width).to(self.device)
        self.opt = torch.optim.AdamW([*self.unet.parameters(), *self.text_encoder.parameters(),
                                      *self.probe.parameters()],
                                     lr=settings.unet_lr, betas=(0.9, 0.99), weight_decay=0.01)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
        self.stage = "vae"
        self.step = 0
        self.scaling_factor: float | None = None
        self.seconds: dict[str, float] = {"vae": 0.0, "unet": 0.0}
        self._token_cache: dict[str, torch.Tensor] = {}
        self._label_cache: dict[str, list[int]] = {}

    # --- state ---------------------------------------------------------------------------------------
    def save(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save({
            "format": STATE_FORMAT,
            "settings": asdict(self.settings),
            "model_config": self.model_config.to_json(),
            "stage": self.stage,
            "step": self.step,
            "scaling_factor": self.scaling_factor,
            "seconds": self.seconds,
            "vae": self.vae.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "probe": self.probe.state_dict(),
            "opt": self.opt.state_dict(),
            "ema_unet": self.ema_unet.state_dict(),
            "ema_text": self.ema_text.state_dict(),
        }, self.state_path)

    def resume(self) -> bool:
        """Load `state.pt` if the work folder has one; False when starting fresh."""
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise RuntimeError(f"{self.state_path} was written by another version of this script")
        # Settings of a stage that has not started yet may change (e.g. --unet-steps after the VAE).
        unet_started = state["stage"] == "done" or (state["stage"] == "unet" and int(state["step"]) > 0)
        binding = set(asdict(self.settings)) if unet_started else VAE_SETTINGS
        stored = {**SETTINGS_BEFORE_THEY_EXISTED, **state["settings"]}
        changed = sorted(k for k, v in asdict(self.settings).items() if k in binding and stored[k] != v)
        if changed:
            raise RuntimeError(f"{self.state_path} belongs to a run with other settings ({', '.join(changed)}); "
                               "use another --work-dir or the same settings")
        if state["model_config"] != self.model_config.to_json():
            raise RuntimeError(f"{self.state_path} belongs to a model of other dimensions")
        for name in ("vae", "unet", "text_encoder", "probe", "ema_unet", "ema_text"):
            getattr(self, name).load_state_dict(state[name])
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.opt.load_state_dict(state["opt"])
        self.stage, self.step = state["stage"], int(state["step"])
        self.scaling_factor = state["scaling_factor"]
        self.seconds = dict(state["seconds"])
        return True

    def adopt_vae(self, source: Path) -> None:
        """Start the UNet stage on the trained VAE of another work folder (or state file), whose VAE
        settings and dimensions must be this run's: the VAE stage would only repeat it."""
        path = Path(source)
        path = path / "state.pt" if path.is_dir() else path
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") not in VAE_STATE_FORMATS or state.get("scaling_factor") is None:
            raise RuntimeError(f"{path} holds no finished VAE stage")
        changed = sorted(k for k in VAE_SETTINGS if state["settings"].get(k) != asdict(self.settings)[k])
        ours = self.model_config.to_json()
        changed += sorted(k for k in VAE_DIMENSIONS if state["model_config"].get(k) != ours[k])
        if changed:
            raise RuntimeError(f"the VAE in {path} was trained with other settings ({', '.join(changed)})")
        self.vae.load_state_dict(state["vae"])
        self.scaling_factor = state["scaling_factor"]
        self.seconds["vae"] = float(state["seconds"]["vae"])
        self.stage, self.step = "unet", 0
        self.save()

    # --- helpers -------------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.autocast is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _caption_rows(self, cache: dict[str, Any], captions: list[str], make: Any) -> list[Any]:
        # captions repeat across steps: tokenise and parse each once (up to a bound on memory)
        rows = []
        for caption in captions:
            row = cache.get(caption)
            if row is None:
                row = make(caption)
                if len(cache) < 200_000:
                    cache[caption] = row
            rows.append(row)
        return rows

    def _tokens(self, captions: list[str]) -> torch.Tensor:
        rows = self._caption_rows(self._token_cache, captions, lambda c: self.tokenizer(
            c, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids[0])
        return torch.stack(rows).to(self.device)

    def _labels(self, captions: list[str]) -> torch.Tensor:
        rows = self._caption_rows(self._label_cache, captions, caption_labels)
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _log(self, stage: str, step: int, total: int, loss: float, started: float, first_step: int) -> None:
        done = step - first_step
        rate = (time.perf_counter() - started) / max(1, done)
        eta = rate * (total - step)
        print(f"[{stage}] step {step}/{total}  loss {loss:.4f}  {rate:.3f} s/step  eta {eta / 60:.1f} min", flush=True)

    # --- stage 1: VAE --------------------------------------------------------------------------------
    def train_vae(self) -> None:
        s = self.settings
        self.vae.train().requires_grad_(True)
        started, first, running = time.perf_counter(), self.step, 0.0
        batches = step_batches(s.seed + 1, s.vae_batch, self.step, s.vae_steps, s.resolution, self.data_workers)
        while self.step < s.vae_steps:
            t0 = time.perf_counter()
            images, _ = next(batches)
            x = _pixels(images, self.device)
            gen = _step_generator(s.seed, "vae", self.step)
            for group in self.vae_opt.param_groups:  # the decay sharpens the reconstructions at the end
                group["lr"] = cosine_lr(self.step, s.vae_steps, s.vae_lr, min(50, s.vae_steps // 10))
            with self._autocast():
                posterior = self.vae.encode(x).latent_dist
                z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(self.device)
                recon = self.vae.decode(z).sample
            recon = recon.float()
            rec = torch.nn.functional.mse_loss(recon, x) + 0.5 * (recon - x).abs().mean()
            kl = 0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1.0 - posterior.logvar.float()).mean()
            loss = rec + s.vae_kl_weight * kl
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            self.vae_opt.step()
            self.step += 1
            self.seconds["vae"] += time.perf_counter() - t0
            running += float(loss.detach())
            if self.step % self.log_every == 0 or self.step == s.vae_steps:
                self._log("vae", self.step, s.vae_steps, running / max(1, self.step - first), started, first)
                started, first, running = time.perf_counter(), self.step, 0.0
            if self.step % self.checkpoint_every == 0:
                self.save()
        self.vae.eval().requires_grad_(False)
        self.scaling_factor = self.measure_scaling_factor()
        print(f"[vae] latent scaling factor {self.scaling_factor:.5f}", flush=True)
        self.stage, self.step = "unet", 0
        self.save()

    @torch.no_grad()
    def measure_scaling_factor(self, pictures: int = 256) -> float:
        """1 / std of the latents over fresh pictures, as SD's factor was chosen for its VAE."""
        images, _ = make_batch(self.settings.seed + 2, 0, pictures, size=self.settings.resolution)
        latents = []
        for start in range(0, pictures, 64):
            x = _pixels(images[start:start + 64], self.device)
            latents.append(self.vae.encode(x).latent_dist.mean.float().cpu())
        return float(1.0 / torch.cat(latents).std())

    # --- stage 2: UNet + text encoder ----------------------------------------------------------------
    def _lr(self, step: int) -> float:
        s = self.settings
        return cosine_lr(step, s.unet_steps, s.unet_lr, s.warmup)

    @torch.no_grad()
    def _ema_update(self) -> None:
        decay = self.settings.ema_decay
        for ema, live in ((self.ema_unet, self.unet), (self.ema_text, self.text_encoder)):
            for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                e.lerp_(p.detach(), 1.0 - decay)

    def train_unet(self) -> None:
        s = self.settings
        assert self.scaling_factor is not None
        self.vae.eval().requires_grad_(False)
        self.unet.train()
        self.text_encoder.train()
        params = [*self.unet.parameters(), *self.text_encoder.parameters(), *self.probe.parameters()]
        started, first, running = time.perf_counter(), self.step, 0.0
        batches = step_batches(s.seed, s.unet_batch, self.step, s.unet_steps, s.resolution, self.data_workers)
        while self.step < s.unet_steps:
            t0 = time.perf_counter()
            images, captions = next(batches)
            gen = _step_generator(s.seed, "unet", self.step)
            drop = torch.rand(len(captions), generator=gen) < s.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            timesteps = torch.randint(0, len(self.alphas_cumprod), (len(captions),), generator=gen).to(self.device)
            noise = torch.randn((len(captions), self.model_config.latent_channels, self.model_config.latent_size,
                                 self.model_config.latent_size), generator=gen).to(self.device)
            sample_noise = torch.randn(noise.shape, generator=gen).to(self.device)
            if s.caption_swap and s.caption_swap_below:
                captions = _swap_captions(captions, timesteps.cpu(), s.caption_swap, s.caption_swap_below, gen)
            for group in self.opt.param_groups:
                group["lr"] = self._lr(self.step)
            with torch.no_grad(), self._autocast():
                posterior = self.vae.encode(_pixels(images, self.device)).latent_dist
                latents = (posterior.mean + posterior.std * sample_noise).float() * self.scaling_factor
            a = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            with self._autocast():
                encoded = self.text_encoder(self._tokens(captions))
                context = encoded.last_hidden_state
                pred = self.unet(noisy, timesteps, context).sample
            snr = a.view(-1) / (1 - a.view(-1))
            if self.model_config.prediction_type == "v_prediction":
                target = a.sqrt() * noise - (1 - a).sqrt() * latents
                # In terms of the clean-latent error this weighs min(SNR + 1, gamma): the pure-noise
                # steps keep a weight of 1 (min-SNR's own v form, min(SNR, gamma) / (SNR + 1), would
                # give the zero-SNR step none) and the nearly clean steps are capped as min-SNR does.
                weight = (torch.clamp(snr + 1, max=s.min_snr_gamma) / (snr + 1) if s.min_snr_gamma
                          else torch.ones_like(snr))
            else:
                target = noise
                weight = torch.clamp(snr, max=s.min_snr_gamma) / snr if s.min_snr_gamma else torch.ones_like(snr)
            per_sample = ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))
            loss = (weight * per_sample).mean()
            if s.caption_probe_weight:
                loss = loss + s.caption_probe_weight * self.probe(encoded.pooler_output.float(), self._labels(captions))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self._ema_update()
            self.step += 1
            self.seconds["unet"] += time.perf_counter() - t0
            running += float(loss.detach())
            if self.step % self.log_every == 0 or self.step == s.unet_steps:
                self._log("unet", self.step, s.unet_steps, running / max(1, self.step - first), started, first)
                started, first, running = time.perf_counter(), self.step, 0.0
            if self.step % self.checkpoint_every == 0:
                self.save()
        self.stage = "done"
        self.save()

    # --- the whole run -------------------------------------------------------------------------------
    def run(self) -> None:
        if self.stage == "vae":
            self.train_vae()
        if self.stage == "unet":
            self.train_unet()

    def export(self, path: Path) -> Path:
        """Write the trained model (EMA weights) in the single-file layout with its config folder."""
        assert self.scaling_factor is not None, "the VAE stage has not finished"
        config = replace(self.model_config, vae_scaling_factor=round(self.scaling_factor, 5))
        components = demo_model.build_components(config, seed=self.settings.seed)
        components["vae"].load_state_dict(self.vae.state_dict())
        components["unet"].load_state_dict(self.ema_unet.state_dict())
        components["text_encoder"].load_state_dict(self.ema_text.state_dict())
        metadata = {
            "easel_demo": "1",
            "training": json.dumps({"settings": asdict(self.settings), "seconds": self.seconds,
                                    "device": str(self.device)}, sort_keys=True),
        }
        return demo_model.export_model(components, path, metadata=metadata)

    def estimate(self) -> dict[str, float]:
        """Wall seconds per step measured so far in each stage (summed over resumed sessions)."""
        s = self.settings
        per_vae = self.seconds["vae"] / max(1, s.vae_steps if self.stage != "vae" else self.step)
        done_unet = s.unet_steps if self.stage == "done" else (self.step if self.stage == "unet" else 0)
        per_unet = self.seconds["unet"] / max(1, done_unet)
        return {"vae_s_per_step": per_vae, "unet_s_per_step": per_unet}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train Easel's demo model and export it as a single-file checkpoint.")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="training state (resumed if present)")
    ap.add_argument("--export", type=Path, default=DEFAULT_EXPORT, help="where to write the .safetensors")
    ap.add_argument("--smoke", action="store_true", help="a few steps of each stage: checks the pipeline end to end")
    ap.add_argument("--vae-from", type=Path,
                    help="a work folder whose trained VAE to start from (same VAE settings): skips the VAE stage")
    ap.add_argument("--export-only", action="store_true",
                    help="export the work folder's model as it stands (EMA weights) without training on")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--seed", type=int)
    for name in INT_OPTIONS:
        ap.add_argument("--" + name.replace("_", "-"), type=int)
    for name in FLOAT_OPTIONS:
        ap.add_argument("--" + name.replace("_", "-"), type=float)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--data-workers", type=int, help="processes drawing batches ahead (default: 0 on CPU, up to 6 on CUDA)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SMOKE if args.smoke else TrainSettings()
    overrides = {k: getattr(args, k) for k in ("seed", *INT_OPTIONS, *FLOAT_OPTIONS) if getattr(args, k) is not None}
    settings = replace(settings, **overrides)
    trainer = Trainer(settings, args.work_dir, device=args.device,
                      log_every=1 if args.smoke else args.log_every, checkpoint_every=args.checkpoint_every,
                      data_workers=args.data_workers)
    counts = demo_model.parameter_counts(trainer.components)
    print(f"device {trainer.device} (autocast {trainer.autocast}), parameters: "
          + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()), flush=True)
    if trainer.resume():
        print(f"resumed from {trainer.state_path}: stage {trainer.stage}, step {trainer.step}", flush=True)
    elif args.vae_from:
        trainer.adopt_vae(args.vae_from)
        print(f"VAE taken from {args.vae_from} (latent scaling factor {trainer.scaling_factor:.5f})", flush=True)
    if args.export_only:
        if trainer.scaling_factor is None:
            raise SystemExit(f"error: {trainer.state_path} has no finished VAE stage to export")
    else:
        trainer.run()
    path = trainer.export(args.export)
    rates = trainer.estimate()
    print(f"exported {path} ({demo_model.exported_size_bytes(path) / 1e6:.1f} MB with its config folder)")
    print(f"measured: VAE {rates['vae_s_per_step']:.3f} s/step at batch {settings.vae_batch}, "
          f"UNet+text {rates['unet_s_per_step']:.3f} s/step at batch {settings.unet_batch}")


if __name__ == "__main__":
    main()
