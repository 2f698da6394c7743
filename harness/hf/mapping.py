"""What the Hugging Face exports share (attention_export.py, fla_export.py, mamba_export.py): the check
that a model holds only the classes an export knows, the comparison of layers' settings (one config holds
every layer's), the backbone's SwiGLU under the names they write, the weights renamed, and what the folder
gets besides the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

TORCH_MODULES = (torch.nn.Linear, torch.nn.Embedding, torch.nn.ModuleList)  # the backbone's torch parts


def foreign_module(model, mixers: tuple[type, ...] = (), skip: tuple[str, ...] = ()) -> str | None:
    """Why a module of `model` is not exactly one of the backbone's classes, the `mixers` or the torch modules
    they are built of (a subclass, or another module in their place), or None; the modules named in `skip`
    and those inside them are left to their own check."""
    from harness.model.backbone import Block, DecoderLM, RMSNorm, SwiGLU
    harness_classes = (DecoderLM, Block, RMSNorm, SwiGLU, *mixers)
    for name, module in model.named_modules():
        if name in skip or name.startswith(tuple(f"{s}." for s in skip)):
            continue
        parent = next((cls for cls in (*harness_classes, *TORCH_MODULES) if isinstance(module, cls)), None)
        if parent is None:  # e.g. a plugin's nn.Identity for an MLP: the export would write a SwiGLU there
            return f"its {name} is of class {type(module).__name__}, which the exported model has no counterpart for"
        if type(module) is not parent:
            owner = "the harness's" if parent in harness_classes else "torch's"
            return (f"its {type(module).__name__} subclasses {owner} {parent.__name__}, and the export writes "
                    f"{parent.__name__}'s computation, not what the subclass changes")
    return None


def weights_left_out(model, sources) -> list[str]:
    """The model's weights that no exported weight takes (`sources`: (exported name, (harness name, half))
    pairs; a plugin's bias on the head, say): the exported model would compute without them."""
    return sorted(set(model.state_dict()) - {name for _, (name, _) in sources})


def shape_refusal(model, hf_model, sources, holder: str) -> str | None:
    """Why an exported weight does not fit `hf_model`'s of its name (its shape, halved where a fused
    projection is split; or no such weight there), in the words of `holder`; or None."""
    ours, theirs = model.state_dict(), hf_model.state_dict()
    for hf_name, (name, half) in sources:
        shape = list(ours[name].shape)
        shape[0] //= 1 if half is None else 2
        if hf_name not in theirs or list(theirs[hf_name].shape) != shape:
            held = list(theirs[hf_name].shape) if hf_name in theirs else "nothing"
            return f"its {name} is {shape} where {holder} holds {held} as {hf_name}"
    return None


def exact_mixers_refusal(model, marker: str, kind: str, only: str, owner: str, written: str) -> str | None:
    """Why a block's mixer is not exactly one of the classes that declare `marker` in their own body (their
    export writes what those classes compute): a mixer of another kind beside them (`only` says why that
    cannot be held), or a subclass of `owner` such a class, which computes what it changes while the export
    writes `written`; or None."""
    for mixer in (block.mixer for block in model.blocks):
        if not hasattr(mixer, marker):
            return f"its layers mix {kind} with {type(mixer).__name__}, and {only}"
        if not type(mixer).__dict__.get(marker, False):
            parent = next(cls for cls in type(mixer).__mro__[1:] if cls.__dict__.get(marker, False))
            return (f"its mixer {type(mixer).__name__} subclasses {owner} {parent.__name__}, and the export writes "
                    f"{written}, not what the subclass changes")
    return None


def block_settings(block) -> dict:
    """A block's settings by the name of the module that holds them: each plain value (window, heads,
    RoPE, sigmoid bias, slope recipe, norm eps, layer widths), read without the weights' data, so
    that it also holds for a model built on the meta device."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return {f"{name}.{key}" if name else key: value for name, module in block.named_modules()
            for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and isinstance(value, plain)}


def mlp_sources(src: str, dst: str) -> dict[str, tuple[str, int | None]]:
    """The SwiGLU at `src` under Llama-style names at `dst` (which fla's GatedMLP shares): its fused gate_up
    split into gate_proj (the first half) and up_proj, as its forward chunks it."""
    return {dst + "gate_proj.weight": (src + "gate_up.weight", 0), dst + "up_proj.weight": (src + "gate_up.weight", 1),
            dst + "down_proj.weight": (src + "down.weight", None)}


def hf_state_dict(model, sources) -> dict[str, torch.Tensor]:
    """The harness weights under the exported model's names, from `sources`: (exported name, (harness
    name, the half of it taken where the harness fuses two projections, else None)) pairs."""
    sd = model.state_dict()
    # copies: the split halves are views of one tensor, which safetensors will not store as two
    return {key: (sd[name] if half is None else sd[name].chunk(2, dim=0)[half]).contiguous().clone()
            for key, (name, half) in sources}


@dataclass
class HFExport:
    """A checkpoint's model as transformers' model (its weights loaded), and what the folder adds to it."""
    model: object  # a transformers PreTrainedModel, saved by save_pretrained
    card_rows: list[tuple[str, object]]  # the model card's rows of its layers
    card_note: str  # the card's words on its modelling code
    code: tuple[Path, ...] = ()  # files copied into the folder beside what save_pretrained writes
    loader: str = "AutoModelForCausalLM"  # the transformers class that loads the folder
    remote_code: bool = True  # whether loading runs the folder's own code (trust_remote_code=True)

    def load_call(self, where: str) -> str:
        """The Python call that loads the folder at `where`."""
        return f"{self.loader}.from_pretrained({where!r}{', trust_remote_code=True' if self.remote_code else ''})"


def layers_differ(blocks) -> str | None:
    """Why the blocks cannot share one exported config (a setting that one layer has otherwise than
    the first, e.g. a plugin's window growing with depth), or None. The exported config holds each
    setting once, read from the first layer: the other layers would run at its values."""
    first = block_settings(blocks[0])
    for i, block in enumerate(blocks[1:], start=1):
        settings = block_settings(block)
        for key in sorted(first.keys() | settings.keys()):
            if first.get(key) != settings.get(key):
                return (f"its layers differ in {key} (layer 0: {first.get(key)}, layer {i}: {settings.get(key)}), "
                        f"and the exported config holds one value for all layers")
    return None


INIT_MARKS = frozenset({"residual_out"})


def layer_settings(layer: nn.Module) -> dict:
    """What a built layer computes besides its weights: each submodule's class, plain settings (widths, heads,
    eps, mode, ...) and the functions it chose (gate, feature map), read without the weights' data."""
    classes = {f"{name or '(layer)'} class": type(module).__qualname__ for name, module in layer.named_modules()}
    functions = {f"{name}.{key}" if name else key: getattr(value, "__qualname__", type(value).__qualname__)
                 for name, module in layer.named_modules() for key, value in vars(module).items()
                 if not key.startswith("_") and callable(value) and not isinstance(value, nn.Module)}
    plain = {key: value for key, value in block_settings(layer).items() if key.rsplit(".", 1)[-1] not in INIT_MARKS}
    return {**classes, **plain, **functions}
