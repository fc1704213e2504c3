"""Curvature of a model on its data: which parameters it covers, the loss batch by batch, the operator
of the chosen matrix (Hessian, GGN or empirical Fisher; products by autograd or finite differences),
the checks a loss must pass for it, per-layer blocks, maps of the extreme eigenvalues over a grid,
and the top eigenvectors (for --xdir/--ydir hessian)."""
from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from landscape import directions
from landscape import evaluation
from landscape.curvature import algorithms
from landscape.curvature import operators
from landscape.curvature.operators import output_hessians
from landscape.curvature.distributed import DataParallelOperator
from landscape.errors import LandscapeError
from landscape.spec import (  # noqa: F401  (the choices, under their old home too)
    CURVATURES,
    HVP_METHODS,
    BatchSize,
    CurvatureSpec,
)
from landscape.evaluation import fast_model

if TYPE_CHECKING:
    from landscape.evaluation.batches import DeviceSet, HostSet, StreamedSet
    from landscape.parallel.dist import PointGroup

NamedParams = list[tuple[str, nn.Parameter]]   # [(name, parameter)] the curvature covers, in net.parameters() order
Inputs = Union[torch.Tensor, Sequence[torch.Tensor], dict[str, torch.Tensor]]   # a tensor, a tuple or a dict of them
Criterion = Callable[..., torch.Tensor]          # criterion(outputs, targets) -> the mean loss
Device = Union[str, torch.device]
Operator = Union[operators.CurvatureOperator, DataParallelOperator]

EIG_KEYS = ["max_eig", "min_eig", "eig_iters", "eig_converged"]
FD_WARN = 1e-3    # warn when a finite-difference product's estimated relative error is above this
# Lanczos steps kept for the trace's deflation when a trace is asked for (Lanczos runs on past its own
# convergence to this many). Measured on digits_cnn, 1,437 digits, the products to reach a trace with a
# standard error of 1% (Lanczos steps + probes): trained 20 epochs, 61 with the 9 steps the top
# eigenvalue needs, 33 with 20, 44 with 30, 71 with 60; trained 4 epochs, 367 / 203 / 197 / 186.
TRACE_DEFLATION = 20


class CurvatureWarning(RuntimeWarning):
    """A curvature value that did not converge, or products that do not approximate the matrix."""


def hessian_params(net: nn.Module, params: str = "") -> NamedParams:
    """[(name, parameter)] the curvature covers: those matching `params` (frozen ones too: naming them
    asks for them), else, as the reference, those of dimension > 1 that are trained (requires_grad)."""
    space = directions.direction_space(net, "weights")
    covered = directions.hessian_entries(space, directions.entry_mask(space, params), bool(params))
    named = dict(net.named_parameters())
    chosen = [(n, named[n]) for (n, _), c in zip(space, covered) if c]
    return chosen if params else [(n, p) for n, p in chosen if p.requires_grad]


def covered_params(net: nn.Module, params: str = "") -> NamedParams:
    """hessian_params, refused in one line when it is empty (e.g. every weight frozen)."""
    named = hessian_params(net, params)
    if not named:
        raise LandscapeError("the model has no trained (requires_grad) parameters of dimension > 1 for the "
                             "curvature; name the ones to cover with --params (params=)")
    return named


def loss_terms(net: nn.Module, inputs: Inputs, targets: torch.Tensor, criterion: Criterion,
               batch_size: int) -> Callable[[], Iterator[torch.Tensor]]:
    """() -> the batches' shares of the mean loss (mean_b * B_b / N): the Hessian's loss, batch by batch."""
    return batch_terms(net, evaluation.DeviceSet(inputs, targets, batch_size), criterion, len(targets))


def batch_terms(net: nn.Module, batches: Iterable[tuple[Any, torch.Tensor]], criterion: Criterion,
                total: int) -> Callable[[], Iterator[torch.Tensor]]:
    """() -> each batch's share of the mean loss over `total` examples (mean_b * B_b / total). With
    data-parallel points `batches` is this rank's shard and `total` the whole set's size, so the
    shards' matrices add up to the whole set's (curvature/distributed.py)."""
    def terms():
        for xb, yb in batches:
            out = evaluation.forward(net, xb)
            yield evaluation.call_user(criterion, "the loss", out, yb) * (len(yb) / total)
    return terms


