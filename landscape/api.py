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

The path under it, shared with the scripts: each grid function turns its arguments into a checked
`RunSpec` (landscape.spec, whose messages name the arguments as written here) and hands it, with the
model and data (build.Sources), to build.build_grid_job, the builder plot_surface.py uses too; the
`GridJob` it returns goes to grid.job.run_job, which prepares the files on rank 0 under the surface's
lock (direction file, surface file, resume checks; a refused run writes nothing), computes the missing
points on every rank (grid.scheduler) and records them on rank 0 (io.h5.Recorder). hessian() builds its
operator from a CurvatureSpec with curvature.model.operator, as the grid's eigenvalue maps do.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from landscape import directions as dirs
from landscape import evaluation
from landscape import trajectory
from landscape.curvature import algorithms
from landscape.curvature import model as curvature_model
from landscape import build
from landscape import curves
from landscape.curvature.model import resolve_hessian_batch
from landscape.errors import LandscapeError
from landscape.evaluation import fast_model
from landscape.evaluation.batches import HostSet, prepare_sets
from landscape.grid.job import GridJob, Result, axis, parse_range, run_job
from landscape.io import provenance
from landscape.parallel import mpi
from landscape.parallel.dist import RENDEZVOUS_SECONDS, PointGroup, join_torchrun, point_groups, torchrun_world
from landscape import spec
from landscape.spec import (
    Axes,
    BatchSize,
    CurvatureSpec,
    DirectionSpec,
    EvaluationSpec,
    FileSpec,
    ParallelSpec,
    RunSpec,
    check_curvature_precision,
)

# what the API's arguments take (see surface()'s docstring)
Data = Any          # (inputs, targets) tensors, a Dataset, a DataLoader, an IterableDataset or a re-iterable of batches
Loss = Union[None, str, Callable]                       # None, 'crossentropy', 'mse', or criterion(outputs, targets)
Metrics = Optional[dict]                                # {name: fn(outputs, targets) -> mean}
AxisArg = Union[None, str, tuple, Sequence[float], np.ndarray]   # 'min:max:num', (min, max, num), or coordinates
Device = Union[None, str, torch.device]
Comm = Any          # None, 'auto', or an mpi4py communicator
Path = Union[str, os.PathLike]

__all__ = ["surface", "interpolation", "path", "eigen_surface", "hessian", "pca", "Result", "HessianResult",
           "PCAResult", "LandscapeError", "parse_range"]


# ----------------------------------------------------------------------------- data
def as_tensors(data: Data, what: str = "data") -> tuple[Any, torch.Tensor]:
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


def concat(parts: list) -> Any:
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(parts)


# ----------------------------------------------------------------------------- the Python API
def auto_comm(comm: Comm) -> Comm:
    """The communicator to split the work over: the given one, or (comm='auto') torchrun's ranks (joining
    torch.distributed if the script has not), or MPI's world when mpirun/srun started more than one
    rank, else None."""
    if comm != "auto":
        return comm
    if torchrun_world():
        return join_torchrun(RENDEZVOUS_SECONDS)
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return mpi.setup_mpi(True)[0]
    return None


def ranks(comm: Comm, ranks_per_point: int, device: Device) -> tuple[int, int, PointGroup]:
    """(rank, nproc, this rank's PointGroup) for `ranks_per_point` ranks per point. Collective."""
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    return rank, nproc, point_groups(comm, ranks_per_point, torch.device(device), name="ranks_per_point")


def is_tensor_pair(data: Data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1])


def prepare_data(named: list, comm: Comm, group: PointGroup, device: Device, data_in_memory: str,
                 batch_size: BatchSize) -> tuple[list, str, list[str]]:
    """[(name, data)] -> ([(name, HostSet)] of this rank, the path taken ('yes': in memory, 'no':
    streamed), a fingerprint of each set). Collective; see evaluation/batches.py."""
    named = [(n, d) for n, d in named if d is not None]
    ranks_on_node = 1 if comm is None else mpi.local_size(comm)
    sets, in_memory = prepare_sets(named, comm, group, device, data_in_memory, batch_size, None, ranks_on_node)
    return [(n, hs) for (n, _), hs in zip(named, sets)], in_memory, [fingerprint(d, hs) for (_, d), hs in
                                                                     zip(named, sets)]


