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
import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from landscape import directions as net_plotter
from landscape import evaluation
from landscape import trajectory as projection
from landscape.curvature import hvp as hess_vec_prod
from landscape.curvature.model import (
    EIG_KEYS,
    eig_job_compute,
    hessian_params,
    resolve_hessian_batch,
    set_operator,
    top_eigenvectors,
)
from landscape.errors import LandscapeError
from landscape.evaluation import fast_model, loss_job_compute, loss_keys
from landscape.grid.job import GridJob, Result, axis, parse_range, run_job
from landscape.evaluation.batches import prepare_sets
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


def tensors_sha256(*objs):
    """A fingerprint of tensors (and nested tuples/dicts of them), for the provenance of API runs."""
    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, dict):
            for k in sorted(o):
                h.update(str(k).encode())
                feed(o[k])
        elif isinstance(o, (tuple, list)):
            for v in o:
                feed(v)
        elif torch.is_tensor(o):
            t = o.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for o in objs:
        feed(o)
    return h.hexdigest()


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


def prepare_data(named, comm, group, device, data_in_memory, batch_size):
    """[(name, data)] -> ([(name, HostSet)] of this rank, the path taken ('yes': in memory, 'no':
    streamed), a fingerprint of the data). Collective; see evaluation/batches.py."""
    named = [(n, d) for n, d in named if d is not None]
    ranks_on_node = 1 if comm is None else mpi4pytorch.local_size(comm)
    sets, in_memory = prepare_sets(named, comm, group, device, data_in_memory, batch_size, None, ranks_on_node)
    given = [d for _, d in named if isinstance(d, (tuple, list)) and len(d) == 2 and torch.is_tensor(d[1])]
    if len(given) == len(named):        # every set given as tensors: the hash of all of them
        fingerprint = tensors_sha256(given)
    else:                               # streams are not read for a hash: their kind, size and first batch
        fingerprint = hashlib.sha256(" ".join(f"{type(d).__name__}:{hs.total}:{tensors_sha256(hs.sample)}"
                                              for (_, d), hs in zip(named, sets)).encode()).hexdigest()
    return [(n, hs) for (n, _), hs in zip(named, sets)], in_memory, fingerprint


def full_tensors(data, what):
    """The whole set as tensors, for Hessian directions (computed on rank 0 alone): data given as tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]):
        return as_tensors(data, what)
    raise LandscapeError(f"directions='hessian' needs the {what} as an (inputs, targets) pair of tensors")


def resolve_device(device):
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LandscapeError(f"device {device!r} is not a device: {evaluation.first_line(e)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError("device 'cuda' was asked for, but no CUDA GPU is available")
    return device


def private_copy(model, what="model"):
    """A copy of the user's model in eval mode on the CPU (their own object is never moved or changed)."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"{what} must be a torch.nn.Module, not {type(model).__name__}")
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
                      comm=None, ranks_per_point=1, data_in_memory="auto", eig=None):
    """The GridJob of `surface()` and `eigen_surface()`, and this rank's PointGroup. Collective over comm."""
    device = resolve_device(device)
    net = private_copy(model)
    xs, ys = axis(x, "x"), axis(y, "y")
    ndim = 1 if ys is None else 2
    kind, norm, explicit = direction_choice(directions, ndim)
    _, nproc, group = ranks(comm, ranks_per_point, device)
    sets, in_memory, fingerprint = prepare_data([("train", data), ("test", test_data)], comm, group, device,
                                                data_in_memory, batch_size)
    train = sets[0][1].sample
    if eig is None:
        stats = mpi4pytorch.agree(comm, lambda: evaluation.make_statistics(net, train[0], train[1], loss, metrics))
    else:
        stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
        mpi4pytorch.agree(comm, lambda: stats.check(net, train[0], train[1]))
    m2 = private_copy(model2, "model2") if model2 is not None else None
    m3 = private_copy(model3, "model3") if model3 is not None else None
    spec = net_plotter.DirectionSpec(
        dir_type=dir_type, ndim=ndim, seed=int(seed), xnorm="" if m2 is not None else norm, ynorm="" if m3 is not None else norm,
        xignore=ignore or "", yignore=ignore or "", same_dir=bool(same_dir),
        xdir="target" if m2 is not None else kind, ydir="target" if m3 is not None else kind,
        orthogonalize=bool(orthogonalize), params=params or "", regenerate=bool(regenerate)).check()
    if out is not None and not str(out).endswith(".h5"):
        raise LandscapeError(f"out={out!r} must name an .h5 file")
    prov = {"model": type(model).__name__, "model_sha256": tensors_sha256(net.state_dict()),
            "data_sha256": fingerprint, "train_size": sets[0][1].total,
            "loss_name": stats.loss_name, "metrics": ",".join(stats.metrics), "precision": precision,
            "dir_type": dir_type, "params": params or "", "seed": int(seed), "command": "landscape." +
            ("eigen_surface" if eig else "surface"), "data_in_memory": in_memory, "ranks_per_point": group.size}
    say = (lambda *a, **k: None) if not progress else print
    if eig is None:
        keys, missing = loss_keys([s[0] for s in sets], stats), None
        make = loss_job_compute(net, sets, stats, device, (), batch_size, precision, points_per_pass, fold_bn,
                                memory_format, compile, say, group)
    else:
        keys, missing = EIG_KEYS, ["max_eig", "min_eig"]
        make = eig_job_compute(net, sets[0][1], stats.criterion, device, batch_size, precision, eig["tol"],
                               eig["max_iter"], int(seed), params or "", group)
    hessian = None
    if kind == "hessian":
        whole = full_tensors(data, "data")
        hessian = lambda: top_eigenvectors(net, whole, stats.criterion, device, params or "", batch_size)
    job = GridJob(net, xs, ys, keys, make, missing, spec=spec, explicit=explicit,
                  model2=(lambda: m2) if m2 is not None else None, model3=(lambda: m3) if m3 is not None else None,
                  hessian=hessian, dir_file=dir_file or (os.path.splitext(out)[0] + "_directions.h5" if out else ""),
                  dir_given=False, surf_file=out or "", prov=prov, net_name=type(model).__name__,
                  model_hash=prov["model_sha256"], save_directions=save_directions or "", device=device,
                  flush_seconds=flush_seconds, progress=progress, quiet=not progress)
    return job, group


