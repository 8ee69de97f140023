"""The field's model zoo by name: segmentation-models-pytorch architectures over its and timm's encoders.

`--model smp:ARCH:ENCODER` builds `segmentation_models_pytorch.create_model(ARCH,
ENCODER, classes=C)`: ARCH is one of smp's architectures (Unet, FPN, PSPNet,
DeepLabV3, DeepLabV3Plus, UPerNet, Segformer, DPT, ...; any case), ENCODER one of
smp's encoders (resnet50, resnext50_32x4d, mit_b5, ...) or a timm encoder by
smp's `tu-` names (tu-hrnet_w48, tu-convnext_tiny, ...). The paper's teacher is
`smp:DeepLabV3Plus:resnext50_32x4d`. Weights come from `pretrained` (an
encoder weight name such as "imagenet", fetched into the libraries' own caches)
or a local file through `--init`. The input normalisation is the encoder's, as
smp publishes it (`normalisation`).

The models are wrapped (`ZooModel`) so that any input size works as csst's
own models do: smp needs sides divisible by the encoder's output stride, so
the normalised input is padded with zeros (the mean colour) to the next
multiple and the logits cropped back. Both libraries are an optional extra
(`pip install csst[models]`); without them the error says how to install them.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "smp:"
EXAMPLES = ("smp:DeepLabV3Plus:resnext50_32x4d", "smp:PSPNet:resnet101", "smp:UPerNet:convnext_base",
            "smp:Segformer:mit_b5", "smp:FPN:tu-hrnet_w48")
INSTALL = ("pip install 'csst[models]' \"torch==$(python -c 'import torch; print(torch.__version__.split(\"+\")[0])')\""
           " (the torch pin keeps pip from replacing your torch)")


class ZooModel(nn.Module):
    """An smp model that takes any input size: pad to the encoder's stride, run, crop the logits."""

    def __init__(self, model: nn.Module, stride: int) -> None:
        super().__init__()
        self.model, self.stride = model, int(stride)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.model(x)[..., :h, :w]


def import_smp() -> types.ModuleType:
    """segmentation_models_pytorch, or a one-line error saying how to install it.

    torchvision's wheels on PyPI are CUDA builds; beside a CPU-only torch their
    C++ ops cannot load, which torchvision tolerates except that two of its fake
    kernel registrations (nms, qnms) then fail at import (torchvision 0.28). smp
    and timm use no torchvision op, so those two operators are declared (no
    kernel) and the import retried; every other torch setup imports untouched.
    """
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        raise ValueError(f"--model {PREFIX}...: segmentation-models-pytorch and timm are not installed: {INSTALL}") \
            from None
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_torchvision_ops()
        import torchvision  # noqa: F401
    try:
        return importlib.import_module("segmentation_models_pytorch")
    except ModuleNotFoundError:
        raise ValueError(f"--model {PREFIX}...: segmentation-models-pytorch is not installed: {INSTALL}") from None


_declared = []


def _declare_torchvision_ops():
    if not _declared:
        lib = torch.library.Library("torchvision", "DEF")  # kept alive: the operators live as long as the library
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _declared.append(lib)


def parse(name: str) -> tuple[str, str]:
    """`smp:ARCH:ENCODER` -> (ARCH, ENCODER); a malformed name is an error with examples."""
    arch, _, encoder = name[len(PREFIX):].partition(":")
    if not arch or not encoder:
        raise ValueError(f"model {name!r}: expected {PREFIX}ARCH:ENCODER, e.g. {', '.join(EXAMPLES[:3])}")
    return arch, encoder


def build(name: str, num_classes: int, pretrained: str | None = None) -> ZooModel:
    """The smp model `name` (`smp:ARCH:ENCODER`) with `num_classes` outputs; `pretrained` encoder weights."""
    arch, encoder = parse(name)
    smp = import_smp()
    archs = {a.lower(): a for a in getattr(smp, "MODEL_ARCHITECTURES_MAPPING", {})}
    if archs and arch.lower() not in archs:
        raise ValueError(f"model {name!r}: unknown architecture {arch!r} (smp has {', '.join(sorted(archs))})")
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=pretrained, classes=num_classes)
    except KeyError as e:
        raise ValueError(f"model {name!r}: unknown encoder or weights ({e}); see smp's encoder list, or "
                         "tu-<timm name> for a timm encoder") from None
    except (OSError, RuntimeError) as e:  # OSError: a refused or failed connection too
        if pretrained is None:
            raise ValueError(f"model {name!r}: {type(e).__name__}: {e}") from None
        raise ValueError(f"model {name!r}: cannot fetch the {pretrained!r} encoder weights ({type(e).__name__}); "
                         f"they are cached in {cache_dirs()} once fetched on a machine that is online: copy them "
                         "there, or give a local state dict with --init FILE") from None
    except Exception as e:  # noqa: BLE001 - smp raises plain Exceptions for unsupported combinations
        raise ValueError(f"model {name!r}: {type(e).__name__}: {e}") from None
    stride = getattr(model.encoder, "output_stride", 32) or 32
    return ZooModel(model, stride)


def cache_dirs() -> str:
    """Where torch hub and the Hugging Face hub keep downloaded weights (what smp and timm use)."""
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    return f"{hub} and {hf}"


def normalisation(name: str, pretrained: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) on the 0..1 scale that the encoder of `name` expects; None where unknown (the caller
    then uses ImageNet's, what every smp encoder was trained with). Never touches the network: a timm
    encoder's statistics are in timm, an smp encoder's in the config.json that fetching its weights
    cached (read with local_files_only)."""
    _, encoder = parse(name)
    smp = import_smp()
    try:
        if encoder.startswith("tu-"):
            params = smp.encoders.get_preprocessing_params(encoder)
        elif pretrained:
            from huggingface_hub import hf_hub_download

            where = smp.encoders.encoders[encoder]["pretrained_settings"][pretrained]
            path = hf_hub_download(where["repo_id"], "config.json", revision=where.get("revision"),
                                   local_files_only=True)
            with open(path, encoding="utf-8") as f:
                params = json.load(f)
        else:
            return None
    except Exception:  # noqa: BLE001 - no published or cached statistics
        return None
    mean, std = params.get("mean"), params.get("std")
    if mean is None or std is None:
        return None
    if list(params.get("input_range", [0, 1]))[1] > 1:  # statistics on the 0..255 scale
        mean, std = [m / 255 for m in mean], [s / 255 for s in std]
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
