"""Building a `DiffusionModel` from local files: single-file checkpoints, diffusers folders, VAEs.

Single-file checkpoints (the original "LDM" key layout) are renamed by diffusers' own single-file
conversion functions (`diffusers.loaders.single_file_utils.convert_ldm_*`, the ones its
`from_single_file` uses), always against a local diffusers config folder: a bundled
`configs/<arch>/` or a `<stem>.config/` folder beside the checkpoint. The converted weights are then
placed into the components here rather than through `from_single_file`, because that path lets
missing weights through as uninitialised meta tensors (failing later with an unrelated message)
and cannot name what is wrong; here every parameter must be present with the right shape, and the
error says which file, which component and which keys. Nothing here ever asks a model hub for a
config, a tokenizer or weights (`local_files_only=True` everywhere, on top of the offline
environment that `import modules` sets).

Tokenizers: the bundled config folders share one copy of the CLIP vocabulary in
`configs/_tokenizers/{clip,openclip}/`; `model_index.json` names the flavour per tokenizer
(`"_easel_tokenizers": {"tokenizer": "clip"}`). A config folder with its own `tokenizer/vocab.json`
(a copied diffusers repo, a `<stem>.config/`) uses that instead.

Memory: the components are built on the meta device and receive the checkpoint's tensors directly,
so no randomly initialised copy is ever made, and a tensor already in the target dtype and device is
adopted without a copy. The caller's state dict is not modified.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from modules.engine.model import DiffusionModel
from modules.model_manager.safe_load import CheckpointReadError
from modules.paths import configs_path

log = logging.getLogger(__name__)

FAMILIES = ("sd1", "sd2", "sdxl")
SHARED_TOKENIZERS_DIR = configs_path / "_tokenizers"
TOKENIZER_MAX_LENGTH = 77

_TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
_VAE_TOP_LEVEL = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_VAE_CHECKPOINT_PREFIXES = ("first_stage_model.", "vae.")


class ComponentLoadError(CheckpointReadError):
    """A component could not be built from the weights given (missing, misnamed or misshapen keys)."""

    def __init__(self, message: str, *, component: str, missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.component = component
        self.missing = missing or []


# --- config folders ---------------------------------------------------------------------------------


def read_model_index(config_dir: Path) -> dict[str, Any]:
    """`model_index.json` of a diffusers config folder."""
    path = Path(config_dir) / "model_index.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointReadError(f"{config_dir} is not a model config folder: it has no model_index.json") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointReadError(f"{path} could not be read: {e}") from e


def model_family(config_dir: Path, index: Mapping[str, Any] | None = None) -> str:
    """'sd1', 'sd2' or 'sdxl' for a config folder.

    Bundled and generated folders say so in `_easel_family`; for any other diffusers folder it is
    inferred: an SDXL pipeline class or a second text encoder means SDXL; an OpenCLIP text encoder
    (GELU activation, or the 1024-wide ViT-H) means SD 2.x; anything else is SD 1.x.
    """
    config_dir = Path(config_dir)
    index = read_model_index(config_dir) if index is None else index
    declared = index.get("_easel_family")
    if declared in FAMILIES:
        return str(declared)
    if "XL" in str(index.get("_class_name", "")) or index.get("text_encoder_2") not in (None, [None, None]):
        return "sdxl"
    te_config = _read_json(config_dir / "text_encoder" / "config.json", default={})
    if te_config.get("hidden_act") == "gelu" or te_config.get("hidden_size") == 1024:
        return "sd2"
    return "sd1"


def read_scheduler_config(config_dir: Path) -> dict[str, Any]:
    """The model's own scheduler config (betas, prediction type, timestep spacing)."""
    path = Path(config_dir) / "scheduler" / "scheduler_config.json"
    config = _read_json(path, default=None)
    if config is None:
        raise CheckpointReadError(f"{config_dir} has no scheduler/scheduler_config.json")
    return config


