"""Readers for the raw data formats, without torchvision.

* MNIST IDX (LeCun): big-endian header ``0x00 0x00 dtype ndim`` + ndim uint32 sizes + data; magic 2051 for
  images (N, 28, 28) and 2049 for labels (N,); gzip or raw.
* CIFAR-10 python batches: a pickle whose MD5 must equal the published checksum *before* it is unpickled,
  and which is then read with an unpickler that only builds numpy arrays, lists, dicts and strings.
* ``.npz`` with arrays ``x`` (N, H, W) / (N, H, W, C) / (N, C, H, W) and ``y`` (N,), loaded with
  ``allow_pickle=False``.

All readers return images as uint8 or float arrays and raise :class:`TrainreconError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import TrainreconError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# MD5 of the canonical CIFAR-10 python batches (cifar-10-python.tar.gz, as published with torchvision).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise TrainreconError(f"{path}: corrupt gzip stream ({e})") from None
    return raw


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip or raw), validating its magic number and data length."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise TrainreconError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if zero != 0 or dtype_code not in dtypes or ndim == 0:
        raise TrainreconError(f"{path}: not an IDX file (magic {magic})")
    if expect_magic is not None and magic != expect_magic:
        raise TrainreconError(f"{path}: IDX magic {magic}, expected {expect_magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TrainreconError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dt = np.dtype(dtypes[dtype_code])
    need = int(np.prod(shape)) * dt.itemsize
    if len(raw) - header != need:
        raise TrainreconError(
            f"{path}: IDX header says shape {tuple(shape)} ({need} bytes of data) but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dt, offset=header).reshape(shape).astype(dt.newbyteorder("="))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except what a numpy array needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def parse_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR-10 batch bytes (already checksum-verified) into (x uint8 (N,32,32,3) HWC, y int64)."""
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any malformed or hostile pickle
        raise TrainreconError(f"{where}: refused to unpickle ({e})") from None
    if not isinstance(obj, dict):
        raise TrainreconError(f"{where}: not a CIFAR-10 batch (top level is {type(obj).__name__})")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise TrainreconError(f"{where}: not a CIFAR-10 batch (missing 'data' or 'labels')")
    data = np.asarray(obj["data"], dtype=np.uint8)
    labels = np.asarray(obj["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise TrainreconError(f"{where}: CIFAR-10 batch has data {data.shape} and {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a canonical CIFAR-10 python batch after verifying its MD5 (never unpickles unknown files)."""
    path = Path(path)
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    expected = CIFAR10_MD5.get(path.name)
    if expected is None:
        raise TrainreconError(f"{path}: not a known CIFAR-10 batch name ({', '.join(CIFAR10_MD5)})")
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    if digest != expected:
        raise TrainreconError(f"{path}: MD5 {digest} does not match the published {expected}; refusing to unpickle")
    return parse_cifar_batch(raw, str(path))


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x`` and ``y`` from an ``.npz`` (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as d:
            if "x" not in d.files:
                raise TrainreconError(f"{path}: missing array 'x' (has {', '.join(d.files) or 'nothing'})")
            x = d["x"]
            y = d["y"] if "y" in d.files else None
    except TrainreconError:
        raise
    except Exception as e:
        raise TrainreconError(f"{path}: not a readable .npz ({e})") from None
    if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0]):
        raise TrainreconError(f"{path}: 'y' has shape {y.shape}, expected ({x.shape[0]},)")
    return x, y


def to_float_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Images in [0, 1] as float64 (N, C, H, W) from uint8/float arrays in NHW, NHWC or NCHW layout."""
    x = np.asarray(x)
    if x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise TrainreconError(f"{where}: 'x' has shape {x.shape}; flat images must be square")
        x = x.reshape(-1, side, side)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise TrainreconError(f"{where}: 'x' has shape {x.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W)")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if x.dtype.kind not in "fiu" or x.dtype == bool:
        raise TrainreconError(f"{where}: 'x' has dtype {x.dtype}; expected uint8 or real-valued images")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise TrainreconError(f"{where}: 'x' holds NaN or inf")
    if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise TrainreconError(f"{where}: float images must lie in [0, 1] (found [{x.min():.3g}, {x.max():.3g}])")
    return x
