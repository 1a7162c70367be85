"""Spatial coordinate augmentation: each local descriptor carries where it was taken.

Not in the paper. Sanchez, Perronnin & de Campos (Pattern Recognition Letters 2012, "Modeling the spatial
layout of images beyond spatial pyramids") append a patch's position to its (PCA-projected) descriptor
before the GMM is learned and the FV computed:

    x_t  <-  [ x_t ,  s (u_t / W - 1/2) ,  s (v_t / H - 1/2) ]                       (D -> D + 2)

with (u_t, v_t) the patch centre in the pixels of the H x W image and s the scale of the two new
coordinates (``xy``). The GMM then models where a visual word appears as well as what it looks like, and
the FV gains, per Gaussian, the gradient of the log-likelihood w.r.t. the mean and variance of that
position (eqs. 17-18 on the two extra dimensions: 4K more dimensions per pyramid region for means +
sigmas). It adds the layout information a spatial pyramid adds with 2 instead of D extra dimensions per
Gaussian, and works alongside one (the pyramid's regions are still taken on the raw positions).

The scale s does not change the FV of a given GMM (eqs. 17-18 divide by sigma), only the GMM that EM
finds: s against the spread of the PCA dimensions (variances ~0.0015-0.05 for 64-d PCA'd SIFT; a uniform
coordinate in [-1/2, 1/2] has variance 1/12) sets how much position pulls the Gaussians apart.
"""
from __future__ import annotations

import numpy as np

from .validation import as_float32_matrix, check_image_shape

__all__ = ["append_xy", "normalised_xy"]


def normalised_xy(positions, image_shape) -> np.ndarray:
    """(T, 2) float32 (u / W - 1/2, v / H - 1/2) of patch centres ``positions`` (T, 2) = (u, v) in the
    pixels of an image of ``image_shape`` (H, W, ...): in [-1/2, 1/2) inside the image."""
    pos = as_float32_matrix(positions, "positions", n_features=2)
    H, W = check_image_shape(image_shape)
    out = np.empty((pos.shape[0], 2), np.float32)
    out[:, 0] = pos[:, 0] / W - 0.5
    out[:, 1] = pos[:, 1] / H - 0.5
    return out


def append_xy(X, positions, image_shape, scale: float) -> np.ndarray:
    """``X`` (T, D) with the two scaled normalised coordinates of its patches appended: (T, D + 2) float32,
    C-contiguous (module docstring). ``scale`` must be > 0."""
    X = as_float32_matrix(X, "X")
    scale = float(scale)
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    xy = normalised_xy(positions, image_shape)
    if len(xy) != len(X):
        raise ValueError(f"positions has {len(xy)} rows but X has {len(X)}")
    out = np.empty((X.shape[0], X.shape[1] + 2), np.float32)
    out[:, :-2] = X
    out[:, -2:] = xy * np.float32(scale)
    return out
