"""Extreme eigenvalues (and eigenvectors) of a symmetric operator by Lanczos with full reorthogonalisation.

Works on any operator with dim, device and __call__ (curvature/operators). Vectors are float64 on the
device; only the small tridiagonal matrix T goes through NumPy/SciPy.

Start: the operator's gradient plus a random vector of the same length, where the operator offers a
gradient (op.gradient()); a random vector otherwise. Near a minimum the gradient lies mostly in the
top eigenvectors' span, so the top eigenvalue converges in fewer products than from a random start,
and the random half keeps the bottom of the spectrum (the smallest eigenvalue) in reach.

Stop: each wanted Ritz pair (theta_i, y_i) has residual r_i = |beta_k s_ki| (s_ki: last component of
the i-th eigenvector of T). There is an eigenvalue within r_i of theta_i, and, when the rest of the
spectrum is at least gap_i away, within r_i^2 / gap_i (Kato-Temple; gap_i is estimated by the distance
to the nearest other Ritz value). A pair has converged when r_i <= tol |theta_i|, or when
r_i^2 / gap_i <= tol |theta_i| and theta_i moved by at most 10 tol |theta_i| in the last step (the gap
estimate is only trusted once the Ritz value has settled; Lanczos converges superlinearly near the
end, so the error is then far below the last move). On a trained digits_cnn this stops at step 8 with
a true error of 7e-6; the residual bound alone stops at step 10, a settled move of tol at step 9.
When eigenvectors are wanted, their residual is r itself, and only the residual bound applies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

if TYPE_CHECKING:
    from landscape.curvature.operators.base import Device, SymmetricOperator

# Default Lanczos tolerance: the error estimate of each wanted eigenvalue, relative to itself.
LANCZOS_TOL = 1e-4
# Products are float32. Measured on a trained digits_cnn against float64 products, a product's error
# is up to 6e-7 ||H v|| (along the top eigenvector; 1e-8 ||H|| for a random unit v), and the top
# eigenvalue comes out within 2.4e-7 of the float64 one: Ritz values cannot be trusted much below
# a few 1e-7 ||H||. So no residual is asked to go below 5e-7 ||H|| (||H|| estimated by the largest
# |Ritz value|): a near-zero eigenvalue stops there instead of running to max_iter.
FLOAT32_FLOOR = 5e-7


class LanczosRun:
    """Lanczos tridiagonalisation with full reorthogonalisation: Q (k, P) orthonormal, Q H Q^T = T.

    T is tridiagonal with diagonal alphas (alpha_j = q_j^T H q_j) and off-diagonal betas; after k steps
    H Q^T = Q^T T + beta_k q_{k+1} e_k^T, so a Ritz pair (theta_i, Q^T s_i) of T has residual
    |beta_k s_ki| (s_ki: last component of the i-th eigenvector of T). The basis is float64 on the
    device and every new vector is reorthogonalised against all of it (float32 products lose
    orthogonality fast otherwise): one classical Gram-Schmidt pass, and a second one only when the first
    removed more than 1 - 1/sqrt(2) of the vector's norm (Daniel-Gragg-Kaufman-Stewart), in place. On a
    ResNet-18 (11M weights) two unconditional passes with temporaries took 0.6 s a step, half a product.
    """

    def __init__(self, op: SymmetricOperator, start: torch.Tensor, steps: int) -> None:
        self.op, self.steps = op, steps
        self.Q = torch.empty(steps, op.dim, dtype=torch.float64, device=start.device)   # (steps, P)
        self.q = start / start.norm()                   # next basis vector (P,), float64
        self.alphas, self.betas = [], []
        self.beta = 0.0                                 # norm of the residual after the last step
        self.w = None
        self.k = 0

    def step(self) -> bool:
        """One product and one column of T; False when the product is not finite."""
        k = self.k
        if k > 0:
            self.betas.append(self.beta)
            self.q = self.w / self.beta if self.beta > 0 else self.restart()
        self.Q[k] = self.q
        w = self.op(self.q.float()).double()
        if not torch.isfinite(w).all():
            return False
        alpha = float(w @ self.q)
        w.add_(self.q, alpha=-alpha)
        if k > 0:
            w.add_(self.Q[k - 1], alpha=-self.betas[-1])
        reorthogonalize(w, self.Q[:k + 1])
        self.alphas.append(alpha)
        self.beta, self.w, self.k = float(w.norm()), w, k + 1
        return True

    def restart(self) -> torch.Tensor:
        """A unit vector orthogonal to the basis, after an exactly invariant Krylov space (beta = 0)."""
        w = torch.randn(self.Q.shape[1], generator=torch.Generator().manual_seed(self.k), dtype=torch.float64)
        w = w.to(self.Q.device)
        reorthogonalize(w, self.Q[:self.k], passes=2)
        return w / w.norm()

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values theta (k,) ascending and the eigenvectors S (k, k) of T (columns)."""
        # LAPACK's tridiagonal solver: cheaper than a dense eigh of the k x k matrix
        import scipy.linalg           # (here, not at import: it costs 0.2 s of every command's start-up)
        return scipy.linalg.eigh_tridiagonal(np.array(self.alphas), np.array(self.betas))


