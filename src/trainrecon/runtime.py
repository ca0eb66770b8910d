"""Run-time helpers shared by training, attacks and the CLI: devices, dtypes, progress bars and stop requests (the
wall-clock budget of an attack run is a hook on its loop, :class:`trainrecon.hooks.budget.TimeBudget`)."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time

import torch
from tqdm.auto import tqdm

from .errors import TrainreconError

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; anything else (mps, meta, ...) is refused in one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise TrainreconError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type not in ("cpu", "cuda"):
        raise TrainreconError(f"--device: {name!r} is not supported (use cpu, cuda, cuda:N or auto)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainreconError(f"--device: {name!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainreconError(f"--device: {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


@functools.lru_cache(maxsize=None)
def fast_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether matrix products in bfloat16 run at least twice as fast as in float32 on ``device``.  On a CPU, timed
    once per process (a 256 x 1024 x 1024 product in each dtype, the best of three, with the threads the run will
    use): about five times faster on this project's Intel CPU with AMX; a CPU without bfloat16 instructions fails
    the test.  On CUDA, taken as true where the GPU supports bfloat16 (tensor cores; not timed, and not measured
    in this project's bench, which had no GPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    shape = (256, 1024, 1024)
    return 2 * matmul_seconds(dev, torch.bfloat16, *shape) <= matmul_seconds(dev, torch.float32, *shape)


@functools.lru_cache(maxsize=None)
def compiler_works(device: torch.device | str = "cpu") -> bool:
    """Whether ``torch.compile`` (inductor) compiles and runs a small function on ``device``, tried once per
    process: on a CPU it needs a C++ compiler, on CUDA triton.  Where it fails, ``compile = "auto"`` keeps the
    eager passes."""
    dev = torch.device(device)
    try:
        x = torch.linspace(-1.0, 1.0, 8, device=dev)
        out = torch.compile(lambda t: torch.nn.functional.softplus(t) * t)(x)
        return bool(torch.allclose(out, torch.nn.functional.softplus(x) * x))
    except Exception:  # noqa: BLE001 - any failure of the compiler stack means: do not compile
        return False


def matmul_seconds(device: torch.device, dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 3) -> float:
    """The best time of ``repeats`` products (m x k) @ (k x n) in ``dtype`` on ``device``, after one that warms the
    kernel up (synchronised on CUDA): what :func:`fast_bfloat16` compares and bench's roofline divides."""
    a = torch.ones(m, k, device=device, dtype=dtype)
    b = torch.ones(k, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first one warms up
            best = min(best, time.perf_counter() - t0)
    return best


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for a new allocation on ``device`` (MemAvailable on Linux CPUs), or None if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def require_memory(nbytes: float, what: str, device: torch.device | str = "cpu") -> None:
    """Refuse, before allocating, a job whose estimated footprint exceeds the memory available."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        raise TrainreconError(f"{what}: needs about {nbytes / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB is available "
                              f"on {torch.device(device)}; make it smaller")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise TrainreconError(f"dtype: {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def progress(total: int, desc: str, initial: int = 0):
    """A tqdm bar that stays quiet when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, initial=initial, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


class StopRequest:
    """While active, SIGINT (Ctrl-C) and SIGTERM set ``requested`` instead of killing the process, so a loop can
    stop at an iteration boundary, save a consistent checkpoint and say how to resume.  A second Ctrl-C
    interrupts at once (Python's default).  Outside the main thread it does nothing.

    ``signals``: the signals it takes over (a sweep's worker processes take SIGTERM only and ignore Ctrl-C, which
    the sweep process receives and passes on).  Nested inside another StopRequest (a sweep worker's, around its
    trials), it takes the outer one's signals; a request already made to the outer one stops the inner run at
    its first iteration, and a request to the inner one is passed out, so the worker starts no further trial."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.requested: str | None = None
        self.signals = tuple(signals)
        self._old: dict[int, object] = {}
        self._outer: StopRequest | None = None

    def _handle(self, signum, _frame) -> None:
        self.requested = signal.Signals(signum).name
        if self._outer is not None:
            self._outer.requested = self.requested
        if signal.SIGINT in self._old:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            signals = self.signals
            for sig in (signal.SIGTERM, signal.SIGINT):
                outer = getattr(signal.getsignal(sig), "__self__", None)
                if isinstance(outer, StopRequest):
                    self._outer, signals = outer, outer.signals
                    self.signals = signals
                    self.requested = self.requested or outer.requested
                    break
            for sig in signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
