"""Checkpoints: atomic saves with a checksum of their tensors, and rebuilding a trained model from one.

A checkpoint is a torch.save dict. `save_checkpoint` adds `"checksum"`: the
sha256 of every tensor and array in it (names, dtypes, shapes and bytes, in a
fixed order), so that bytes flipped inside a tensor — which torch.load reads
without complaint — are found by `load_checkpoint` instead of training on or
evaluating damaged weights. Checkpoints written before the checksum load as
before.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

import torch

from csst_train.models import build_model


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """torch.save through a temporary file and a rename, so a kill never leaves half a file.

    A failed write (disk full, read-only) leaves the previous checkpoint as it was and raises
    OSError naming the path and the reason."""
    tmp = f"{path}.tmp"
    state = {**{k: v for k, v in state.items() if k != "checksum"}, "checksum": tensor_checksum(state)}
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(f"{path}: cannot write the checkpoint ({write_problem(path, e)})") from None


def tensor_checksum(state: object) -> str:
    """sha256 (hex) over every tensor and numpy array in `state` (nested dicts, lists and tuples; the
    "checksum" entry itself left out): each one's place in the structure, dtype, shape and bytes."""
    h = hashlib.sha256()

    def walk(obj, where):
        if isinstance(obj, dict):
            for k in sorted(obj, key=str):
                if not (where == "" and k == "checksum"):
                    walk(obj[k], f"{where}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{where}/{i}")
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"{where}:{t.dtype}:{tuple(obj.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, np.ndarray):
            h.update(f"{where}:{obj.dtype}:{obj.shape}".encode())
            h.update(np.ascontiguousarray(obj).tobytes())

    walk(state, "")
    return h.hexdigest()


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
    if "checksum" in ckpt and tensor_checksum(ckpt) != ckpt["checksum"]:
        raise ValueError(f"{path}: checksum mismatch: the checkpoint's tensors are damaged "
                         "(resume from another checkpoint or retrain)")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike, name: str) -> None:
    """`model.load_state_dict(state)`, with a one-line error naming the checkpoint when the weights are
    not those of the model `name` it records (torch's message lists every key)."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        want, have = set(model.state_dict()), set(state)
        missing, unexpected = sorted(want - have), sorted(have - want)
        shapes = sorted(k for k in want & have if tuple(model.state_dict()[k].shape) != tuple(state[k].shape))
        parts = [f"{len(missing)} missing" + (f" (e.g. {missing[0]})" if missing else ""),
                 f"{len(unexpected)} unexpected" + (f" (e.g. {unexpected[0]})" if unexpected else ""),
                 f"{len(shapes)} of another shape" + (f" (e.g. {shapes[0]})" if shapes else "")]
        raise ValueError(f"{path}: its weights do not fit the model {name!r} it records: "
                         f"{', '.join(parts)} parameter names") from None


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict) from a `csst train` checkpoint."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["args"]["model"], ckpt["num_classes"])
    load_weights(model, ckpt["model"], path, ckpt["args"]["model"])
    return model.to(device).eval(), ckpt


def checkpoint_stats(ckpt: dict) -> tuple:
    """The input normalisation (mean, std) a checkpoint's model was trained with; ImageNet's for
    checkpoints that predate the record (every model then used it)."""
    from csst_train.inference import IMAGENET

    n = ckpt.get("normalisation")
    if not n:
        return IMAGENET
    return tuple(float(v) for v in n["mean"]), tuple(float(v) for v in n["std"])
