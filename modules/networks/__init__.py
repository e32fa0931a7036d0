"""Extra networks that change a model's weights: LoRA, LoCon, LoHa, LoKr and full-difference files.

- `lora_files`: the files (scan, names and aliases, addnet hashes, metadata, cached parsing);
- `lora_keys`: which model layer each tensor of a file belongs to (kohya, LDM-named and PEFT keys);
- `lora_weights`: the weight change each kind of module makes;
- `lora`: merging a set of networks into a model and restoring the originals bit for bit;
- `activation`: what a generation run, the API and infotext pasting call.
"""

from modules.networks.activation import (
    activate,
    deactivate,
    default_registry,
    infotext_pasted,
    list_loras,
    lora_hashes_value,
    lora_name_for_hash,
    parse_lora_hashes,
    refresh_loras,
)
from modules.networks.lora import AppliedNetwork, ApplyReport, NetworkApplier, applier_for
from modules.networks.lora_files import LoraFile, LoraRegistry, ParsedNetwork, read_network

__all__ = [
    "AppliedNetwork",
    "ApplyReport",
    "LoraFile",
    "LoraRegistry",
    "NetworkApplier",
    "ParsedNetwork",
    "activate",
    "applier_for",
    "deactivate",
    "default_registry",
    "infotext_pasted",
    "list_loras",
    "lora_hashes_value",
    "lora_name_for_hash",
    "parse_lora_hashes",
    "read_network",
    "refresh_loras",
]
