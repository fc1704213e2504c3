"""Hessian-vector products, Lanczos, trace and spectral density: the names the reference's
`hess_vec_prod.py` module had, and those this tool added to it, in one namespace (the root file
hess_vec_prod.py is this module).

The code lives in curvature/operators (the matrices: Hessian, GGN, empirical Fisher, finite
differences, diagonal blocks) and curvature/algorithms (Lanczos, trace, density); this module
re-exports them and keeps the reference-style helpers that build a Hessian from (net, x, y):
make_hvp, min_max_hessian_eigs, lanczos_extremes, batch_loss_terms.

The Hessian is that of the mean loss over the whole evaluation set, in eval mode (BatchNorm uses its
running statistics), with respect to a list of parameters: by default those of dimension > 1, as in
the reference. The reference accumulated per-batch *mean* losses without dividing by the number of
batches, so its eigenvalues are the true ones times the number of batches (e.g. x391 for CIFAR-10 at
batch 128). Ratios such as |min/max| are unaffected.
"""
from __future__ import annotations

import math  # noqa: F401  (the old module's imports stay importable from it)
from dataclasses import dataclass  # noqa: F401
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np  # noqa: F401
import scipy  # noqa: F401
import torch  # noqa: F401
import torch.nn as nn

from landscape.curvature.algorithms import (  # noqa: F401  (re-exported)
    FLOAT32_FLOOR,
    LANCZOS_TOL,
    LanczosResult,
    LanczosRun,
    block_trace_estimate,
    default_block,
    esd,
    gaussian_density,
    gaussian_start,
    hutchinson_trace,
    lanczos,
    mean_and_se,
    nan_result,
    rademacher,
    ritz_converged,
    ritz_errors,
    ritz_vectors,
    slq_nodes,
    start_vector,
    trace_estimate,
    wanted_indices,
)
from landscape.curvature.operators import (  # noqa: F401  (re-exported)
    BlockOperator,
    CallableOperator,
    CurvatureOperator,
    EmpiricalFisherOperator,
    FiniteDifferenceHessian,
    FunctionalModel,
    GGNOperator,
    HessianOperator,
    SavedBytes,
    as_operator,
    default_memory_budget,
    fd_step,
    flatten_rows,
    matmat,
    output_hessian,
)
from landscape.evaluation import batch_loss_sum


def hessian_params(net: nn.Module) -> list[nn.Parameter]:
    """The parameters the Hessian is taken with respect to by default: those of dimension > 1."""
    return [p for p in net.parameters() if p.dim() > 1]


def batch_loss_terms(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
                     loss_name: str = "crossentropy", criterion: Optional[Callable[..., torch.Tensor]] = None
                     ) -> Callable[[], Iterator[torch.Tensor]]:
    """A loss_terms callable: net's loss on (x, y) batch by batch, each weighted by its share of len(y)."""
    n = len(y)

    def terms():
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if criterion is None:
                yield batch_loss_sum(net(xb), yb, loss_name)[0] / n      # summed over the batch / N
            else:
                yield criterion(net(xb), yb) * (len(yb) / n)               # batch mean * B / N
    return terms


def make_hvp(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_name: str = "crossentropy", batch_size: int = 128,
             params: Optional[Iterable[torch.Tensor]] = None, criterion: Optional[Callable[..., torch.Tensor]] = None,
             cache: Union[str, bool] = "auto", memory_budget: Optional[int] = None) -> HessianOperator:
    """A HessianOperator for net's mean loss on (x, y) (already on the model's device), in eval mode.

    params defaults to hessian_params(net); criterion(outputs, targets) -> mean loss overrides loss_name
    ('crossentropy', or 'mse': the mean over batch and classes of (softmax(outputs) - onehot)^2).
    """
    net.eval()
    params = hessian_params(net) if params is None else list(params)
    watch = list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]
    return HessianOperator(params, batch_loss_terms(net, x, y, batch_size, loss_name, criterion), cache,
                           memory_budget, watch)


def lanczos_extremes(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, device: Union[str, torch.device],
                     tol: float = LANCZOS_TOL, max_iter: int = 100, seed: int = 0) -> tuple[float, float, int]:
    """(largest eigenvalue, smallest eigenvalue, number of products) of the operator `hvp`."""
    r = lanczos(as_operator(hvp, dim, device), top_k=1, tol=tol, max_iter=max_iter, seed=seed, want_min=True)
    return r.max_eig, r.min_eig, r.iterations


def min_max_hessian_eigs(net: nn.Module, x: Union[torch.Tensor, Iterable[Sequence[Any]]],
                         y: Union[torch.Tensor, Callable[..., torch.Tensor], None] = None,
                         loss_name: Union[str, int] = "crossentropy", batch_size: Union[int, bool] = 128,
                         tol: Union[float, bool] = LANCZOS_TOL, max_iter: int = 100, seed: int = 0,
                         use_cuda: bool = False, verbose: bool = False) -> tuple[float, float, int]:
    """(max eigenvalue, min eigenvalue, Hessian-vector products used): the reference's helper name.

    Two call forms: (net, x, y[, loss_name, batch_size, ...]) with tensors, or the reference's
    (net, dataloader, criterion[, rank, use_cuda, verbose]), any re-iterable of (inputs, targets)
    batches. Either way the Hessian is that of the mean loss over every example (the reference's
    form multiplied it by the number of batches; see the module's docstring)."""
    if not torch.is_tensor(x):
        # the reference's positional order: (net, dataloader, criterion, rank, use_cuda, verbose)
        rank = loss_name if isinstance(loss_name, int) else 0
        cuda = use_cuda or (batch_size is True)
        verbose = verbose or (tol is True)
        return reference_min_max(net, x, y, cuda, verbose and rank == 0, LANCZOS_TOL, max_iter, seed)
    hvp = make_hvp(net, x, y, loss_name, batch_size)
    return lanczos_extremes(hvp, hvp.dim, hvp.device, tol, max_iter, seed)