def reorthogonalize(w: torch.Tensor, basis: torch.Tensor, passes: Optional[int] = None) -> torch.Tensor:
    """w -= basis^T (basis w), in place, for orthonormal rows `basis` (k, P): once, and again when the
    first pass shrank w below 1/sqrt(2) of its norm (passes=None), or `passes` times."""
    for i in range(passes or 2):
        before = float(w.norm()) if passes is None else 0.0
        w.addmv_(basis.T, basis @ w, alpha=-1.0)
        if passes is None and float(w.norm()) >= before / math.sqrt(2):
            break
    return w


@dataclass
class LanczosResult:
    """What lanczos() found. eigenvalues: (top_k,) largest first; eigenvectors: (top_k, P) unit float32."""
    eigenvalues: np.ndarray
    min_eig: float                          # NaN unless want_min
    eigenvectors: Optional[torch.Tensor]    # None unless want_vectors
    iterations: int                         # operator products used
    converged: bool                         # every wanted pair met the tolerance (False: stopped at max_iter)
    basis: Optional[torch.Tensor] = None    # (k, P) float64 orthonormal Krylov basis, with keep_basis
    alphas: Optional[np.ndarray] = None     # (k,) q_j^T H q_j for the basis rows: sum = tr(Q H Q^T)
    errors: Optional[np.ndarray] = None     # error estimate per wanted eigenvalue (top_k, then the smallest)

    @property
    def max_eig(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.eigenvalues).all())


def wanted_indices(k: int, top_k: int, want_min: bool) -> list[int]:
    """Indices into k ascending Ritz values: the top_k largest (largest first), then the smallest."""
    top = list(range(k - 1, max(k - 1 - top_k, -1), -1))
    return top + ([0] if want_min and 0 not in top else [])