def operator(spec: CurvatureSpec, net: nn.Module, data: Union[DeviceSet, StreamedSet], criterion: Criterion,
             loss_name: str = "the loss", group: Optional[PointGroup] = None, cache: Union[str, bool] = "auto",
             named: Optional[NamedParams] = None) -> Operator:
    """The one constructor of a curvature operator: the matrix `spec` names (spec.matrix, its products
    made by spec.hvp) of the mean loss over `data` (batches on the device: batches.DeviceSet or
    StreamedSet), w.r.t. the parameters spec.params covers (or `named`). With `group`, `data` is this
    rank's shard and every product is summed over the group (curvature/distributed.py)."""
    named = covered_params(net, spec.params) if named is None else named
    op = data_operator(net, data, criterion, named, spec.matrix, spec.hvp, cache, loss_name, group)
    return op if group is None or group.size == 1 else DataParallelOperator(op, group)


def hessian_operator(net: nn.Module, inputs: Inputs, targets: torch.Tensor, criterion: Criterion, batch_size: int,
                     params: str = "", cache: Union[str, bool] = "auto") -> operators.CurvatureOperator:
    """The Hessian of the mean loss over (inputs, targets) w.r.t. the covered parameters, on their device."""
    named = covered_params(net, params)
    return curvature_operator(net, inputs, targets, criterion, batch_size, named, cache=cache)


# ----------------------------------------------------------------------------- the matrices
def curvature_operator(net: nn.Module, inputs: Inputs, targets: torch.Tensor, criterion: Criterion, batch_size: int,
                       named: NamedParams, curvature: str = "hessian", hvp: str = "autograd",
                       cache: Union[str, bool] = "auto", loss_name: str = "the loss") -> operators.CurvatureOperator:
    """The operator of `curvature` for the mean loss over (inputs, targets) (tensors on the model's
    device) w.r.t. `named` parameters: data_operator on them, in batches of batch_size."""
    return data_operator(net, evaluation.DeviceSet(inputs, targets, batch_size), criterion, named, curvature, hvp,
                         cache, loss_name)


def data_operator(net: nn.Module, data: Union[DeviceSet, StreamedSet], criterion: Criterion, named: NamedParams,
                  curvature: str = "hessian", hvp: str = "autograd", cache: Union[str, bool] = "auto",
                  loss_name: str = "the loss", group: Optional[PointGroup] = None) -> operators.CurvatureOperator:
    """The operator of `curvature` for the mean loss over `data` (iterable (inputs, targets) batches on
    the model's device, `data.total` examples in the whole set: with `group`, `data` is this rank's
    shard) w.r.t. `named` parameters (only they require grad afterwards: `net` is the tool's own copy).

    hvp='finite_difference' takes the one derivative that would otherwise need double backward (the
    Hessian's) or forward mode (J v of the GGN and Fisher) by central differences."""
    assert curvature in CURVATURES and hvp in HVP_METHODS, (curvature, hvp)
    covered = {id(p) for _, p in named}
    for p in net.parameters():         # on the tool's own copy: a frozen parameter the user named takes part,
        p.requires_grad_(id(p) in covered)   # and autograd keeps nothing for the others (a subset's graph is smaller)
    watch = [b for b in net.buffers() if b.is_floating_point()]
    if (curvature, hvp) == ("hessian", "autograd"):    # double backward through the loss: no functional model
        return operators.HessianOperator([p for _, p in named], batch_terms(net, data, criterion, data.total),
                                         cache=cache, watch=list(net.parameters()) + watch)
    model = operators.FunctionalModel(net, named, data, criterion, loss_name)
    return MATRICES[curvature](model, net, data, criterion, loss_name, group, cache, hvp, watch)


def ggn_operator(model: operators.FunctionalModel, net: nn.Module, data: Union[DeviceSet, StreamedSet],
                 criterion: Criterion, loss_name: str, group: Optional[PointGroup], cache: Union[str, bool], hvp: str,
                 watch: list[torch.Tensor]) -> operators.GGNOperator:
    """The GGN J^T H_out J, H_out from the loss on a few outputs (closed form for cross-entropy and MSE)."""
    xb, yb = first_batch(data)
    with torch.no_grad():
        out = evaluation.forward(net, evaluation.take(xb, 0, 4))
    h_out = operators.output_hessian(criterion, out, yb[:4], lambda classes: targets_in_range(data, classes, group),
                                     loss_name)
    return operators.GGNOperator(model, h_out, cache=cache, jvp=hvp, watch=watch)


