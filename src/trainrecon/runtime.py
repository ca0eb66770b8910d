"""Run-time helpers shared by training, attacks and the CLI: devices, dtypes, progress bars."""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from .errors import TrainreconError

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainreconError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainreconError(f"--device: {name!r} requested but CUDA is not available on this machine")
    return dev


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise TrainreconError(f"dtype: {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def progress(total: int, desc: str, initial: int = 0):
    """A tqdm bar that stays quiet when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, initial=initial, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