class LoaderSet:
    """A re-iterable of (inputs, targets) batches moved to `device`, with `total`: the examples it holds."""

    def __init__(self, loader: Iterable[Sequence[Any]], device: Union[str, torch.device]) -> None:
        self.loader, self.device = loader, device
        self.total = sum(len(yb) for _, yb in self._pairs())
        if not self.total:
            raise ValueError("the dataloader yields no examples")

    def _pairs(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for batch in self.loader:
            xb, yb = batch[0], batch[1]
            yield xb, yb

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for xb, yb in self._pairs():
            yield xb.to(self.device), yb.to(self.device)


def loader_hessian(net: nn.Module, dataloader: Iterable[Sequence[Any]], criterion: Callable[..., torch.Tensor],
                   params: Sequence[torch.Tensor], use_cuda: bool = False,
                   cache: Union[str, bool] = "auto") -> HessianOperator:
    """The HessianOperator of the mean of criterion over a loader's examples w.r.t. `params`, with `net`
    in eval mode on the GPU (use_cuda) or the CPU: what the reference's helpers multiply by."""
    from landscape.curvature import model as curvature_model
    device = torch.device("cuda" if use_cuda else "cpu")
    net.to(device).eval()
    data = LoaderSet(dataloader, device)
    return HessianOperator(params, curvature_model.batch_terms(net, data, criterion, data.total), cache=cache)


def reference_min_max(net: nn.Module, dataloader: Iterable[Sequence[Any]], criterion: Callable[..., torch.Tensor],
                      use_cuda: bool = False, verbose: bool = False, tol: float = LANCZOS_TOL, max_iter: int = 100,
                      seed: int = 0) -> tuple[float, float, int]:
    """The reference's min_max_hessian_eigs(net, dataloader, criterion, rank, use_cuda, verbose), on this
    tool's Lanczos: the Hessian of the mean of criterion over the loader's examples w.r.t. the
    parameters of dimension > 1, in eval mode."""
    op = loader_hessian(net, dataloader, criterion, hessian_params(net), use_cuda)
    r = lanczos(op, top_k=1, tol=tol, max_iter=max_iter, seed=seed, want_min=True)
    if verbose:
        print(f"   {op.products} Hessian-vector products: max eigenvalue {r.max_eig:.6g}, min {r.min_eig:.6g}")
    return r.max_eig, r.min_eig, r.iterations


def npvec_to_tensorlist(vec: np.ndarray, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A flat numpy vector -> a list of float32 tensors shaped like `params` (the reference's helper)."""
    vec = np.asarray(vec)
    need = sum(p.numel() for p in params)
    if vec.size != need:
        raise ValueError(f"the vector has {vec.size} elements but the parameters {need}")
    out, at = [], 0
    for p in params:
        n = p.numel()
        out.append(torch.from_numpy(np.ascontiguousarray(vec[at:at + n])).view(p.shape).float())
        at += n
    return out


def gradtensor_to_npvec(net: nn.Module, include_bn: bool = False) -> np.ndarray:
    """The gradients in net's parameters' .grad as one flat numpy vector: those of dimension > 1, or
    every parameter with include_bn (the reference's helper)."""
    return np.concatenate([p.grad.detach().cpu().numpy().ravel() for p in net.parameters()
                           if include_bn or p.dim() > 1])


def eval_hess_vec_prod(vec: Iterable[torch.Tensor], params: Sequence[torch.Tensor], net: nn.Module,
                       criterion: Callable[..., torch.Tensor], dataloader: Iterable[Sequence[Any]],
                       use_cuda: bool = False) -> None:
    """H vec, accumulated into the .grad of `params` (read it with gradtensor_to_npvec): the reference's
    helper. vec: tensors shaped like params; H: the Hessian of the mean of criterion over the
    loader's examples (the reference summed batch means: its product was this one times the number
    of batches), in eval mode."""
    op = loader_hessian(net, dataloader, criterion, list(params), use_cuda, cache=False)
    net.zero_grad()
    hv = op(torch.cat([v.to(op.device, params[0].dtype).reshape(-1) for v in vec]))
    at = 0
    for p in params:
        n = p.numel()
        p.grad = hv[at:at + n].view_as(p).detach().clone()
        at += n


__all__ = [
    # the reference-style helpers above
    "hessian_params", "batch_loss_terms", "make_hvp", "lanczos_extremes", "min_max_hessian_eigs", "batch_loss_sum",
    "npvec_to_tensorlist", "gradtensor_to_npvec", "eval_hess_vec_prod", "reference_min_max", "LoaderSet",
    "loader_hessian",
    # operators
    "BlockOperator", "CallableOperator", "CurvatureOperator", "EmpiricalFisherOperator", "FiniteDifferenceHessian",
    "FunctionalModel", "GGNOperator", "HessianOperator", "SavedBytes", "as_operator", "default_memory_budget",
    "fd_step", "flatten_rows", "matmat", "output_hessian",
    # algorithms
    "FLOAT32_FLOOR", "LANCZOS_TOL", "LanczosResult", "LanczosRun", "block_trace_estimate", "default_block", "esd",
    "gaussian_density", "gaussian_start", "hutchinson_trace", "lanczos", "mean_and_se", "nan_result", "rademacher",
    "ritz_converged", "ritz_errors", "ritz_vectors", "slq_nodes", "start_vector", "trace_estimate", "wanted_indices",
    # the old module's own imports
    "math", "dataclass", "np", "scipy", "torch",
]
