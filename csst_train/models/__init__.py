"""Segmentation models: `build_model(name, num_classes)` and `init_from(model, path)` (`load_init`).

Every model maps a normalised float image (N, 3, H, W) to logits (N, C, H, W)
at the input size, for any H and W.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from csst_train.inference import IMAGENET
from csst_train.models import zoo
from csst_train.models.deeplab import deeplabv3plus_r18, deeplabv3plus_r50
from csst_train.models.fastscnn import fastscnn

MODELS = {
    "fastscnn": fastscnn,
    "deeplabv3plus-r18": deeplabv3plus_r18,
    "deeplabv3plus-r50": deeplabv3plus_r50,
}
MODEL_NAMES = tuple(MODELS)
DEFAULT_MODEL = "fastscnn"
# Prefixes added by DistributedDataParallel / DataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def build_model(name: str, num_classes: int, pretrained: str | None = None) -> nn.Module:
    """Build a model by name: csst's own (`MODELS`), the zoo's `smp:ARCH:ENCODER` (`zoo`, with
    `pretrained` encoder weights), or `package.module:factory` (called as factory(num_classes=...))."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if name.startswith(zoo.PREFIX):
        return zoo.build(name, num_classes, pretrained)
    if pretrained:
        raise ValueError(f"--pretrained {pretrained}: only the zoo's models ({zoo.PREFIX}ARCH:ENCODER) fetch weights; "
                         f"give {name} a local state dict with --init FILE")
    if name in MODELS:
        return MODELS[name](num_classes)
    if ":" not in name:
        raise ValueError(
            f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}, {zoo.PREFIX}ARCH:ENCODER "
            f"(e.g. {zoo.EXAMPLES[0]}) or package.module:factory"
        )
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model {name!r}: cannot import the factory ({e})") from e
    try:
        model = factory(num_classes=num_classes)
    except Exception as e:  # a user's factory: its failure is theirs to read in one line
        raise ValueError(f"model {name!r}: the factory failed ({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def normalisation(name: str, pretrained: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0..1 scale of the images model `name` expects: its encoder's for the zoo's
    models, ImageNet's for the others (csst's own backbones follow torchvision's ResNets)."""
    if name.startswith(zoo.PREFIX):
        return zoo.normalisation(name, pretrained) or IMAGENET
    return IMAGENET


def _unwrap(obj):
    """The state dict inside a checkpoint: plain, or under "model" / "state_dict", possibly nested."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        return None
    state = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p) :]
        state[k] = v
    return state


@dataclass(frozen=True)
class InitReport:
    """What `init_from` did: which model tensors took the file's values and which start anew."""

    path: str
    target: str                        # "" (the whole model) or the backbone's prefix ("backbone.", "model.encoder.")
    loaded: list[str]                  # model keys given the file's values
    new: dict[str, tuple]              # model key -> its shape, left at its initial values
    file_shapes: dict[str, tuple]      # a new key the file holds with another shape -> the file's shape
    unexpected: list[str]              # file keys not used

    @property
    def missing(self) -> list[str]:
        return list(self.new)

    def summary(self) -> str:
        """One line for the log: counts, then every new tensor with its shape (and the file's)."""
        def shape(s):
            return "x".join(map(str, s)) or "scalar"
        news = [f"{k} {shape(s)}" + (f" (the file's: {shape(self.file_shapes[k])})" if k in self.file_shapes else "")
                for k, s in self.new.items()]
        where = "the backbone" if self.target else "the model"
        return (f"--init {self.path}: loaded {len(self.loaded)} tensors into {where}; "
                + (f"{len(news)} new (initialised anew): {', '.join(news)}" if news else "nothing new")
                + (f"; {len(self.unexpected)} of the file's tensors unused" if self.unexpected else ""))


def load_init(model: nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """`init_from(model, path)` as (missing, unexpected): model keys left at their initial values
    (names relative to `model`) and file keys not used."""
    report = init_from(model, path)
    return report.missing, report.unexpected


def init_from(model: nn.Module, path: str | os.PathLike) -> InitReport:
    """Load a local state dict into `model` or into `model.backbone`, whichever it matches better.

    Accepts a plain state dict or one under "model"/"state_dict", with or without
    "module." prefixes. A torchvision ResNet state dict matches `model.backbone`
    (its `fc.*` is ignored). Tensors whose shape differs from the model's are not
    loaded: a checkpoint of other classes gives its backbone and every tensor
    that fits, and the classifier starts anew (the paper's transfer to new
    classes). Nothing that fits is an error.
    """
    path = str(path)
    state = _read_state(path)
    targets = [("", model)]
    # A backbone-only file matches the backbone: a torchvision ResNet (csst's DeepLab `backbone`), an
    # smp encoder (a zoo model's `model.encoder`), a timm model (an smp tu- encoder's `model.encoder.model`).
    for prefix in ("backbone", "model", "model.encoder", "model.encoder.model", "encoder"):
        part = model
        for attr in prefix.split("."):
            part = getattr(part, attr, None)
        if isinstance(part, nn.Module) and part is not model:
            targets.append((prefix + ".", part))
    best = None
    for prefix, module in targets:
        own = module.state_dict()
        keys = {k: v for k, v in state.items() if not (prefix and k.startswith("fc."))}
        matched = [k for k, v in keys.items() if k in own and own[k].shape == v.shape]
        if best is None or len(matched) > len(best[3]):
            best = (prefix, module, keys, matched, own)
    prefix, module, keys, matched, own = best
    if not matched:
        sample = ", ".join(list(state)[:3])
        raise ValueError(
            f"{path}: none of its {len(state)} tensors match the model or its backbone "
            f"by name and shape (first keys: {sample})"
        )
    module.load_state_dict({k: keys[k] for k in matched}, strict=False)
    done = set(matched)
    # num_batches_tracked is BatchNorm bookkeeping, absent from older checkpoints.
    new = {prefix + k: tuple(v.shape) for k, v in own.items() if k not in done and not k.endswith("num_batches_tracked")}
    file_shapes = {prefix + k: tuple(keys[k].shape) for k in own if k not in done and k in keys}
    return InitReport(path, prefix, [prefix + k for k in matched], new, file_shapes, [k for k in keys if k not in done])


def _read_state(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as e:
        raise ValueError(f"{path}: cannot read a torch state dict ({type(e).__name__}: {e})") from e
    state = _unwrap(obj)
    if not state:
        raise ValueError(f"{path}: holds no state dict of tensors (plain, or under 'model' / 'state_dict')")
    return state


def count_parameters(model: nn.Module) -> int:
    """The number of parameter values (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
