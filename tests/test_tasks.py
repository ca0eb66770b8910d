import numpy as np
import pytest

from trainrecon.config import from_dict
from trainrecon.data.tasks import TaskConfig, build_task, load_split
from trainrecon.errors import TrainreconError


def test_balanced_in_order_scan_and_centring():
    data = build_task(TaskConfig(dataset="digits", task="odd_even", n_per_class=10))
    _, labels = load_split("digits", "train", None)
    even = np.flatnonzero(labels % 2 == 0)[:10]
    odd = np.flatnonzero(labels % 2 == 1)[:10]
    assert data.idx_train.tolist() == sorted(even.tolist() + odd.tolist())
    assert (data.y_train == np.where(labels[data.idx_train] % 2 == 0, -1, 1)).all()
    assert np.allclose(data.mean, data.x_train.mean(axis=0))
    assert np.abs(data.centred(data.x_train).mean(axis=0)).max() < 1e-12
    assert data.x_heldout.shape == data.x_train.shape  # the control comes from the test split


def test_npz_task_and_multiclass(tmp_path, rng):
    x = rng.integers(0, 256, size=(60, 6, 6)).astype(np.uint8)
    y = np.tile(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = build_task(TaskConfig(dataset="npz", task="multiclass", n_per_class=3, path=str(tmp_path / "d.npz")))
    assert data.n == 9 and sorted(data.y_train.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.idx_train.tolist() == list(range(9))


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(TrainreconError, match=f"{tmp_path}: no MNIST train data"):
        build_task(TaskConfig(dataset="mnist", task="odd_even", n_per_class=5), tmp_path)


def test_config_validation():
    with pytest.raises(TrainreconError, match="unknown field 'n_per_clas'"):
        from_dict(TaskConfig, {"n_per_clas": 3})
    with pytest.raises(TrainreconError, match=r"task.dataset: 'imagenet' is not one of"):
        from_dict(TaskConfig, {"dataset": "imagenet"}, "task")
    with pytest.raises(TrainreconError, match="expected an integer"):
        from_dict(TaskConfig, {"n_per_class": "ten"})
