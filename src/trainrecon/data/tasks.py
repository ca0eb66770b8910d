"""Task builders: which images a victim is trained on, how they are labelled and centred.

Conventions follow the reference code (shared/reference/baselines.md):

* Binary tasks scan the train split **in index order** and take the first n/2 images of each binary class
  (Haim's ``get_balanced_data``); label -1 for the first class (MNIST even, CIFAR vehicles), +1 for the other.
* Multiclass tasks take the first k images of each class by index.
* Centring ``pixel`` subtracts the per-pixel mean image of the *training subset* (Haim/Buzaglo);
  ``channel`` a per-channel mean, ``scalar`` one number (Loo), ``none`` nothing.
* The held-out control set is built by the same rule from the test split: images the victim never saw.  Beyond
  it, a held-out *pool* (up to ``pool_factor`` times as many, the next images of each class) serves the
  evaluation's headline rule (``metrics/headline.py``).
* ``skip_per_class`` skips the first k images of each class: a shadow victim's training set, disjoint from the
  victim's and drawn from the same distribution.
* ``mnist_mini`` is the MNIST subset shipped with the package (``data/mnist_mini.md``: provenance, licence).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import TrainreconError
from .formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_cifar_batch, read_idx, read_npz, to_float_nchw

Dataset = Literal["mnist", "cifar10", "digits", "npz", "mnist_mini"]
TaskKind = Literal["odd_even", "vehicles_animals", "multiclass"]
Centring = Literal["pixel", "channel", "scalar", "none"]

CIFAR_VEHICLES = (0, 1, 8, 9)
DIGITS_TRAIN_POOL = 1000  # sklearn digits: the first 1000 images are the "train split", the rest "test"


@dataclass
class TaskConfig:
    """Which data a victim is trained on. ``path``/``heldout_path`` are used for ``dataset='npz'``."""

    dataset: Dataset = "digits"
    task: TaskKind = "odd_even"
    n_per_class: int = 25
    centring: Centring = "pixel"
    path: str = ""
    heldout_path: str = ""
    skip_per_class: int = 0

    def __post_init__(self) -> None:
        if self.n_per_class <= 0:
            raise TrainreconError(f"task.n_per_class: must be positive, got {self.n_per_class}")
        if self.skip_per_class < 0:
            raise TrainreconError(f"task.skip_per_class: must be >= 0, got {self.skip_per_class}")
        if self.dataset == "cifar10" and self.task == "odd_even":
            raise TrainreconError("task.task: 'odd_even' needs digit labels; use 'vehicles_animals' for cifar10")
        if self.dataset in ("mnist", "digits", "mnist_mini") and self.task == "vehicles_animals":
            raise TrainreconError(f"task.task: 'vehicles_animals' needs CIFAR-10 labels, not {self.dataset}")
        if self.dataset == "npz" and not self.path:
            raise TrainreconError("task.path: dataset 'npz' needs the path of an .npz with x and y")


@dataclass
class TaskData:
    """Images in [0, 1] as (N, C, H, W) float64; labels; indices into the split; the centring mean."""

    x_train: np.ndarray
    y_train: np.ndarray
    idx_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    idx_heldout: np.ndarray
    mean: np.ndarray
    classes: list[str]
    x_pool: np.ndarray | None = None
    idx_pool: np.ndarray | None = None

    @property
    def heldout_all(self) -> np.ndarray:
        """The held-out control followed by the pool: every image the evaluation may compare against."""
        return self.x_heldout if self.x_pool is None else np.concatenate([self.x_heldout, self.x_pool])

    @property
    def n(self) -> int:
        return len(self.x_train)

    def centred(self, x: np.ndarray) -> np.ndarray:
        return x - self.mean


def default_data_dir() -> Path:
    """``$TRAINRECON_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("TRAINRECON_DATA", "data"))