def fingerprint(data: Data, hs: HostSet) -> str:
    """A set given as tensors is fingerprinted by its contents; a stream is not read for a hash: its kind,
    size and first batch."""
    if is_tensor_pair(data):
        return provenance.tensors_sha256(*data)
    return hashlib.sha256(f"{type(data).__name__}:{hs.total}:{provenance.tensors_sha256(hs.sample)}".encode()
                          ).hexdigest()


def test_record(sets: list, prints: list[str]) -> dict[str, Any]:
    """The test set's size and fingerprint, or test_size 'none' (no test set: recorded, and said so by the plots)."""
    if len(sets) > 1:
        return {"test_size": sets[1][1].total, "test_data_sha256": prints[1]}
    return {"test_size": "none"}


def make_statistics(net: nn.Module, sets: list, loss: Loss, metrics: Metrics) -> evaluation.Statistics:
    """What a point computes, checked on two samples of every set (the model, the loss and each metric
    must take the test data too)."""
    (_, train), rest = sets[0], sets[1:]
    stats = evaluation.make_statistics(net, train.sample[0], train.sample[1], loss, metrics)
    for name, hs in rest:
        stats.check(net, hs.sample[0], hs.sample[1], data_name=f"the {name}_data")
    return stats


def full_tensors(data: Data, what: str) -> tuple[Any, torch.Tensor]:
    """The whole set as tensors, for Hessian directions (computed on rank 0 alone): data given as tensors."""
    if is_tensor_pair(data):
        return as_tensors(data, what)
    raise LandscapeError(f"directions='hessian' needs the {what} as an (inputs, targets) pair of tensors")


# ----------------------------------------------------------------------------- argument checks
# Every argument is checked here, before anything runs or is written; each failure is one LandscapeError
# naming the argument and its value.
def checked_call(fn: Callable) -> Callable:
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


def check_whole(name: str, value: Any, lo: int) -> int:
    return spec.whole("api", name, value, lo)


def check_seed(name: str, value: Any) -> int:
    return spec.seed_value("api", name, value)


def check_nonnegative(name: str, value: Any) -> Optional[float]:
    """None, or a number >= 0 (not NaN)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                              or not value >= 0):
        raise LandscapeError(f"{name}={value!r} must be None or a number >= 0")
    return value


def check_positive(name: str, value: Any) -> float:
    return spec.positive("api", name, value)


def check_flag(name: str, value: Any) -> bool:
    return spec.flag("api", name, value)


def check_choice(name: str, value: Any, choices: tuple) -> str:
    return spec.choice("api", name, value, choices)


def check_text(name: str, value: Any, suffix: Optional[str] = None) -> Optional[str]:
    """None or a string (a path: ending in `suffix`)."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise LandscapeError(f"{name}={value!r} must be a string")
    value = os.fspath(value)
    if suffix and not value.endswith(suffix):
        raise LandscapeError(f"{name}={value!r} must name an {suffix} file (None: no file)")
    return value


def check_comm(comm: Comm) -> Comm:
    """None, 'auto', or an MPI communicator (something with Get_rank, Get_size, bcast and allgather)."""
    if comm is None or comm == "auto":
        return comm
    if not all(callable(getattr(comm, m, None)) for m in ("Get_rank", "Get_size", "bcast", "allgather", "gather")):
        raise LandscapeError(f"comm={comm!r} must be None, 'auto' or an MPI communicator (e.g. mpi4py's COMM_WORLD)")
    return comm


def resolve_device(device: Device) -> torch.device:
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


