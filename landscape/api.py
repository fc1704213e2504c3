"""The Python API: loss landscapes of any model, loss and data (`import landscape`).

    import landscape
    res = landscape.surface(model, (inputs, targets), loss=nn.CrossEntropyLoss(), x="-1:1:51", y="-1:1:51",
                            directions="filter", ignore="biasbn", seed=123, device="cuda", out="s.h5")
    res.x, res.y, res.values["train_loss"]      # NumPy arrays; maps shaped (ny, nx)

Also `interpolation` (model to model2), `path` (through N checkpoints), `eigen_surface` (the Hessian's
extreme eigenvalues over a grid), `hessian` (top eigenpairs, extreme eigenvalues, trace and spectral
density at one point) and `pca` (of a list of checkpoints). Bad arguments, and the user's own
model, loss or metrics failing, raise `LandscapeError` with the one-line message the scripts print.
Under `mpirun` or `torchrun` every rank calls the function with the same arguments; the grid is split
over the ranks (or, with ranks_per_point=K, over groups of K ranks that share each point, each on its
shard of the data) as the scripts split it, and every rank gets the result. Data may be tensors, a
Dataset, a DataLoader or any re-iterable of batches, kept on the device or streamed for each point
(evaluation/batches.py). The model passed in is never changed.

The core under it, shared with the scripts (landscape.grid.job): a `GridJob` says what moves the model (directions or a
path), what each point computes and where results go; `run_job` prepares the files on rank 0 under
the surface's lock (direction file, surface file, resume checks; a refused run writes nothing),
computes the missing points on every rank (grid.scheduler) and records them on rank 0
(io.h5.Recorder: atomic rewrites every flush_seconds, and on the way out whatever happens).
"""
import copy
import functools
import hashlib
import inspect
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from landscape import directions as net_plotter
from landscape import evaluation
from landscape import trajectory as projection
from landscape.curvature import algorithms
from landscape.curvature import model as curvature_model
from landscape.curvature.model import (
    EIG_KEYS,
    eig_inputs,
    eig_job_compute,
    resolve_hessian_batch,
    set_operator,
    top_eigenvectors,
)
from landscape.errors import LandscapeError
from landscape.evaluation import fast_model, loss_job_compute, loss_keys
from landscape.evaluation.batches import prepare_sets
from landscape.grid.job import GridJob, Result, axis, parse_range, run_job
from landscape.io import provenance
from landscape.parallel import mpi as mpi4pytorch
from landscape.parallel.dist import RENDEZVOUS_SECONDS, join_torchrun, point_groups, torchrun_world

__all__ = ["surface", "interpolation", "path", "eigen_surface", "hessian", "pca", "Result", "HessianResult",
           "PCAResult", "LandscapeError", "parse_range"]


# ----------------------------------------------------------------------------- data
def as_tensors(data, what="data"):
    """(inputs, targets) from a pair of tensors (inputs may be a tuple or dict of tensors), a Dataset
    of (input, target) pairs, or a DataLoader of (inputs, targets) batches; all on the CPU."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]):
        inputs, targets = data
    elif isinstance(data, (torch.utils.data.DataLoader, torch.utils.data.Dataset)):
        loader = data if isinstance(data, torch.utils.data.DataLoader) else \
            torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)
        try:
            batches = [(b[0], b[1]) for b in loader]
        except Exception as e:
            raise LandscapeError(f"{what}: cannot read (inputs, targets) batches: {evaluation.first_line(e)}") from None
        if not batches:
            raise LandscapeError(f"{what} is empty")
        inputs, targets = concat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])
    else:
        raise LandscapeError(f"{what} must be an (inputs, targets) pair of tensors, a Dataset or a DataLoader, "
                             f"not {type(data).__name__}")
    if not torch.is_tensor(targets) or evaluation.batch_count(inputs) != len(targets):
        raise LandscapeError(f"{what}: {evaluation.batch_count(inputs)} inputs but "
                             f"{len(targets) if torch.is_tensor(targets) else '?'} targets")
    if len(targets) == 0:
        raise LandscapeError(f"{what} is empty")
    return evaluation.to_device(inputs, "cpu"), targets.cpu()


def concat(parts):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(parts)


# ----------------------------------------------------------------------------- the Python API
def auto_comm(comm):
    """The communicator to split the work over: the given one, or (comm='auto') torchrun's ranks (joining
    torch.distributed if the script has not), or MPI's world when mpirun/srun started more than one
    rank, else None."""
    if comm != "auto":
        return comm
    if torchrun_world():
        return join_torchrun(RENDEZVOUS_SECONDS)
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return mpi4pytorch.setup_mpi(True)[0]
    return None


def ranks(comm, ranks_per_point, device):
    """(rank, nproc, this rank's PointGroup) for `ranks_per_point` ranks per point. Collective."""
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    try:
        return rank, nproc, point_groups(comm, ranks_per_point, torch.device(device))
    except LandscapeError as e:
        raise LandscapeError(str(e).replace("--ranks_per_point", "ranks_per_point")) from None


def is_tensor_pair(data):
    return isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1])