def tokenizer_dir(config_dir: Path, subfolder: str = "tokenizer", *, family: str | None = None) -> Path:
    """The folder holding the tokenizer files for `subfolder` of a config folder.

    Its own `<subfolder>/vocab.json` wins; otherwise the shared flavour named in model_index.json
    (`_easel_tokenizers`), and failing that the family's usual one (SD 1.x: CLIP; SD 2.x: OpenCLIP;
    SDXL: CLIP then OpenCLIP).
    """
    config_dir = Path(config_dir)
    own = config_dir / subfolder
    if (own / "vocab.json").is_file() and (own / "merges.txt").is_file():
        return own
    index = _read_json(config_dir / "model_index.json", default={})
    flavour = (index.get("_easel_tokenizers") or {}).get(subfolder)
    if flavour is None:
        family = family or model_family(config_dir, index)
        flavour = "openclip" if family == "sd2" or subfolder == "tokenizer_2" else "clip"
    shared = SHARED_TOKENIZERS_DIR / str(flavour)
    if not (shared / "vocab.json").is_file():
        raise CheckpointReadError(f"tokenizer files for {config_dir.name}/{subfolder} not found (looked in {own} and {shared})")
    return shared


def load_tokenizer(folder: Path) -> Any:
    """A CLIPTokenizer from local files, padding as the folder's config says.

    OpenCLIP pads with id 0, and Stability's repos express that as `pad_token: "!"`. Registered
    that way, transformers treats every "!" typed in a prompt as a special token and tokenizes
    "!!" as two pads instead of the single word OpenCLIP (and A1111) produce. So a padding token
    that is an ordinary vocabulary entry is set by id only, leaving the text tokenization intact.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    config = _read_json(folder / "tokenizer_config.json", default={})
    pad = config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    special = {"<|startoftext|>", "<|endoftext|>"}
    if pad is None or pad in special:
        return CLIPTokenizer.from_pretrained(folder, model_max_length=TOKENIZER_MAX_LENGTH, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(
        folder, pad_token="<|endoftext|>", model_max_length=TOKENIZER_MAX_LENGTH, local_files_only=True
    )
    pad_id = tokenizer.convert_tokens_to_ids(pad)
    if pad_id is None or pad_id == tokenizer.unk_token_id:
        raise CheckpointReadError(f"{folder}: padding token {pad!r} is not in the vocabulary")
    tokenizer.pad_token_id = pad_id
    return tokenizer


# --- single-file checkpoints ------------------------------------------------------------------------


def load_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    vae_device: torch.device | None = None,
    source_name: str | None = None,
) -> DiffusionModel:
    """Build all components from an original-layout checkpoint's tensors.

    `config_dir` is a diffusers config folder without weights (bundled `configs/<arch>/` or a
    `<stem>.config/`). UNet and text encoders end up at `dtype` on `device`, the VAE at `vae_dtype`
    on `vae_device` (default: `device`). All components are in eval mode with gradients off.
    `source_name` (the file name) is used in error messages.
    """
    config_dir = Path(config_dir)
    index = read_model_index(config_dir)
    family = model_family(config_dir, index)
    name = source_name or "checkpoint"
    checkpoint = normalize_checkpoint_keys(state_dict, family)

    unet = _unet_from_checkpoint(checkpoint, config_dir, device=device, dtype=dtype, name=name)
    vae_weights = _strip_vae_prefix(checkpoint)
    if not vae_weights:
        raise ComponentLoadError(f"{name} holds no VAE weights (no first_stage_model.* keys)", component="vae")
    vae = _vae_from_ldm(vae_weights, config_dir, device=vae_device or device, dtype=vae_dtype, name=name)
    del vae_weights

    return _bundle(family, unet, vae, config_dir, lambda subfolder: _text_encoder_from_checkpoint(
        checkpoint, config_dir, subfolder, family, index, device=device, dtype=dtype, name=name))


def normalize_checkpoint_keys(state_dict: Mapping[str, torch.Tensor], family: str) -> Mapping[str, torch.Tensor]:
    """Fix the known variants of the original layout (returns the same mapping when none apply).

    - SD 1.x files saved with an older transformers keep the CLIP text model one level up
      (`cond_stage_model.transformer.encoder.*` instead of `...transformer.text_model.encoder.*`).
    - SD 2.x files from the newer Stability code base (SD-Turbo) keep the OpenCLIP text encoder
      under `conditioner.embedders.0.` instead of `cond_stage_model.`.
    """
    renames: dict[str, str] = {}
    if family == "sd1":
        old = "cond_stage_model.transformer."
        for key in state_dict:
            if key.startswith(old) and not key.startswith(old + "text_model."):
                renames[key] = old + "text_model." + key[len(old) :]
    elif family == "sd2" and not any(k.startswith("cond_stage_model.") for k in state_dict):
        old = "conditioner.embedders.0."
        for key in state_dict:
            if key.startswith(old):
                renames[key] = "cond_stage_model." + key[len(old) :]
    if not renames:
        return state_dict
    return {renames.get(k, k): v for k, v in state_dict.items()}


def _empty_model(kind: str, config_dir: Path, subfolder: str, class_name: str | None = None) -> Any:
    """A component built from its config on the meta device: shapes without memory or random init."""
    from accelerate import init_empty_weights

    if kind in ("unet", "vae"):
        from diffusers import AutoencoderKL, UNet2DConditionModel

        cls = UNet2DConditionModel if kind == "unet" else AutoencoderKL
        config = cls.load_config(config_dir, subfolder=subfolder, local_files_only=True)
        with init_empty_weights():
            return cls.from_config(config)

    import transformers

    cls = getattr(transformers, class_name or "CLIPTextModel")
    config = transformers.CLIPTextConfig.from_pretrained(config_dir / subfolder, local_files_only=True)
    # init_empty_weights leaves buffers real: CLIP's non-persistent position_ids must stay usable.
    with init_empty_weights():
        return cls(config)


def _unet_from_checkpoint(
    checkpoint: Mapping[str, torch.Tensor], config_dir: Path, *, device: torch.device, dtype: torch.dtype, name: str
) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    if not any(k.startswith("model.diffusion_model.") for k in checkpoint):
        raise ComponentLoadError(f"{name} holds no UNet weights (no model.diffusion_model.* keys)", component="unet")
    with _component_errors("unet", name, config_dir):
        unet = _empty_model("unet", config_dir, "unet")
        weights = convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
        return _assemble(unet, weights, "unet", name, config_dir, device=device, dtype=dtype)


def _strip_vae_prefix(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _VAE_CHECKPOINT_PREFIXES:
        part = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
        if part:
            return part
    return {}


def _vae_from_ldm(
    weights: Mapping[str, torch.Tensor], config_dir: Path, *, device: torch.device, dtype: torch.dtype, name: str
) -> Any:
    """A VAE from original-layout keys without prefix (`encoder.down.0.block.0...`)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    weights = {k: v for k, v in weights.items() if k.startswith(_VAE_TOP_LEVEL)}
    with _component_errors("vae", name, config_dir):
        vae = _empty_model("vae", config_dir, "vae")
        converted = convert_ldm_vae_checkpoint(weights, dict(vae.config))
        return _assemble(vae, converted, "vae", name, config_dir, device=device, dtype=dtype)