def private_copy(model: nn.Module, what: str = "model") -> nn.Module:
    """A copy of the user's model in eval mode on the CPU (their own object is never moved or changed)."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"{what} must be a torch.nn.Module, not {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise LandscapeError(f"{what} ({type(model).__name__}) has no parameters: there is nothing to move")
    net = copy.deepcopy(model).cpu()
    net.eval()
    return net


def direction_choice(directions: Union[None, str, list], ndim: int, norm_y: Optional[str] = None
                     ) -> tuple[str, str, Optional[list]]:
    """(xdir kind, xnorm, explicit tensors) from the API's `directions`: a normalisation name
    ('filter', 'layer', 'weight', 'dfilter', 'dlayer', '' or None), 'hessian' or 'hessian:<norm>'
    (the Hessian's top eigenvectors), or explicit direction tensors."""
    if directions is None or isinstance(directions, str):
        text = directions or ""
        kind, _, norm = text.partition(":") if text.startswith("hessian") else ("random", "", text)
        if norm not in spec.NORMS:
            raise LandscapeError(f"directions {directions!r}: the normalisation must be one of "
                                 f"{', '.join(repr(n) for n in spec.NORMS)}, or 'hessian[:<norm>]'")
        return kind, norm, None
    return "random", "", directions


def grid_spec(a: dict, maps: str = "loss") -> tuple[RunSpec, Optional[list]]:
    """The RunSpec of a surface() / eigen_surface() call (`a`: its arguments by name), checked, and the
    explicit direction tensors it gives (or None). Touches no file and no data."""
    for key in ("regenerate", "orthogonalize", "same_dir", "progress", "bn_recalibrate"):
        check_flag(key, a[key])
    check_comm(a["comm"])
    if a["ignore"] not in (None, "", "biasbn"):
        raise LandscapeError(f"ignore={a['ignore']!r} must be '' or 'biasbn'")
    params = check_text("params", a["params"]) or ""
    out, dir_file = check_text("out", a["out"], ".h5"), check_text("dir_file", a["dir_file"], ".h5")
    save_directions = check_text("save_directions", a["save_directions"], ".h5")
    seed = check_seed("seed", a["seed"])
    if a["x"] is None:
        raise LandscapeError("x is required: 'min:max:num', a (min, max, num) tuple or a list of coordinates")
    xs, ys = axis(a["x"], "x"), axis(a["y"], "y")
    kind, norm, explicit = direction_choice(a["directions"], 1 if ys is None else 2)
    has2, has3 = a["model2"] is not None, a["model3"] is not None
    if explicit is not None and (has2 or has3 or a["same_dir"]):
        raise LandscapeError("explicit directions= already give every direction: they take no model2=, model3= "
                             "or same_dir=True")
    kind = "explicit" if explicit is not None else kind
    norm, ignore = ("", "") if explicit is not None else (norm, a["ignore"] or "")
    directions = DirectionSpec(
        dir_type=a["dir_type"], ndim=1 if ys is None else 2, seed=seed, xnorm="" if has2 else norm,
        ynorm="" if has3 else norm, xignore=ignore, yignore=ignore, same_dir=bool(a["same_dir"]),
        xdir="target" if has2 else kind, ydir="target" if has3 else kind, orthogonalize=bool(a["orthogonalize"]),
        params=params, regenerate=bool(a["regenerate"]), curvature=a["curvature"])
    run = RunSpec(
        Axes(tuple(xs), None if ys is None else tuple(ys)), directions,
        EvaluationSpec("auto" if a["batch_size"] in (None, "auto") else a["batch_size"], a["precision"],
                       a["points_per_pass"], a["fold_bn"], a["memory_format"], a["compile"],
                       bool(a["bn_recalibrate"])),
        CurvatureSpec(a["curvature"], a["hvp"], a.get("tol", algorithms.LANCZOS_TOL), a.get("max_iter", 100), seed,
                      params),
        ParallelSpec(a["comm"], a["ranks_per_point"], a["data_in_memory"]),
        FileSpec(out or "", dir_file or build.default_dir_file(out), save_directions or "", a["flush_seconds"]),
        maps=maps, progress=a["progress"], front="api")
    return run.check(), explicit


def grid_job(run: RunSpec, device: Device, model: nn.Module, data: Data, test_data: Optional[Data], loss: Loss,
             metrics: Metrics, model2: Optional[nn.Module] = None, model3: Optional[nn.Module] = None,
             explicit: Optional[list] = None, command: str = "landscape.surface", comm: Comm = None
             ) -> tuple[GridJob, PointGroup]:
    """The GridJob of a checked surface() / eigen_surface() run, and this rank's PointGroup. Collective."""
    device = resolve_device(device)
    net = private_copy(model)
    m2 = private_copy(model2, "model2") if model2 is not None else None
    m3 = private_copy(model3, "model3") if model3 is not None else None
    _, _, group = ranks(comm, run.parallel.ranks_per_point, device)
    model_hash = provenance.tensors_sha256(net.state_dict())
    given = [("train", data), ("test", test_data)]

    def statistics(sets):
        if run.maps == "loss":
            return make_statistics(net, sets, loss, metrics)
        stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
        stats.check(net, *sets[0][1].sample[:2])
        return stats

    prints = []

    def inputs(sets, stats):
        prints[:] = [fingerprint(d, hs) for (_, d), (_, hs) in zip([g for g in given if g[1] is not None], sets)]
        return {"model": type(model).__name__, "model_sha256": model_hash, "loss_name": stats.loss_name,
                "train_size": sets[0][1].total, "data_sha256": prints[0],
                "model2_sha256": provenance.tensors_sha256(m2.state_dict()) if m2 is not None else "",
                "model3_sha256": provenance.tensors_sha256(m3.state_dict()) if m3 is not None else "",
                **evaluation.code_inputs(loss, metrics if run.maps == "loss" else None)}

    def record(inputs, sets):
        d = run.directions
        return dict(inputs, dir_type=d.dir_type, params=d.params, seed=d.seed, command=command,
                    **test_record(sets, prints))

    src = build.Sources(net, given, statistics, inputs, record, net_name=type(model).__name__,
                  model_hash=lambda inputs: model_hash, model2=(lambda: m2) if m2 is not None else None,
                  model3=(lambda: m3) if m3 is not None else None, hessian_data=lambda: full_tensors(data, "data"),
                  explicit=explicit)
    say = print if run.progress else (lambda *a, **k: None)
    return build.build_grid_job(run, src, comm, group, device, say=say), group


@checked_call
def surface(model: nn.Module, data: Data, loss: Loss = None, x: AxisArg = "-1:1:51", y: AxisArg = None,
            directions: Union[None, str, list] = "filter", ignore: Optional[str] = "biasbn", seed: int = 123,
            device: Device = None, test_data: Optional[Data] = None, out: Optional[Path] = None, *,
            model2: Optional[nn.Module] = None, model3: Optional[nn.Module] = None, metrics: Metrics = None,
            dir_type: str = "weights", params: Optional[str] = None, batch_size: BatchSize = "auto",
            precision: str = "default", points_per_pass: int = 1, regenerate: bool = False,
            orthogonalize: bool = False, dir_file: Optional[Path] = None, save_directions: Optional[Path] = None,
            same_dir: bool = False, fold_bn: bool = True, memory_format: str = "auto", compile: bool = False,
            comm: Comm = "auto", flush_seconds: float = 5.0, progress: bool = False, bn_recalibrate: bool = False,
            ranks_per_point: int = 1, data_in_memory: str = "auto", curvature: str = "hessian",
            hvp: str = "autograd") -> Result:
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
    run, explicit = grid_spec(dict(locals()))
    comm = auto_comm(comm)
    job, group = grid_job(run, device, model, data, test_data, loss, metrics, model2, model3, explicit,
                          "landscape.surface", comm)
    return run_job(job, comm, group)


@checked_call
def interpolation(model: nn.Module, model2: nn.Module, data: Data, loss: Loss = None, x: AxisArg = "-0.5:1.5:41",
                  dir_type: str = "states", **kwargs: Any) -> Result:
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
def eigen_surface(model: nn.Module, data: Data, loss: Loss = None, x: AxisArg = "-1:1:21", y: AxisArg = None,
                  directions: Union[None, str, list] = "filter", ignore: Optional[str] = "biasbn", seed: int = 123,
                  device: Device = None, out: Optional[Path] = None, *, curvature: str = "hessian",
                  hvp: str = "autograd", tol: float = algorithms.LANCZOS_TOL, max_iter: int = 100,
                  precision: str = "fp32", batch_size: BatchSize = "auto", comm: Comm = "auto", progress: bool = False,
                  ranks_per_point: int = 1, data_in_memory: str = "auto", **kwargs: Any) -> Result:
    """The largest and smallest eigenvalues of the curvature matrix (curvature='hessian', 'ggn' or 'ef';
    see hessian()) over a grid: values 'max_eig', 'min_eig', 'eig_iters' (products used) and
    'eig_converged' (1 where Lanczos met tol within max_iter, else 0, with a warning). Exact fp32
    arithmetic by default."""
    a = dict(locals())
    extra = a.pop("kwargs")
    unknown = sorted(set(extra) - set(EIGEN_SURFACE_EXTRA))
    if unknown:
        raise LandscapeError(f"eigen_surface() got unexpected arguments: {', '.join(unknown)}")
    a.update(EIGEN_SURFACE_EXTRA, **extra)
    a.update(test_data=None, metrics=None, points_per_pass=1, save_directions=None, fold_bn=False,
             memory_format="contiguous", compile=False, bn_recalibrate=False)
    run, explicit = grid_spec(a, maps="eig")
    comm = auto_comm(comm)
    job, group = grid_job(run, device, model, data, None, loss, None, a["model2"], a["model3"], explicit,
                          "landscape.eigen_surface", comm)
    res = run_job(job, comm, group)
    warn_unconverged_map(res.values.get("eig_converged"), max_iter)
    return res


# eigen_surface()'s further keyword arguments, and their defaults (as surface()'s)
EIGEN_SURFACE_EXTRA = {"model2": None, "model3": None, "dir_type": "weights", "params": None, "regenerate": False,
                       "orthogonalize": False, "dir_file": None, "same_dir": False, "flush_seconds": 5.0}


def warn_unconverged_map(converged: Optional[np.ndarray], max_iter: int) -> None:
    """A warning naming how many points of an eigenvalue map stopped at max_iter without converging."""
    if converged is None:
        return
    bad = int((np.asarray(converged) == 0).sum())
    if bad:
        warnings.warn(f"Lanczos did not converge at {bad} of {np.asarray(converged).size} points within "
                      f"max_iter={max_iter} products (eig_converged = 0 there): those eigenvalues are estimates; "
                      "raise max_iter", curvature_model.CurvatureWarning, stacklevel=4)


@checked_call
def path(models: Sequence[nn.Module], data: Data, loss: Loss = None, path_type: str = "polychain",
         x: AxisArg = "0:1:21", dir_type: str = "weights", device: Device = None, test_data: Optional[Data] = None,
         out: Optional[Path] = None, *, metrics: Metrics = None, batch_size: BatchSize = "auto",
         precision: str = "default", comm: Comm = "auto", flush_seconds: float = 5.0, progress: bool = False,
         params: Optional[str] = None, bn_recalibrate: bool = False, ranks_per_point: int = 1,
         data_in_memory: str = "auto") -> Result:
    """The loss along a path through N models (polychain, or the Bezier curve they control), t in [0, 1].
    params: only the matching entries travel, the others stay at models[0]'s; bn_recalibrate: as surface()."""
    check_comm(comm)
    for key, value in (("progress", progress), ("bn_recalibrate", bn_recalibrate)):
        check_flag(key, value)
    params = check_text("params", params) or ""
    out = check_text("out", out, ".h5")
    if not isinstance(models, (list, tuple)) or len(models) < 2:
        raise LandscapeError("path() needs a list of at least two models")
    run = RunSpec(Axes(tuple(path_axis(x))), DirectionSpec(dir_type=dir_type, params=params),
                  EvaluationSpec("auto" if batch_size in (None, "auto") else batch_size, precision,
                                 bn_recalibrate=bool(bn_recalibrate)),
                  parallel=ParallelSpec(comm, ranks_per_point, data_in_memory),
                  files=FileSpec(out or "", flush_seconds=flush_seconds), path_type=path_type, progress=progress,
                  front="api").check()
    device = resolve_device(device)
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    net = nets[0]
    spaces = [dirs.direction_space(n, dir_type) for n in nets]
    dirs.entry_mask(spaces[0], params)  # a subset that matches nothing is refused here
    comm = auto_comm(comm)
    _, _, group = ranks(comm, ranks_per_point, device)
    given, prints = [("train", data), ("test", test_data)], []

    def inputs(sets, stats):
        prints[:] = [fingerprint(d, hs) for (_, d), (_, hs) in zip([g for g in given if g[1] is not None], sets)]
        return {"model": type(models[0]).__name__, "model_sha256": provenance.tensors_sha256(net.state_dict()),
                "path_type": path_type, "dir_type": dir_type, "params": params,
                "path_sha256": provenance.tensors_sha256(*[n.state_dict() for n in nets]),
                "loss_name": stats.loss_name, "train_size": sets[0][1].total, "data_sha256": prints[0],
                "command": "landscape.path", **evaluation.code_inputs(loss, metrics)}

    src = build.Sources(net, given, lambda sets: make_statistics(net, sets, loss, metrics), inputs,
                  lambda inputs, sets: dict(inputs, **test_record(sets, prints)), path=spaces)
    say = print if progress else (lambda *a, **k: None)
    return run_job(build.build_grid_job(run, src, comm, group, device, say=say), comm, group)


def path_axis(x: AxisArg) -> np.ndarray:
    if x is None:
        raise LandscapeError("x is required: 'min:max:num' in [0, 1], a (min, max, num) tuple or a list of t")
    xs = axis(x, "--x")
    if xs.min() < 0 or xs.max() > 1:
        raise LandscapeError(f"a path is parametrised by t in [0, 1]; --x={x!r} leaves it")
    return xs


# ----------------------------------------------------------------------------- curves between minima
@checked_call
def find_curve(model: nn.Module, model2: nn.Module, data: Data, loss: Loss = None, *, kind: str = "bezier",
               bends: int = 1, epochs: int = 10, lr: float = 0.05, batch_size: int = 128, seed: int = 0,
               momentum: float = 0.9, weight_decay: float = 0.0, device: Device = None,
               state_file: Optional[Path] = None) -> list[nn.Module]:
    """Train a low-loss curve between `model` and `model2` (landscape/curves.py): returns the bends as
    models (copies of `model` with the curve's parameters). path([model, *bends, model2], data,
    path_type=kind) evaluates it. data: (inputs, targets) tensors; state_file: resume from / save to it."""
    spec = curves.CurveSpec(kind, bends, epochs, lr, batch_size, seed, momentum, weight_decay).check("api")
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise LandscapeError("find_curve() trains on data given as (inputs, targets) tensors")
    if len(data[0]) != len(data[1]) or len(data[1]) == 0:
        raise LandscapeError(f"data: {len(data[0])} inputs and {len(data[1])} targets: they must be as many, > 0")
    state_file = check_text("state_file", state_file)
    net, net2 = private_copy(model, "model"), private_copy(model2, "model2")
    criterion = evaluation.resolve_loss(loss)[0]
    r = curves.train_curve(net, net.state_dict(), net2.state_dict(), data[0], data[1], spec, criterion,
                           resolve_device(device), state_file=state_file)
    out = []
    for state in r.bends:
        bend = copy.deepcopy(model)
        bend.load_state_dict(state)
        out.append(bend.eval())
    return out


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
def hessian(model: nn.Module, data: Data, loss: Loss = None, *, curvature: str = "hessian", hvp: str = "autograd",
            top_k: int = 1, min_eig: bool = True, vectors: bool = False, trace: bool = True, trace_samples: int = 100,
            trace_rel_se: Optional[float] = 0.02, esd: bool = False, esd_probes: int = 1, esd_steps: int = 100,
            per_layer: bool = False, params: Optional[str] = None, device: Device = None,
            batch_size: BatchSize = "auto", precision: str = "fp32", tol: float = algorithms.LANCZOS_TOL,
            max_iter: int = 100, seed: int = 0, cache: Union[str, bool] = "auto", comm: Comm = "auto",
            ranks_per_point: Optional[int] = None, data_in_memory: str = "auto") -> HessianResult:
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
    for name, value, lo in (("top_k", top_k, 1), ("trace_samples", trace_samples, 2), ("esd_probes", esd_probes, 1),
                            ("esd_steps", esd_steps, 2)):
        check_whole(name, value, lo)
    for name, value in (("min_eig", min_eig), ("vectors", vectors), ("trace", trace), ("esd", esd),
                        ("per_layer", per_layer)):
        check_flag(name, value)
    params = check_text("params", params)
    matrix = CurvatureSpec(curvature, hvp, tol, max_iter, check_seed("seed", seed), params or "").check("api")
    if top_k > max_iter:
        raise LandscapeError(f"top_k={top_k} exceeds max_iter={max_iter}: Lanczos finds at most max_iter eigenvalues")
    EvaluationSpec("auto" if batch_size in (None, "auto") else batch_size, precision).check("api")
    check_curvature_precision("api", precision)
    if cache not in ("auto", True, False):
        raise LandscapeError(f"cache={cache!r} must be 'auto', True or False")
    ParallelSpec(comm, ranks_per_point, data_in_memory).check("api")
    device = resolve_device(device)
    comm = auto_comm(check_comm(comm))
    rank, nproc, group = ranks(comm, nproc_of(comm) if ranks_per_point is None else ranks_per_point, device)
    net = private_copy(model).to(device)
    if device.type == "cpu":
        fast_model.keep_freed_memory()
    [(_, data_set)], in_memory, _ = prepare_data([("data", data)], comm, group, device, data_in_memory, batch_size)
    stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
    sample = evaluation.to_device(data_set.sample[0], device), data_set.sample[1].to(device)
    mpi.agree(comm, lambda: stats.check(net, *sample))
    mpi.agree(comm, lambda: curvature_model.check_curvature_loss(curvature, stats.criterion, stats.loss_name,
                                                                 net, *sample))
    named = mpi.agree(comm, lambda: curvature_model.covered_params(net, params or ""))
    dim = sum(p.numel() for _, p in named)
    if top_k > dim:
        raise LandscapeError(f"top_k={top_k} exceeds the {dim} parameters the curvature covers")
    t0 = time.perf_counter()
    try:
        with evaluation.arithmetic(precision, device):
            bs = resolve_hessian_batch(batch_size, net, sample[0], device, data_set.count)
            op = curvature_model.operator(matrix, net, evaluation.on_device(data_set, device, bs), stats.criterion,
                                          stats.loss_name, group, cache, named)
            res = curvature_at(op, top_k, min_eig, vectors, trace, trace_samples, trace_rel_se, esd, esd_probes,
                               esd_steps, tol, max_iter, seed)
            if per_layer:
                blocks = curvature_model.layer_blocks(named, params or "")
                res.per_layer = curvature_model.per_layer_spectra(op, blocks, tol, max_iter, seed, trace_samples,
                                                                  trace_rel_se)
    except Exception as e:      # never leave the group's other ranks waiting in a product's all-reduce
        mpi.abort_on_error(comm, rank, e)
        raise
    res.parameters, res.param_names = op.dim, [n for n, _ in named]
    res.curvature, res.hvp = curvature, hvp
    res.examples, res.data_in_memory = data_set.total, in_memory
    res.seconds, res.products = time.perf_counter() - t0, op.products
    warn_unconverged(res, max_iter, trace_rel_se)
    curvature_model.product_warnings(op)
    return res


def nproc_of(comm: Comm) -> int:
    return 1 if comm is None else comm.Get_size()


def curvature_at(op: Any, top_k: int, min_eig: bool, vectors: bool, trace: bool, trace_samples: int,
                 trace_rel_se: Optional[float], esd: bool, esd_probes: int, esd_steps: int, tol: float, max_iter: int,
                 seed: int) -> HessianResult:
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


def point_trace(op: Any, r: Any, samples: int, rel_se: Optional[float], seed: int) -> tuple[float, float, int, bool]:
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


def warn_unconverged(res: HessianResult, max_iter: int, rel_se: Optional[float]) -> None:
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
def pca(models: Sequence[nn.Module], dir_type: str = "weights", ignore: Optional[str] = "",
        params: Optional[str] = None, scratch_dir: Optional[Path] = None) -> PCAResult:
    """PCA of a training trajectory: `models` is the list of checkpoints (nn.Modules), the last one final."""
    if not isinstance(models, (list, tuple)) or len(models) < 3:
        raise LandscapeError("pca() needs a list of at least 3 models (checkpoints of one run)")
    check_choice("dir_type", dir_type, spec.DIR_TYPES)
    if ignore not in (None, "", "biasbn"):
        raise LandscapeError(f"ignore={ignore!r} must be '' or 'biasbn'")
    params = check_text("params", params)
    scratch_dir = check_text("scratch_dir", scratch_dir)
    if scratch_dir is not None and not os.path.isdir(scratch_dir):
        raise LandscapeError(f"scratch_dir={scratch_dir!r} is not a folder")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    space = dirs.direction_space(nets[-1], dir_type)
    shapes = [tuple(t.shape) for _, t in space]
    for i, n in enumerate(nets[:-1]):
        if [tuple(t.shape) for _, t in dirs.direction_space(n, dir_type)] != shapes:
            raise LandscapeError(f"models[{i}] does not have the architecture of the last model (its entries differ "
                                 "in number or shape): a trajectory is one model's checkpoints")
    mask = dirs.entry_mask(space, params or "")
    final = trajectory.flat_space(space, ignore, mask)
    rows = (trajectory.flat_space(dirs.direction_space(n, dir_type), ignore, mask).numpy() - final.numpy()
            for n in nets)
    import tempfile
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        res = trajectory.pca_from_rows(rows, len(nets), len(final), scratch)
    comps = torch.as_tensor(res["components_"])
    coords = np.array([[float((trajectory.flat_space(dirs.direction_space(n, dir_type), ignore, mask) - final)
                              @ c) for c in comps] for n in nets])
    vectors = [trajectory.unflatten(c.numpy(), space, mask) for c in comps]
    return PCAResult(vectors, res["explained_variance_ratio_"], res["singular_values_"], coords)