def prepare_data(named, comm, group, device, data_in_memory, batch_size):
    """[(name, data)] -> ([(name, HostSet)] of this rank, the path taken ('yes': in memory, 'no':
    streamed), a fingerprint of each set). Collective; see evaluation/batches.py. A set given as tensors
    is fingerprinted by its contents; a stream is not read for a hash: its kind, size and first batch."""
    named = [(n, d) for n, d in named if d is not None]
    ranks_on_node = 1 if comm is None else mpi4pytorch.local_size(comm)
    sets, in_memory = prepare_sets(named, comm, group, device, data_in_memory, batch_size, None, ranks_on_node)
    prints = [provenance.tensors_sha256(*d) if is_tensor_pair(d) else hashlib.sha256(
              f"{type(d).__name__}:{hs.total}:{provenance.tensors_sha256(hs.sample)}".encode()).hexdigest()
              for (_, d), hs in zip(named, sets)]
    return [(n, hs) for (n, _), hs in zip(named, sets)], in_memory, prints


def make_statistics(net, sets, loss, metrics):
    """What a point computes, checked on two samples of every set (the model, the loss and each metric
    must take the test data too)."""
    (_, train), rest = sets[0], sets[1:]
    stats = evaluation.make_statistics(net, train.sample[0], train.sample[1], loss, metrics)
    for name, hs in rest:
        stats.check(net, hs.sample[0], hs.sample[1], data_name=f"the {name}_data")
    return stats


def full_tensors(data, what):
    """The whole set as tensors, for Hessian directions (computed on rank 0 alone): data given as tensors."""
    if is_tensor_pair(data):
        return as_tensors(data, what)
    raise LandscapeError(f"directions='hessian' needs the {what} as an (inputs, targets) pair of tensors")


def check_data_parallel_recalibration(recal, group, in_memory, examples):
    """BN recalibration reads the whole training set (at least 2 examples) in memory on one rank per point."""
    if recal and group.size > 1:
        raise LandscapeError("bn_recalibrate=True recomputes BatchNorm's statistics from the whole training set on "
                             "one rank; it does not combine with ranks_per_point > 1")
    if recal and in_memory != "yes":
        raise LandscapeError("bn_recalibrate=True reads the training set from memory at every point; this data is "
                             "streamed (data_in_memory='yes' if it fits)")
    if recal:
        evaluation.recalibration_batches(examples, 1)


# ----------------------------------------------------------------------------- argument checks
# Every argument is checked here, before anything runs or is written; each failure is one LandscapeError
# naming the argument and its value.
def checked_call(fn):
    """A public API function whose call is bound to its signature first: an argument it does not take,
    or one missing, is a LandscapeError naming it (not a TypeError from somewhere inside)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            raise LandscapeError(f"{fn.__name__}(): {e}") from None
        return fn(*args, **kwargs)
    return call


def check_whole(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise LandscapeError(f"{name}={value!r} must be a whole number >= {lo}")
    return int(value)


SEED_MAX = 2 ** 63 - 1    # torch's generators take a signed 64-bit seed


def check_seed(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= SEED_MAX:
        raise LandscapeError(f"{name}={value!r} must be a whole number in [0, 2**63)")
    return int(value)


def check_nonnegative(name, value):
    """None, or a number >= 0 (not NaN)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                              or not value >= 0):
        raise LandscapeError(f"{name}={value!r} must be None or a number >= 0")
    return value