# Where each text encoder of a family lives in an original-layout file, and in which naming.
_TEXT_ENCODER_LAYOUT = {
    ("sd1", "text_encoder"): ("clip", "cond_stage_model.transformer."),
    ("sd2", "text_encoder"): ("openclip", "cond_stage_model.model."),
    ("sdxl", "text_encoder"): ("clip", "conditioner.embedders.0.transformer."),
    ("sdxl", "text_encoder_2"): ("openclip", "conditioner.embedders.1.model."),
}


def _text_encoder_from_checkpoint(
    checkpoint: Mapping[str, torch.Tensor],
    config_dir: Path,
    subfolder: str,
    family: str,
    index: Mapping[str, Any],
    *,
    device: torch.device,
    dtype: torch.dtype,
    name: str,
) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    naming, prefix = _TEXT_ENCODER_LAYOUT[(family, subfolder)]
    if not any(k.startswith(prefix) for k in checkpoint):
        raise ComponentLoadError(f"{name} holds no {subfolder} weights (no {prefix}* keys)", component=subfolder)
    class_name = _text_encoder_class(index, subfolder, config_dir)
    with _component_errors(subfolder, name, config_dir):
        model = _empty_model("text", config_dir, subfolder, class_name)
        if naming == "clip":
            weights = convert_ldm_clip_checkpoint({k: v for k, v in checkpoint.items() if k.startswith(prefix)})
        else:
            weights = convert_open_clip_checkpoint(model, checkpoint, prefix=prefix)
        if not hasattr(model, "text_model"):  # transformers stores CLIPTextModel flat in newer releases
            weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        return _assemble(model, weights, subfolder, name, config_dir, device=device, dtype=dtype)


