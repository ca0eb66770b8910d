"""Pictures of what was recovered: pair grids sorted by SSIM, candidate sheets, Loo's L2 curve, the attack's loss
curve, the exposure ROC and per-image thumbnails.  Every function takes a path or a binary file object."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave


class _Figures:
    """``_figures.subplots`` without pyplot: a bare :class:`~matplotlib.figure.Figure` renders to a file with the
    Agg canvas and never touches the process-wide backend (a notebook's stays as it is)."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, figsize=None, squeeze: bool = True):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)

    @staticmethod
    def close(fig) -> None:
        fig.clear()


_figures = _Figures()


def _to_hwc(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def pair_grid(train: np.ndarray, matched: np.ndarray, ssim: np.ndarray, path: str | Path, title: str,
              highlight: np.ndarray | None = None, max_pairs: int = 100) -> None:
    """Training images beside their matched reconstructions, best SSIM first (SSIM printed above each pair,
    green where ``highlight`` is set; by default where SSIM > 0.4)."""
    highlight = np.nan_to_num(ssim, nan=-1) > 0.4 if highlight is None else highlight
    order = np.argsort(-np.nan_to_num(ssim, nan=-1))[:max_pairs]
    cols = min(10, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = _figures.subplots(rows, cols, figsize=(1.6 * cols, 1.0 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    gray = train.shape[1] == 1
    for k, i in enumerate(order):
        a, b = _to_hwc(train[i]), _to_hwc(matched[i])
        sep = np.ones((a.shape[0], 1) + a.shape[2:])
        ax = axes.ravel()[k]
        ax.imshow(np.concatenate([a, sep, b], axis=1), cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{ssim[i]:.2f}", fontsize=7, pad=1, color="green" if highlight[i] else "black")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)
    _figures.close(fig)


def candidate_grid(x_centred: np.ndarray, mean: np.ndarray, path: str | Path, max_images: int = 100) -> None:
    """Candidates (mean added back, min-max scaled per image), no ground truth needed."""
    x = x_centred[:max_images] + mean
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(1), flat.max(1)
    x = (x - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None]
    cols = min(20, len(x))
    rows = math.ceil(len(x) / cols)
    fig, axes = _figures.subplots(rows, cols, figsize=(0.8 * cols, 0.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k in range(len(x)):
        axes.ravel()[k].imshow(_to_hwc(x[k]), cmap="gray" if x.shape[1] == 1 else None, vmin=0, vmax=1)
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    _figures.close(fig)


def l2_curve_plot(curve: list[float], control: list[float] | None, path: str | Path) -> None:
    """Loo's reconstruction curve: greedy one-to-one L2 distances, training set vs held-out control."""
    fig, ax = _figures.subplots(figsize=(4.5, 3.2))
    ax.plot(np.arange(1, len(curve) + 1), curve, label="training set")
    if control is not None:
        ax.plot(np.arange(1, len(control) + 1), control, label="held-out control", linestyle="--")
    ax.set_xlabel("matched pair (greedy order)")
    ax.set_ylabel("L2 distance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figures.close(fig)


def identify_plot(rep: dict, path) -> None:
    """Diagnostics of ``identify``: neuron-span and moment-tensor spectra, and (if scored) the errors."""
    score = rep.get("score")
    fig, axes = _figures.subplots(1, 2 if score else 1, figsize=(10 if score else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.semilogy(range(1, len(rep["neuron_span_spectrum"]) + 1), np.maximum(rep["neuron_span_spectrum"], 1e-18),
                "o-", label="neuron matrix W")
    if rep.get("tensor_spectrum"):
        ax.semilogy(range(1, len(rep["tensor_spectrum"]) + 1), np.maximum(rep["tensor_spectrum"], 1e-18), "s-",
                    label="T unfolding")
    ax.set_xlabel("index")
    ax.set_ylabel("relative singular value")
    ax.set_title(f"{rep['verdict']} (alpha {rep['alpha']})")
    ax.legend()
    if score:
        ax = axes[0, 1]
        rec = score["recovered"].get("rel_errors") or [1.0] * score["n_active"]
        base = score["neurons_as_data"].get("rel_errors") or [1.0] * score["n_active"]
        idx = np.arange(len(rec))
        ax.bar(idx - 0.2, np.maximum(rec, 1e-17), 0.4, label="identify")
        ax.bar(idx + 0.2, np.maximum(base, 1e-17), 0.4, label="neurons as data")
        ax.set_yscale("log")
        ax.set_xlabel("active training sample")
        ax.set_ylabel("relative L2 error")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figures.close(fig)


SET_STYLES = {"attack": ("training images (attack)", "C0", "-"), "heldout": ("held-out images (attack)", "C1", "--"),
              "positive": ("true images as candidates", "C2", ":"), "null_mean": ("null: input mean", "C3", "-."),
              "null_noise": ("null: noise", "C4", "-."), "null_heldout_mean": ("null: another subset's mean", "C5", "-."),
              "null_typical": ("null: typical images", "C7", "-."),
              "shadow": ("null: shadow victim's attack", "C6", "-.")}


def evidence_plot(pairs: dict, metrics: dict, path: str | Path) -> None:
    """Per protocol, the ECDF of each reference image's similarity to its matched candidate, for the attack
    on training and on held-out images, every null set and the true images: where the attack's curve leaves
    the nulls and held-out curves is the evidence of a leak."""
    panels = [("headline", "headline rule (one to one)")] + [(p, p) for p in metrics["protocols"]]
    fig, axes = _figures.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3), squeeze=False)
    kind = pairs["headline"]["similarity"].split(" (")[0]
    for ax, (key, title) in zip(axes.ravel(), panels):
        sims = pairs[key]["similarities"] if key in pairs else {}
        for k, (name, vals) in enumerate(sorted(sims.items())):
            v = np.sort(np.asarray(vals, dtype=np.float64)[np.isfinite(vals)])
            if not len(v):
                continue
            label, color, ls = SET_STYLES.get(name, (name.replace("_", " "), f"C{7 + k % 3}", "-."))
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, color=color, linestyle=ls)
        if key == "headline" and metrics["headline"].get("threshold") is not None:
            ax.axvline(metrics["headline"]["threshold"], color="gray", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{kind} to matched candidate", fontsize=8)
        ax.set_ylabel("fraction of images", fontsize=8)
        ax.set_xlim(-0.2, 1.02)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    head = metrics["headline"]
    fig.suptitle(f"recovered {head.get('recovered')} of {head['n']} (headline); curves to the right = more similar",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figures.close(fig)


def loss_curve_plot(histories: dict[str, list[dict]], path) -> bool:
    """The attack's objective against the iteration, one line per run (from loss.json's ``history``: entries
    with ``iteration`` and ``total``); a log scale when every value is positive and they span a decade.  False when no run has a
    history (nothing drawn)."""
    curves = {name: ([int(h["iteration"]) for h in hist if "total" in h], [float(h["total"]) for h in hist if "total" in h])
              for name, hist in histories.items()}
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        return False
    fig, ax = _figures.subplots(figsize=(5.5, 3.2))
    for name, (it, val) in curves.items():
        ax.plot(it, val, marker="." if len(it) < 30 else None, label=name)
    values = np.concatenate([np.asarray(v) for _, v in curves.values()])
    if np.all(values > 0) and values.max() > 10 * values.min():
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("attack objective (total)")
    if len(curves) > 1:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figures.close(fig)
    return True


def roc_plot(fpr: list[float], tpr: list[float], auc: float, path) -> None:
    """ROC of the exposure score (training images against held-out ones): linear axes, and log-log axes where
    the low false-positive rates the field reads attacks at are visible."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    lo_x = max(1e-4, 0.5 * fpr[fpr > 0].min()) if (fpr > 0).any() else 1e-3
    lo_y = max(1e-4, 0.5 * tpr[tpr > 0].min()) if (tpr > 0).any() else 1e-3
    fig, axes = _figures.subplots(1, 2, figsize=(8, 3.4), squeeze=False)
    for ax, log in zip(axes.ravel(), (False, True)):
        ax.step(fpr, tpr, where="post", label=f"attack (AUC {auc:.3f})")
        ax.plot([1e-4 if log else 0, 1], [1e-4 if log else 0, 1], color="gray", linestyle="--", linewidth=0.8, label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo_x, 1)
            ax.set_ylim(lo_y, 1.05)
        ax.set_xlabel("false-positive rate (held-out images)")
        ax.set_ylabel("true-positive rate (training images)")
        ax.set_title("log-log" if log else "linear", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figures.close(fig)


def thumbnail_png(img: np.ndarray) -> bytes:
    """One (C, H, W) image in [0, 1] as PNG bytes at its own resolution (grey for C = 1)."""
    buf = io.BytesIO()
    a = _to_hwc(np.asarray(img, dtype=np.float64))
    imsave(buf, a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, format="png")
    return buf.getvalue()