def check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
            or not value > 0:
        raise LandscapeError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise LandscapeError(f"{name}={value!r} must be True or False")
    return bool(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise LandscapeError(f"{name}={value!r} must be one of: {', '.join(repr(c) for c in choices)}")
    return value


def check_batch_size(value):
    if value in (None, "auto"):
        return "auto"
    return check_whole("batch_size", value, 1)


def check_text(name, value, suffix=None):
    """None or a string (a path: ending in `suffix`)."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise LandscapeError(f"{name}={value!r} must be a string")
    value = os.fspath(value)
    if suffix and not value.endswith(suffix):
        raise LandscapeError(f"{name}={value!r} must name an {suffix} file (None: no file)")
    return value


def check_comm(comm):
    """None, 'auto', or an MPI communicator (something with Get_rank, Get_size, bcast and allgather)."""
    if comm is None or comm == "auto":
        return comm
    if not all(callable(getattr(comm, m, None)) for m in ("Get_rank", "Get_size", "bcast", "allgather", "gather")):
        raise LandscapeError(f"comm={comm!r} must be None, 'auto' or an MPI communicator (e.g. mpi4py's COMM_WORLD)")
    return comm


def check_run_args(batch_size, precision, comm, flush_seconds, progress, seed=0, points_per_pass=1,
                   memory_format="auto", fold_bn=True, compile=False):
    """The arguments every grid function shares."""
    check_batch_size(batch_size)
    check_choice("precision", precision, evaluation.PRECISIONS)
    check_comm(comm)
    check_positive("flush_seconds", flush_seconds)
    check_flag("progress", progress)
    check_seed("seed", seed)
    check_whole("points_per_pass", points_per_pass, 1)
    check_choice("memory_format", memory_format, ("auto", "channels_last", "contiguous"))
    check_flag("fold_bn", fold_bn)
    check_flag("compile", compile)


def check_bn_recalibrate(value, net, dir_type, points_per_pass=1):
    """bn_recalibrate: a flag that needs a BatchNorm model, dir_type='weights' and one point per pass."""
    if not check_flag("bn_recalibrate", value):
        return False
    if not evaluation.has_batchnorm(net):
        raise LandscapeError("bn_recalibrate=True: the model has no BatchNorm layer with running statistics to "
                             "recompute")
    if dir_type == "states":
        raise LandscapeError("bn_recalibrate=True recomputes the BatchNorm statistics that dir_type='states' moves: "
                             "use dir_type='weights' with it")
    if points_per_pass > 1:
        raise LandscapeError("bn_recalibrate=True recomputes BatchNorm's statistics at each point, one point per "
                             "pass: use points_per_pass=1")
    return True


def warn_bf16(precision, device):
    line = evaluation.bf16_warning(precision, device)
    if line:
        print(line, file=sys.stderr, flush=True)


def resolve_device(device):
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LandscapeError(f"device {device!r} is not a device: {evaluation.first_line(e)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError("device 'cuda' was asked for, but no CUDA GPU is available")
    try:  # a device that holds no data (meta) or cannot be reached is refused here, not mid-run
        torch.ones(1, device=device).add_(1).cpu().item()
    except Exception as e:
        raise LandscapeError(f"device {str(device)!r} cannot compute and return values: {evaluation.first_line(e)}") \
            from None
    return device


def private_copy(model, what="model"):
    """A copy of the user's model in eval mode on the CPU (their own object is never moved or changed)."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"{what} must be a torch.nn.Module, not {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise LandscapeError(f"{what} ({type(model).__name__}) has no parameters: there is nothing to move")
    net = copy.deepcopy(model).cpu()
    net.eval()
    return net


def direction_choice(directions, ndim, norm_y=None):
    """(xdir kind, xnorm, explicit tensors) from the API's `directions`: a normalisation name
    ('filter', 'layer', 'weight', 'dfilter', 'dlayer', '' or None), 'hessian' or 'hessian:<norm>'
    (the Hessian's top eigenvectors), or explicit direction tensors."""
    if directions is None or isinstance(directions, str):
        text = directions or ""
        kind, _, norm = text.partition(":") if text.startswith("hessian") else ("random", "", text)
        if norm not in net_plotter.NORMS:
            raise LandscapeError(f"directions {directions!r}: the normalisation must be one of "
                                 f"{', '.join(repr(n) for n in net_plotter.NORMS)}, or 'hessian[:<norm>]'")
        return kind, norm, None
    return "random", "", directions


def build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, test_data, out, *, model2, model3,
                      metrics, dir_type, params, batch_size, precision, points_per_pass, regenerate, orthogonalize,
                      dir_file, save_directions, same_dir, fold_bn, memory_format, compile, flush_seconds, progress,
                      bn_recalibrate=False, eig=None, comm=None, ranks_per_point=1, data_in_memory="auto",
                      curvature="hessian", hvp="autograd"):
    """The GridJob of `surface()` and `eigen_surface()`, and this rank's PointGroup; every argument checked
    before anything runs. Collective over comm."""
    check_run_args(batch_size, precision, comm, flush_seconds, progress, seed, points_per_pass, memory_format, fold_bn,
                   compile)
    for name, value in (("regenerate", regenerate), ("orthogonalize", orthogonalize), ("same_dir", same_dir)):
        check_flag(name, value)
    check_choice("dir_type", dir_type, net_plotter.DIR_TYPES)
    if ignore not in (None, "", "biasbn"):
        raise LandscapeError(f"ignore={ignore!r} must be '' or 'biasbn'")
    params = check_text("params", params) or ""
    out, dir_file = check_text("out", out, ".h5"), check_text("dir_file", dir_file, ".h5")
    save_directions = check_text("save_directions", save_directions, ".h5")
    device = resolve_device(device)
    curvature_model.check_choices(curvature, hvp)
    net = private_copy(model)
    recal = check_bn_recalibrate(bn_recalibrate, net, dir_type, points_per_pass)
    if x is None:
        raise LandscapeError("x is required: 'min:max:num', a (min, max, num) tuple or a list of coordinates")
    xs, ys = axis(x, "x"), axis(y, "y")
    ndim = 1 if ys is None else 2
    kind, norm, explicit = direction_choice(directions, ndim)
    if explicit is not None and (model2 is not None or model3 is not None or same_dir):
        raise LandscapeError("explicit directions= already give every direction: they take no model2=, model3= "
                             "or same_dir=True")
    if model3 is not None and ys is None:
        raise LandscapeError("model3= sets the y direction, so it needs y=")
    _, nproc, group = ranks(comm, ranks_per_point, device)
    sets, in_memory, prints = prepare_data([("train", data), ("test", test_data)], comm, group, device,
                                           data_in_memory, batch_size)
    check_data_parallel_recalibration(recal, group, in_memory, sets[0][1].total)
    train = sets[0][1].sample
    if eig is None:
        stats = mpi4pytorch.agree(comm, lambda: make_statistics(net, sets, loss, metrics))
    else:
        stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
        mpi4pytorch.agree(comm, lambda: stats.check(net, train[0], train[1]))
    m2 = private_copy(model2, "model2") if model2 is not None else None
    m3 = private_copy(model3, "model3") if model3 is not None else None
    kind = "explicit" if explicit is not None else kind
    norm, ignore = ("", "") if explicit is not None else (norm, ignore or "")
    spec = net_plotter.DirectionSpec(
        dir_type=dir_type, ndim=ndim, seed=int(seed), xnorm="" if m2 is not None else norm, ynorm="" if m3 is not None else norm,
        xignore=ignore, yignore=ignore, same_dir=bool(same_dir),
        xdir="target" if m2 is not None else kind, ydir="target" if m3 is not None else kind,
        orthogonalize=bool(orthogonalize), params=params, regenerate=bool(regenerate), curvature=curvature).check()
    if eig is None and "hessian" not in spec.kinds() and (curvature, hvp) != ("hessian", "autograd"):
        raise LandscapeError("curvature= and hvp= apply to the curvature's eigenvector directions "
                             "(directions='hessian') and to eigen_surface(); these directions use none")
    model_hash = provenance.tensors_sha256(net.state_dict())
    inputs = {"model": type(model).__name__, "model_sha256": model_hash, "loss_name": stats.loss_name,
              "train_size": sets[0][1].total, "data_sha256": prints[0],
              "model2_sha256": provenance.tensors_sha256(m2.state_dict()) if m2 is not None else "",
              "model3_sha256": provenance.tensors_sha256(m3.state_dict()) if m3 is not None else "",
              **evaluation.code_inputs(loss, metrics)}
    prov = dict(inputs, dir_type=dir_type, params=params, seed=int(seed),
                command="landscape." + ("eigen_surface" if eig else "surface"), data_in_memory=in_memory,
                ranks_per_point=group.size)
    if test_data is not None:
        prov.update(test_size=sets[1][1].total, test_data_sha256=prints[1])
    else:                                    # no test set: recorded, and said so by the plots
        prov.update(test_size="none")
    say = (lambda *a, **k: None) if not progress else print
    if eig is None:
        keys, missing = loss_keys([s[0] for s in sets], stats), None
        make = loss_job_compute(net, sets, stats, device, (), batch_size, precision, points_per_pass, fold_bn,
                                memory_format, compile, say, group, bn_recalibrate=recal)
        prov.update(evaluation.loss_inputs(precision, batch_size, recal, ",".join(stats.metrics), device))
    else:
        curvature_model.check_curvature_loss(curvature, stats.criterion, stats.loss_name, net, *train)
        curvature_model.covered_params(net, params or "")
        keys, missing = EIG_KEYS, ["max_eig", "min_eig"]
        make = eig_job_compute(net, sets[0][1], stats.criterion, device, batch_size, precision, eig["tol"],
                               eig["max_iter"], int(seed), params, curvature, hvp, stats.loss_name, group)
        prov.update(eig_inputs(precision, eig["tol"], eig["max_iter"], curvature, hvp))
    hessian = None
    if kind == "hessian":
        whole = full_tensors(data, "data")
        hessian = lambda: top_eigenvectors(net, whole, stats.criterion, device, params, batch_size,
                                           curvature=curvature, hvp=hvp, loss_name=stats.loss_name)
    job = GridJob(net, xs, ys, keys, make, missing, spec=spec, explicit=explicit,
                  model2=(lambda: m2) if m2 is not None else None, model3=(lambda: m3) if m3 is not None else None,
                  hessian=hessian, dir_file=dir_file or (os.path.splitext(out)[0] + "_directions.h5" if out else ""),
                  dir_given=False, surf_file=out or "", prov=provenance.record("surface", **prov),
                  dir_inputs=inputs, net_name=type(model).__name__, model_hash=model_hash,
                  save_directions=save_directions or "", device=device, flush_seconds=flush_seconds,
                  progress=progress, quiet=not progress)
    return job, group


