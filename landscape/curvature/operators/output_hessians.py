"""H_out u: the Hessian of a batch's loss with respect to the model's outputs, times u, for the GGN.

Closed forms (the (C x C), or (V x V) per position, matrix is never formed):
- cross-entropy, softmax over the class dimension d (the last for (B, C) or (B, T, V), 1 for
  (B, C, H, W)): with p = softmax(o), H u = (p * u - p (p . u)) / M at every position, M the number
  of positions the mean runs over (ignored targets are 0 and not counted); label smoothing leaves it
  unchanged. Reduction 'sum': M = 1.
- mean squared error against float targets: H u = 2 u / numel ('sum': 2 u).
- the reference's `mse` (softmax(o) against one-hot targets): the Gauss-Newton split at the
  probabilities, H u = 2 / (B C) S (S u) with S u = p * u - p (p . u) (PSD, unlike the exact Hessian
  of softmax-then-square in the logits).
Any other loss: autograd on the outputs only (a double backward through the loss, never through the
network). A user's callable is matched to a closed form when its values equal cross-entropy (or MSE)
on the model's outputs and the closed form's product equals autograd's there; otherwise autograd.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import evaluation

if TYPE_CHECKING:
    from landscape.evaluation import Criterion


def softmax_jacobian_product(p: torch.Tensor, u: torch.Tensor, dim: int) -> torch.Tensor:
    """S u with S = diag(p) - p p^T along `dim`: p * u - p * sum(p * u)."""
    return p * u - p * (p * u).sum(dim, keepdim=True)


class CrossEntropyHessian:
    """Softmax cross-entropy along `dim`, mean over the non-ignored positions (or their sum)."""

    psd = True

    def __init__(self, dim: int = -1, ignore_index: int = -100, reduction: str = "mean") -> None:
        self.dim, self.ignore_index, self.reduction = dim, ignore_index, reduction
        self.name = "cross-entropy (closed form)"

    def prepare(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(p, valid-position mask broadcastable to out, 1 / M) for this batch's outputs and targets."""
        dim = self.dim % out.dim()
        p = F.softmax(out.detach().float(), dim=dim).to(out.dtype)
        valid = (y != self.ignore_index).unsqueeze(dim).to(out.dtype)
        count = float(valid.sum()) if self.reduction == "mean" else 1.0
        return p, valid, 1.0 / max(count, 1.0)

    def __call__(self, state: tuple[torch.Tensor, torch.Tensor, float], u: torch.Tensor) -> torch.Tensor:
        p, valid, scale = state
        return softmax_jacobian_product(p, u, self.dim % u.dim()) * valid * scale


