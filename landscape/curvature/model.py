"""Curvature of a model on its data: the Hessian's parameters and loss terms, its operator, the
maps of its extreme eigenvalues over a grid, and its top eigenvectors (for --xdir/--ydir hessian)."""
import copy

import numpy as np
import torch

from landscape import directions as net_plotter
from landscape import evaluation
from landscape.curvature import hvp as hess_vec_prod
from landscape.curvature.distributed import DataParallelOperator
from landscape.errors import LandscapeError
from landscape.evaluation import fast_model

EIG_KEYS = ["max_eig", "min_eig", "eig_iters"]


def hessian_params(net, params=""):
    """The parameters the Hessian covers: those matching `params`, else (the reference) those of dim > 1."""
    space = net_plotter.direction_space(net, "weights")
    covered = net_plotter.hessian_entries(space, net_plotter.entry_mask(space, params), bool(params))
    named = dict(net.named_parameters())
    return [(n, named[n]) for (n, _), c in zip(space, covered) if c]


def loss_terms(net, inputs, targets, criterion, batch_size):
    """() -> the batches' shares of the mean loss (mean_b * B_b / N): the Hessian's loss, batch by batch."""
    n = len(targets)

    def terms():
        for start in range(0, n, batch_size):
            yb = targets[start:start + batch_size]
            out = evaluation.forward(net, evaluation.take(inputs, start, start + batch_size))
            yield evaluation.call_user(criterion, "the loss", out, yb) * (len(yb) / n)
    return terms


def batch_terms(net, batches, criterion, total):
    """() -> each batch's share of the mean loss over `total` examples (mean_b * B_b / total). With
    data-parallel points `batches` is this rank's shard and `total` the whole set's size, so the
    shards' Hessians add up to the whole set's (curvature/distributed.py)."""
    def terms():
        for xb, yb in batches:
            out = evaluation.forward(net, xb)
            yield evaluation.call_user(criterion, "the loss", out, yb) * (len(yb) / total)
    return terms


def set_operator(net, dev_set, criterion, params="", cache="auto", group=None):
    """The Hessian of the mean loss over a set on the device (batches.DeviceSet or StreamedSet; with
    `group`, this rank's shard, the products summed over the group)."""
    named = hessian_params(net, params)
    op = hess_vec_prod.HessianOperator([p for _, p in named], batch_terms(net, dev_set, criterion, dev_set.total),
                                       cache=cache)
    return op if group is None or group.size == 1 else DataParallelOperator(op, group)


def hessian_operator(net, inputs, targets, criterion, batch_size, params="", cache="auto"):
    """The Hessian of the mean loss over (inputs, targets) w.r.t. the covered parameters, on their device."""
    named = hessian_params(net, params)
    return hess_vec_prod.HessianOperator([p for _, p in named], loss_terms(net, inputs, targets, criterion,
                                                                           batch_size), cache=cache)


def eig_job_compute(net, data, criterion, device, batch_size, precision, tol, max_iter, seed, params="", group=None):
    """make_compute for maps of the Hessian's extreme eigenvalues (and the products each took).
    data: (inputs, targets) CPU tensors, or this rank's batches.HostSet (`group`: data-parallel points)."""
    def make(make_mover):
        if torch.device(device).type == "cpu":
            fast_model.keep_freed_memory()
        net.to(device)
        mover = make_mover()
        sample, n = (data.sample[0], data.count) if hasattr(data, "sample") else (data[0], len(data[1]))
        bs = resolve_hessian_batch(batch_size, net, evaluation.to_device(sample, device), device, n)
        op = set_operator(net, evaluation.on_device(data, device, bs), criterion, params, group=group)

        def compute(coords):
            out = np.empty((len(coords), 3))
            with evaluation.arithmetic(precision, device):
                for i, c in enumerate(coords):
                    mover.set(c)
                    op.reset()
                    r = hess_vec_prod.lanczos(op, top_k=1, tol=tol, max_iter=max_iter, seed=seed)
                    out[i] = (r.eigenvalues[0], r.min_eig, r.iterations)
            return out
        return compute
    return make


def eig_inputs(precision, tol, max_iter):
    """What an eigenvalue map's values depend on beyond the model, data and directions (recorded in the
    surface file, compared on resume; keys of io/provenance.py's SURFACE table)."""
    return {"eig_precision": precision, "eig_tol": float(tol), "eig_max_iter": int(max_iter)}


def resolve_hessian_batch(batch_size, net, inputs, device, n=None):
    """The Hessian's batch size: a number, or (auto) the evaluation's choice for this model and device
    (`inputs`: a sample of the n examples, all of them by default)."""
    if batch_size in (None, "auto"):
        return evaluation.auto_batch_size(net, inputs, n or evaluation.batch_count(inputs), device)
    return int(batch_size)


def top_eigenvectors(net, data, criterion, device, params, batch_size, k=2, tol=1e-4, max_iter=200, seed=0,
                     precision="fp32"):
    """[(eigenvector (flat, CPU), eigenvalue)] of the k largest eigenvalues of the Hessian at `net`."""
    dev_net = copy.deepcopy(net).to(device)
    x, y = evaluation.to_device(data[0], device), data[1].to(device)
    with evaluation.arithmetic(precision, device):
        op = hessian_operator(dev_net, x, y, criterion, resolve_hessian_batch(batch_size, dev_net, x, device),
                              params)
        r = hess_vec_prod.lanczos(op, top_k=k, tol=tol, max_iter=max_iter, seed=seed, want_min=False,
                                  want_vectors=True)
    if r.eigenvectors is None or not np.isfinite(r.eigenvalues).all():
        raise LandscapeError("the Hessian's eigenvectors could not be computed at this model (non-finite products)")
    return [(r.eigenvectors[i].cpu(), float(r.eigenvalues[i])) for i in range(k)]