@checked_call
def surface(model, data, loss=None, x="-1:1:51", y=None, directions="filter", ignore="biasbn", seed=123,
            device=None, test_data=None, out=None, *, model2=None, model3=None, metrics=None, dir_type="weights",
            params=None, batch_size="auto", precision="default", points_per_pass=1, regenerate=False,
            orthogonalize=False, dir_file=None, save_directions=None, same_dir=False, fold_bn=True,
            memory_format="auto", compile=False, comm="auto", flush_seconds=5.0, progress=False,
            bn_recalibrate=False, ranks_per_point=1, data_in_memory="auto", curvature="hessian", hvp="autograd"):
    """The loss (accuracy where defined, and metrics) of `model` on `data` over a 1D or 2D grid.

    Args:
        data, test_data: (inputs, targets) tensors, a Dataset, a DataLoader, an IterableDataset or any
            re-iterable of (inputs, targets) batches: kept on the device when they fit, else streamed
            for each point (data_in_memory: auto | yes | no; evaluation/batches.py).
        loss: None (cross-entropy), 'crossentropy', 'mse' (the reference's), or any
            criterion(outputs, targets) -> mean loss. metrics: {name: fn(outputs, targets) -> mean}.
        x, y: a range, 'min:max:num' or the tuple (min, max, num), or the coordinates themselves as a list or
            array: x=(-1, 1, 3) is -1, 0, 1, but x=[-1, 1, 3] is the three points -1, 1, 3 (y=None: a 1D
            curve).
        directions: a normalisation for random directions
            ('filter', ...; '' for none), 'hessian[:<norm>]', or explicit direction tensors (`ignore` and
            the normalisation apply to drawn directions only; `params` and `orthogonalize` to every kind).
            model2 / model3: the x / y direction is model2 - model / model3 - model (interpolation, planes).
        out: an .h5 surface file (the direction file beside it), with resume, locking and crash safety.
        regenerate: random directions drawn entry by entry on the device at every point, never stored.
        bn_recalibrate: recompute BatchNorm's running statistics from `data` at every point (dir_type
            'weights'; batches of batch_size, or 128 with 'auto').
        comm: 'auto' (MPI's or torchrun's ranks when launched so), an mpi4py communicator, or None.
        ranks_per_point: ranks that evaluate each point together, each on its shard of the data.
        curvature, hvp: the matrix whose top eigenvectors directions='hessian' takes ('hessian', 'ggn',
            'ef') and how its products are made ('autograd', 'finite_difference'); see hessian().
    Returns: Result(x, y, values={'train_loss', ['train_acc'], ['train_<metric>'], ['test_...']}, ...).
    """
    comm = auto_comm(check_comm(comm))
    job, group = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, test_data, out, model2=model2,
                            model3=model3, metrics=metrics, dir_type=dir_type, params=params, batch_size=batch_size,
                            precision=precision, points_per_pass=points_per_pass, regenerate=regenerate,
                            orthogonalize=orthogonalize, dir_file=dir_file, save_directions=save_directions,
                            same_dir=same_dir, fold_bn=fold_bn, memory_format=memory_format, compile=compile,
                            flush_seconds=flush_seconds, progress=progress, bn_recalibrate=bn_recalibrate, comm=comm,
                            ranks_per_point=ranks_per_point, data_in_memory=data_in_memory, curvature=curvature,
                            hvp=hvp)
    warn_bf16(precision, job.device)
    return run_job(job, comm, group)


