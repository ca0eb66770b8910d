"""Scoring reconstructions against the training set, with a false-positive control.

Only here does the training set enter.  Candidates live in the victim's centred input space; the mean is
added back before SSIM, and each candidate is min-max scaled to [0, 1] per image (Haim ``analysis.py:scale``).

Protocols (each reports SSIM > 0.4 / > 0.5 counts and the mean SSIM of the best 10, with both SSIMs):

* ``haim_nn``: each training image's nearest candidate by NCC (half resolution for 32x32 colour), non-unique.
* ``hungarian``: one-to-one assignment on the same NCC distances.
* ``loo_greedy``: Loo's greedy one-to-one matching by Euclidean L2 of the mean-added, unscaled images; its
  distances in selection order are the reconstruction curve.
* ``l2_permutation``: the optimal permutation by squared L2 of the shown images (Iurada et al.).

Each protocol also reports the per-pixel L2 of its matched pairs (``l2_per_pixel``: mean, mean of the best 10),
so the paper's continuous measures -- the mean SSIM of a one-to-one matching (``hungarian``, ``loo_greedy``:
``mean``, ``mean_top10``), the mean per-pixel L2 after the optimal permutation (``l2_permutation``) and the
nearest-neighbour SSIM counts (``haim_nn``) -- stand beside the headline, each with the same controls.

Every count is repeated with held-out images of the same task that the victim never saw in place of the
training set (the number of "matches" chance alone produces), with null candidate sets built from what the
attacker knows (the input mean, noise), and with the true images as candidates (the positive control).  The
claim itself is ``metrics["headline"]`` (:mod:`.headline`): these field protocols are kept for comparison with
papers, and ``informative`` says per protocol whether its positive control stands clear of its negatives.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch

from ..errors import TrainreconError
from ..registry import Registry
from .exposure import exposure_of
from .headline import HeadlineRule, headline_counts, headline_line, null_sets, one_to_one, shown
from .matching import (extraction_score, greedy_one_to_one, hungarian, ncc_dist, nearest, sq_dist,
                       uses_half_resolution)
from .ssim import ssim_classic, ssim_paper

THRESHOLDS = (0.4, 0.5)
#: the sets every evaluation scores by itself, under these names in metrics.json and the pictures: a further null
#: set may not take one of them (nor its short form, null_ dropped, as the headline line prints it), since it
#: would replace that control instead of joining it
BUILTIN_SETS = ("attack", "heldout", "positive", "null_mean", "null_noise", "null_heldout_mean",
                "null_typical")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_null_names(names) -> None:
    """Refuse, in one line, further null-set names that are empty, hold spaces or odd characters, repeat (case
    aside), or take a built-in set's name (``BUILTIN_SETS``): a user's null set is added beside the controls,
    never in place of one.  (``shadow`` is no built-in: an experiment's shadow victim, or a user's, is one of
    these further sets.)"""
    taken = {n.lower() for n in BUILTIN_SETS}
    taken |= {n.removeprefix("null_") for n in taken}
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TrainreconError(f"null set name {name!r}: give a name of letters, digits, '_', '.', '+' or '-' "
                                  "(no spaces), e.g. other_subset")
        key = name.lower()
        if key in taken or key.removeprefix("null_") in taken:
            raise TrainreconError(f"null set name {name!r}: taken by a built-in set ({', '.join(BUILTIN_SETS)}); "
                                  "a further null set is added beside the controls, never in place of one: choose another name")
        if key in seen:
            raise TrainreconError(f"null set name {name!r}: given twice; each further null set needs its own name")
        seen.add(key)


def _loo_greedy(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """Loo's greedy one-to-one matching by Euclidean L2 of the mean-added, unscaled images, with its curve."""
    idx, _, curve = greedy_one_to_one(sq_dist(reference, cand + mean).sqrt())
    return idx, curve


