"""Where things live: the data root, the model folders and the output folders.

Everything is derived from the command-line flags (`--data-dir`, `--models-dir`, `--ckpt-dir`, ...)
through one `Paths` record, so tests can point a whole instance at a temporary tree.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

script_path = Path(__file__).resolve().parent.parent
"""The repository root (A1111 name)."""

configs_path = script_path / "configs"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    models_dir: Path
    ckpt_dirs: tuple[Path, ...]
    vae_dirs: tuple[Path, ...]
    lora_dir: Path
    embeddings_dir: Path
    config_file: Path
    ui_config_file: Path
    cache_dir: Path
    outputs_dir: Path
    extensions_dir: Path
    extensions_builtin_dir: Path
    localizations_dir: Path

    @property
    def sd_models_dir(self) -> Path:
        return self.models_dir / "Stable-diffusion"

    @property
    def vae_dir(self) -> Path:
        return self.models_dir / "VAE"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Paths:
        data = Path(args.data_dir).resolve() if args.data_dir else script_path
        models = Path(args.models_dir).resolve() if args.models_dir else data / "models"
        ckpt_dirs = [models / "Stable-diffusion"]
        if args.ckpt_dir:
            ckpt_dirs.append(Path(args.ckpt_dir).resolve())
        vae_dirs = [models / "VAE"]
        if args.vae_dir:
            vae_dirs.append(Path(args.vae_dir).resolve())
        return cls(
            data_dir=data,
            models_dir=models,
            ckpt_dirs=tuple(ckpt_dirs),
            vae_dirs=tuple(vae_dirs),
            lora_dir=Path(args.lora_dir).resolve() if args.lora_dir else models / "Lora",
            embeddings_dir=Path(args.embeddings_dir).resolve() if args.embeddings_dir else data / "embeddings",
            config_file=Path(args.ui_settings_file) if args.ui_settings_file else data / "config.json",
            ui_config_file=Path(args.ui_config_file) if args.ui_config_file else data / "ui-config.json",
            cache_dir=data / "cache",
            outputs_dir=data / "outputs",
            extensions_dir=data / "extensions",
            extensions_builtin_dir=script_path / "extensions-builtin",
            localizations_dir=(Path(args.localizations_dir).resolve() if getattr(args, "localizations_dir", None)
                               else data / "localizations"),
        )
