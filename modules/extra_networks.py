"""Extra-network references in prompts: ``<lora:name:0.8>``, ``<hypernet:name:1>``, ...

A1111 keeps this parsing in `modules.extra_networks` and extensions import it from there: the
regex `re_extra_net`, `ExtraNetworkParams` and `parse_prompt` / `parse_prompts`. A reference is
``<kind:arg1:arg2...>``; the arguments are split on ``:`` and an argument ``key=value`` is named.
The references are removed from the prompt text before it is encoded.

`LoraParams.from_params` reads a ``<lora:...>`` reference's arguments as A1111's built-in Lora
extension does (``<lora:name:te[:unet[:dyn]]>`` and ``te=``/``unet=``/``dyn=``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ExtraNetworkParams",
    "LoraParams",
    "parse_prompt",
    "parse_prompts",
    "re_extra_net",
]

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The arguments of one reference: all `items`, split into `positional` and `named`.

    An item with exactly one ``=`` (``te=0.5``) is named; any other item, including one with two
    or more ``=``, is positional, as in A1111. Two params are equal when their items are.
    """

    def __init__(self, items: Sequence[Any] | None = None) -> None:
        self.items: list[Any] = list(items) if items else []
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            key, sep, value = item.partition("=") if isinstance(item, str) else ("", "", "")
            if sep and "=" not in value:
                self.named[key] = value
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtraNetworkParams):
            return NotImplemented
        return self.items == other.items

    __hash__ = None  # mutable, compared by value

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


def parse_prompt(prompt: str) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    """Remove the ``<kind:args>`` references from `prompt`; return the rest and the params by kind."""
    found: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def take(match: re.Match[str]) -> str:
        found[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return re_extra_net.sub(take, prompt), found


def parse_prompts(prompts: Sequence[str]) -> tuple[list[str], defaultdict[str, list[ExtraNetworkParams]] | None]:
    """`parse_prompt` for a batch: all cleaned prompts, and the references of the first prompt.

    A batch shares one set of active networks, so (as in A1111) only the first prompt's references
    are returned; an empty batch gives None.
    """
    cleaned: list[str] = []
    first: defaultdict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, params = parse_prompt(prompt)
        if first is None:
            first = params
        cleaned.append(text)
    return cleaned, first


@dataclass(frozen=True)
class LoraParams:
    """One ``<lora:...>`` reference read as A1111's Lora extension reads it."""

    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None

    @classmethod
    def from_params(cls, params: ExtraNetworkParams) -> LoraParams:
        """``name[:te[:unet[:dyn]]]``; ``te=``, ``unet=``, ``dyn=`` override the positions.

        `unet` defaults to `te`. Raises ValueError for a reference without a name or with a
        value that is not a number.
        """
        positional = params.positional
        if not positional or not str(positional[0]):
            raise ValueError(f"lora reference without a name: {params.items!r}")
        try:
            te = float(positional[1]) if len(positional) > 1 else 1.0
            te = float(params.named.get("te", te))
            unet = float(positional[2]) if len(positional) > 2 else te
            unet = float(params.named.get("unet", unet))
            dyn = int(positional[3]) if len(positional) > 3 else None
            if "dyn" in params.named:
                dyn = int(params.named["dyn"])
        except ValueError as err:
            raise ValueError(f"bad lora reference {':'.join(map(str, params.items))!r}: {err}") from None
        return cls(name=str(positional[0]), te_multiplier=te, unet_multiplier=unet, dyn_dim=dyn)