@checked_call
def interpolation(model, model2, data, loss=None, x="-0.5:1.5:41", dir_type="states", **kwargs):
    """The loss along the line from `model` (x=0) to `model2` (x=1), as the reference's --model_file2."""
    fixed = [k for k in ("y", "directions", "ignore", "model2", "model3") if k in kwargs]
    if fixed:
        raise LandscapeError(f"interpolation() sets {', '.join(fixed)} itself; use surface() for other directions")
    if model2 is None:
        raise LandscapeError("interpolation() needs model2, the model at x=1 (surface() draws random directions)")
    unknown = sorted(set(kwargs) - set(inspect.signature(surface).parameters))
    if unknown:
        raise LandscapeError(f"interpolation(): got an unexpected keyword argument {unknown[0]!r}")
    return surface(model, data, loss, x=x, y=None, directions="", ignore="", model2=model2, dir_type=dir_type,
                   **kwargs)


@checked_call
def eigen_surface(model, data, loss=None, x="-1:1:21", y=None, directions="filter", ignore="biasbn", seed=123,
                  device=None, out=None, *, curvature="hessian", hvp="autograd", tol=algorithms.LANCZOS_TOL,
                  max_iter=100, precision="fp32", batch_size="auto", comm="auto", progress=False, ranks_per_point=1,
                  data_in_memory="auto", **kwargs):
    """The largest and smallest eigenvalues of the curvature matrix (curvature='hessian', 'ggn' or 'ef';
    see hessian()) over a grid: values 'max_eig', 'min_eig', 'eig_iters' (products used) and
    'eig_converged' (1 where Lanczos met tol within max_iter, else 0, with a warning). Exact fp32
    arithmetic by default."""
    tol, max_iter = check_positive("tol", tol), check_whole("max_iter", max_iter, 1)
    if precision == "bf16":
        raise LandscapeError("precision bf16 is too coarse for Hessian-vector products; use fp32, default or tf32")
    comm = auto_comm(check_comm(comm))
    job, group = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, None, out,
                            model2=kwargs.pop("model2", None), model3=kwargs.pop("model3", None), metrics=None,
                            dir_type=kwargs.pop("dir_type", "weights"), params=kwargs.pop("params", None),
                            batch_size=batch_size, precision=precision, points_per_pass=1,
                            regenerate=kwargs.pop("regenerate", False), orthogonalize=kwargs.pop("orthogonalize", False),
                            dir_file=kwargs.pop("dir_file", None), save_directions=None,
                            same_dir=kwargs.pop("same_dir", False), fold_bn=False, memory_format="contiguous",
                            compile=False, flush_seconds=kwargs.pop("flush_seconds", 5.0), progress=progress,
                            eig={"tol": tol, "max_iter": max_iter}, comm=comm, ranks_per_point=ranks_per_point,
                            data_in_memory=data_in_memory, curvature=curvature, hvp=hvp)
    if kwargs:
        raise LandscapeError(f"eigen_surface() got unexpected arguments: {', '.join(kwargs)}")
    res = run_job(job, comm, group)
    warn_unconverged_map(res.values.get("eig_converged"), max_iter)
    return res


def warn_unconverged_map(converged, max_iter):
    """A warning naming how many points of an eigenvalue map stopped at max_iter without converging."""
    if converged is None:
        return
    bad = int((np.asarray(converged) == 0).sum())
    if bad:
        warnings.warn(f"Lanczos did not converge at {bad} of {np.asarray(converged).size} points within "
                      f"max_iter={max_iter} products (eig_converged = 0 there): those eigenvalues are estimates; "
                      "raise max_iter", curvature_model.CurvatureWarning, stacklevel=4)


