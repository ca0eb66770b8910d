"""Atomic, durable file writes: the one way trainrecon writes a result or checkpoint file.

:func:`atomic_path` hands a writer a temporary path beside the target (``.NAME.PID.tmp``, same folder, so the
rename never crosses file systems); when the writer returns, the temporary file is flushed to disk (fsync),
renamed over the target (``os.replace``, atomic on POSIX) and the folder's entry is synced.  A kill or a
power loss at any instant leaves the previous file or the new one, never a torn mix; a writer that raises
leaves the previous file and no temporary one.  :func:`write_bytes`, :func:`write_text`, :func:`write_npz` and
:func:`write_drawn` (a picture a drawing function renders into a file object) are the common cases.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np


def fsync_dir(folder: str | os.PathLike) -> None:
    """Sync a folder's entries (a rename into it), where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; see the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        named = _naming(e, path, tmp)
        if named is e:
            raise
        raise named from None
    fsync_dir(path.parent)


def _naming(e: BaseException, path: Path, tmp: Path) -> BaseException:
    """A failed write's error as an OSError naming the file meant (``path``, never the temporary file), so that
    the one line the user reads says which file could not be written and why ("No space left on device"); a
    writer library's own error for a full disk (safetensors reports the OS error code in its message) counts."""
    if isinstance(e, OSError) and (e.filename is None or str(e.filename) == str(tmp)):
        return OSError(e.errno, e.strerror or str(e), str(path))
    if not isinstance(e, OSError) and isinstance(e, Exception) and ("code: 28" in str(e) or "No space left" in str(e)):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return e


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    write_bytes(path, text.encode("utf-8"))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed(path, **arrays)``, atomically and durably (no pickled objects: plain arrays)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    bad = [k for k, v in arrays.items() if v.dtype.hasobject]
    if bad:
        raise ValueError(f"{path}: arrays {bad} hold Python objects, which .npz could only store pickled")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def write_drawn(path: str | os.PathLike, draw: Callable[[BinaryIO], None]) -> None:
    """What ``draw(file)`` renders into a binary file object (a matplotlib picture), written to ``path``
    atomically and durably."""
    buf = io.BytesIO()
    draw(buf)
    write_bytes(path, buf.getvalue())