class MSEHessian:
    """Mean (or summed) squared error against targets of the outputs' shape: H = 2 I / numel."""

    psd = True

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = reduction
        self.name = "mean squared error (closed form)"

    def prepare(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return 2.0 / out.numel() if self.reduction == "mean" else 2.0

    def __call__(self, state: float, u: torch.Tensor) -> torch.Tensor:
        return state * u


class SoftmaxMSEGaussNewton:
    """The reference's `mse`, mean over (B, C) of (softmax(o, 1) - onehot)^2, split at the probabilities."""

    name = "softmax-MSE, Gauss-Newton at the probabilities (closed form)"
    psd = True

    def prepare(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        p = F.softmax(out.detach().float(), dim=1).to(out.dtype)
        return p, 2.0 / (out.shape[0] * out.shape[1])

    def __call__(self, state: tuple[torch.Tensor, float], u: torch.Tensor) -> torch.Tensor:
        p, scale = state
        return scale * softmax_jacobian_product(p, softmax_jacobian_product(p, u, 1), 1)


class AutogradOutputHessian:
    """Any loss: H u = d/do (dL/do . u) at the batch's outputs (double backward through the loss only)."""

    def __init__(self, criterion: Criterion, loss_name: str = "the loss") -> None:
        self.criterion, self.loss_name = criterion, loss_name
        self.name = "autograd on the outputs"

    def prepare(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        o = out.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = evaluation.call_user(self.criterion, f"loss '{self.loss_name}'", o, y)
            g = torch.autograd.grad(loss, o, create_graph=True, allow_unused=True)[0]
        return o, g

    def __call__(self, state: tuple[torch.Tensor, Optional[torch.Tensor]], u: torch.Tensor) -> torch.Tensor:
        o, g = state
        if g is None or not g.requires_grad:            # the loss is linear (or constant) in the outputs
            return torch.zeros_like(u)
        return torch.autograd.grad(g, o, grad_outputs=u, retain_graph=True, allow_unused=True)[0]


if TYPE_CHECKING:
    OutputHessian = Union[CrossEntropyHessian, MSEHessian, SoftmaxMSEGaussNewton, AutogradOutputHessian]


def candidates(criterion: Criterion, out: torch.Tensor, y: torch.Tensor) -> list[OutputHessian]:
    """Closed forms that may fit this criterion: from its type, else from the outputs' and targets' shapes."""
    if isinstance(criterion, evaluation.SoftmaxMSE):
        return [SoftmaxMSEGaussNewton()]
    if isinstance(criterion, nn.CrossEntropyLoss):
        if criterion.weight is not None or criterion.reduction == "none":
            return []
        return [CrossEntropyHessian(1 if out.dim() > 1 else 0, criterion.ignore_index, criterion.reduction)]
    if isinstance(criterion, nn.MSELoss):
        return [MSEHessian(criterion.reduction)] if criterion.reduction != "none" else []
    found = []
    if not y.is_floating_point() and out.is_floating_point():
        if out.shape[:-1] == y.shape:
            found.append(CrossEntropyHessian(-1))
        if out.dim() > 2 and out.shape[0] == y.shape[0] and out.shape[2:] == y.shape[1:]:
            found.append(CrossEntropyHessian(1))
    elif y.is_floating_point() and y.shape == out.shape:
        found.append(MSEHessian())
    return found


def reference_value(form: OutputHessian, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What the loss the closed form assumes gives on (out, y): to recognise a user's callable."""
    if isinstance(form, CrossEntropyHessian):
        dim = form.dim % out.dim()
        return F.cross_entropy(out.movedim(dim, -1).reshape(-1, out.shape[dim]).float(), y.reshape(-1),
                               ignore_index=form.ignore_index)
    return F.mse_loss(out.float(), y.float())


def agrees(form: OutputHessian, criterion: Criterion, out: torch.Tensor, y: torch.Tensor, loss_name: str,
           typed: bool) -> bool:
    """The closed form's product equals autograd's on (out, y) (and, for a callable, so does the value)."""
    with torch.no_grad():
        if not typed:
            mine = evaluation.call_user(criterion, f"loss '{loss_name}'", out, y)
            want = reference_value(form, out, y)
            if not torch.allclose(torch.as_tensor(mine, dtype=torch.float64), want.double(), rtol=1e-5, atol=1e-7):
                return False
    u = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.device, out.dtype)
    exact = AutogradOutputHessian(criterion, loss_name)
    want = exact(exact.prepare(out, y), u)
    got = form(form.prepare(out, y), u)
    scale = float(want.norm()) + 1e-30
    return float((got - want).norm()) <= 1e-4 * scale + 1e-12


def class_indices(targets: torch.Tensor, classes: int) -> bool:
    """Whether every target is a class index in [0, classes) (none ignored, none out of range)."""
    return not (bool((targets < 0).any()) or bool((targets >= classes).any()))


def output_hessian(criterion: Criterion, out: torch.Tensor, y: torch.Tensor,
                   all_targets: Union[torch.Tensor, Callable[[int], bool]],
                   loss_name: str = "the loss") -> OutputHessian:
    """The H_out of `criterion`: a closed form when it is recognised and checked on (out, y), else autograd.

    all_targets: every target of the set, or a function in_range(classes) -> whether all of them lie
    in [0, classes) (a set streamed or split over ranks; it is called for every candidate class count,
    before anything else, so that data-parallel ranks call it alike). A cross-entropy recognised from a
    callable's values needs all targets to be class indices, so that nothing is ignored."""
    typed = isinstance(criterion, (nn.CrossEntropyLoss, nn.MSELoss, evaluation.SoftmaxMSE))
    forms = candidates(criterion, out, y)
    in_range = all_targets if callable(all_targets) else lambda classes: class_indices(all_targets, classes)
    counts = sorted({out.shape[f.dim % out.dim()] for f in forms if isinstance(f, CrossEntropyHessian) and not typed})
    ok = {classes: in_range(classes) for classes in counts}
    for form in forms:
        if isinstance(form, SoftmaxMSEGaussNewton):
            return form                                 # by design not the exact Hessian: nothing to check
        if isinstance(form, CrossEntropyHessian) and not typed:
            if not ok[out.shape[form.dim % out.dim()]]:
                continue                                # ignored targets: the callable's mean is unknown
        try:
            if agrees(form, criterion, out.detach(), y, loss_name, typed):
                return form
        except (RuntimeError, ValueError, IndexError):
            continue
    return AutogradOutputHessian(criterion, loss_name)
