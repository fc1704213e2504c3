"""The generalised Gauss-Newton matrix G = sum_b J_b^T (share_b H_out,b) J_b of the mean loss.

J_b is the Jacobian of batch b's outputs w.r.t. the covered parameters, H_out,b the Hessian of its
loss w.r.t. those outputs (output_hessians.py: closed forms for cross-entropy and MSE, autograd on the
outputs otherwise). A product G v is one Jacobian-vector product (forward mode, torch.func.jvp: a
forward pass carrying a tangent), H_out in output space, and one vector-Jacobian product (a backward
through the batch's kept forward graph). No double backward through the network: G needs none, so
it also serves models whose kernels have no double backward (--hvp finite_difference takes J v by
central differences of the outputs for kernels without forward mode too).

With the forward graph kept, a product costs fewer forward passes than curvlinops' and
hessian-eigenthings' GGN products (the figures are in BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import torch

from landscape.curvature.operators.base import Backward, CurvatureOperator, PartCache
from landscape.curvature.operators.functional import finite_difference_jvp

if TYPE_CHECKING:
    from landscape.curvature.operators.fisher import Part as FisherPart
    from landscape.curvature.operators.functional import FunctionalModel
    from landscape.curvature.operators.output_hessians import OutputHessian
    from landscape.evaluation.batches import Inputs


@dataclass
class Part:
    """One batch: its inputs, targets, share B_b / N, outputs with their graph, and H_out's state."""
    xb: Inputs
    yb: torch.Tensor
    share: float
    out: torch.Tensor
    state: Any


def reverse_jvp(out: torch.Tensor, params: Sequence[torch.Tensor], sizes: Sequence[int],
                v: torch.Tensor) -> torch.Tensor:
    """J v through reverse mode only, where forward mode is missing: d/du [(J^T u) . v] at u = 0."""
    u = torch.zeros_like(out, requires_grad=True)
    grads = torch.autograd.grad(out, params, grad_outputs=u, create_graph=True, allow_unused=True)
    dot = sum((g * w.view_as(g)).sum() for g, w in zip(grads, v.split(sizes)) if g is not None)
    if not torch.is_tensor(dot) or not dot.requires_grad:
        return torch.zeros_like(out)
    return torch.autograd.grad(dot, u)[0]


class Jacobian:
    """J v of a batch's outputs: forward mode (falling back to reverse_jvp), or central differences."""

    def __init__(self, model: FunctionalModel, method: str = "autograd") -> None:
        self.model, self.method = model, method
        self.forward_mode = True      # torch.func.jvp works for this model (else reverse_jvp from now on)

    def __call__(self, part: Union[Part, FisherPart], theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.method == "finite_difference":
            return finite_difference_jvp(self.model, part.xb, theta, v)
        if self.forward_mode:
            try:
                with torch.no_grad():          # the tangent needs no graph; other parameters build none
                    return torch.func.jvp(lambda w: self.model.outputs(part.xb, w), (theta,), (v,))[1]
            except (RuntimeError, NotImplementedError):
                self.forward_mode = False
        with torch.enable_grad():
            return reverse_jvp(part.out, self.model.params, self.model.sizes, v)


class GGNOperator(CurvatureOperator):
    """v (P,) -> G v for a FunctionalModel's mean loss; out_hessian from output_hessians.output_hessian.

    cache, memory_budget: as HessianOperator (the kept forward graphs of every batch, 'auto' while they
    fit); jvp: 'autograd' (forward mode) or 'finite_difference'. Attributes as HessianOperator's, plus
    out_hessian (its .name says which closed form, or autograd, is used).
    """

    kind = "ggn"

    def __init__(self, model: FunctionalModel, out_hessian: OutputHessian, cache: Union[bool, str] = "auto",
                 memory_budget: Optional[int] = None, jvp: str = "autograd",
                 watch: Iterable[torch.Tensor] = ()) -> None:
        super().__init__(model.dim, model.device, model.dtype)
        self.model, self.out_hessian = model, out_hessian
        self.psd = getattr(out_hessian, "psd", False)            # J^T H J with H PSD: the closed forms
        self.jacobian = Jacobian(model, jvp)
        self._backward = Backward(model.params)
        self._cache = PartCache(self._part, model.batches, cache, memory_budget, list(model.params) + list(watch),
                                model.device)

    cached = property(lambda self: self._cache.cached)
    saved_bytes = property(lambda self: self._cache.saved_bytes)

    def _part(self, xb: Inputs, yb: torch.Tensor, share: float) -> Part:
        out = self.model.outputs(xb)                                   # (B, ..., C) with its graph
        return Part(xb, yb, share, out, self.out_hessian.prepare(out.detach(), yb))

    def reset(self) -> None:
        self._cache.reset()

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        theta = self.model.theta()
        parts, kept = self._cache.parts()
        result = torch.zeros_like(V)
        for part in parts:
            U = torch.stack([part.share * self.out_hessian(part.state, self.jacobian(part, theta, v)) for v in V])
            result += self._backward(part.out, U.to(part.out.dtype), retain=kept)   # J^T H_out J v, (K, P)
        return result

    def gradient(self) -> torch.Tensor:
        """dL/dw = sum_b J_b^T (share_b dL_b/do): one backward per batch through the kept graphs."""
        parts, kept = self._cache.parts()
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for part in parts:
            with torch.enable_grad():
                o = part.out.detach().requires_grad_(True)
                loss = self.model.loss(o, part.yb) * part.share
                e = torch.autograd.grad(loss, o, allow_unused=True)[0] if loss.requires_grad else None
            if e is not None:
                total += self._backward(part.out, e.unsqueeze(0), retain=kept)[0]
        return total
