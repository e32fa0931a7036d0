"""LoRA and text-encoding costs on a full-size SD 1.5-shaped model (random weights).

1. Text encoding per generation: the conditioning `process_images` builds for a typical prompt and
   negative prompt (`GuidancePlan`), with the conditioning cache cold (first generation with these
   prompts) and warm (the same prompts again, e.g. the next image of a batch count or a re-run).
2. LoRA: a rank-128 kohya LoRA on every layer kohya's trainer targets in SD 1.5 (UNet attention,
   feed-forward and projection layers, text-encoder attention and MLP) plus LoCon on the ResNet
   3x3 convolutions, saved as an fp16 .safetensors file (~150 MB), then: reading and parsing the
   file, merging it (first time: with the copies of the original weights), merging the same set
   again (no-op), switching to other multipliers (restore + merge) and unloading; after unloading
   the script checks that every weight is bit-identical to the original. fp32 and bf16 models.

    python bench/bench_lora.py                 # everything
    python bench/bench_lora.py --skip-lora     # text encoding only
    python bench/bench_lora.py --dtypes fp32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import modules  # noqa: F401  (offline environment first)
from modules.engine import conditioning
from modules.engine.model import DiffusionModel
from modules.model_manager.arch import ModelArch
from modules.networks.lora import AppliedNetwork, NetworkApplier
from modules.networks.lora_files import LoraFile, read_network
from modules.paths import configs_path

PROMPT = ("masterpiece, best quality, a photo of a red fox sitting in a snowy forest at dawn, soft light, "
          "highly detailed fur, shallow depth of field, 85mm lens, bokeh")
NEGATIVE = "lowres, bad anatomy, blurry, jpeg artifacts, watermark, text"
LONG_PROMPT = ", ".join([PROMPT] * 3)  # 3 chunks


def build_model(dtype: torch.dtype, *, with_vae: bool = False) -> DiffusionModel:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = ModelArch.SD1.config_dir
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
    te = CLIPTextModel(CLIPTextConfig.from_json_file(str(cfg / "text_encoder" / "config.json")))
    tok = CLIPTokenizer.from_pretrained(str(configs_path / "_tokenizers" / "clip"), model_max_length=77,
                                        local_files_only=True)
    for m in (unet, te):
        m.to(dtype=dtype).eval().requires_grad_(False)
    sched = json.loads((cfg / "scheduler" / "scheduler_config.json").read_text())
    return DiffusionModel(family="sd1", unet=unet, vae=None, text_encoder=te, tokenizer=tok, scheduler_config=sched)


# --- text encoding ---------------------------------------------------------------------------------------
def bench_text(reps: int) -> dict[str, float]:
    model = build_model(torch.float32)
    out: dict[str, float] = {}
    for label, prompt in (("75-token prompt + negative", PROMPT), ("3-chunk prompt + negative", LONG_PROMPT)):
        cold, warm = [], []
        for _ in range(reps):
            model.extra.pop("cond_cache", None)
            enc = conditioning.PromptEncoder(model)
            t = time.perf_counter()
            conditioning.GuidancePlan(enc, [prompt], [NEGATIVE], steps=20).at(0)
            cold.append(time.perf_counter() - t)
            enc = conditioning.PromptEncoder(model)  # a new run: new encoder, same model cache
            t = time.perf_counter()
            conditioning.GuidancePlan(enc, [prompt], [NEGATIVE], steps=20).at(0)
            warm.append(time.perf_counter() - t)
        out[f"{label}: cold"] = statistics.median(cold)
        out[f"{label}: warm"] = statistics.median(warm)
    return out


# --- LoRA --------------------------------------------------------------------------------------------------
def kohya_targets(model: DiffusionModel) -> list[tuple[str, torch.nn.Module]]:
    """Flat kohya names and layers of what kohya's SD 1.5 LoRA/LoCon training targets."""
    out = []
    for name, m in model.unet.named_modules():
        in_transformer = ".attentions." in name and isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
        resnet_conv = (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                       and (".resnets." in name or "samplers." in name))
        if in_transformer or resnet_conv:
            out.append(("lora_unet_" + name.replace(".", "_"), m))
    for name, m in model.text_encoder.named_modules():
        if isinstance(m, torch.nn.Linear) and (".self_attn." in name or ".mlp." in name):
            path = name if name.startswith("text_model.") else f"text_model.{name}"
            out.append(("lora_te_" + path.replace(".", "_"), m))
    return out