@checked_call
def path(models, data, loss=None, path_type="polychain", x="0:1:21", dir_type="weights", device=None,
         test_data=None, out=None, *, metrics=None, batch_size="auto", precision="default", comm="auto",
         flush_seconds=5.0, progress=False, params=None, bn_recalibrate=False, ranks_per_point=1,
         data_in_memory="auto"):
    """The loss along a path through N models (polychain, or the Bezier curve they control), t in [0, 1].
    params: only the matching entries travel, the others stay at models[0]'s; bn_recalibrate: as surface()."""
    check_run_args(batch_size, precision, comm, flush_seconds, progress)
    check_choice("path_type", path_type, net_plotter.PATH_TYPES)
    check_choice("dir_type", dir_type, net_plotter.DIR_TYPES)
    params = check_text("params", params) or ""
    out = check_text("out", out, ".h5")
    device = resolve_device(device)
    if not isinstance(models, (list, tuple)) or len(models) < 2:
        raise LandscapeError("path() needs a list of at least two models")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    recal = check_bn_recalibrate(bn_recalibrate, nets[0], dir_type)
    xs = path_axis(x)
    comm = auto_comm(comm)
    _, nproc, group = ranks(comm, ranks_per_point, device)
    sets, in_memory, prints = prepare_data([("train", data), ("test", test_data)], comm, group, device,
                                           data_in_memory, batch_size)
    check_data_parallel_recalibration(recal, group, in_memory, sets[0][1].total)
    stats = mpi4pytorch.agree(comm, lambda: make_statistics(nets[0], sets, loss, metrics))
    net = nets[0]
    spaces = [net_plotter.direction_space(n, dir_type) for n in nets]
    net_plotter.entry_mask(spaces[0], params)  # a subset that matches nothing is refused here
    prov = {"model": type(models[0]).__name__, "model_sha256": provenance.tensors_sha256(net.state_dict()),
            "path_type": path_type, "dir_type": dir_type, "params": params,
            "path_sha256": provenance.tensors_sha256(*[n.state_dict() for n in nets]), "loss_name": stats.loss_name,
            "train_size": sets[0][1].total, "data_sha256": prints[0], "command": "landscape.path",
            "data_in_memory": in_memory, "ranks_per_point": group.size, **evaluation.code_inputs(loss, metrics)}
    if test_data is not None:
        prov.update(test_size=sets[1][1].total, test_data_sha256=prints[1])
    else:                                    # no test set: recorded, and said so by the plots
        prov.update(test_size="none")
    prov.update(evaluation.loss_inputs(precision, batch_size, recal, ",".join(stats.metrics), device))
    say = print if progress else (lambda *a, **k: None)
    job = GridJob(net, xs, None, loss_keys([s[0] for s in sets], stats),
                  loss_job_compute(net, sets, stats, device, (), batch_size, precision, 1, True, "auto", False, say,
                                   group, bn_recalibrate=recal),
                  spec=net_plotter.DirectionSpec(dir_type=dir_type, params=params), path=spaces, path_type=path_type,
                  surf_file=out or "", prov=provenance.record("surface", **prov), device=device,
                  flush_seconds=flush_seconds, progress=progress, quiet=not progress)
    warn_bf16(precision, device)
    return run_job(job, comm, group)


def path_axis(x):
    if x is None:
        raise LandscapeError("x is required: 'min:max:num' in [0, 1], a (min, max, num) tuple or a list of t")
    xs = axis(x, "--x")
    if xs.min() < 0 or xs.max() > 1:
        raise LandscapeError(f"a path is parametrised by t in [0, 1]; --x={x!r} leaves it")
    return xs


# ----------------------------------------------------------------------------- curvature at one point
@dataclass
class HessianResult:
    """The curvature matrix at one point (curvature: 'hessian', 'ggn' or 'ef'). eigenvalues: the top_k
    largest, descending; eigenvectors (top_k, P) over the covered parameters flattened in
    net.parameters() order; converged: Lanczos met tol within max_iter for every one of them (and the
    smallest); trace with its standard error (trace_converged: it reached trace_rel_se); esd_grid /
    esd_density: the eigenvalue spectral density (stochastic Lanczos quadrature); per_layer: a
    LayerCurvature (name, parameters, top_eig, trace, trace_stderr, lanczos_products, converged) per
    diagonal block, in network order; products: every operator product made."""
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray = None
    min_eig: float = float("nan")
    lanczos_products: int = 0
    trace: float = float("nan")
    trace_stderr: float = float("nan")
    trace_samples: int = 0
    esd_grid: np.ndarray = None
    esd_density: np.ndarray = None
    parameters: int = 0
    param_names: list = field(default_factory=list)
    seconds: float = 0.0
    converged: bool = True
    trace_converged: bool = True
    curvature: str = "hessian"
    hvp: str = "autograd"
    per_layer: list = None
    products: int = 0
    examples: int = 0              # the examples the loss averages over (every rank's shard)
    data_in_memory: str = ""       # 'yes': kept on the device; 'no': streamed for each product