def ritz_errors(theta: np.ndarray, last_row: np.ndarray, beta: float,
                wanted: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(residuals, estimated errors min(r, r^2 / gap)) of the wanted Ritz values."""
    residual = beta * np.abs(last_row[wanted])
    others = np.abs(theta[wanted][:, None] - theta[None, :])            # (wanted, k)
    others[np.arange(len(wanted)), wanted] = np.inf                     # not the value itself
    gap = others.min(axis=1) if len(theta) > 1 else np.full(len(wanted), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = np.where(gap > 0, residual ** 2 / gap, np.inf)
    return residual, np.minimum(residual, quadratic)


def ritz_converged(theta: np.ndarray, last_row: np.ndarray, beta: float, wanted: Sequence[int], tol: float,
                   previous: Optional[np.ndarray] = None, psd: bool = False, vectors: bool = False) -> bool:
    """Every wanted pair: residual <= bound, or residual^2/gap <= bound with theta settled (moved by at
    most 10 bound; see the module docstring); bound = max(tol |theta_i|, FLOAT32_FLOOR max|theta|). `previous`: the wanted
    Ritz values one step earlier (None: the residual bound alone). psd: the operator is positive
    semi-definite (a GGN, a Fisher), whose smallest eigenvalue sits in a continuum near 0: it is
    converged to tol max|theta| instead (it cannot be resolved relative to itself). vectors: the
    eigenvectors are wanted too, whose residual ||M y - theta y|| is r itself: the residual bound alone."""
    floor = np.full(len(wanted), FLOAT32_FLOOR * np.abs(theta).max())
    if psd and wanted[-1] == 0:
        floor[-1] = tol * np.abs(theta).max()
    bound = np.maximum(tol * np.abs(theta[wanted]), floor)
    residual, error = ritz_errors(theta, last_row, beta, wanted)
    settled = np.zeros(len(wanted), dtype=bool) if previous is None or vectors else \
        np.abs(theta[wanted] - previous) <= 10 * bound
    return bool(np.all((residual <= bound) | ((error <= bound) & settled)))


def gaussian_start(dim: int, device: Device, gen: torch.Generator) -> torch.Tensor:
    """A float64 Gaussian vector (dim,) drawn on the CPU (the same on every device), moved to device."""
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(device)


def start_vector(op: SymmetricOperator, seed: int, start: Union[str, torch.Tensor] = "auto") -> torch.Tensor:
    """The first Lanczos vector (float64): 'random', 'gradient' (op.gradient() plus an equal-length
    random part, where the operator has a finite, non-zero gradient), 'auto' (= gradient) or a tensor."""
    if torch.is_tensor(start):
        return start.to(op.device, torch.float64)
    random = gaussian_start(op.dim, op.device, torch.Generator().manual_seed(seed))
    if start == "random" or not hasattr(op, "gradient"):
        return random
    g = op.gradient()
    if g is None:
        return random
    g = g.detach().to(op.device, torch.float64)
    norm = float(g.norm())
    if not math.isfinite(norm) or norm == 0:
        return random
    return g / norm + random / random.norm()


def lanczos(op: SymmetricOperator, top_k: int = 1, tol: float = LANCZOS_TOL, max_iter: int = 100,
            seed: int = 0, want_min: bool = True, want_vectors: bool = False, keep_basis: bool = False,
            start: Union[str, torch.Tensor] = "auto", min_steps: int = 0) -> LanczosResult:
    """The top_k largest eigenvalues of op (and with want_min the smallest), by Lanczos.

    Stops when every wanted Ritz pair has converged to `tol` (see the module docstring) and at least
    min_steps products were made, after max_iter products, or when the Krylov space is the whole
    space. A product that is not finite (a diverged point) gives NaN eigenvalues instead of an error.
    `start`: see start_vector. An operator with `psd = True` has its smallest eigenvalue converged
    to tol times the largest (see ritz_converged). With want_vectors every wanted pair stops on its
    residual (that of the eigenvector), not on the eigenvalue's quadratic error estimate.
    """
    steps = min(max_iter, op.dim)
    if not 1 <= top_k <= steps:
        raise ValueError(f"top_k must be between 1 and min(max_iter, dimension) = {steps}, not {top_k}")
    first = start_vector(op, seed, start)
    if not torch.isfinite(first).all():
        return nan_result(top_k, op.dim, op.device, 0, want_vectors)
    run = LanczosRun(op, first, steps)
    psd = bool(getattr(op, "psd", False))
    need = max(top_k + int(want_min), min(min_steps, steps))
    converged, previous = False, None
    while run.k < steps:
        if not run.step():
            return nan_result(top_k, op.dim, op.device, run.k + 1, want_vectors)   # products, the bad one too
        theta, S = run.ritz()
        wanted = wanted_indices(run.k, top_k, want_min)
        exhausted = run.k == op.dim
        if exhausted or (run.k >= need and ritz_converged(theta, S[-1], run.beta, wanted, tol, previous, psd,
                                                          want_vectors)):
            converged = True
            break
        previous = theta[wanted_indices(run.k, top_k, want_min)] if run.k >= top_k + int(want_min) else None
    theta, S = run.ritz()
    top = wanted_indices(run.k, top_k, False)
    wanted = wanted_indices(run.k, top_k, want_min)
    _, errors = ritz_errors(theta, S[-1], run.beta, wanted)
    vectors = ritz_vectors(run.Q[:run.k], S[:, top]) if want_vectors else None
    return LanczosResult(eigenvalues=theta[top].copy(), min_eig=float(theta[0]) if want_min else float("nan"),
                         eigenvectors=vectors, iterations=run.k, converged=converged,
                         basis=run.Q[:run.k] if keep_basis else None,
                         alphas=np.array(run.alphas) if keep_basis else None, errors=errors)


def ritz_vectors(Q: torch.Tensor, S: np.ndarray) -> torch.Tensor:
    """Q (k, P) basis, S (k, m) eigenvectors of T -> (m, P) unit float32 Ritz vectors Q^T s_i."""
    V = torch.as_tensor(S.T.copy(), dtype=torch.float64, device=Q.device) @ Q
    return (V / V.norm(dim=1, keepdim=True)).float()


def nan_result(top_k: int, dim: int, device: Device, iterations: int, want_vectors: bool) -> LanczosResult:
    """A LanczosResult of NaNs, for a point where the products are not finite."""
    vectors = torch.full((top_k, dim), float("nan"), device=device) if want_vectors else None
    return LanczosResult(np.full(top_k, np.nan), float("nan"), vectors, iterations, False)