def make_lora(model: DiffusionModel, rank: int, conv_rank: int, path: Path) -> int:
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(1)
    sd: dict[str, torch.Tensor] = {}
    for name, m in kohya_targets(model):
        if isinstance(m, torch.nn.Conv2d):
            r = conv_rank if m.kernel_size != (1, 1) else rank
            down = torch.randn(r, m.in_channels, *m.kernel_size, generator=gen) * 0.01
            up = torch.randn(m.out_channels, r, 1, 1, generator=gen) * 0.01
        else:
            r = rank
            down = torch.randn(r, m.in_features, generator=gen) * 0.01
            up = torch.randn(m.out_features, r, generator=gen) * 0.01
        sd[f"{name}.lora_down.weight"] = down.half()
        sd[f"{name}.lora_up.weight"] = up.half()
        sd[f"{name}.alpha"] = torch.tensor(float(r)).half()
    save_file(sd, str(path), metadata={"ss_network_dim": str(rank), "ss_network_module": "networks.lora"})
    return path.stat().st_size


def bench_lora(dtypes: list[str], rank: int, conv_rank: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    results: dict[str, dict[str, float]] = {}
    info: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        for name in dtypes:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
            model = build_model(dtype)
            if not path.exists():
                info["file_bytes"] = make_lora(model, rank, conv_rank, path)
                info["layers"] = len(kohya_targets(model))
            originals = {f"{c}.{k}": v.clone() for c, mod in (("unet", model.unet), ("te", model.text_encoder))
                         for k, v in mod.state_dict().items()}
            r: dict[str, float] = {}
            entry = LoraFile(name="big", filename=str(path))
            t = time.perf_counter()
            net = read_network(entry)
            r["read + parse file"] = time.perf_counter() - t
            t = time.perf_counter()
            read_network(entry)
            r["read again (LRU cache)"] = time.perf_counter() - t
            applier = NetworkApplier(model)
            with torch.inference_mode():
                t = time.perf_counter()
                report = applier.apply([AppliedNetwork(net, 1.0, 1.0)])
                r["apply (first: merge + copy originals)"] = time.perf_counter() - t
                assert report.layers == info["layers"] and not report.incompatible, report
                t = time.perf_counter()
                applier.apply([AppliedNetwork(net, 1.0, 1.0)])
                r["apply same set again (no-op)"] = time.perf_counter() - t
                t = time.perf_counter()
                applier.apply([AppliedNetwork(net, 0.5, 0.8)])
                r["switch weights (restore + merge)"] = time.perf_counter() - t
                t = time.perf_counter()
                applier.restore()
                r["unload (restore originals)"] = time.perf_counter() - t
            now = {f"{c}.{k}": v for c, mod in (("unet", model.unet), ("te", model.text_encoder))
                   for k, v in mod.state_dict().items()}
            same = all(torch.equal(now[k], v) for k, v in originals.items())
            r["bit-identical after unload"] = float(same)
            assert same, "weights differ after unloading"
            results[name] = r
            del model, originals, now, net
    return results, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--conv-rank", type=int, default=8)
    ap.add_argument("--skip-lora", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    text = bench_text(args.reps)
    print("\ntext encoding per generation (median of", args.reps, "):")
    for k, v in text.items():
        print(f"  {k:45s} {v * 1000:9.2f} ms")
    if args.skip_lora:
        return
    results, info = bench_lora(args.dtypes, args.rank, args.conv_rank)
    print(f"\nLoRA: {info['layers']} layers, rank {args.rank} (3x3 convs: {args.conv_rank}), "
          f"file {info['file_bytes'] / 2**20:.1f} MiB (fp16)")
    for dtype, r in results.items():
        print(f"  model {dtype}:")
        for k, v in r.items():
            print(f"    {k:42s} " + ("yes" if k.startswith("bit") and v else f"{v:8.3f} s"))


if __name__ == "__main__":
    main()
