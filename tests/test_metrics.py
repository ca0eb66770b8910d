import itertools

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from trainrecon.metrics.protocols import evaluate
from trainrecon.metrics.matching import extraction_score, greedy_one_to_one, hungarian, ncc_dist
from trainrecon.metrics.ssim import ssim_classic, ssim_paper


def loop_ssim_window3(a: np.ndarray, b: np.ndarray) -> float:
    """Oracle for kornia's ssim(window_size=3): explicit loops, reflect borders, weights [.3078 .3844 .3078]."""
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    vals = []
    for c in range(a.shape[0]):
        pa, pb = np.pad(a[c], 1, mode="reflect"), np.pad(b[c], 1, mode="reflect")
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                wa, wb = pa[i : i + 3, j : j + 3], pb[i : i + 3, j : j + 3]
                mx, my = (w * wa).sum(), (w * wb).sum()
                sxx = (w * wa * wa).sum() - mx**2
                syy = (w * wb * wb).sum() - my**2
                sxy = (w * wa * wb).sum() - mx * my
                num = (2 * mx * my + 1e-4) * (2 * sxy + 9e-4)
                den = (mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4)
                vals.append(num / (den + 1e-12))
    return float(np.mean(vals))


def test_ssim_paper_matches_loop_oracle(rng):
    a = rng.random((3, 2, 9, 7))
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
    got = ssim_paper(torch.tensor(a), torch.tensor(b)).numpy()
    ref = [loop_ssim_window3(a[k], b[k]) for k in range(3)]
    assert np.allclose(got, ref, atol=1e-12)
    assert np.allclose(ssim_paper(torch.tensor(a), torch.tensor(a)).numpy(), 1.0)


def test_ssim_classic_matches_skimage(rng):
    a = rng.random((2, 3, 16, 16))
    b = np.clip(a + 0.3 * rng.normal(size=a.shape), 0, 1)
    got = ssim_classic(torch.tensor(a), torch.tensor(b)).numpy()
    for k in range(2):
        ref = structural_similarity(a[k], b[k], channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0)
        assert got[k] == pytest.approx(ref, abs=1e-10)
    assert np.isnan(ssim_classic(torch.tensor(a[:, :, :8, :8]), torch.tensor(b[:, :, :8, :8]))).all()


def test_greedy_and_hungarian_against_brute_force(rng):
    d = torch.tensor(rng.random((4, 5)))
    match, rows, dists = greedy_one_to_one(d)
    dd = d.numpy().copy()
    for r, dist in zip(rows, dists):  # each selection is the global minimum of what remains
        assert dist == pytest.approx(np.nanmin(dd))
        c = match[r]
        dd[r, :] = np.nan
        dd[:, c] = np.nan
    assert np.all(np.diff(dists) >= 0)
    h = hungarian(d)
    best = min(sum(d[i, p[i]] for i in range(4)) for p in itertools.permutations(range(5), 4))
    assert float(sum(d[i, h[i]] for i in range(4))) == pytest.approx(float(best))


def test_ncc_is_scale_and_shift_invariant(rng):
    a = torch.tensor(rng.random((3, 1, 6, 6)))
    d = ncc_dist(a, 2.5 * a + 0.3)
    assert torch.allclose(torch.diagonal(d), torch.zeros(3, dtype=d.dtype), atol=1e-10)


def test_extraction_score_hand_case():
    train = torch.zeros(2, 1, 1, 2)
    train[1, 0, 0, 0] = 1.0
    cand = torch.tensor([[[[0.1, 0.0]]], [[[0.9, 0.0]]], [[[0.0, 0.3]]]])
    # candidate 0 -> train 0 (0.01), 1 -> train 1 (0.01), 2 -> train 0 (0.09); best per train: 0.01, 0.01
    assert extraction_score(cand, train, "l2") == pytest.approx(0.01)


def test_evaluate_counts_exact_copies_and_controls(tiny_task):
    cands = tiny_task.centred(tiny_task.x_train)
    metrics, pairs = evaluate(cands, tiny_task.x_train, tiny_task.x_heldout, tiny_task.mean, tiny_task.y_train)
    p = metrics["protocols"]["haim_nn"]
    n = tiny_task.n
    assert p["ssim_paper"]["count_gt_0.5"] == n and p["ssim_paper"]["mean_top10"] > 0.99
    assert p["control"]["ssim_paper"]["count_gt_0.5"] < n
    assert p["above_control"]["ssim_paper_gt_0.4"] == p["ssim_paper"]["count_gt_0.4"] - p["control"]["ssim_paper"]["count_gt_0.4"]
    assert metrics["protocols"]["hungarian"]["unique_candidates_used"] == n
    assert max(metrics["protocols"]["loo_greedy"]["l2_curve"]) < 1e-6


def test_the_mean_per_pixel_l2_after_the_optimal_permutation_against_brute_force(rng):
    """float64 oracle on a tiny problem: 4 reference images, 5 candidates; the permutation that minimises the summed
    squared L2 of the shown images (mean added, min-max scaled) found by trying every injection, and the mean of
    ||t - c||_2 / sqrt(C H W) over its pairs; the same numbers in metrics.json's l2_permutation entry and among the
    paper's measures, beside the true images' (near 0)."""
    from trainrecon.metrics.protocols import PROTOCOLS, score_pairs, summarise_l2
    from trainrecon.metrics.headline import shown

    ref = torch.as_tensor(rng.random((4, 1, 6, 6)))
    mean = torch.as_tensor(rng.random((1, 1, 6, 6))) * 0.1
    cand = torch.as_tensor(rng.normal(size=(5, 1, 6, 6)))
    show = shown(cand, mean).numpy().reshape(5, -1)
    flat = ref.numpy().reshape(4, -1)
    best = min(itertools.permutations(range(5), 4),
               key=lambda p: sum(((flat[i] - show[j]) ** 2).sum() for i, j in enumerate(p)))
    oracle = np.mean([np.linalg.norm(flat[i] - show[j]) / 6.0 for i, j in enumerate(best)])
    idx, _ = PROTOCOLS.get("l2_permutation", "protocol")(ref, cand, mean)
    assert tuple(idx) == best
    got = summarise_l2(score_pairs(ref, cand, mean, idx)["l2"])
    assert got["mean"] == pytest.approx(oracle, rel=1e-12) and got["unmatched"] == 0
    metrics, _ = evaluate(cand.numpy(), ref.numpy(), None, mean.numpy()[0])
    assert metrics["protocols"]["l2_permutation"]["l2_per_pixel"]["mean"] == pytest.approx(oracle, rel=1e-12)
    row = next(r for r in metrics["paper_measures"] if r["protocol"] == "l2_permutation")
    assert row["attack"] == pytest.approx(oracle, rel=1e-12) and row["closer"] == "smaller"
    assert row["true_images"] < 0.05 < row["attack"] and row["nulls_nearest"] is not None  # min-max scaling only
