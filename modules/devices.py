"""Device and dtype policy, decided in one place.

- CUDA: UNet and text encoders in fp16; the VAE in bf16 where the GPU supports it (fp16 VAEs overflow
  to NaN on some models), else fp16 with an fp32 retry on NaN.
- MPS: fp16 UNet and text encoders, fp32 VAE.
- CPU: bf16 UNet and text encoders when the CPU computes bf16 natively (AVX512-BF16 or AMX; about
  2x faster than fp32 there), otherwise fp32. The VAE stays fp32 on the CPU.
- `--precision full` / `--no-half` keep UNet and text encoders in fp32, `--no-half-vae` the VAE.

Sampling arithmetic (latents, scheduler state) is always fp32; only module inputs are cast.
"""

from __future__ import annotations

import argparse
import functools
import platform
from dataclasses import dataclass

import torch

cpu = torch.device("cpu")


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype
    """dtype of the UNet and text encoders"""
    vae_dtype: torch.dtype
    vae_device: torch.device

    def describe(self) -> str:
        return f"{self.device} unet/te={str(self.dtype).removeprefix('torch.')} vae={str(self.vae_dtype).removeprefix('torch.')}"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic in hardware (x86 AVX512-BF16 / AMX-BF16, Arm BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            text = f.read()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
            break
    if {"avx512_bf16", "amx_bf16"} & flags or "bf16" in flags:
        return True
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return False  # Apple silicon CPUs emulate bf16 matmuls; fp32 is faster there
    return False


def _use_cpu_for_sd(args: argparse.Namespace) -> bool:
    wanted = {str(x).lower() for x in (getattr(args, "use_cpu", None) or [])}
    return bool(wanted & {"all", "sd"})


def select_policy(args: argparse.Namespace) -> DevicePolicy:
    full = args.precision == "full" or args.no_half
    full_vae = args.precision == "full" or args.no_half_vae

    if not _use_cpu_for_sd(args) and torch.cuda.is_available():
        index = int(args.device_id) if getattr(args, "device_id", None) not in (None, "") else torch.cuda.current_device()
        device = torch.device("cuda", index)
        dtype = torch.float32 if full else torch.float16
        if full_vae:
            vae_dtype = torch.float32
        else:
            vae_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DevicePolicy(device, dtype, vae_dtype, device)

    mps = getattr(torch.backends, "mps", None)
    if not _use_cpu_for_sd(args) and mps is not None and mps.is_available():
        device = torch.device("mps")
        return DevicePolicy(device, torch.float32 if full else torch.float16, torch.float32, device)

    dtype = torch.bfloat16 if (not full and cpu_has_native_bf16()) else torch.float32
    return DevicePolicy(cpu, dtype, torch.float32, cpu)


def torch_gc() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


# A1111-named globals that extensions read. They are filled by `shared.initialize` from the policy.
device: torch.device = cpu
device_interrogate: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32


def apply_policy(policy: DevicePolicy) -> None:
    global device, dtype, dtype_vae, dtype_unet
    device = policy.device
    dtype = policy.dtype
    dtype_unet = policy.dtype
    dtype_vae = policy.vae_dtype


def get_optimal_device() -> torch.device:
    return device


def get_optimal_device_name() -> str:
    return str(device)


class NansException(Exception):
    """Raised when a model produced NaN values that a retry could not fix."""
