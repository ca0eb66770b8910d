"""Quality regression: a seeded attack on a small MNIST victim must keep recovering images under the honest
headline, above every negative control, so a change that silently breaks reconstruction turns CI red.

The victim: MNIST even/odd from the subset shipped with the package, n = 20, 784-200-200-1, the KKT trainer at
its defaults; the attack: Haim with the defaults at m = 2n for 8000 iterations (about 35 s on 2 CPU cores).
Measured when written: 7 of 20 recovered, held-out control 0, every null 0, true images 20; with the defaults of
2026-12-06 (the per-candidate Adam, float32 here) 8 of 20; with its evening's (the layers after the first
counted a tenth, ``deep_weight = 0.1``) 11 of 20 with the held-out control at 1 on two threads (0 on one; every
layer alike: 9 and 0); with the held-out control's roles swapped and the typical-image null (2026-12-08) 11 of 20,
held-out 0, typical images 4 (luck: they need no attack), the other nulls 0.  The bar (4) leaves room for
floating-point differences across machines, not for a broken attack (which recovers 0); the held-out control may
match one unseen image of 20, not more.
"""

import pytest
from trainrecon import HaimConfig, payload_from_folder, reconstruct
from trainrecon.data.tasks import TaskConfig
from trainrecon.pipeline import evaluate_run, train_victim
from trainrecon.training import TrainConfig

MIN_RECOVERED = 4


@pytest.mark.slow
def test_a_seeded_attack_recovers_images_and_no_control_does(tmp_path):
    task = TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=10, centring="pixel")
    train_victim(task, TrainConfig(hidden=[200, 200], seed=0), tmp_path / "victim", log=lambda *a: None)
    res = reconstruct(payload_from_folder(tmp_path / "victim"), HaimConfig(iterations=8000, log_every=500, seed=0),
                      tmp_path / "rec", log=lambda *a: None)
    assert res.finished and res.m == 40
    head = evaluate_run(tmp_path / "victim", [tmp_path / "rec" / "candidates.npz"], tmp_path / "eval",
                        log=lambda *a: None)["headline"]
    c = head["controls"]
    assert head["recovered"] >= MIN_RECOVERED, head["recovered"]
    assert {k: v for k, v in c.items() if k.startswith("null_") and k != "null_typical"} == {
        "null_mean": 0, "null_noise": 0, "null_heldout_mean": 0}
    assert head["recovered"] > c["null_typical"] == head["negative_controls_max"]  # typical images: luck, not 0
    assert c["heldout"] <= 1 and c["positive"] == 20 and head["informative"]