def surface(model, data, loss=None, x="-1:1:51", y=None, directions="filter", ignore="biasbn", seed=123,
            device=None, test_data=None, out=None, *, model2=None, model3=None, metrics=None, dir_type="weights",
            params=None, batch_size="auto", precision="default", points_per_pass=1, regenerate=False,
            orthogonalize=False, dir_file=None, save_directions=None, same_dir=False, fold_bn=True,
            memory_format="auto", compile=False, comm="auto", flush_seconds=5.0, progress=False, ranks_per_point=1,
            data_in_memory="auto"):
    """The loss (accuracy where defined, and metrics) of `model` on `data` over a 1D or 2D grid.

    Args:
        data, test_data: (inputs, targets) tensors, a Dataset, a DataLoader, an IterableDataset or any
            re-iterable of (inputs, targets) batches: kept on the device when they fit, else streamed
            for each point (data_in_memory: auto | yes | no; evaluation/batches.py).
        comm: 'auto' (MPI's or torchrun's ranks when launched so), an mpi4py communicator, or None.
        ranks_per_point: ranks that evaluate each point together, each on its shard of the data.
        loss: None (cross-entropy), 'crossentropy', 'mse' (the reference's), or any
            criterion(outputs, targets) -> mean loss. metrics: {name: fn(outputs, targets) -> mean}.
        x, y: 'min:max:num' (y=None: a 1D curve). directions: a normalisation for random directions
            ('filter', ...; '' for none), 'hessian[:<norm>]', or explicit direction tensors.
            model2 / model3: the x / y direction is model2 - model / model3 - model (interpolation, planes).
        out: an .h5 surface file (the direction file beside it), with resume, locking and crash safety.
        regenerate: random directions drawn entry by entry on the device at every point, never stored.
    Returns: Result(x, y, values={'train_loss', ['train_acc'], ['train_<metric>'], ['test_...']}, ...).
    """
    comm = auto_comm(comm)
    job, group = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, test_data, out,
                                   model2=model2, model3=model3, metrics=metrics, dir_type=dir_type, params=params,
                                   batch_size=batch_size, precision=precision, points_per_pass=points_per_pass,
                                   regenerate=regenerate, orthogonalize=orthogonalize, dir_file=dir_file,
                                   save_directions=save_directions, same_dir=same_dir, fold_bn=fold_bn,
                                   memory_format=memory_format, compile=compile, flush_seconds=flush_seconds,
                                   progress=progress, comm=comm, ranks_per_point=ranks_per_point,
                                   data_in_memory=data_in_memory)
    return run_job(job, comm, group)


def interpolation(model, model2, data, loss=None, x="-0.5:1.5:41", dir_type="states", **kwargs):
    """The loss along the line from `model` (x=0) to `model2` (x=1), as the reference's --model_file2."""
    return surface(model, data, loss, x=x, y=None, directions="", ignore="", model2=model2, dir_type=dir_type,
                   **kwargs)


