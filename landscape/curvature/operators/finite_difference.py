"""Hessian-vector products by central differences of the gradient, for models whose kernels have no
double backward: H v ~ (g(theta + eps v) - g(theta - eps v)) / 2 eps, eps from functional.fd_step.

Two gradient passes per product (about 4 forward passes, r19) and no second-order autograd at all.
The error is O(eps^2) for a smooth loss. A network with ReLU or max-pooling is not smooth: moving the
weights by eps v switches some units on or off, and the gradient jumps there; those jumps, divided
by 2 eps, do not vanish as eps shrinks, so the difference converges to another quantity than the
Hessian autograd gives (which takes ReLU'' = 0). Measured on the trained digits_cnn: 0.3 to 2.7
relative error at every eps from 1e-1 to 1e-5, float32 and float64 alike. The operator therefore
checks its first product: it recomputes it with the step doubled, and a central difference on a
smooth function changes by about 3 times its own error; `estimated_error` holds that estimate and
the caller warns when it is large.
"""
import torch

from landscape.curvature.operators.base import CurvatureOperator
from landscape.curvature.operators.functional import fd_step


class FiniteDifferenceHessian(CurvatureOperator):
    """v (P,) -> H v by central differences of a FunctionalModel's gradient. check: estimate the error
    of the first product (two more gradient passes, once)."""

    kind = "hessian"

    def __init__(self, model, check=True):
        super().__init__(model.dim, model.device, model.dtype)
        self.model = model
        self.check = check
        self.estimated_error = None   # relative error of the first product, estimated (see the docstring)
        self.cached = False

    def difference(self, theta, v, scale=1.0):
        eps = scale * fd_step(theta, v)
        return (self.model.gradient_at(theta + eps * v) - self.model.gradient_at(theta - eps * v)) / (2 * eps)

    def _matmat(self, V):
        theta = self.model.theta()
        rows = [self.difference(theta, v) for v in V]
        if self.check and self.estimated_error is None:
            wide = self.difference(theta, V[0], scale=2.0)
            self.estimated_error = float((wide - rows[0]).norm()) / (3 * float(rows[0].norm()) + 1e-30)
        return torch.stack(rows)

    def gradient(self):
        return self.model.gradient_at(self.model.theta())
