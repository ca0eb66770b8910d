"""Data: raw formats (IDX, CIFAR-10 batches, npz) and the task builders of the reference papers."""

from .formats import read_cifar_batch, read_idx, read_npz, to_float_nchw
from .tasks import TaskConfig, TaskData, build_task, default_data_dir, load_split

__all__ = [
    "TaskConfig",
    "TaskData",
    "build_task",
    "default_data_dir",
    "load_split",
    "read_cifar_batch",
    "read_idx",
    "read_npz",
    "to_float_nchw",
]
