"""SSIM (Wang et al. 2004), batched over image pairs.

    SSIM(x, y) = mean over C,H,W of  (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

with local statistics from a Gaussian window, C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 1.

* :func:`ssim_paper`: what Haim/Buzaglo report: ``kornia.metrics.ssim(x, y, window_size=3)``: window 3,
  sigma 1.5, 'same' output with reflect padding, eps 1e-12 in the denominator.
* :func:`ssim_classic`: the original 11x11, sigma 1.5 window over the valid region (equal to
  ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=1)``);
  NaN for images smaller than the window.
* :func:`ssim_cross`: the (len(a), len(b)) matrix of SSIM(a_i, b_j) for every pair, either kind, computed in
  chunks of pairs with each image's local mean and variance filtered once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(size: int, sigma: float, dtype=torch.float64) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(img: torch.Tensor, g: torch.Tensor, pad: bool) -> torch.Tensor:
    c = img.shape[1]
    k = len(g)
    if pad:
        img = F.pad(img, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    kx = g.view(1, 1, 1, k).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, k, 1).repeat(c, 1, 1, 1)
    return F.conv2d(F.conv2d(img, kx, groups=c), ky, groups=c)


WINDOWS = {"paper": (3, 1.5, True, 1e-12), "classic": (11, 1.5, False, 0.0)}


def _ssim(x: torch.Tensor, y: torch.Tensor, size: int, sigma: float, pad: bool, eps: float) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: expected two (N, C, H, W) batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not pad and min(x.shape[-2:]) < size:
        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
    g = gaussian_window(size, sigma)
    mx, my = _filter(x, g, pad), _filter(y, g, pad)
    sxx = _filter(x * x, g, pad) - mx**2
    syy = _filter(y * y, g, pad) - my**2
    sxy = _filter(x * y, g, pad) - mx * my
    num = (2 * mx * my + C1) * (2 * sxy + C2)
    den = (mx**2 + my**2 + C1) * (sxx + syy + C2)
    return (num / (den + eps)).mean(dim=(1, 2, 3))


def ssim_paper(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pair SSIM with kornia's window-3 settings (the number Haim et al. and Buzaglo et al. report)."""
    return _ssim(x, y, 3, 1.5, pad=True, eps=1e-12)


def ssim_classic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pair SSIM with the classic 11x11 Gaussian window (valid region); NaN below 11x11."""
    return _ssim(x, y, 11, 1.5, pad=False, eps=0.0)


def ssim_cross(a: torch.Tensor, b: torch.Tensor, kind: str = "classic", pairs_per_chunk: int = 4096) -> torch.Tensor:
    """SSIM of every pair (a_i, b_j): an (len(a), len(b)) float64 matrix, same formula as :func:`ssim_paper`
    (``kind='paper'``) or :func:`ssim_classic` (``kind='classic'``, all NaN below 11x11)."""
    size, sigma, pad, eps = WINDOWS[kind]
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"ssim_cross: expected (N, C, H, W) batches of one image shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    out = torch.full((a.shape[0], b.shape[0]), float("nan"), dtype=torch.float64)
    if (not pad and min(a.shape[-2:]) < size) or a.shape[0] == 0 or b.shape[0] == 0:
        return out
    g = gaussian_window(size, sigma)
    ma, mb = _filter(a, g, pad), _filter(b, g, pad)
    va, vb = _filter(a * a, g, pad) - ma**2, _filter(b * b, g, pad) - mb**2
    rows = max(1, pairs_per_chunk // b.shape[0])
    for i in range(0, a.shape[0], rows):
        ai = a[i : i + rows]
        k = ai.shape[0]
        prod = (ai[:, None] * b[None]).reshape(-1, *a.shape[1:])
        mab = ma[i : i + k, None] * mb[None]
        sab = _filter(prod, g, pad).reshape(k, b.shape[0], *ma.shape[1:]) - mab
        num = (2 * mab + C1) * (2 * sab + C2)
        den = (ma[i : i + k, None] ** 2 + mb[None] ** 2 + C1) * (va[i : i + k, None] + vb[None] + C2)
        out[i : i + k] = (num / (den + eps)).mean(dim=(2, 3, 4))
    return out


def ssim_kind(shape) -> str:
    """The SSIM a headline uses for images of ``shape`` (..., H, W): classic 11x11 where the window fits, else
    the paper's window 3."""
    return "classic" if min(shape[-2:]) >= WINDOWS["classic"][0] else "paper"