def eigen_surface(model, data, loss=None, x="-1:1:21", y=None, directions="filter", ignore="biasbn", seed=123,
                  device=None, out=None, *, tol=hess_vec_prod.LANCZOS_TOL, max_iter=100, precision="fp32",
                  batch_size="auto", comm="auto", progress=False, ranks_per_point=1, data_in_memory="auto", **kwargs):
    """The Hessian's largest and smallest eigenvalues (and the products each took) over a grid:
    values 'max_eig', 'min_eig', 'eig_iters'. Exact fp32 arithmetic by default."""
    comm = auto_comm(comm)
    job, group = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, None, out,
                            model2=kwargs.pop("model2", None), model3=kwargs.pop("model3", None), metrics=None,
                            dir_type=kwargs.pop("dir_type", "weights"), params=kwargs.pop("params", None),
                            batch_size=batch_size, precision=precision, points_per_pass=1,
                            regenerate=kwargs.pop("regenerate", False), orthogonalize=kwargs.pop("orthogonalize", False),
                            dir_file=kwargs.pop("dir_file", None), save_directions=None,
                            same_dir=kwargs.pop("same_dir", False), fold_bn=False, memory_format="contiguous",
                            compile=False, flush_seconds=kwargs.pop("flush_seconds", 5.0), progress=progress,
                            comm=comm, ranks_per_point=ranks_per_point, data_in_memory=data_in_memory,
                            eig={"tol": tol, "max_iter": max_iter})
    if kwargs:
        raise LandscapeError(f"eigen_surface() got unexpected arguments: {', '.join(kwargs)}")
    return run_job(job, comm, group)


def path(models, data, loss=None, path_type="polychain", x="0:1:21", dir_type="weights", device=None,
         test_data=None, out=None, *, metrics=None, batch_size="auto", precision="default", comm="auto",
         flush_seconds=5.0, progress=False, ranks_per_point=1, data_in_memory="auto"):
    """The loss along a path through N models (polychain, or the Bezier curve they control), t in [0, 1]."""
    device = resolve_device(device)
    if path_type not in net_plotter.PATH_TYPES:
        raise LandscapeError(f"path_type {path_type!r} must be one of: {', '.join(net_plotter.PATH_TYPES)}")
    if not isinstance(models, (list, tuple)) or len(models) < 2:
        raise LandscapeError("path() needs a list of at least two models")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    xs = path_axis(x)
    comm = auto_comm(comm)
    _, nproc, group = ranks(comm, ranks_per_point, device)
    sets, in_memory, fingerprint = prepare_data([("train", data), ("test", test_data)], comm, group, device,
                                                data_in_memory, batch_size)
    train = sets[0][1].sample
    stats = mpi4pytorch.agree(comm, lambda: evaluation.make_statistics(nets[0], train[0], train[1], loss, metrics))
    net = nets[0]
    spaces = [net_plotter.direction_space(n, dir_type) for n in nets]
    prov = {"model": type(models[0]).__name__, "path_type": path_type, "dir_type": dir_type,
            "path_sha256": tensors_sha256(*[n.state_dict() for n in nets]), "loss_name": stats.loss_name,
            "data_sha256": fingerprint, "precision": precision, "command": "landscape.path",
            "data_in_memory": in_memory, "ranks_per_point": group.size}
    say = print if progress else (lambda *a, **k: None)
    job = GridJob(net, xs, None, loss_keys([s[0] for s in sets], stats),
                  loss_job_compute(net, sets, stats, device, (), batch_size, precision, 1, True, "auto", False, say,
                                   group),
                  spec=net_plotter.DirectionSpec(dir_type=dir_type), path=spaces, path_type=path_type,
                  surf_file=out or "", prov=prov, device=device, flush_seconds=flush_seconds,
                  progress=progress, quiet=not progress)
    return run_job(job, comm, group)


def path_axis(x):
    xs = axis(x, "--x")
    if xs.min() < 0 or xs.max() > 1:
        raise LandscapeError(f"a path is parametrised by t in [0, 1]; --x={x!r} leaves it")
    return xs


# ----------------------------------------------------------------------------- curvature at one point
@dataclass
class HessianResult:
    """The Hessian at one point. eigenvalues: the top_k largest, descending; eigenvectors (top_k, P)
    over the covered parameters flattened in net.parameters() order; trace with its standard error;
    esd_grid / esd_density: the eigenvalue spectral density (stochastic Lanczos quadrature)."""
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
    examples: int = 0              # the examples the loss averages over (every rank's shard)
    data_in_memory: str = ""       # 'yes': kept on the device; 'no': streamed for each product


