import numpy as np
import pytest
import torch

from trainrecon.config import to_dict
from trainrecon.data.tasks import TaskConfig, build_task
from trainrecon.models.victim import save_victim
from trainrecon.training import TrainConfig, train_binary

torch.set_num_threads(2)

TINY_TASK = TaskConfig(dataset="digits", task="odd_even", n_per_class=5, centring="pixel")
TINY_TRAIN = TrainConfig(hidden=[16, 16], margin_schedule=[10.0, 100.0], lbfgs_iters=60, seed=0)


@pytest.fixture(scope="session")
def tiny_task():
    return build_task(TINY_TASK)


@pytest.fixture(scope="session")
def tiny_victim(tmp_path_factory, tiny_task):
    """A digits even/odd victim with 10 training images and a 64-16-16-1 MLP, trained once per session."""
    folder = tmp_path_factory.mktemp("victim")
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    spec, params, summary = train_binary(TINY_TRAIN, x, y, log=lambda *a: None)
    info = {"task": to_dict(TINY_TASK),
            "train_indices": tiny_task.idx_train.tolist(), "final": summary["final"]}
    save_victim(folder, spec, params, tiny_task.mean, info)
    return folder


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def build_objective(method_cls, victim, cfg, m, it=0):
    """(objective at iteration ``it``, initial candidate set) of a registered method on a Victim."""
    from trainrecon.attacks.payload import Payload

    method = method_cls(Payload.of(victim, disclose_n=False), cfg)
    cands = method.init(m)
    return method.objective(it, cands), cands


@pytest.fixture()
def one_thread():
    """Tiny problems: one intra-op thread is several times faster than two on a busy machine (measured: the
    README block 12 s alone, 58 s with torch.set_num_threads(2) at load 10 on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