@checked_call
def hessian(model, data, loss=None, *, curvature="hessian", hvp="autograd", top_k=1, min_eig=True, vectors=False,
            trace=True, trace_samples=100, trace_rel_se=0.02, esd=False, esd_probes=1, esd_steps=100,
            per_layer=False, params=None, device=None, batch_size="auto", precision="fp32",
            tol=algorithms.LANCZOS_TOL, max_iter=100, seed=0, cache="auto", comm="auto", ranks_per_point=None,
            data_in_memory="auto"):
    """Top-k eigenvalues (and eigenvectors), the smallest eigenvalue, the trace (Hutchinson) and the
    spectral density of a curvature matrix of the mean loss at `model`. Exact fp32 arithmetic by default.

    curvature: 'hessian'; 'ggn', the generalised Gauss-Newton J^T H_out J (closed-form H_out for
        cross-entropy and MSE); 'ef', the empirical Fisher (1/N) sum_i g_i g_i^T (the loss must be a
        mean over examples). hvp: 'autograd', or 'finite_difference' (central differences, for
        kernels without double backward or forward mode; warns where the model is not smooth).
    per_layer: also the top eigenvalue and trace of each layer's diagonal block (by module, or by the
        groups of a `params` regex). Frozen parameters (requires_grad=False) stay out unless `params`
        names them. Not converged (max_iter reached) or a trace short of trace_rel_se: a warning, and
        converged / trace_converged False in the result.

    Under mpirun or torchrun (comm='auto') the ranks share the work: groups of ranks_per_point ranks
    (default: every rank) each multiply by the matrix of their shard of the data, and every product
    is summed over the group (curvature/distributed.py); every rank returns the result."""
    check_nonnegative("trace_rel_se", trace_rel_se)
    check_seed("seed", seed)
    device = resolve_device(device)
    for name, value, lo in (("top_k", top_k, 1), ("trace_samples", trace_samples, 2), ("max_iter", max_iter, 1),
                            ("esd_probes", esd_probes, 1), ("esd_steps", esd_steps, 2), ("seed", seed, 0)):
        check_whole(name, value, lo)
    for name, value in (("min_eig", min_eig), ("vectors", vectors), ("trace", trace), ("esd", esd),
                        ("per_layer", per_layer)):
        check_flag(name, value)
    check_positive("tol", tol)
    if top_k > max_iter:
        raise LandscapeError(f"top_k={top_k} exceeds max_iter={max_iter}: Lanczos finds at most max_iter eigenvalues")
    curvature_model.check_choices(curvature, hvp)
    check_batch_size(batch_size)
    check_choice("precision", precision, evaluation.PRECISIONS)
    if cache not in ("auto", True, False):
        raise LandscapeError(f"cache={cache!r} must be 'auto', True or False")
    params = check_text("params", params)
    if precision == "bf16":
        raise LandscapeError("precision bf16 is too coarse for Hessian-vector products; use fp32, default or tf32")
    comm = auto_comm(check_comm(comm))
    rank, nproc, group = ranks(comm, nproc_of(comm) if ranks_per_point is None else ranks_per_point, device)
    net = private_copy(model).to(device)
    if device.type == "cpu":
        fast_model.keep_freed_memory()
    [(_, data_set)], in_memory, _ = prepare_data([("data", data)], comm, group, device, data_in_memory, batch_size)
    stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
    sample = evaluation.to_device(data_set.sample[0], device), data_set.sample[1].to(device)
    mpi4pytorch.agree(comm, lambda: stats.check(net, *sample))
    mpi4pytorch.agree(comm, lambda: curvature_model.check_curvature_loss(curvature, stats.criterion, stats.loss_name,
                                                                         net, *sample))
    named = mpi4pytorch.agree(comm, lambda: curvature_model.covered_params(net, params or ""))
    dim = sum(p.numel() for _, p in named)
    if top_k > dim:
        raise LandscapeError(f"top_k={top_k} exceeds the {dim} parameters the curvature covers")
    t0 = time.perf_counter()
    try:
        with evaluation.arithmetic(precision, device):
            bs = resolve_hessian_batch(batch_size, net, sample[0], device, data_set.count)
            op = set_operator(net, evaluation.on_device(data_set, device, bs), stats.criterion, params or "", cache,
                              group, curvature, hvp, stats.loss_name, named=named)
            res = curvature_at(op, top_k, min_eig, vectors, trace, trace_samples, trace_rel_se, esd, esd_probes,
                               esd_steps, tol, max_iter, seed)
            if per_layer:
                blocks = curvature_model.layer_blocks(named, params or "")
                res.per_layer = curvature_model.per_layer_spectra(op, blocks, tol, max_iter, seed, trace_samples,
                                                                  trace_rel_se)
    except Exception as e:      # never leave the group's other ranks waiting in a product's all-reduce
        mpi4pytorch.abort_on_error(comm, rank, e)
        raise
    res.parameters, res.param_names = op.dim, [n for n, _ in named]
    res.curvature, res.hvp = curvature, hvp
    res.examples, res.data_in_memory = data_set.total, in_memory
    res.seconds, res.products = time.perf_counter() - t0, op.products
    warn_unconverged(res, max_iter, trace_rel_se)
    curvature_model.product_warnings(op)
    return res


def nproc_of(comm):
    return 1 if comm is None else comm.Get_size()