def _text_encoder_class(index: Mapping[str, Any], subfolder: str, config_dir: Path) -> str:
    entry = index.get(subfolder)
    class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if class_name is None:
        class_name = "CLIPTextModelWithProjection" if subfolder == "text_encoder_2" else "CLIPTextModel"
    if class_name not in _TEXT_ENCODER_CLASSES:
        raise CheckpointReadError(f"{config_dir}: unsupported {subfolder} class {class_name!r}")
    return class_name


# --- diffusers folders ------------------------------------------------------------------------------


def load_diffusers_folder(
    path: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    vae_device: torch.device | None = None,
) -> DiffusionModel:
    """Build a model from a diffusers-format folder (model_index.json plus weights per component)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    path = Path(path)
    index = read_model_index(path)
    family = model_family(path, index)
    name = path.name

    def diffusers_component(cls: Any, subfolder: str, dev: torch.device, dt: torch.dtype) -> Any:
        with _component_errors(subfolder, name, path):
            model = cls.from_pretrained(
                path,
                subfolder=subfolder,
                torch_dtype=dt,
                local_files_only=True,
                variant=_weights_variant(path / subfolder),
            )
        return _finish(model, subfolder, name, path, device=dev, dtype=dt)

    def text_component(subfolder: str) -> Any:
        import transformers

        cls = getattr(transformers, _text_encoder_class(index, subfolder, path))
        with _component_errors(subfolder, name, path):
            model = cls.from_pretrained(
                path / subfolder, dtype=dtype, local_files_only=True, variant=_weights_variant(path / subfolder)
            )
        return _finish(model, subfolder, name, path, device=device, dtype=dtype)

    unet = diffusers_component(UNet2DConditionModel, "unet", device, dtype)
    vae = diffusers_component(AutoencoderKL, "vae", vae_device or device, vae_dtype)
    return _bundle(family, unet, vae, path, text_component)


def _bundle(family: str, unet: Any, vae: Any, config_dir: Path, text_component: Any) -> DiffusionModel:
    """The model bundle: text encoder(s) built by `text_component(subfolder)`, tokenizers and the
    scheduler config from `config_dir` (SDXL has a second encoder and tokenizer)."""
    text_encoder_2 = tokenizer_2 = None
    if family == "sdxl":
        text_encoder_2 = text_component("text_encoder_2")
        tokenizer_2 = load_tokenizer(tokenizer_dir(config_dir, "tokenizer_2", family=family))
    return DiffusionModel(
        family=family,
        unet=unet,
        vae=vae,
        text_encoder=text_component("text_encoder"),
        tokenizer=load_tokenizer(tokenizer_dir(config_dir, "tokenizer", family=family)),
        scheduler_config=read_scheduler_config(config_dir),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def _weights_variant(folder: Path) -> str | None:
    """'fp16' when a component folder only has `*.fp16.*` weight files (a common way repos ship)."""
    if not folder.is_dir():
        return None
    weights = [p.name for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin", ".index.json"))]
    variants = [set(n.split(".")) & {"fp16", "bf16"} for n in weights]
    if not weights or any(not v for v in variants):
        return None
    return "fp16" if any("fp16" in v for v in variants) else "bf16"


# --- standalone VAE files ---------------------------------------------------------------------------


def load_vae_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    source_name: str | None = None,
) -> Any:
    """An AutoencoderKL from a standalone VAE file's tensors.

    Accepts the original layout with or without the `first_stage_model.` prefix (A1111-style VAE
    files have bare `encoder.*`/`decoder.*` keys, often next to `loss.*` training leftovers, which are
    ignored) and the diffusers layout (`encoder.down_blocks.*`). The architecture and the latent
    scaling factor come from `config_dir/vae/config.json`, i.e. the model the VAE is used with.
    """
    name = source_name or "VAE file"
    config_dir = Path(config_dir)
    weights = _strip_vae_prefix(state_dict) or dict(state_dict)
    weights = {k: v for k, v in weights.items() if k.startswith(_VAE_TOP_LEVEL)}
    if not weights:
        raise ComponentLoadError(f"{name} holds no VAE weights (no encoder.*/decoder.* keys)", component="vae")
    if not _is_diffusers_vae(weights):
        return _vae_from_ldm(weights, config_dir, device=device, dtype=dtype, name=name)

    weights = _rename_legacy_vae_attention(weights)
    with _component_errors("vae", name, config_dir):
        vae = _empty_model("vae", config_dir, "vae")
        return _assemble(vae, weights, "vae", name, config_dir, device=device, dtype=dtype)


def _is_diffusers_vae(weights: Mapping[str, torch.Tensor]) -> bool:
    return any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k for k in weights)


def _rename_legacy_vae_attention(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers files from before 0.14 name the VAE attention `query/key/value/proj_attn`."""
    table = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
    out = {}
    for key, value in weights.items():
        for old, new in table.items():
            if old in key:
                key = key.replace(old, new)
                break
        if ".mid_block.attentions." in key and value.ndim == 4:  # 1x1 conv-shaped projections
            value = value[:, :, 0, 0]
        out[key] = value
    return out


