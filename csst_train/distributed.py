"""Device and process-group set-up shared by `csst train`, `eval` and `label`.

Under torchrun, RANK / WORLD_SIZE come from `csst_data.workers.rank_world` (the one reader of
the launcher's environment); each process uses cuda:LOCAL_RANK (nccl) or the CPU (gloo).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from csst_data.workers import rank_world


def pick_device(device: str = "auto") -> torch.device:
    """torch.device for "auto" (CUDA when present), "cpu", "cuda" (cuda:LOCAL_RANK) or "cuda:N"."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA device is available")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def dist_env(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    return rank_world(rank, world_size)


def setup_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world_size, device) for a torchrun job, initialising the process group when world_size > 1."""
    rank, world = rank_world()
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of --amp off|bf16|fp16 (None for off); AMP needs CUDA."""
    if amp in (None, "off"):
        return None
    if device.type != "cuda":
        raise ValueError(f"--amp {amp} needs a CUDA device (this run is on {device})")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