def _first_existing(data_dir: Path, names: list[str]) -> Path | None:
    for name in names:
        for p in (data_dir / name, data_dir / (name + ".gz")):
            if p.is_file():
                return p
    return None


def labelled_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] (N, C, H, W) and integer labels from an .npz with ``x`` and ``y`` of equal length."""
    x, y = read_npz(path)
    if y is None:
        raise TrainreconError(f"{path}: missing array 'y' (the labels)")
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise TrainreconError(f"{path}: 'y' must be {len(x)} integer labels, got shape {y.shape} of {y.dtype}")
    return to_float_nchw(x, str(path)), y.astype(np.int64)


def load_split(dataset: str, split: Literal["train", "test"], data_dir: Path, path: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W) in [0, 1] and integer labels of one split, in canonical order."""
    if dataset == "digits":
        from sklearn.datasets import load_digits  # here: importing scikit-learn costs every command a second

        d = load_digits()
        x = d.images.astype(np.float64) / 16.0
        y = d.target.astype(np.int64)
        sl = slice(0, DIGITS_TRAIN_POOL) if split == "train" else slice(DIGITS_TRAIN_POOL, None)
        return x[sl, None], y[sl]
    if dataset == "mnist_mini":
        with files("trainrecon.data").joinpath("mnist_mini.npz").open("rb") as f, np.load(f, allow_pickle=False) as d:
            x, y = (d["x_train"], d["y_train"]) if split == "train" else (d["x_test"], d["y_test"])
            return to_float_nchw(x, "mnist_mini.npz"), y.astype(np.int64)
    if dataset == "npz":
        if not path:
            raise TrainreconError(f"task.{'path' if split == 'train' else 'heldout_path'}: no .npz given for the {split} split")
        return labelled_npz(path)
    if dataset == "mnist":
        npz = ["mnist_subset.npz", "mnist_train.npz"] if split == "train" else ["mnist_test.npz"]
        found = _first_existing(data_dir, npz)
        if found is not None:
            return labelled_npz(found)
        stem = "train" if split == "train" else "t10k"
        img = _first_existing(data_dir, [f"{stem}-images-idx3-ubyte", f"{stem}-images.idx3-ubyte"])
        lab = _first_existing(data_dir, [f"{stem}-labels-idx1-ubyte", f"{stem}-labels.idx1-ubyte"])
        if img is None or lab is None:
            raise TrainreconError(
                f"{data_dir}: no MNIST {split} data (looked for {', '.join(npz)} and {stem}-images-idx3-ubyte[.gz] "
                f"with {stem}-labels-idx1-ubyte[.gz]); set --data-dir or TRAINRECON_DATA"
            )
        x = read_idx(img, IDX_IMAGES_MAGIC)
        y = read_idx(lab, IDX_LABELS_MAGIC)
        if x.shape[0] != y.shape[0]:
            raise TrainreconError(f"{img}: {x.shape[0]} images but {lab} has {y.shape[0]} labels")
        return to_float_nchw(x, str(img)), y.astype(np.int64)
    if dataset == "cifar10":
        npz = ["cifar10_subset.npz", "cifar10_train.npz"] if split == "train" else ["cifar10_test_subset.npz", "cifar10_test.npz"]
        found = _first_existing(data_dir, npz)
        if found is not None:
            return labelled_npz(found)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for sub in (data_dir / "cifar-10-batches-py", data_dir):
            if (sub / names[0]).is_file():
                parts = [read_cifar_batch(sub / nm) for nm in names if (sub / nm).is_file()]
                x = np.concatenate([p[0] for p in parts])
                y = np.concatenate([p[1] for p in parts])
                return to_float_nchw(x, str(sub)), y
        raise TrainreconError(
            f"{data_dir}: no CIFAR-10 {split} data (looked for {', '.join(npz)} and cifar-10-batches-py/{names[0]}); "
            "set --data-dir or TRAINRECON_DATA"
        )
    raise TrainreconError(f"task.dataset: unknown dataset {dataset!r}")