def hessian(model, data, loss=None, *, top_k=1, min_eig=True, vectors=False, trace=True, trace_samples=100,
            trace_rel_se=0.02, esd=False, esd_probes=1, esd_steps=100, params=None, device=None,
            batch_size="auto", precision="fp32", tol=hess_vec_prod.LANCZOS_TOL, max_iter=100, seed=0, cache="auto",
            comm="auto", ranks_per_point=None, data_in_memory="auto"):
    """Top-k eigenvalues (and eigenvectors), the smallest eigenvalue, the trace (Hutchinson) and the
    spectral density of the Hessian of the mean loss at `model`. Exact fp32 arithmetic by default.

    Under mpirun or torchrun (comm='auto') the ranks share the work: groups of ranks_per_point ranks
    (default: every rank) each multiply by the Hessian of their shard of the data, and every product
    is summed over the group (curvature/distributed.py); every rank returns the result."""
    device = resolve_device(device)
    for name, value, lo in (("top_k", top_k, 1), ("trace_samples", trace_samples, 2), ("max_iter", max_iter, 1),
                            ("esd_probes", esd_probes, 1), ("esd_steps", esd_steps, 2)):
        if not isinstance(value, int) or value < lo:
            raise LandscapeError(f"{name}={value!r} must be a whole number >= {lo}")
    if not tol > 0:
        raise LandscapeError(f"tol={tol!r} must be > 0")
    if precision == "bf16":
        raise LandscapeError("precision bf16 is too coarse for Hessian-vector products; use fp32, default or tf32")
    comm = auto_comm(comm)
    rank, nproc, group = ranks(comm, nproc_of(comm) if ranks_per_point is None else ranks_per_point, device)
    net = private_copy(model).to(device)
    if device.type == "cpu":
        fast_model.keep_freed_memory()
    [(_, data_set)], in_memory, _ = prepare_data([("data", data)], comm, group, device, data_in_memory, batch_size)
    stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
    sample = evaluation.to_device(data_set.sample[0], device), data_set.sample[1].to(device)
    mpi4pytorch.agree(comm, lambda: stats.check(net, *sample))
    named = hessian_params(net, params or "")
    dim = sum(p.numel() for _, p in named)
    if top_k > dim:
        raise LandscapeError(f"top_k={top_k} exceeds the {dim} parameters the Hessian covers")
    t0 = time.perf_counter()
    try:
        with evaluation.arithmetic(precision, device):
            bs = resolve_hessian_batch(batch_size, net, sample[0], device, data_set.count)
            op = set_operator(net, evaluation.on_device(data_set, device, bs), stats.criterion, params or "", cache,
                              group)
            res = curvature_at(op, top_k, min_eig, vectors, trace, trace_samples, trace_rel_se, esd, esd_probes,
                               esd_steps, tol, max_iter, seed)
    except Exception as e:      # never leave the group's other ranks waiting in a product's all-reduce
        mpi4pytorch.abort_on_error(comm, rank, e)
        raise
    res.parameters, res.param_names = op.dim, [n for n, _ in named]
    res.examples, res.data_in_memory = data_set.total, in_memory
    res.seconds = time.perf_counter() - t0
    return res


def nproc_of(comm):
    return 1 if comm is None else comm.Get_size()


def curvature_at(op, top_k, min_eig, vectors, trace, trace_samples, trace_rel_se, esd, esd_probes, esd_steps, tol,
                 max_iter, seed):
    """The HessianResult of an operator: Lanczos, then the deflated trace and the density as asked."""
    r = hess_vec_prod.lanczos(op, top_k=top_k, tol=tol, max_iter=max_iter, seed=seed, want_min=min_eig,
                              want_vectors=vectors, keep_basis=trace)
    res = HessianResult(np.asarray(r.eigenvalues, dtype=np.float64),
                        None if r.eigenvectors is None else r.eigenvectors.cpu().numpy(),
                        float(r.min_eig) if min_eig else float("nan"), r.iterations)
    if trace:  # deflated by the Lanczos basis: its part of the trace is exact, the rest is sampled
        res.trace, res.trace_stderr, res.trace_samples = hess_vec_prod.trace_estimate(
            op, max_samples=trace_samples, rel_se=trace_rel_se, seed=seed, deflate=r)
    if esd:
        out = hess_vec_prod.esd(op, n_probes=esd_probes, n_steps=min(esd_steps, op.dim), seed=seed)
        res.esd_grid, res.esd_density = np.asarray(out[0]), np.asarray(out[1])
    return res


# ----------------------------------------------------------------------------- PCA of a trajectory
@dataclass
class PCAResult:
    """The first two principal directions of w_e - w_final over a list of checkpoints, and where each
    checkpoint sits in their plane (coords (n, 2), the final one at (0, 0))."""
    directions: list
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    coords: np.ndarray


def pca(models, dir_type="weights", ignore="", params=None, scratch_dir=None):
    """PCA of a training trajectory: `models` is the list of checkpoints (nn.Modules), the last one final."""
    if not isinstance(models, (list, tuple)) or len(models) < 3:
        raise LandscapeError("pca() needs a list of at least 3 models (checkpoints of one run)")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    space = net_plotter.direction_space(nets[-1], dir_type)
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
