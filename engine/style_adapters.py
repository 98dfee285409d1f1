"""Style LoRAs next to the fused LCM-LoRA: all loaded once, one swapped in per batch in place.

Each network a style touches (the UNet, either text encoder) gets one peft LoRA adapter, the
*slot*, over every module any style targets, at the highest rank any style has. A style is kept
as its LoRA factors, its weight and alpha already multiplied into the up factor, so switching
styles is copying tensors into the slot's weights (zeros where a style has no LoRA, or for "no
style"). Nothing about the modules changes between batches: no adapter is added or activated,
no scale is set, so a UNet compiled with ``IMAGINE_COMPILE`` keeps its graphs (this is what
diffusers' LoRA hotswap does too, ``enable_lora_hotswap``; diffusers cannot hotswap the text
encoders, nor adapters that target different modules, which style LoRAs routinely do).

The price: while styles are configured, every batch (styled or not) runs the slot's extra
matmuls (BENCHMARKS.md "Styles"). With no styles there is no slot and no cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer

from engine.hub import describe
from engine.styles import Style, StyleCatalog, style_key

log = logging.getLogger(__name__)

SLOT = "style"
_UNKNOWN = object()  # slot weights as peft made them (random down, zero up)
NETWORKS = ("unet", "text_encoder", "text_encoder_2")
"""Pipeline components a style LoRA may change (the key prefixes of diffusers' format)."""
DEFAULT_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# (down, up) key endings of the LoRA formats diffusers' ``lora_state_dict`` returns.
_FACTOR_KEYS = (
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
    (".lora_down.weight", ".lora_up.weight"),
)


class StyleLoadError(Exception):
    """A style's LoRA cannot be loaded or used (the text says why)."""


@dataclass(frozen=True)
class _Factors:
    """One module's LoRA: ``down`` (rank x in), ``up`` (out x rank) with the scale in it."""

    down: torch.Tensor
    up: torch.Tensor

    @property
    def rank(self) -> int:
        return self.down.shape[0]


# network -> module name -> factors
LoraFactors = dict[str, dict[str, _Factors]]


def lora_location(lora: str) -> tuple[str, str]:
    """Where a LoRA named in the settings lives: ``(folder or hub repo, weight file name)``.

    Accepts a .safetensors file, a folder (its ``pytorch_lora_weights.safetensors``, else its
    first .safetensors), ``owner/repo/file.safetensors`` on the hub, or a hub repo id (offline
    loading from the hub cache needs the file name, so the default one is assumed).

    Raises:
        FileNotFoundError: a .safetensors path that is neither a local file nor a hub file.
    """
    path = Path(lora).expanduser()
    if path.is_file():
        return str(path.parent), path.name
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.safetensors"))
        if DEFAULT_LORA_WEIGHT_NAME in files or not files:
            return str(path), DEFAULT_LORA_WEIGHT_NAME
        return str(path), files[0]
    if lora.endswith(".safetensors") and lora.count("/") >= 2 and not lora.startswith((".", "/")):
        source, weight_name = lora.rsplit("/", 1)
        return source, weight_name
    if lora.endswith(".safetensors"):
        raise FileNotFoundError(f"LoRA file '{lora}' not found.")
    return lora, DEFAULT_LORA_WEIGHT_NAME


def read_factors(
    state: dict[str, torch.Tensor], alphas: dict[str, float] | None, weight: float
) -> LoraFactors:
    """A LoRA state dict (diffusers' format, as ``lora_state_dict`` returns it) as factors per
    network and module, with ``weight * alpha / rank`` multiplied into each up factor.

    Raises:
        StyleLoadError: keys this reader does not know (another adapter type, e.g. LoKr).
    """
    factors: LoraFactors = {}
    used: set[str] = set()
    for key in state:
        for down_end, up_end in _FACTOR_KEYS:
            if not key.endswith(down_end):
                continue
            base = key[: -len(down_end)]
            up_key = base + up_end
            if up_key not in state:
                raise StyleLoadError(f"'{key}' has no matching '{up_end}'")
            network, _, module = base.partition(".")
            if network not in NETWORKS or not module:
                raise StyleLoadError(f"'{key}' is not for the UNet or a text encoder")
            down, up = state[key], state[up_key]
            rank = down.shape[0]
            alpha = (alphas or {}).get(f"{base}.alpha")
            scale = weight * (float(alpha) / rank if alpha is not None else 1.0)
            factors.setdefault(network, {})[module] = _Factors(
                down=down.detach().float(), up=up.detach().float() * scale
            )
            used.update((key, up_key))
            break
    unknown = sorted(set(state) - used)
    if unknown:
        raise StyleLoadError(
            f"unsupported LoRA keys such as '{unknown[0]}' (only LoRA down/up weights are read)"
        )
    if not factors:
        raise StyleLoadError("the file holds no LoRA weights")
    return factors


class StyleAdapters:
    """Holds every loaded style's LoRA and puts one into the pipeline's slots per batch."""

    def __init__(self, pipe, styles: dict[str, tuple[Style, LoraFactors]]):
        """``styles``: style key -> (style, its factors), as ``load`` reads them."""
        self.pipe = pipe
        self.styles = {key: style for key, (style, _) in styles.items()}
        self._slots: dict[str, dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]] = {}
        self._sources: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._targets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.current: str | None = None  # the style the next batch gets (None: none)
        self._content: str | object | None = _UNKNOWN  # what the slot weights hold (None: 0)
        self._layers: list[BaseTunerLayer] = []  # the slot's LoRA layers, every network
        self._enabled = True  # whether the slot's layers run (peft's adapter switch)
        if styles:
            self._make_slots([factors for _, factors in styles.values()])
            self._keep(styles)
            self.activate(None, keep_graphs=True)

    @classmethod
    def load(cls, pipe, catalog: StyleCatalog) -> StyleAdapters:
        """Read every style's LoRA once; a style whose LoRA cannot be loaded is logged and
        left out (the others still load, the engine still starts)."""
        loaded: dict[str, tuple[Style, LoraFactors]] = {}
        for style in catalog:
            try:
                factors = _read_style(pipe, style)
                _check_modules(pipe, factors)
            except Exception as exc:  # a missing file, a hub error, another format: left out
                log.warning(
                    "IMAGINE_STYLES: style '%s' left out: its LoRA '%s' cannot be used (%s)",
                    style.name,
                    style.lora,
                    describe(exc).rstrip("."),
                )
                continue
            loaded[style.key] = (style, factors)
        if loaded:
            log.info("styles loaded: %s", ", ".join(s.name for s, _ in loaded.values()))
        return cls(pipe, loaded)

    @property
    def names(self) -> list[str]:
        """Keys of the loaded styles."""
        return list(self.styles)

    def style(self, name: str) -> Style | None:
        """A loaded style by name (any case)."""
        return self.styles.get(style_key(name))

    def _make_slots(self, all_factors: Iterable[LoraFactors]) -> None:
        """One adapter per network over the union of modules, at the highest rank."""
        all_factors = list(all_factors)
        for network in NETWORKS:
            modules: dict[str, int] = {}
            for factors in all_factors:
                for module, pair in factors.get(network, {}).items():
                    modules[module] = max(modules.get(module, 0), pair.rank)
            if not modules:
                continue
            model = getattr(self.pipe, network)
            rank = max(modules.values())
            config = LoraConfig(
                r=rank,
                lora_alpha=rank,  # scale 1: each style's scale is in its up factors
                target_modules=sorted(modules),
                init_lora_weights=True,
            )
            inject_adapter_in_model(config, model, adapter_name=SLOT)
            model.requires_grad_(False)
            slots = {}
            for module in modules:
                layer = model.get_submodule(module)
                slots[module] = (layer.lora_A[SLOT].weight, layer.lora_B[SLOT].weight)
                self._layers.append(layer)
            self._slots[network] = slots
            log.info("style slot on %s: %d modules, rank %d", network, len(modules), rank)

    def _keep(self, styles: dict[str, tuple[Style, LoraFactors]]) -> None:
        """Each style's factors as copy sources (pinned host memory next to a GPU), and the
        slot views they are copied into."""
        device = self.pipe._execution_device
        pin = device.type == "cuda"
        for key, (_, factors) in styles.items():
            sources, targets = [], []
            for network, slots in self._slots.items():
                for module, (down_slot, up_slot) in slots.items():
                    pair = factors.get(network, {}).get(module)
                    if pair is None:
                        continue
                    rank = pair.rank
                    down = pair.down.to(down_slot.dtype).reshape(rank, *down_slot.shape[1:])
                    up = pair.up.to(up_slot.dtype)
                    up = up.reshape(up_slot.shape[0], rank, *up_slot.shape[2:])
                    if pin:
                        down, up = down.pin_memory(), up.pin_memory()
                    sources.append((down, up))
                    targets.append((down_slot[:rank], up_slot[:, :rank]))
            self._sources[key] = sources
            self._targets[key] = targets

    @torch.no_grad()
    def activate(self, name: str | None, *, keep_graphs: bool = False) -> None:
        """Make the next batch use style ``name`` (None or "": no style).

        No style turns the slot's layers off, so an unstyled batch costs what it did before
        styles existed, unless ``keep_graphs`` (a compiled UNet: turning layers off or on is a
        change its graphs guard on); then the slot holds zeros, which add exactly nothing.

        Raises:
            KeyError: ``name`` is not a loaded style.
        """
        key = style_key(name) if name else None
        if key is not None and key not in self._sources:
            raise KeyError(name)
        self.current = key
        if key is None and not keep_graphs:
            self._enable(False)
        else:
            self._enable(True)
            if self._content != key:
                self._fill(key)

    def _enable(self, on: bool) -> None:
        if on == self._enabled:
            return
        for layer in self._layers:
            layer.enable_adapters(on)
        if on:  # peft makes an enabled adapter trainable: these never train
            for network in self._slots.values():
                for pair in network.values():
                    for parameter in pair:
                        parameter.requires_grad_(False)
        self._enabled = on

    def _fill(self, key: str | None) -> None:
        """Copy style ``key``'s factors into the slot weights (zeros elsewhere)."""
        slots = [p for network in self._slots.values() for pair in network.values() for p in pair]
        if slots:
            torch._foreach_zero_(slots)
        if key is not None:
            for (down_slot, up_slot), (down, up) in zip(
                self._targets[key], self._sources[key], strict=True
            ):
                down_slot.copy_(down, non_blocking=True)
                up_slot.copy_(up, non_blocking=True)
        self._content = key


