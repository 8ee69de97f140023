"""Checkpoints: atomic saves, and rebuilding a trained model from one."""

from __future__ import annotations

import os

import torch

from csst_train.models import build_model


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """torch.save through a temporary file and a rename, so a kill never leaves half a file.

    A failed write (disk full, read-only) leaves the previous checkpoint as it was and raises
    OSError naming the path and the reason."""
    tmp = f"{path}.tmp"
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(f"{path}: cannot write the checkpoint ({write_problem(path, e)})") from None


def write_problem(path: str | os.PathLike, error: BaseException) -> str:
    """Why a write to `path` failed, in words: no space left, read-only, or the error itself."""
    import errno
    import shutil

    code = getattr(error, "errno", None)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        full = shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        full = False
    if code == errno.ENOSPC or full:
        return "no space left on device"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or not os.access(folder, os.W_OK):
        return "not writable"
    return str(getattr(error, "strerror", None) or error).splitlines()[0]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A `csst train` checkpoint dict; errors name the path (missing, unreadable, not a csst checkpoint)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: cannot read checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise ValueError(f"{path}: not a csst checkpoint (expected the keys 'model' and 'args')")
    return ckpt


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict) from a `csst train` checkpoint."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["args"]["model"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
