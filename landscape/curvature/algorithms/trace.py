"""Hutchinson's trace estimate, tr(M) = E[z^T M z] with Rademacher z, for any operator; optionally
deflated by a Lanczos basis, and for several diagonal blocks from the same probes.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch

from landscape.curvature.operators.base import as_operator, matmat

if TYPE_CHECKING:
    from landscape.curvature.algorithms.lanczos import LanczosResult
    from landscape.curvature.operators.base import Device, SymmetricOperator


def rademacher(k: int, dim: int, device: Device, gen: torch.Generator) -> torch.Tensor:
    """(k, dim) float32 entries +-1, drawn on the CPU (the same on every device) as int8, then moved."""
    return torch.randint(0, 2, (k, dim), generator=gen, dtype=torch.int8).to(device).float().mul_(2).sub_(1)


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1 / sqrt(n)) of a 1-D float64 tensor."""
    n = values.numel()
    se = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), se


def default_block(device: Device) -> int:
    """Probe vectors per pass: 8 on CUDA, to fill the device (a choice, not a measured optimum); 1 on CPU.

    On CPU one batched backward (is_grads_batched, i.e. vmap) of 8 vectors is no faster than 8 single
    products, and can be slower.
    """
    return 8 if torch.device(device).type == "cuda" else 1


def deflation(deflate: Optional[LanczosResult]) -> tuple[float, Optional[torch.Tensor]]:
    """(exact part tr(Q M Q^T), basis Q (k, P) or None) of a LanczosResult made with keep_basis=True."""
    if deflate is None:
        return 0.0, None
    assert deflate.basis is not None, "deflate needs a LanczosResult made with keep_basis=True"
    return float(np.sum(deflate.alphas)), deflate.basis


def project_out(Z: torch.Tensor, Q: Optional[torch.Tensor]) -> torch.Tensor:
    """(k, P) probes minus their part in the span of the orthonormal rows of Q: P z = z - Q^T Q z."""
    if Q is None:
        return Z
    return (Z.double() - (Z.double() @ Q.T) @ Q).float()


def trace_estimate(op: SymmetricOperator, max_samples: int = 100, rel_se: Optional[float] = None,
                   block: Optional[int] = None, seed: int = 0, min_samples: int = 10,
                   deflate: Optional[LanczosResult] = None) -> tuple[float, float, int]:
    """Hutchinson's tr(H) = E[z^T H z] with Rademacher z: (trace, standard error, samples used).

    Probes go `block` at a time (default: default_block(op.device)) through op.matmat. With rel_se,
    stops once the standard error is <= rel_se * |trace| (checked from min_samples on, after each
    block); otherwise uses max_samples. deflate: a LanczosResult made with keep_basis=True; then
    tr(H) = tr(Q H Q^T) + tr(P H P) with P = I - Q^T Q, the first term exact (the sum of the alphas)
    and the second estimated from the projected probes P z. That removes the variance of the
    directions Q holds (the top of the spectrum), as in Hutch++ (Meyer et al. 2021), at no extra
    product. The standard error is that of the estimated part. A deflating result that is not finite
    (a diverged point), or a product that is not finite, gives NaN.
    """
    if deflate is not None and not deflate.finite:
        return float("nan"), float("nan"), 0
    gen = torch.Generator().manual_seed(seed)
    block = block or default_block(op.device)
    exact, Q = deflation(deflate)
    values = torch.empty(0, dtype=torch.float64, device=op.device)
    while values.numel() < max_samples:
        n = values.numel()
        k = min(block, max_samples - n, min_samples - n if n < min_samples else block)   # first check at min_samples
        Z = project_out(rademacher(k, op.dim, op.device, gen), Q)                          # (k, P)
        quad = (Z.double() * matmat(op, Z).double()).sum(1)                                # z^T H z, (k,)
        values = torch.cat([values, quad + exact])
        if not torch.isfinite(quad).all():
            return float("nan"), float("nan"), values.numel()
        mean, se = mean_and_se(values)
        if rel_se is not None and values.numel() >= min_samples and se <= rel_se * abs(mean):
            break
    return (*mean_and_se(values), values.numel())


def block_trace_estimate(op: SymmetricOperator, blocks: Sequence[torch.Tensor], max_samples: int = 100,
                         rel_se: Optional[float] = None, seed: int = 0, min_samples: int = 10,
                         deflate: Optional[Sequence[Optional[LanczosResult]]] = None
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """The traces of the diagonal blocks M_bb of op (blocks: index tensors into 0..P-1), all from the
    same full-length probes: tr(M_bb) = E[z_b^T (M z)_b] for Rademacher z, since the cross terms
    z_b^T M_bc z_c (c != b) have mean 0. One product per probe serves every block. deflate: one
    LanczosResult per block (keep_basis=True, over that block's coordinates) or None; block b's
    probe part is projected out of its basis and tr(Q_b M_bb Q_b^T) added exactly, as trace_estimate.
    Stops when every block's standard error is <= rel_se of its trace (from min_samples on), or after
    max_samples. Returns (traces (B,), standard errors (B,), samples).
    """
    gen = torch.Generator().manual_seed(seed)
    deflate = deflate or [None] * len(blocks)
    bad = [d is not None and not d.finite for d in deflate]           # a diverged block: NaN
    parts = [(0.0, None) if b else deflation(d) for d, b in zip(deflate, bad)]
    values = [[] for _ in blocks]
    n = 0
    while n < max_samples:
        z = rademacher(1, op.dim, op.device, gen)[0]
        for idx, (_, Q) in zip(blocks, parts):
            z[idx] = project_out(z[idx].unsqueeze(0), Q)[0]
        mz = op(z).double()
        n += 1
        for b, idx in enumerate(blocks):
            values[b].append(float(z[idx].double() @ mz[idx]) + parts[b][0])
        if not torch.isfinite(mz).all():
            break
        if rel_se is not None and n >= min_samples:
            stats = [mean_and_se(torch.tensor(v, dtype=torch.float64)) for v in values]
            if all(se <= rel_se * abs(mean) for mean, se in stats):
                break
    stats = [mean_and_se(torch.tensor(v, dtype=torch.float64)) for v in values]
    traces = np.array([np.nan if bad[b] else m for b, (m, _) in enumerate(stats)])
    errors = np.array([np.nan if bad[b] else se for b, (_, se) in enumerate(stats)])
    return traces, errors, n


def hutchinson_trace(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, device: Device,
                     samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) with Rademacher vectors z: mean of z^T H z, and its standard error."""
    trace, se, _ = trace_estimate(as_operator(hvp, dim, device), max_samples=samples, seed=seed)
    return trace, se