# matrix -> its operator from the functional model (the Hessian by autograd is built above, without one)
MATRICES = {
    "hessian": lambda model, *rest: operators.FiniteDifferenceHessian(model),
    "ggn": ggn_operator,
    "ef": lambda model, net, data, criterion, loss_name, group, cache, hvp, watch:
        operators.EmpiricalFisherOperator(model, cache=cache, jvp=hvp, watch=watch),
}


def first_batch(data: Iterable[tuple[Any, torch.Tensor]]) -> tuple[Any, torch.Tensor]:
    """The first (inputs, targets) batch of a set on the device (a StreamedSet reads just that one)."""
    for xb, yb in data:
        return xb, yb
    raise LandscapeError("the data holds no examples")


def targets_in_range(data: Union[DeviceSet, StreamedSet], classes: int, group: Optional[PointGroup] = None) -> bool:
    """Whether every target of the set (every shard of the group's) is a class index in [0, classes):
    a set in memory is checked at once, a streamed one is read through once."""
    parts = [data.targets] if hasattr(data, "targets") else (yb for _, yb in data)
    bad = int(not all(output_hessians.class_indices(t, classes) for t in parts))
    if group is not None and group.size > 1:
        device = data.targets.device if hasattr(data, "targets") else getattr(data, "device", "cpu")
        bad = int(group.sum_(torch.tensor([bad], dtype=torch.float64, device=device))[0])
    return bad == 0


def check_curvature_loss(curvature: str, criterion: Criterion, loss_name: str, net: nn.Module, inputs: Inputs,
                         targets: torch.Tensor) -> None:
    """Refuse, in one line, a loss the matrix cannot be built from: one without a derivative in the
    model's outputs (an accuracy), and for 'ef' one that is not a mean over examples (for the others,
    a warning: their matrix then depends on the batches)."""
    k = min(len(targets), 4)
    with torch.no_grad():
        out = evaluation.forward(net, evaluation.take(inputs, 0, k)).detach()
    y = targets[:k]
    o = out.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = evaluation.call_user(criterion, f"loss '{loss_name}'", o, y)
    if not (torch.is_tensor(loss) and loss.requires_grad):
        raise LandscapeError(f"curvature '{curvature}': loss '{loss_name}' has no derivative with respect to the "
                             "model's outputs (an accuracy or another piecewise-constant metric?), so it has no "
                             "output Hessian; give a differentiable loss")
    with torch.no_grad():
        whole = float(loss)
        singles = [float(evaluation.call_user(criterion, f"loss '{loss_name}'", out[i:i + 1], y[i:i + 1]))
                   for i in range(k)]
    mean = float(np.mean(singles))
    if not np.isfinite([whole, mean]).all():
        if curvature == "ef":
            raise LandscapeError(f"curvature 'ef': loss '{loss_name}' is not finite at this model ({whole:.6g} on "
                                 f"{k} examples): a diverged point has no Fisher")
        return                     # the Hessian and GGN of a diverged point come out NaN, as documented
    if np.isclose(whole, mean, rtol=1e-4, atol=1e-7):
        return
    if curvature == "ef":
        raise LandscapeError(f"curvature 'ef' needs a loss that is the mean over examples of each example's "
                             f"loss; loss '{loss_name}' gives {whole:.6g} on {k} examples but {mean:.6g} as the "
                             "mean of its values on each (a sum, or a mean over tokens with a varying count?)")
    warnings.warn(f"loss '{loss_name}' is not the mean over examples of each example's loss ({whole:.6g} on {k} "
                  f"examples, {mean:.6g} as the mean of its values on each: a sum, or a mean over a varying number "
                  f"of tokens?); the {curvature} is taken of the batches' losses weighted by their sizes, which then "
                  "depends on how the data is batched (--batch_size, streaming, --ranks_per_point)",
                  CurvatureWarning, stacklevel=2)