def binary_label(task: str, y: np.ndarray) -> np.ndarray:
    """+-1 labels: -1 for MNIST even / CIFAR vehicles, +1 for odd / animals."""
    if task == "odd_even":
        return np.where(y % 2 == 0, -1, 1)
    if task == "vehicles_animals":
        return np.where(np.isin(y, CIFAR_VEHICLES), -1, 1)
    raise TrainreconError(f"task.task: {task!r} is not a binary task")


def balanced_scan(labels: np.ndarray, classes: list[int], per_class: int, where: str, skip: int = 0) -> np.ndarray:
    """Indices of items ``skip .. skip + per_class - 1`` of each class, scanning in index order."""
    picked = []
    for c in classes:
        idx = np.flatnonzero(labels == c)[skip : skip + per_class]
        if len(idx) < per_class:
            raise TrainreconError(f"{where}: only {len(idx)} images of class {c} after skipping {skip}, need {per_class}")
        picked.append(idx)
    return np.sort(np.concatenate(picked))


def pool_scan(labels: np.ndarray, classes: list[int], skip: int, per_class: int) -> np.ndarray:
    """Up to ``per_class`` further items of each class after the first ``skip``, as many as the split has."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[skip : skip + per_class] for c in classes]))


def compute_mean(x: np.ndarray, centring: str) -> np.ndarray:
    """The centring statistic of the training subset, broadcastable to (C, H, W)."""
    shape = x.shape[1:]
    if centring == "pixel":
        return x.mean(axis=0)
    if centring == "channel":
        return np.broadcast_to(x.mean(axis=(0, 2, 3))[:, None, None], shape).copy()
    if centring == "scalar":
        return np.full(shape, x.mean())
    return np.zeros(shape)


def build_task(cfg: TaskConfig, data_dir: str | Path | None = None, pool_factor: int = 5) -> TaskData:
    """Training set, held-out control set (same rule on the test split), the held-out pool (up to
    ``pool_factor`` x n further test images, balanced the same way) and the centring mean."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    x_tr, y_tr = load_split(cfg.dataset, "train", data_dir, cfg.path)
    x_te, y_te = load_split(cfg.dataset, "test", data_dir, cfg.heldout_path or cfg.path)
    if cfg.dataset == "npz" and not cfg.heldout_path:
        # one file: its first half is the train pool, its second half the held-out pool
        half = len(x_tr) // 2
        x_tr, y_tr, x_te, y_te = x_tr[:half], y_tr[:half], x_tr[half:], y_tr[half:]
    if cfg.task == "multiclass":
        classes = sorted(int(c) for c in np.unique(y_tr))
        lab_tr, lab_te = y_tr, y_te
        names = [str(c) for c in classes]
    else:
        classes = [-1, 1]
        lab_tr, lab_te = binary_label(cfg.task, y_tr), binary_label(cfg.task, y_te)
        names = ["even", "odd"] if cfg.task == "odd_even" else ["vehicle", "animal"]
    idx_tr = balanced_scan(lab_tr, classes, cfg.n_per_class, f"{cfg.dataset} train split", cfg.skip_per_class)
    idx_te = balanced_scan(lab_te, classes, cfg.n_per_class, f"{cfg.dataset} test split")
    idx_pool = pool_scan(lab_te, classes, cfg.n_per_class, pool_factor * cfg.n_per_class)
    ytr, yte = lab_tr[idx_tr], lab_te[idx_te]
    xtr = x_tr[idx_tr]
    return TaskData(
        x_train=xtr,
        y_train=ytr.astype(np.int64),
        idx_train=idx_tr,
        x_heldout=x_te[idx_te],
        y_heldout=yte.astype(np.int64),
        idx_heldout=idx_te,
        mean=compute_mean(xtr, cfg.centring),
        classes=names,
        x_pool=x_te[idx_pool],
        idx_pool=idx_pool,
    )
