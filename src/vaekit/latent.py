"""Geometry of the latent space for figures: 2-D views of codes, planes and grids of codes, paths between codes.

Functions of encoded means, in numpy (and torch's inverse normal CDF for the grids); `plots.py` and `animation.py`
draw what these compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vaekit.errors import VaekitError

Projection = Literal["pca", "tsne"]


def project_to_plane(mu: np.ndarray, projection: Projection = "pca", seed: int = 0) -> tuple[np.ndarray, tuple[str, str], str]:
    """Encoded means (N, latent) -> 2-D points, the two axis names, and what was done (for titles).

    A 2-D latent is shown as it is; a larger one through PCA, or t-SNE (van der Maaten & Hinton, 2008).
    """
    latent = mu.shape[1]
    if projection not in ("pca", "tsne"):
        raise VaekitError(f"unknown projection {projection!r}; choose pca or tsne")
    if latent == 1:
        return np.column_stack([mu[:, 0], np.zeros(len(mu))]), ("z₁", ""), "1-D latent"
    if latent == 2:
        return mu, ("z₁", "z₂"), "2-D latent"
    if len(mu) < 2:  # one point has no directions of spread
        return np.zeros((len(mu), 2)), ("PC 1", "PC 2"), f"a single {latent}-D mean"
    if projection == "pca":
        origin, u, v, share = principal_directions(mu)
        explained = f"{100 * share:.0f}% of the variance" if np.isfinite(share) else "no variance"
        return (mu - origin) @ np.stack([u, v], 1), ("PC 1", "PC 2"), f"PCA of {latent}-D means ({explained})"
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (len(mu) - 1) / 3))  # t-SNE needs fewer neighbours than points
    points = TSNE(2, init="pca", perplexity=perplexity, random_state=seed % 2**32).fit_transform(mu)  # (numpy's legacy seeds are 32-bit)
    return points, ("t-SNE 1", "t-SNE 2"), f"t-SNE of {latent}-D means"


def principal_axes(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, the first two principal directions as rows (2, latent), the share of the variance each explains)
    of the rows of mu (at least two); the shares are NaN when the rows do not vary.

    Each direction's largest component is made positive, so figures of one model at different
    training steps do not flip at random.
    """
    origin = mu.mean(0)
    _, singular, vt = np.linalg.svd(mu - origin, full_matrices=False)
    axes = vt[:2] * np.sign(vt[[0, 1], np.abs(vt[:2]).argmax(1)])[:, None]
    variance = singular**2
    shares = variance[:2] / variance.sum() if variance.sum() > 0 else np.full(2, math.nan)
    return origin, axes, shares


def principal_directions(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, first and second principal directions, share of the variance they explain together) of the rows of mu."""
    origin, axes, shares = principal_axes(mu)
    return origin, axes[0], axes[1], float(shares.sum())


@dataclass(frozen=True)
class LatentPlane:
    """The plane z = origin + a * u + b * v through latent space on which a grid of codes is decoded."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    names: tuple[str, str] = ("z₁", "z₂")
    description: str = ""  # for titles; empty for the plain 2-D latent


def latent_plane(latent: int, mu: np.ndarray | None = None, dims: tuple[int, int] | None = None) -> LatentPlane:
    """The plane of a manifold grid.

    A 2-D latent: the latent itself. A larger one: along the two latent dimensions `dims`
    (counted from 0), or else along the top two principal directions of the encoded means `mu`;
    the other coordinates are held at the mean of `mu` (at 0, the prior's mean, without data).
    """
    eye = np.eye(latent)
    if dims is None and latent == 2:
        return LatentPlane(np.zeros(2), eye[0], eye[1])
    if dims is not None:
        i, j = dims
        if i == j or not (0 <= i < latent and 0 <= j < latent):
            raise VaekitError(f"the grid needs two different latent dimensions in 0..{latent - 1}, got {i},{j}")
        origin = np.zeros(latent) if mu is None else mu.mean(0)
        origin[[i, j]] = 0.0
        rest = "the rest at the data mean" if mu is not None else "the rest at 0"
        return LatentPlane(origin, eye[i], eye[j], (f"z{subscript(i + 1)}", f"z{subscript(j + 1)}"),
                           f"dimensions {i + 1} and {j + 1}, {rest}")
    if latent < 2:
        raise VaekitError("a manifold grid needs a latent of at least 2 dimensions")
    if mu is None or len(mu) < 2:
        raise VaekitError(f"a {latent}-D latent needs encoded data (or two chosen dimensions) to place the grid")
    origin, u, v, _ = principal_directions(mu)
    return LatentPlane(origin, u, v, ("PC 1", "PC 2"), "the top two principal directions, through the data mean")


def subscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def grid_coordinates(n: int, span: tuple[float, float] = (-4.0, 4.0), ppf: bool = False) -> np.ndarray:
    """n coordinates along one axis: evenly over span (its centre for n = 1), or (ppf) N(0, 1)'s quantiles at (i + 1/2) / n.

    The inverse-CDF grid gives every cell the same prior mass. The original's percentiles ran
    from 0 to 1 exactly (clipped to 1e-16), putting the edge rows at 8 sigma; cell midpoints don't.
    """
    if n < 1:
        raise VaekitError(f"a grid needs at least 1 point per side, got {n}")
    if ppf:
        return torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).numpy()
    if n == 1:
        return np.array([(span[0] + span[1]) / 2])
    return np.linspace(span[0], span[1], n)


def grid_codes(plane: LatentPlane, coords: np.ndarray) -> np.ndarray:
    """z[r, c] = origin + coords[c] * u + coords[n-1-r] * v, shape (n, n, latent): b grows upwards, like a y axis."""
    a, b = np.meshgrid(coords, coords[::-1])
    return plane.origin + a[..., None] * plane.u + b[..., None] * plane.v


def interpolate(z_a: np.ndarray, z_b: np.ndarray, n: int, spherical: bool = False) -> np.ndarray:
    """n codes from z_a to z_b, both included: on the line, or on the great circle (slerp; Shoemake, 1985)."""
    if n < 2:
        raise VaekitError(f"an interpolation needs at least 2 steps, got {n}")
    t = np.linspace(0.0, 1.0, n)[:, None]
    if spherical:
        norms = float(np.linalg.norm(z_a) * np.linalg.norm(z_b))
        angle = math.acos(float(np.clip(z_a @ z_b / norms, -1, 1))) if norms > 0 else 0.0
        if math.pi - angle < 1e-6:
            raise VaekitError("the two codes point in opposite directions: no one great circle joins them; "
                              "interpolate on the line instead")
        if angle > 1e-6:  # parallel codes: the line and the circle agree
            return (np.sin((1 - t) * angle) * z_a + np.sin(t * angle) * z_b) / math.sin(angle)
    return (1 - t) * z_a + t * z_b


def loop_path(z: np.ndarray, frames_per_transition: int) -> np.ndarray:
    """A closed path through the codes z (K, latent), back to the first: K * frames codes, no repeats."""
    if len(z) < 2:
        raise VaekitError("a morph needs at least two examples")
    if frames_per_transition < 1:
        raise VaekitError(f"a morph needs at least 1 frame per transition, got {frames_per_transition}")
    t = np.arange(frames_per_transition)[:, None] / frames_per_transition
    ends = np.roll(z, -1, axis=0)
    return np.concatenate([(1 - t) * start + t * end for start, end in zip(z, ends)])