# --- shared helpers ---------------------------------------------------------------------------------


@contextmanager
def _component_errors(component: str, name: str, config_dir: Path) -> Iterator[None]:
    """Turn the many exception types a conversion can raise into one error naming file and part."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        yield
    except ComponentLoadError:
        raise
    except (SingleFileComponentError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, OSError) as e:
        text = str(e).strip().splitlines()
        detail = text[0] if text else type(e).__name__
        raise ComponentLoadError(
            f"{name}: could not build the {component} with the {Path(config_dir).name} config: {detail}",
            component=component,
        ) from e


def _assemble(
    model: Any,
    weights: Mapping[str, torch.Tensor],
    component: str,
    name: str,
    config_dir: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Any:
    """Give a meta-device module its weights, converted to dtype/device one tensor at a time.

    A tensor already at the target dtype and device is adopted as it is (no copy); the module
    never holds random weights. Every parameter must be provided with the right shape.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    if missing:
        raise ComponentLoadError(
            f"{name}: {len(missing)} {component} weights are missing for the {Path(config_dir).name} config "
            f"(e.g. {', '.join(missing[:3])})",
            component=component,
            missing=missing,
        )
    wrong = [(k, tuple(weights[k].shape), tuple(t.shape)) for k, t in expected.items() if weights[k].shape != t.shape]
    if wrong:
        key, got, want = wrong[0]
        raise ComponentLoadError(
            f"{name}: the {component} weights do not fit the {Path(config_dir).name} config: {key} has shape "
            f"{list(got)}, the config expects {list(want)} ({len(wrong)} mismatches); is it another architecture?",
            component=component,
        )
    unused = len(weights) - len(expected)
    if unused > 0:
        log.debug("%s: %d %s tensors not used by the model", name, unused, component)
    target = torch.device(device)
    placed = {}
    for key in expected:
        tensor = weights[key]
        if tensor.is_floating_point():
            tensor = tensor.to(device=target, dtype=dtype)
        else:
            tensor = tensor.to(device=target)
        placed[key] = tensor.contiguous()
    model.load_state_dict(placed, strict=True, assign=True)
    del placed
    return _finish(model, component, name, config_dir, device=device, dtype=dtype)


def _finish(model: Any, component: str, name: str, config_dir: Path, *, device: torch.device, dtype: torch.dtype) -> Any:
    """Refuse half-loaded modules, then place the module and freeze it for inference."""
    missing = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if missing:
        raise ComponentLoadError(
            f"{name}: {len(missing)} {component} weights are missing for the {Path(config_dir).name} config "
            f"(e.g. {', '.join(missing[:3])})",
            component=component,
            missing=missing,
        )
    # Components are normally built at the right dtype already; diffusers' `to()` warns whenever it
    # is given a dtype, so cast only when something is actually off.
    if any(t.is_floating_point() and t.dtype != dtype for t in model.parameters()):
        model.to(dtype=dtype)
    if any(t.device != torch.device(device) for t in model.parameters()):
        model.to(device=device)
    model.eval()
    model.requires_grad_(False)
    return model


def _read_json(path: Path, *, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointReadError(f"{path} could not be read: {e}") from e
