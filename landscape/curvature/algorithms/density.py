"""The eigenvalue spectral density of any operator by stochastic Lanczos quadrature (as PyHessian's density())."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from landscape.curvature.algorithms.lanczos import FLOAT32_FLOOR, LanczosRun, gaussian_start

if TYPE_CHECKING:
    from landscape.curvature.operators.base import SymmetricOperator


def slq_nodes(op: SymmetricOperator, start: torch.Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of one unit probe q: Ritz values theta_j and weights tau_j = (S_0j)^2.

    sum_j tau_j f(theta_j) approximates q^T f(H) q; it is exact for polynomials of degree < 2 * steps.
    Stops early when the Krylov space is invariant (residual at float32 rounding); NaNs if not finite.
    """
    run = LanczosRun(op, start, steps)
    while run.k < steps:
        if not run.step():
            return np.full(1, np.nan), np.full(1, np.nan)
        if run.beta <= FLOAT32_FLOOR * max(abs(t) for t in run.alphas + run.betas + [run.beta]):
            break                                           # invariant: T holds the probe's whole measure
    theta, S = run.ritz()
    return theta, S[0] ** 2


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid_points: int = 1000,
                     sigma: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """sum_j w_j N(x; theta_j, sigma^2) on a grid over [min - 5 sigma, max + 5 sigma]: (grid, density).

    sigma defaults to 1% of the span of the nodes (or of their magnitude when they coincide).
    """
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1e-12)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_points)
    z = (grid[:, None] - nodes[None, :]) / sigma                             # (grid_points, nodes)
    density = (weights[None, :] * np.exp(-0.5 * z ** 2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return grid, density


def esd(op: SymmetricOperator, n_probes: int = 1, n_steps: int = 100, seed: int = 0, grid_points: int = 1000,
        sigma: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalue spectral density by stochastic Lanczos quadrature: (grid, density, nodes, weights).

    Each probe is a Gaussian vector normalised to 1 run through n_steps Lanczos steps; its Ritz values
    are quadrature nodes with weights tau_j (summing to 1), averaged over the probes (weights / n_probes),
    so sum(weights * nodes**p) estimates tr(H^p) / P. The density smooths the nodes with Gaussians of
    width sigma (gaussian_density) and integrates to about 1. NaNs everywhere if a product is not finite.
    """
    gen = torch.Generator().manual_seed(seed)
    steps = min(n_steps, op.dim)
    parts = [slq_nodes(op, gaussian_start(op.dim, op.device, gen), steps) for _ in range(n_probes)]
    nodes = np.concatenate([t for t, _ in parts])
    weights = np.concatenate([w for _, w in parts]) / n_probes
    if not np.isfinite(nodes).all():
        return np.full(grid_points, np.nan), np.full(grid_points, np.nan), nodes, weights
    grid, density = gaussian_density(nodes, weights, grid_points, sigma)
    return grid, density, nodes, weights
