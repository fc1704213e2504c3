"""A model's outputs as a function of one flat vector over the covered parameters (torch.func), and
the batches of its loss: what the GGN, the empirical Fisher and finite differences are built from.

The loss is the mean over the N examples, split into batches: batch b contributes
criterion(outputs_b, targets_b) * B_b / N (its `share`). Parameters outside the covered list and all
buffers (BatchNorm's running statistics, in eval mode) are held as they are in the module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import torch
from torch.func import functional_call

from landscape import evaluation

if TYPE_CHECKING:
    import torch.nn as nn

    from landscape.evaluation import Criterion
    from landscape.evaluation.batches import DeviceSet, Inputs, StreamedSet


class FunctionalModel:
    """net on a set's batches, with the covered parameters as one flat vector (P,).

    data: iterable (inputs, targets) batches on the model's device, with `total`, the number of
    examples the mean runs over (evaluation.DeviceSet, batches.StreamedSet).
    named: [(name, parameter)] the curvature covers, in net.named_parameters() order (they must
    require grad for the backward passes); criterion(outputs, targets) -> mean over the batch.
    The parameters are read afresh on every call, so a model moved in place is seen at once.
    """

    def __init__(self, net: nn.Module, named: Sequence[tuple[str, nn.Parameter]],
                 data: Union[DeviceSet, StreamedSet], criterion: Criterion,
                 loss_name: str = "the loss") -> None:
        self.net = net
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)
        self.data = data
        self.criterion, self.loss_name = criterion, loss_name
        self.n = data.total
        self.device, self.dtype = self.params[0].device, self.params[0].dtype

    # ---- flat vectors
    def theta(self) -> torch.Tensor:
        """The covered parameters now, as one detached (P,) vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P,) -> {name: view shaped like the parameter}."""
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    # ---- outputs and loss
    def outputs(self, xb: Inputs, flat: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The model's scores on inputs xb, with its own parameters or (flat) others for the covered ones."""
        if flat is None:
            return evaluation.forward(self.net, xb)
        args, kwargs = evaluation.call_args(xb)
        return evaluation.unwrap(functional_call(self.net, self.split(flat), args, kwargs))

    def loss(self, out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """criterion(out, yb): the batch mean (the user's code, failures in one line)."""
        return evaluation.call_user(self.criterion, f"loss '{self.loss_name}'", out, yb)

    def batches(self) -> Iterator[tuple[Inputs, torch.Tensor, float]]:
        """(inputs, targets, share B_b / N) for each batch, in order (N: the whole set's size; with
        data-parallel points `data` is this rank's shard)."""
        for xb, yb in self.data:
            yield xb, yb, len(yb) / self.n

    def gradient_at(self, flat: torch.Tensor) -> torch.Tensor:
        """dL/dw (P,) of the mean loss at covered parameters `flat` (others as they are): one pass."""
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with torch.enable_grad():
            for xb, yb, share in self.batches():
                w = flat.detach().requires_grad_(True)
                term = self.loss(self.outputs(xb, w), yb) * share
                if term.requires_grad:
                    total += torch.autograd.grad(term, w)[0]
        return total


def fd_step(theta: torch.Tensor, v: torch.Tensor) -> float:
    """The step eps of a central difference along v at theta: cbrt(machine epsilon) * max(|theta|, 1) / |v|.

    A central difference errs by O(eps^2) (truncation) plus O(u / eps) (rounding, u the unit roundoff of
    the dtype); eps ~ u^(1/3) balances the two. Scaling by |theta| / |v| makes the move relative to
    the weights: each coordinate moves by about u^(1/3) of its typical size (4.9e-3 in float32).
    """
    u = torch.finfo(theta.dtype).eps
    return u ** (1 / 3) * max(float(theta.norm()), 1.0) / max(float(v.norm()), 1e-30)


def finite_difference_jvp(model: FunctionalModel, xb: Inputs, theta: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
    """J v of the outputs on xb by central differences: (f(theta + eps v) - f(theta - eps v)) / 2 eps."""
    eps = fd_step(theta, v)
    with torch.no_grad():
        return (model.outputs(xb, theta + eps * v) - model.outputs(xb, theta - eps * v)) / (2 * eps)