def _read_style(pipe, style: Style) -> LoraFactors:
    source, weight_name = lora_location(style.lora)
    state, alphas = pipe.lora_state_dict(source, weight_name=weight_name)
    return read_factors(state, alphas, style.weight)


def _check_modules(pipe, factors: LoraFactors) -> None:
    """Raise StyleLoadError when a style's LoRA names modules this model does not have or
    shapes it does not take (a LoRA for another architecture, SD 1.5's for instance)."""
    for network, modules in factors.items():
        model = getattr(pipe, network, None)
        if model is None:
            raise StyleLoadError(f"the model has no {network}")
        for module, pair in modules.items():
            try:
                layer = model.get_submodule(module)
            except AttributeError:
                raise StyleLoadError(f"the model has no module '{network}.{module}'") from None
            weight = getattr(layer, "weight", None)
            if not isinstance(layer, torch.nn.Linear | torch.nn.Conv2d) or weight is None:
                raise StyleLoadError(f"'{network}.{module}' is not a linear or conv layer")
            wanted_in = weight.shape[1] * (
                weight[0, 0].numel() if isinstance(layer, torch.nn.Conv2d) else 1
            )
            if pair.up.shape[0] != weight.shape[0] or pair.down[0].numel() != wanted_in:
                raise StyleLoadError(
                    f"'{network}.{module}' has other shapes than the LoRA (another architecture?)"
                )