def product_warnings(op: Operator) -> None:
    """Warnings about how the products were made (finite differences that do not converge)."""
    err = getattr(op, "estimated_error", None)
    if err is None and hasattr(op, "op"):
        err = getattr(op.op, "estimated_error", None)
    if err is not None and not err <= FD_WARN:
        warnings.warn(f"finite-difference products change by {3 * err:.2g} of their size when the step doubles "
                      f"(estimated error {err:.2g}): the model is not smooth at this scale (ReLU, max-pooling?), "
                      "so they do not approximate the curvature; use --hvp autograd", CurvatureWarning, stacklevel=4)


# ----------------------------------------------------------------------------- per-layer blocks
@dataclass
class LayerCurvature:
    """The top eigenvalue and trace of one diagonal block (a layer) of the curvature matrix."""
    name: str
    parameters: int
    top_eig: float
    trace: float
    trace_stderr: float
    lanczos_products: int
    converged: bool


def layer_blocks(named: Sequence[tuple[str, torch.Tensor]], params: str = "") -> list[tuple[str, torch.Tensor]]:
    """[(block name, (P_b,) coordinates)] over the flat vector of `named`, in network order: by module
    (the name up to its last '.'), or, when the --params regex has groups, by the groups it captures."""
    pattern = re.compile(params) if params else None
    blocks, offset = {}, 0
    for name, p in named:
        match = pattern.search(name) if pattern is not None and pattern.groups else None
        if match is not None and any(g is not None for g in match.groups()):
            key = ".".join(g for g in match.groups() if g is not None)
        else:
            key = name.rsplit(".", 1)[0] if "." in name else name
        blocks.setdefault(key, []).append(torch.arange(offset, offset + p.numel()))
        offset += p.numel()
    return [(key, torch.cat(parts)) for key, parts in blocks.items()]


def per_layer_spectra(op: Operator, blocks: Sequence[tuple[str, torch.Tensor]], tol: float, max_iter: int, seed: int,
                      trace_samples: int, trace_rel_se: Optional[float]) -> list[LayerCurvature]:
    """[LayerCurvature] of every block: Lanczos on the block's operator, and the traces of all blocks
    from the same probes (algorithms.block_trace_estimate), each deflated by its block's Lanczos basis."""
    runs = []
    for _, idx in blocks:
        block = operators.BlockOperator(op, idx)
        runs.append(algorithms.lanczos(block, top_k=1, tol=tol, max_iter=max_iter, seed=seed, want_min=False,
                                       keep_basis=True))
    if all(not r.finite for r in runs):
        traces, errors = np.full(len(blocks), np.nan), np.full(len(blocks), np.nan)
    else:
        traces, errors, _ = algorithms.block_trace_estimate(op, [idx.to(op.device) for _, idx in blocks],
                                                            max_samples=trace_samples, rel_se=trace_rel_se,
                                                            seed=seed, deflate=runs)
    return [LayerCurvature(name, len(idx), r.max_eig, float(t), float(s), r.iterations, r.converged)
            for (name, idx), r, t, s in zip(blocks, runs, traces, errors)]


# ----------------------------------------------------------------------------- grid maps and directions
def eig_job_compute(net: nn.Module, data: Union[HostSet, tuple[Inputs, torch.Tensor]], criterion: Criterion,
                    device: Device, batch_size: BatchSize, precision: str, spec: CurvatureSpec,
                    loss_name: str = "the loss", group: Optional[PointGroup] = None
                    ) -> Callable[[Callable[[], directions.PointSetter]], Callable[[np.ndarray], np.ndarray]]:
    """make_compute for maps of the extreme eigenvalues of the curvature matrix `spec` names (with the
    products each took and whether Lanczos converged, 1 or 0), Lanczos to spec.tol within spec.max_iter
    from spec.seed. data: (inputs, targets) CPU tensors, or this rank's batches.HostSet (`group`:
    data-parallel points, the products summed over the group)."""
    tol, max_iter, seed = spec.tol, spec.max_iter, spec.seed

    def make(make_mover):
        if torch.device(device).type == "cpu":
            fast_model.keep_freed_memory()
        net.to(device)
        mover = make_mover()
        sample, n = (data.sample[0], data.count) if hasattr(data, "sample") else (data[0], len(data[1]))
        bs = resolve_hessian_batch(batch_size, net, evaluation.to_device(sample, device), device, n)
        op = operator(spec, net, evaluation.on_device(data, device, bs), criterion, loss_name, group)

        def compute(coords):
            out = np.empty((len(coords), len(EIG_KEYS)))
            with evaluation.arithmetic(precision, device):
                for i, c in enumerate(coords):
                    mover.set(c)
                    op.reset()
                    r = algorithms.lanczos(op, top_k=1, tol=tol, max_iter=max_iter, seed=seed)
                    out[i] = (r.eigenvalues[0], r.min_eig, r.iterations, float(r.converged))
            return out
        return compute
    return make