def _hungarian(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """One-to-one assignment on the NCC distances."""
    return one_to_one(reference, cand, mean), None


def _l2_permutation(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """The optimal permutation (Iurada et al.): one to one, minimising the summed squared L2 distance between the
    reference images and the candidates as every protocol shows them (mean added, min-max scaled per image)."""
    return hungarian(sq_dist(reference, shown(cand, mean))), None


def _haim_nn(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """Each reference image's nearest candidate by NCC (half resolution for 32x32 colour), non-unique."""
    return nearest(ncc_dist(reference - mean, cand, half_resolution=uses_half_resolution(reference.shape))), None


#: the field's scoring protocols by name, each a matching ``(reference, candidates, mean) -> (candidate index per
#: reference image, Loo's curve or None)``, scored in this order into ``metrics["protocols"]``
PROTOCOLS: Registry[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray | None]]] = \
    Registry("scoring protocol")
PROTOCOLS.register("haim_nn", _haim_nn)
PROTOCOLS.register("hungarian", _hungarian)
PROTOCOLS.register("loo_greedy", _loo_greedy)
PROTOCOLS.register("l2_permutation", _l2_permutation)


def match(protocol: str, reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate index for each reference image (raw [0,1] images; cand centred) under the registered
    ``protocol``.  Loo also returns its curve."""
    return PROTOCOLS.get(protocol, "protocol")(reference, cand, mean)


def summarise(values: np.ndarray) -> dict[str, Any]:
    """Counts above each threshold and the means (all n images; the ten best) of one SSIM per training image.

    NaN marks an image no candidate was matched to (fewer candidates than images): it counts above no threshold
    and scores 0 in the means, and ``unmatched`` says how many there were.  All NaN: the SSIM is not defined
    for these images (smaller than its window), said as ``defined: false`` with the reason."""
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).all():
        return {"defined": False, "reason": "images smaller than the 11x11 window"}
    unmatched = np.isnan(v)
    v = np.where(unmatched, 0.0, v)
    top = np.sort(v)[::-1][:10]
    return {
        **{f"count_gt_{t}": int((v > t).sum()) for t in THRESHOLDS},
        "mean_top10": float(top.mean()),
        "mean": float(v.mean()),
        "unmatched": int(unmatched.sum()),
    }


def score_pairs(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Paper and classic SSIM, and the per-pixel L2 ||t - c||_2 / sqrt(C H W), of each reference image t with its
    matched candidate c (mean added, min-max scaled); unmatched rows (idx < 0) score NaN.  Also returns the
    scaled matched images ('matched')."""
    ok = idx >= 0
    matched = shown(cand[torch.as_tensor(np.maximum(idx, 0))], mean)
    rows = torch.as_tensor(np.flatnonzero(ok))
    out = {"paper": np.full(len(idx), np.nan), "classic": np.full(len(idx), np.nan), "l2": np.full(len(idx), np.nan),
           "matched": matched.numpy()}
    out["paper"][ok] = ssim_paper(reference[rows], matched[rows]).numpy()
    out["classic"][ok] = ssim_classic(reference[rows], matched[rows]).numpy()
    diff = (reference[rows] - matched[rows]).reshape(len(rows), -1)
    out["l2"][ok] = (diff.norm(dim=1) / diff.shape[1] ** 0.5).numpy()
    return out


def summarise_l2(values: np.ndarray, k: int = 10) -> dict[str, Any]:
    """The per-pixel L2 of the matched pairs: their mean (Iurada et al.'s measure under the optimal permutation),
    the mean of the ``k`` smallest, and how many images no candidate was matched to (left out of the means;
    null, with the count, when there is no matched pair)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    return {"mean": float(ok.mean()) if len(ok) else None, f"mean_best{k}": float(np.sort(ok)[:k].mean()) if len(ok) else None,
            "unmatched": int(len(v) - len(ok))}


def preferred(s: dict[str, np.ndarray]) -> np.ndarray:
    """Per-image SSIMs of ``score_pairs`` as the headline reads them: classic where defined, else the paper's."""
    return s["classic"] if np.isfinite(s["classic"]).any() else s["paper"]


def protocol_counts(proto: str, reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor,
                    record: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    """SSIM counts of one candidate set under one field protocol (for the controls); the per-image SSIMs go
    into ``record[name]`` (classic where defined, else paper) for the evidence picture."""
    idx, _ = match(proto, reference, cand, mean)
    s = score_pairs(reference, cand, mean, idx)
    record[name] = preferred(s)
    return {"ssim_paper": summarise(s["paper"]), "ssim_classic": summarise(s["classic"]), "l2_per_pixel": summarise_l2(s["l2"])}


def protocol_informative(entry: dict[str, Any], n: int) -> dict[str, bool]:
    """Per SSIM kind at 0.4: does the perfect attack beat the held-out images it also matches, and every null,
    by at least n / 2?"""
    out = {}
    for kind in ("ssim_paper", "ssim_classic"):
        pos = entry["positive_control"]["train"][kind]
        if not pos.get("defined", True):
            continue
        neg = [entry["positive_control"]["heldout"][kind]["count_gt_0.4"]] if entry["positive_control"]["heldout"] else []
        neg += [v[kind]["count_gt_0.4"] for v in entry["null_controls"].values()]
        out[kind] = bool(pos["count_gt_0.4"] - max(neg, default=0) >= n / 2)
    return out


def evaluate(
    candidates: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray | None,
    mean: np.ndarray,
    train_labels: np.ndarray | None = None,
    runs_unioned: int = 1,
    extra_nulls: dict[str, np.ndarray] | None = None,
    rule: HeadlineRule = HeadlineRule(),
    train_indices: list[int] | np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score centred ``candidates`` (m, C, H, W) against raw ``train`` images in [0, 1].

    ``heldout``: raw images the victim never saw; the first n are the held-out control of every protocol, and
    all of them the pool of the headline's rule (:mod:`.headline`).  ``extra_nulls``: further named negative
    controls in centred space (a shadow victim's candidates, user files).  ``train_indices``: the training
    images' indices in their dataset split, for the per-image table.  Returns (metrics for metrics.json,
    per-protocol pairs and per-set similarities for pictures, and under ``"exposure"`` the
    :class:`~.exposure.Exposure`, None without held-out images).
    """
    cand = torch.as_tensor(np.asarray(candidates, dtype=np.float64))
    tr = torch.as_tensor(np.asarray(train, dtype=np.float64))
    ho = None if heldout is None else torch.as_tensor(np.asarray(heldout, dtype=np.float64))
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(1, *tr.shape[1:])
    if cand.shape[1:] != tr.shape[1:]:
        raise ValueError(f"candidates have image shape {tuple(cand.shape[1:])}, training images {tuple(tr.shape[1:])}")
    n = int(tr.shape[0])
    control = None if ho is None else ho[:n]
    check_null_names(list(extra_nulls or {}))
    nulls = null_sets(cand, ho, mu, rule.null_seed, n)
    nulls.update({k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in (extra_nulls or {}).items()})
    head, sims, details = headline_counts(cand, tr, ho, mu, nulls, rule)
    exposure = exposure_of(details, train_indices)
    gray = tr.shape[1] == 1
    metrics: dict[str, Any] = {
        "headline": head,
        "n": n,
        "m": int(cand.shape[0]),
        "runs_unioned": int(runs_unioned),
        "n_heldout_control": 0 if control is None else int(control.shape[0]),
        "n_heldout_pool": 0 if ho is None else int(ho.shape[0]),
        "extraction_score": {
            "metric": "l2" if gray else "ncc",
            "value": extraction_score(cand, tr - mu, "l2" if gray else "ncc"),
        },
        "exposure": None if exposure is None else exposure.to_dict(),
        "protocols": {},
    }
    pairs: dict[str, Any] = {"headline": {"similarities": sims, "similarity": head["similarity"]}, "exposure": exposure}
    truth = tr - mu
    for proto in PROTOCOLS:
        idx, curve = match(proto, tr, cand, mu)
        s = score_pairs(tr, cand, mu, idx)
        dist = {"attack": preferred(s)}
        entry: dict[str, Any] = {
            "ssim_paper": summarise(s["paper"]),
            "ssim_classic": summarise(s["classic"]),
            "l2_per_pixel": summarise_l2(s["l2"]),
            "unique_candidates_used": int(len(np.unique(idx[idx >= 0]))),
            "control": None,
            "above_control": None,
            "null_controls": {name: protocol_counts(proto, tr, c, mu, dist, name) for name, c in nulls.items()},
            "positive_control": {"train": protocol_counts(proto, tr, truth, mu, dist, "positive"),
                                 "heldout": None if control is None else protocol_counts(proto, control, truth, mu, {}, "")},
        }
        entry["informative"] = protocol_informative(entry, n)
        curve_c = None
        if control is not None:
            idx_c, curve_c = match(proto, control, cand, mu)
            s_c = score_pairs(control, cand, mu, idx_c)
            dist["heldout"] = preferred(s_c)
            entry["control"] = {"ssim_paper": summarise(s_c["paper"]), "ssim_classic": summarise(s_c["classic"]),
                                "l2_per_pixel": summarise_l2(s_c["l2"])}
            entry["above_control"] = {
                f"ssim_paper_gt_{t}": entry["ssim_paper"][f"count_gt_{t}"] - entry["control"]["ssim_paper"][f"count_gt_{t}"]
                for t in THRESHOLDS
            }
        if train_labels is not None:
            labels = np.asarray(train_labels)
            entry["per_class_ssim_paper_gt_0.4"] = {
                str(int(c)): int((s["paper"][labels == c] > 0.4).sum()) for c in np.unique(labels)
            }
        if curve is not None:
            entry["l2_curve"] = [float(v) for v in curve]
            entry["l2_curve_control"] = None if curve_c is None else [float(v) for v in curve_c]
        metrics["protocols"][proto] = entry
        pairs[proto] = {
            "train": tr.numpy(),
            "matched": s["matched"],
            "ssim": s["paper"],
            "index": idx,
            "similarities": dist,
        }
    metrics["paper_measures"] = paper_measures(metrics["protocols"])
    return metrics, pairs


#: the papers' continuous measures, read from the protocols: (protocol, SSIM or l2_per_pixel, field); SSIM is the
#: classic 11x11 one where the window fits, the paper's window-3 one on smaller images (as the headline reads it)
PAPER_MEASURES = (("hungarian", "ssim", "mean"), ("hungarian", "ssim", "mean_top10"), ("loo_greedy", "ssim", "mean"),
                  ("loo_greedy", "ssim", "mean_top10"), ("l2_permutation", "l2_per_pixel", "mean"),
                  ("haim_nn", "ssim", "count_gt_0.4"))


def paper_measures(protocols: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of :data:`PAPER_MEASURES` for the attack and under the same protocol for its controls: the held-out
    control, the null set nearest to the training images (the largest SSIM, the smallest L2: the bar a leak must
    clear) and the true images.  ``closer``: "larger" or "smaller" values mean candidates nearer the images."""
    rows = []
    for proto, kind, field in PAPER_MEASURES:
        e = protocols.get(proto)
        if e is None:
            continue
        key = kind
        if kind == "ssim":
            key = "ssim_classic" if e["ssim_classic"].get("defined", True) else "ssim_paper"
        value = lambda d: None if not d else (d.get(key) or {}).get(field)  # noqa: E731
        nulls = [v for v in (value(c) for c in e["null_controls"].values()) if v is not None]
        larger = kind == "ssim"
        rows.append({"protocol": proto, "measure": f"{key} {field}", "closer": "larger" if larger else "smaller",
                     "attack": value(e), "heldout": value(e.get("control")),
                     "nulls_nearest": (max(nulls) if larger else min(nulls)) if nulls else None,
                     "true_images": value(e["positive_control"]["train"])})
    return rows


def headline(metrics: dict[str, Any]) -> str:
    """Two lines for the terminal: the field's Haim-protocol counts beside the held-out control (for comparison
    with papers), then the honest headline (the CLI's last line)."""
    p = metrics["protocols"]["haim_nn"]
    paper, classic = p["ssim_paper"], p["ssim_classic"]
    line = f"field protocol (Haim NN, not a claim): n={metrics['n']} m={metrics['m']}, {paper['count_gt_0.4']} with SSIM > 0.4"
    if p["control"] is not None:
        line += f" (held-out {p['control']['ssim_paper']['count_gt_0.4']})"
    if classic.get("defined", True):
        line += f", classic SSIM > 0.4: {classic['count_gt_0.4']}"
        if p["control"] is not None:
            line += f" (held-out {p['control']['ssim_classic']['count_gt_0.4']})"
    return line + "\n" + headline_line(metrics["headline"])
