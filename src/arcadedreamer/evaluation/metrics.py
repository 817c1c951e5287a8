"""Image metrics on frames in [0, 1]: pure functions, tested on hand-computed values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arcadedreamer.data.preprocessing import psnr as psnr_from_mse  # one PSNR for the project


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR of the mean squared error over all the frames given (one number for a set of frames)."""
    return psnr_from_mse((pred.float() - target.float()).pow(2).mean().item())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, 11×11 Gaussian window, σ 1.5, K1 .01, K2 .03).

    (..., H, W) in [0, 1] → (...) values in [-1, 1]; 1 for identical frames.
    """
    shape = pred.shape[:-2]
    x = pred.float().reshape(-1, 1, *pred.shape[-2:])
    y = target.float().reshape(-1, 1, *target.shape[-2:])
    window = _gaussian_window().to(x.device)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)  # "valid" windows, as the reference implementation

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(shape)


def moving_mask(last_context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixels that changed between the last real frame and the target frame (bool)."""
    return (last_context.float() - target.float()).abs() > 0.5 / 255.0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """MSE over the masked pixels only; NaN when nothing is masked."""
    count = mask.sum().item()
    if count == 0:
        return math.nan
    return ((pred.float() - target.float()).pow(2) * mask).sum().item() / count