def eig_inputs(precision: str, tol: float, max_iter: int, curvature: str = "hessian",
               hvp: str = "autograd") -> dict[str, Any]:
    """What an eigenvalue map's values depend on beyond the model, data and directions (recorded in the
    surface file, compared on resume; keys of io/provenance.py's SURFACE table)."""
    return {"eig_precision": precision, "eig_tol": float(tol), "eig_max_iter": int(max_iter), "curvature": curvature,
            "hvp": hvp}


def resolve_hessian_batch(batch_size: Optional[BatchSize], net: nn.Module, inputs: Inputs, device: Device,
                          n: Optional[int] = None) -> int:
    """The Hessian's batch size: a number, or (auto) the evaluation's choice for this model and device
    (`inputs`: a sample of the n examples, all of them by default)."""
    if batch_size in (None, "auto"):
        return evaluation.auto_batch_size(net, inputs, n or evaluation.batch_count(inputs), device)
    return int(batch_size)


def top_eigenvectors(net: nn.Module, data: tuple[Inputs, torch.Tensor], criterion: Criterion, device: Device,
                     spec: CurvatureSpec, batch_size: BatchSize, k: int = 2, tol: float = 1e-4, max_iter: int = 200,
                     seed: int = 0, precision: str = "fp32",
                     loss_name: str = "the loss") -> list[tuple[torch.Tensor, float]]:
    """[(eigenvector (flat, CPU), eigenvalue)] of the k largest eigenvalues of the curvature matrix `spec`
    names (over spec.params) at `net`, by Lanczos to `tol` within `max_iter` from `seed` (the directions'
    own settings, not the spec's); the vectors are laid out over directions.hessian_entries (zeros on
    frozen parameters)."""
    curvature, params = spec.matrix, spec.params
    dev_net = copy.deepcopy(net).to(device)
    x, y = evaluation.to_device(data[0], device), data[1].to(device)
    check_curvature_loss(curvature, criterion, loss_name, dev_net, x, y)
    named = covered_params(dev_net, params)
    with evaluation.arithmetic(precision, device):
        op = operator(spec, dev_net, evaluation.DeviceSet(x, y, resolve_hessian_batch(batch_size, dev_net, x, device)),
                      criterion, loss_name, named=named)
        r = algorithms.lanczos(op, top_k=k, tol=tol, max_iter=max_iter, seed=seed, want_min=False,
                               want_vectors=True)
    if r.eigenvectors is None or not np.isfinite(r.eigenvalues).all():
        raise LandscapeError(f"the {curvature} eigenvectors could not be computed at this model (non-finite products)")
    vectors = spread_over_entries(dev_net, named, r.eigenvectors.cpu(), params)
    return [(vectors[i], float(r.eigenvalues[i])) for i in range(k)]


def spread_over_entries(net: nn.Module, named: Sequence[tuple[str, torch.Tensor]], vectors: torch.Tensor,
                        params: str = "") -> torch.Tensor:
    """(k, P) vectors over `named` -> (k, P') over directions.hessian_entries (frozen entries 0)."""
    space = directions.direction_space(net, "weights")
    entries = directions.hessian_entries(space, directions.entry_mask(space, params), bool(params))
    offsets, at = {}, 0
    for name, p in named:
        offsets[name] = (at, p.numel())
        at += p.numel()
    parts = []
    for (name, t), used in zip(space, entries):
        if used:
            lo, n = offsets.get(name, (None, t.numel()))
            parts.append(vectors[:, lo:lo + n] if lo is not None else torch.zeros(len(vectors), n))
    return torch.cat(parts, dim=1)
