"""Data-parallel curvature products: every rank of a point's group multiplies by the curvature of
its own shard of the data, and one all-reduce of the flat (K, P) block of products sums them.

The loss is a sum over examples, L = sum_shards L_s with each shard's terms weighted by the whole
set's size N (curvature.model.batch_terms(total=N)), so H V = sum_s H_s V. The sum is bit-identical on
every rank of the group, so Lanczos, the trace and the spectral density run unchanged on top, on
each rank, taking the same branches and asking for the same products.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from landscape.curvature.operators.base import CurvatureOperator, matmat

if TYPE_CHECKING:
    from landscape.parallel.dist import PointGroup


class DataParallelOperator:
    """Wraps any operator (dim, device, dtype, matmat(V), __call__(v)): its product on this rank's
    shard, then one sum over the group (parallel.dist.PointGroup.sum_) of one flat buffer per product.
    Everything else (products, cached, reset(), ...) is the wrapped operator's."""

    def __init__(self, op: CurvatureOperator, group: PointGroup) -> None:
        self.op, self.group = op, group
        self.dim, self.device = op.dim, op.device
        self.dtype = getattr(op, "dtype", None)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """V (K, P) -> H V (K, P), summed over the group in one all-reduce."""
        return self.group.sum_(matmat(self.op, V).contiguous())

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v.reshape(1, -1))[0]

    def __getattr__(self, name: str) -> Any:
        if name == "gradient" and hasattr(self.op, "gradient"):
            return self._gradient             # the shards' gradients add up, as their products do
        if name == "exact_trace" and hasattr(self.op, "exact_trace"):
            return self._exact_trace
        return getattr(self.op, name)

    def _gradient(self) -> Optional[torch.Tensor]:
        g = self.op.gradient()     # the same operator type on every rank: None on all of them, or on none
        return None if g is None else self.group.sum_(g.detach().clone().contiguous())   # never sum into a cache

    def _exact_trace(self) -> Optional[float]:
        t = self.op.exact_trace()  # None on every rank or on none (decided from the whole set's size)
        if t is None:
            return None
        return float(self.group.sum_(torch.tensor([t], dtype=torch.float64, device=self.device))[0])
