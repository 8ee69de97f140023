"""Checkpoints: atomic saves, and rebuilding a trained model from one."""

import os

import torch

from csst_train.models import build_model


def save_checkpoint(state, path):
    """torch.save through a temporary file and a rename, so a kill never leaves half a file."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise ValueError(f"{path}: not a csst checkpoint (expected the keys 'model' and 'args')")
    return ckpt


def model_from_checkpoint(path, device="cpu"):
    """(model in eval mode on `device`, checkpoint dict) from a `csst train` checkpoint."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["args"]["model"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
