"""A diagonal block M_bb of another operator: the rows and columns of a set of coordinates b.

M_bb v = (M [v on b, 0 elsewhere])_b: one product of the full operator per product, exact for any
operator. The per-layer spectra run the unchanged algorithms on these blocks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from landscape.curvature.operators.base import CurvatureOperator

if TYPE_CHECKING:
    from landscape.curvature.model import Operator


class BlockOperator(CurvatureOperator):
    """v (|b|,) -> M_bb v, for `index` a (|b|,) tensor of coordinates into 0..op.dim-1."""

    kind = "block"

    def __init__(self, op: Operator, index: Union[torch.Tensor, Sequence[int]]) -> None:
        self.op = op
        self.index = torch.as_tensor(index, dtype=torch.long, device=op.device)
        super().__init__(len(self.index), op.device, getattr(op, "dtype", torch.float32))

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(V.shape[0], self.op.dim, dtype=V.dtype, device=V.device)
        full[:, self.index] = V
        return self.op.matmat(full)[:, self.index]

    def gradient(self) -> Optional[torch.Tensor]:
        g = self.op.gradient() if hasattr(self.op, "gradient") else None
        return None if g is None else g[self.index]

    def reset(self) -> None:
        if hasattr(self.op, "reset"):
            self.op.reset()
