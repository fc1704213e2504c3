"""Hessian-vector products by central differences of the gradient, for models whose kernels have no
double backward: H v ~ (g(theta + eps v) - g(theta - eps v)) / 2 eps, eps from functional.fd_step.

Two gradient passes per product and no second-order autograd at all.
The error is O(eps^2) for a smooth loss. A network with ReLU or max-pooling is not smooth: moving the
weights by eps v switches some units on or off, and the gradient jumps there; those jumps, divided
by 2 eps, do not vanish as eps shrinks, so the difference converges to another quantity than the
Hessian autograd gives (which takes ReLU'' = 0). Measured on the trained digits_cnn: 0.3 to 2.7
relative error at every eps from 1e-1 to 1e-5, float32 and float64 alike. The operator therefore
checks its first product: it recomputes it with the step doubled, and a central difference on a
smooth function changes by about 3 times its own error (Richardson). While that estimate is above
1e-4 it halves the step (up to 4 times) as long as the estimate keeps falling, and keeps the best
step for every later product (the u^(1/3) rule assumes the loss varies on the weights' own scale;
a sharper loss needs a shorter step). `estimated_error` holds the estimate at the kept step; the
caller warns when it is large: on a ReLU network shrinking the step does not help.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from landscape.curvature.operators.base import CurvatureOperator
from landscape.curvature.operators.functional import fd_step

if TYPE_CHECKING:
    from landscape.curvature.operators.functional import FunctionalModel


class FiniteDifferenceHessian(CurvatureOperator):
    """v (P,) -> H v by central differences of a FunctionalModel's gradient. check: estimate the error
    of the first product (two more gradient passes, once)."""

    kind = "hessian"

    def __init__(self, model: FunctionalModel, check: bool = True) -> None:
        super().__init__(model.dim, model.device, model.dtype)
        self.model = model
        self.check = check
        self.estimated_error = None   # relative error of the first product, estimated (see the docstring)
        self.scale = 1.0              # the step is scale * fd_step(theta, v), chosen on the first product
        self.cached = False

    def difference(self, theta: torch.Tensor, v: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        eps = scale * fd_step(theta, v)
        return (self.model.gradient_at(theta + eps * v) - self.model.gradient_at(theta - eps * v)) / (2 * eps)

    def choose_step(self, theta: torch.Tensor, v: torch.Tensor, target: float = 1e-4,
                    halvings: int = 4) -> None:
        """Estimate the error of the first product and shorten the step while that pays (see the docstring)."""
        def error(wide, narrow):
            return float((wide - narrow).norm()) / (3 * float(narrow.norm()) + 1e-30)
        wide, narrow = self.difference(theta, v, 2.0), self.difference(theta, v, 1.0)
        best = (error(wide, narrow), 1.0)
        scale = 1.0
        for _ in range(halvings):
            if best[0] <= target:
                break
            scale /= 2
            wide, narrow = narrow, self.difference(theta, v, scale)
            err = error(wide, narrow)
            if not err < best[0] / 2:
                break                                   # not converging (kinks) or rounding has taken over
            best = (err, scale)
        self.estimated_error, self.scale = best

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        theta = self.model.theta()
        if self.check and self.estimated_error is None:
            self.choose_step(theta, V[0])
        return torch.stack([self.difference(theta, v, self.scale) for v in V])

    def gradient(self) -> torch.Tensor:
        return self.model.gradient_at(self.model.theta())
