"""The honest headline and its controls, on data the tests make or the package ships."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainrecon.data.tasks import TaskConfig, build_task
from trainrecon.metrics.protocols import evaluate
from trainrecon.metrics.headline import (HeadlineRule, headline_counts, headline_line, null_sets, recovered_mask,
                                        typical_images)
from trainrecon.metrics.ssim import ssim_classic, ssim_cross, ssim_kind, ssim_paper

CLI = [sys.executable, "-m", "trainrecon"]


@pytest.fixture(scope="module")
def mnist_task():
    """20 MNIST training images (shipped subset), the held-out control and a pool of 100 more."""
    return build_task(TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=10))


def headline_of(cands, task, **kw):
    metrics, _ = evaluate(cands, task.x_train, task.heldout_all, task.mean, **kw)
    return metrics["headline"]


@pytest.mark.parametrize("kind,oracle", [("classic", ssim_classic), ("paper", ssim_paper)])
def test_ssim_cross_matches_pairwise_oracle(rng, kind, oracle):
    a = torch.tensor(rng.random((4, 2, 12, 13)))
    b = torch.tensor(rng.random((5, 2, 12, 13)))
    got = ssim_cross(a, b, kind, pairs_per_chunk=3)
    ref = torch.stack([oracle(a[i : i + 1].expand(5, -1, -1, -1), b) for i in range(4)])
    assert torch.allclose(got, ref, atol=1e-13, rtol=0)


def test_true_images_are_recovered_and_the_protocol_is_informative(mnist_task):
    head = headline_of(mnist_task.centred(mnist_task.x_train), mnist_task)
    n = mnist_task.n
    assert head["recovered"] == n and head["controls"]["positive"] == n
    c = head["controls"]
    assert head["informative"] and max(c["null_mean"], c["null_noise"], c["null_heldout_mean"]) == 0
    # the held-out control compares each unseen image with the training images too: an exact copy of a training
    # image is nearer that image than any unseen look-alike, so a perfect attack passes for no unseen image
    assert c["heldout"] == 0 and "positive_heldout" not in c
    assert (f"controls: held-out 0, nulls [mean 0, noise 0, heldout_mean 0, typical {c['null_typical']}], true "
            f"images {n}; ") in headline_line(head)
    assert head["similarity"].startswith("classic") and head["heldout_pool"] == 6 * n


@pytest.mark.parametrize("make", ["zeros", "noise", "other_mean", "heldout_images"])
def test_null_candidate_sets_recover_nothing(mnist_task, make, rng):
    n, shape = mnist_task.n, mnist_task.x_train.shape[1:]
    m = 2 * n
    if make == "zeros":
        cands = np.zeros((m, *shape))
    elif make == "noise":
        cands = 0.3 * rng.normal(size=(m, *shape))
    elif make == "other_mean":  # the mean of another subset of the same distribution
        other = build_task(TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=10, skip_per_class=10))
        cands = np.broadcast_to(other.x_train.mean(0) - mnist_task.mean, (m, *shape)).copy()
    else:  # a perfect reconstruction of the wrong images: the held-out control itself
        cands = np.concatenate([mnist_task.x_heldout, mnist_task.x_heldout]) - mnist_task.mean
    head = headline_of(cands, mnist_task)
    assert head["recovered"] <= 1, head
    if make == "heldout_images":  # the wrong images, faithfully: the held-out control sees all of them
        assert head["recovered"] == 0 and head["controls"]["heldout"] == n


@pytest.mark.parametrize("make", ["noise", "public", "blend"])
def test_the_heldout_control_is_the_headline_with_the_roles_swapped(mnist_task, make, rng):
    """The held-out control C (the first n held-out images) is scored against T and H minus C, the training images
    against H: swapping T and C swaps the two counts and the per-image scores exactly, so for candidates that know
    nothing of which set trained the victim the control has the headline's distribution (its exact permutation
    null).  Checked without null sets (the control has no null clause) on candidates that pass for some of both."""
    n = mnist_task.n
    T, H = torch.as_tensor(mnist_task.x_train), torch.as_tensor(mnist_task.heldout_all)
    C, R = H[:n], H[n:]
    mean = torch.as_tensor(mnist_task.mean).reshape(1, *T.shape[1:])
    if make == "noise":  # noisy copies of half of T and half of C
        base = torch.cat([T[: n // 2], C[: n // 2]])
        cands = base + 0.1 * torch.as_tensor(rng.normal(size=base.shape)) - mean
    elif make == "public":  # digits from the rest of the pool: pass for neither set
        cands = R[:n] - mean
    else:  # blends of a training and a held-out image
        cands = 0.5 * (T + C) - mean
    head, _, det = headline_counts(cands, T, H, mean, {})
    swapped, _, det_s = headline_counts(cands, C, torch.cat([T, R]), mean, {})
    assert head["controls"]["heldout"] == swapped["recovered"] and swapped["controls"]["heldout"] == head["recovered"]
    for a, b in [(det["heldout"], det_s["train"]), (det["train"], det_s["heldout"])]:
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_allclose(a["similarity"], b["similarity"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a["heldout_best"], b["heldout_best"], rtol=0, atol=1e-12)
    if make == "noise":
        assert head["recovered"] >= 3 and head["controls"]["heldout"] >= 3


def test_a_partial_reconstruction_beats_the_nulls(mnist_task, rng):
    """Half the training images, blurred by noise, the other half noise: recovered between nulls and n."""
    n = mnist_task.n
    x = mnist_task.x_train.copy()
    x[: n // 2] = np.clip(x[: n // 2] + 0.15 * rng.normal(size=x[: n // 2].shape), 0, 1)
    x[n // 2 :] = rng.random(x[n // 2 :].shape)
    head = headline_of(x - mnist_task.mean, mnist_task)
    c = head["controls"]
    assert max(c["null_mean"], c["null_noise"], c["null_heldout_mean"]) <= 1
    assert head["recovered"] > head["negative_controls_max"] >= c["null_typical"]


def test_typical_images_are_a_null_drawn_from_the_pool_and_scored_against_the_rest(mnist_task):
    """null_typical: min(m, (|H| - n) // 2) images of H outside the held-out control, drawn by the seed, each
    compared with H minus them (oracle: the rule on that pool; what luck gives them is reported, not 0); a null
    set that is not those images is refused.  (Clause 3 with it: ``test_report``'s null_best oracle.)"""
    n = mnist_task.n
    T, H = torch.as_tensor(mnist_task.x_train), torch.as_tensor(mnist_task.heldout_all)
    mean = torch.as_tensor(mnist_task.mean).reshape(1, *T.shape[1:])
    m = 2 * n
    D, pool = typical_images(H, n, m, seed=0)
    assert len(D) == min(m, (len(H) - n) // 2) and len(D) + len(pool) == len(H)
    flat = lambda x: {bytes(r) for r in x.reshape(len(x), -1).numpy()}  # noqa: E731
    assert not flat(D) & flat(pool) and not flat(D) & flat(H[:n]) and flat(H[:n]) <= flat(pool)
    assert torch.equal(typical_images(H, n, m, seed=0)[0], D) and not torch.equal(typical_images(H, n, m, 1)[0], D)
    cands = (D - mean)[:m]
    nulls = null_sets(cands, H, mean, 0, n)
    assert torch.equal(nulls["null_typical"], D - mean)
    head, _, _ = headline_counts(cands, T, H, mean, nulls)
    oracle = recovered_mask(T, D - mean, mean, pool, ssim_kind(T.shape), 0.5)["recovered"].sum()
    assert head["controls"]["null_typical"] == oracle >= 1
    assert "null_typical" not in null_sets(cands, H[: n + 1], mean, 0, n)  # no image to spare outside the control
    with pytest.raises(ValueError, match="null_typical"):  # drawn by another seed than the rule's
        headline_counts(cands, T, H, mean, null_sets(cands, H, mean, 1, n))


def test_a_candidate_equal_to_a_null_does_not_count(mnist_task):
    """Clause 3: a training image counts only when its candidate beats every null set's best for it."""
    cands = np.zeros((2 * mnist_task.n, *mnist_task.x_train.shape[1:]))
    head = headline_of(cands, mnist_task, rule=HeadlineRule(threshold=-1.0))
    assert head["recovered"] == 0


def test_shadow_null_and_no_claim_without_a_pool(mnist_task):
    truth = mnist_task.centred(mnist_task.x_train)
    head = headline_of(truth, mnist_task, extra_nulls={"shadow": truth})  # a null as good as the truth
    assert head["recovered"] == 0 and not head["informative"] and head["controls"]["shadow"] == mnist_task.n
    metrics, _ = evaluate(truth, mnist_task.x_train, mnist_task.x_heldout[:1], mnist_task.mean)
    assert metrics["headline"]["recovered"] is None and "held-out" in metrics["headline"]["reason"]
    few, _ = evaluate(truth, mnist_task.x_train, mnist_task.x_heldout[:5], mnist_task.mean)  # fewer than n: still a rule
    assert few["headline"]["recovered"] == mnist_task.n and few["headline"]["controls"]["heldout"] <= 1


def test_digits_field_protocol_is_flagged_uninformative():
    """At 8x8 the Haim NN protocol matches held-out digits with the true images as often as training ones."""
    task = build_task(TaskConfig(dataset="digits", task="odd_even", n_per_class=10))
    metrics, _ = evaluate(task.centred(task.x_train), task.x_train, task.heldout_all, task.mean)
    haim = metrics["protocols"]["haim_nn"]
    assert haim["positive_control"]["heldout"]["ssim_paper"]["count_gt_0.4"] > task.n / 2
    assert haim["informative"] == {"ssim_paper": False}
    assert metrics["headline"]["recovered"] == task.n and metrics["headline"]["informative"]


@pytest.mark.slow
def test_cli_evaluate_prints_the_headline_last(tmp_path, tiny_victim, tiny_task):
    cand = tmp_path / "c.npz"
    np.savez(cand, x=np.concatenate([tiny_task.centred(tiny_task.x_train)] * 2))
    shadow = tmp_path / "s.npz"
    np.savez(shadow, x=np.zeros((20, 1, 8, 8)))
    r = subprocess.run(CLI + ["evaluate", str(tiny_victim), str(cand), "--out", str(tmp_path / "ev"),
                              "--null", f"shadow={shadow}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("headline: 10 of 10 training images recovered")
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["headline"]["controls"]["shadow"] <= 1 and m["null_files"] == {"shadow": "s.npz"}
    assert (tmp_path / "ev" / "evidence.png").stat().st_size > 5000
    bad = tmp_path / "nan.npz"
    x = np.zeros((20, 1, 8, 8))
    x[3, 0, 2, 2] = np.nan
    np.savez(bad, x=x)
    r = subprocess.run(CLI + ["evaluate", str(tiny_victim), str(bad), "--out", str(tmp_path / "ev2")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nan.npz: 1 of 20 candidates hold NaN or inf" in r.stderr and "Traceback" not in r.stderr