def curvature_at(op, top_k, min_eig, vectors, trace, trace_samples, trace_rel_se, esd, esd_probes, esd_steps, tol,
                 max_iter, seed):
    """The HessianResult of an operator: Lanczos, then the deflated trace and the density as asked."""
    r = algorithms.lanczos(op, top_k=top_k, tol=tol, max_iter=max_iter, seed=seed, want_min=min_eig,
                           want_vectors=vectors, keep_basis=trace,
                           min_steps=curvature_model.TRACE_DEFLATION if trace else 0)
    res = HessianResult(np.asarray(r.eigenvalues, dtype=np.float64),
                        None if r.eigenvectors is None else r.eigenvectors.cpu().numpy(),
                        float(r.min_eig) if min_eig else float("nan"), r.iterations, converged=r.converged)
    if trace:
        res.trace, res.trace_stderr, res.trace_samples, res.trace_converged = point_trace(
            op, r, trace_samples, trace_rel_se, seed)
    if esd:
        out = algorithms.esd(op, n_probes=esd_probes, n_steps=min(esd_steps, op.dim), seed=seed)
        res.esd_grid, res.esd_density = np.asarray(out[0]), np.asarray(out[1])
    return res


def point_trace(op, r, samples, rel_se, seed):
    """(trace, standard error, samples, converged) at one point: exact where the operator has it (the
    empirical Fisher's ||G||^2 / N), NaN at a diverged point, else Hutchinson deflated by the Lanczos
    basis (its part of the trace exact, the rest sampled)."""
    if not r.finite:
        return float("nan"), float("nan"), 0, False
    exact = op.exact_trace() if hasattr(op, "exact_trace") else None
    if exact is not None:
        return exact, 0.0, 0, True
    trace, se, n = algorithms.trace_estimate(op, max_samples=samples, rel_se=rel_se, seed=seed, deflate=r)
    return trace, se, n, rel_se is None or (np.isfinite(se) and se <= rel_se * abs(trace))


def warn_unconverged(res, max_iter, rel_se):
    """Say, as a CurvatureWarning, which curvature values did not converge."""
    if not np.isfinite(res.eigenvalues).all():
        return                                              # a diverged point: NaN, as documented
    if not res.converged:
        warnings.warn(f"Lanczos did not converge within max_iter={max_iter} products: the eigenvalues are "
                      "estimates (converged=False); raise max_iter", curvature_model.CurvatureWarning, stacklevel=4)
    if not res.trace_converged:
        warnings.warn(f"the trace's standard error {res.trace_stderr:.2g} is above trace_rel_se={rel_se} of it after "
                      f"{res.trace_samples} probes (trace_converged=False); raise trace_samples",
                      curvature_model.CurvatureWarning, stacklevel=4)
    bad = [layer.name for layer in res.per_layer or [] if not layer.converged]
    if bad:
        warnings.warn(f"Lanczos did not converge within max_iter={max_iter} products for layer(s) "
                      f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}", curvature_model.CurvatureWarning,
                      stacklevel=4)
    loose = [layer.name for layer in res.per_layer or [] if rel_se is not None and np.isfinite(layer.trace)
             and not layer.trace_stderr <= rel_se * abs(layer.trace)]
    if loose:
        warnings.warn(f"the per-layer trace of {', '.join(loose[:5])}{' ...' if len(loose) > 5 else ''} has a "
                      f"standard error above trace_rel_se={rel_se} of it within trace_samples probes; raise "
                      "trace_samples", curvature_model.CurvatureWarning, stacklevel=4)


# ----------------------------------------------------------------------------- PCA of a trajectory
@dataclass
class PCAResult:
    """The first two principal directions of w_e - w_final over a list of checkpoints, and where each
    checkpoint sits in their plane (coords (n, 2), the final one at (0, 0))."""
    directions: list
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    coords: np.ndarray


@checked_call
def pca(models, dir_type="weights", ignore="", params=None, scratch_dir=None):
    """PCA of a training trajectory: `models` is the list of checkpoints (nn.Modules), the last one final."""
    if not isinstance(models, (list, tuple)) or len(models) < 3:
        raise LandscapeError("pca() needs a list of at least 3 models (checkpoints of one run)")
    check_choice("dir_type", dir_type, net_plotter.DIR_TYPES)
    if ignore not in (None, "", "biasbn"):
        raise LandscapeError(f"ignore={ignore!r} must be '' or 'biasbn'")
    params = check_text("params", params)
    scratch_dir = check_text("scratch_dir", scratch_dir)
    if scratch_dir is not None and not os.path.isdir(scratch_dir):
        raise LandscapeError(f"scratch_dir={scratch_dir!r} is not a folder")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    space = net_plotter.direction_space(nets[-1], dir_type)
    shapes = [tuple(t.shape) for _, t in space]
    for i, n in enumerate(nets[:-1]):
        if [tuple(t.shape) for _, t in net_plotter.direction_space(n, dir_type)] != shapes:
            raise LandscapeError(f"models[{i}] does not have the architecture of the last model (its entries differ "
                                 "in number or shape): a trajectory is one model's checkpoints")
    mask = net_plotter.entry_mask(space, params or "")
    final = projection.flat_space(space, ignore, mask)
    rows = (projection.flat_space(net_plotter.direction_space(n, dir_type), ignore, mask).numpy() - final.numpy()
            for n in nets)
    import tempfile
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        res = projection.pca_from_rows(rows, len(nets), len(final), scratch)
    comps = torch.as_tensor(res["components_"])
    coords = np.array([[float((projection.flat_space(net_plotter.direction_space(n, dir_type), ignore, mask) - final)
                              @ c) for c in comps] for n in nets])
    dirs = [projection.unflatten(c.numpy(), space, mask) for c in comps]
    return PCAResult(dirs, res["explained_variance_ratio_"], res["singular_values_"], coords)
