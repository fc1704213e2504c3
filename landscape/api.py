"""The Python API: loss landscapes of any model, loss and data (`import landscape`).

    import landscape
    res = landscape.surface(model, (inputs, targets), loss=nn.CrossEntropyLoss(), x="-1:1:51", y="-1:1:51",
                            directions="filter", ignore="biasbn", seed=123, device="cuda", out="s.h5")
    res.x, res.y, res.values["train_loss"]      # NumPy arrays; maps shaped (ny, nx)

Also `interpolation` (model to model2), `path` (through N checkpoints), `eigen_surface` (the Hessian's
extreme eigenvalues over a grid), `hessian` (top eigenpairs, extreme eigenvalues, trace and spectral
density at one point) and `pca` (of a list of checkpoints). Bad arguments, and the user's own
model, loss or metrics failing, raise `LandscapeError` with the one-line message the scripts print.
Under `mpirun` every rank calls the function with the same arguments; the grid is split over the
ranks as the scripts split it, and every rank gets the result. The model passed in is never changed.

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
from landscape.curvature.model import EIG_KEYS, eig_job_compute, resolve_hessian_batch, top_eigenvectors
from landscape.errors import LandscapeError
from landscape.evaluation import fast_model, loss_job_compute, loss_keys
from landscape.grid.job import GridJob, Result, axis, parse_range, run_job
from landscape.parallel import mpi as mpi4pytorch

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
    """The communicator to split the grid over: the given one, or (comm='auto') MPI's world when this
    process was started by mpirun/srun with more than one rank, else None."""
    if comm != "auto":
        return comm
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return mpi4pytorch.setup_mpi(True)[0]
    return None


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
                      eig=None, curvature="hessian", hvp="autograd"):
    """The GridJob of `surface()` and `eigen_surface()`."""
    device = resolve_device(device)
    curvature_model.check_choices(curvature, hvp)
    net = private_copy(model)
    xs, ys = axis(x, "x"), axis(y, "y")
    ndim = 1 if ys is None else 2
    kind, norm, explicit = direction_choice(directions, ndim)
    train = as_tensors(data, "data")
    sets = [("train", *train)] + ([("test", *as_tensors(test_data, "test_data"))] if test_data is not None else [])
    if eig is None:
        stats = evaluation.make_statistics(net, train[0], train[1], loss, metrics)
    else:
        stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
        stats.check(net, train[0], train[1])
    m2 = private_copy(model2, "model2") if model2 is not None else None
    m3 = private_copy(model3, "model3") if model3 is not None else None
    spec = net_plotter.DirectionSpec(
        dir_type=dir_type, ndim=ndim, seed=int(seed), xnorm="" if m2 is not None else norm, ynorm="" if m3 is not None else norm,
        xignore=ignore or "", yignore=ignore or "", same_dir=bool(same_dir),
        xdir="target" if m2 is not None else kind, ydir="target" if m3 is not None else kind,
        orthogonalize=bool(orthogonalize), params=params or "", regenerate=bool(regenerate),
        curvature=curvature).check()
    if eig is None and "hessian" not in spec.kinds() and (curvature, hvp) != ("hessian", "autograd"):
        raise LandscapeError("curvature= and hvp= apply to the curvature's eigenvector directions "
                             "(directions='hessian') and to eigen_surface(); these directions use none")
    if out is not None and not str(out).endswith(".h5"):
        raise LandscapeError(f"out={out!r} must name an .h5 file")
    prov = {"model": type(model).__name__, "model_sha256": tensors_sha256(net.state_dict()),
            "data_sha256": tensors_sha256([(s[1], s[2]) for s in sets]), "train_size": len(train[1]),
            "loss_name": stats.loss_name, "metrics": ",".join(stats.metrics), "precision": precision,
            "dir_type": dir_type, "params": params or "", "seed": int(seed), "command": "landscape." +
            ("eigen_surface" if eig else "surface")}
    if eig is not None:
        prov.update(curvature=curvature, hvp=hvp, tol=float(eig["tol"]), max_iter=int(eig["max_iter"]))
    say = (lambda *a, **k: None) if not progress else print
    if eig is None:
        keys, missing = loss_keys([s[0] for s in sets], stats), None
        make = loss_job_compute(net, sets, stats, device, (), batch_size, precision, points_per_pass, fold_bn,
                                memory_format, compile, say)
    else:
        curvature_model.check_curvature_loss(curvature, stats.criterion, stats.loss_name, net, *train)
        curvature_model.covered_params(net, params or "")
        keys, missing = EIG_KEYS, ["max_eig", "min_eig"]
        make = eig_job_compute(net, train, stats.criterion, device, batch_size, precision, eig["tol"], eig["max_iter"],
                               int(seed), params or "", curvature, hvp, stats.loss_name)
    hessian = None
    if kind == "hessian":
        hessian = lambda: top_eigenvectors(net, train, stats.criterion, device, params or "", batch_size,
                                           curvature=curvature, hvp=hvp, loss_name=stats.loss_name)
    job = GridJob(net, xs, ys, keys, make, missing, spec=spec, explicit=explicit,
                  model2=(lambda: m2) if m2 is not None else None, model3=(lambda: m3) if m3 is not None else None,
                  hessian=hessian, dir_file=dir_file or (os.path.splitext(out)[0] + "_directions.h5" if out else ""),
                  dir_given=False, surf_file=out or "", prov=prov, net_name=type(model).__name__,
                  model_hash=prov["model_sha256"], save_directions=save_directions or "", device=device,
                  flush_seconds=flush_seconds, progress=progress, quiet=not progress)
    return job


def surface(model, data, loss=None, x="-1:1:51", y=None, directions="filter", ignore="biasbn", seed=123,
            device=None, test_data=None, out=None, *, model2=None, model3=None, metrics=None, dir_type="weights",
            params=None, batch_size="auto", precision="default", points_per_pass=1, regenerate=False,
            orthogonalize=False, dir_file=None, save_directions=None, same_dir=False, fold_bn=True,
            memory_format="auto", compile=False, comm="auto", flush_seconds=5.0, progress=False,
            curvature="hessian", hvp="autograd"):
    """The loss (accuracy where defined, and metrics) of `model` on `data` over a 1D or 2D grid.

    Args:
        data, test_data: (inputs, targets) tensors, a Dataset or a DataLoader (materialised once).
        loss: None (cross-entropy), 'crossentropy', 'mse' (the reference's), or any
            criterion(outputs, targets) -> mean loss. metrics: {name: fn(outputs, targets) -> mean}.
        x, y: 'min:max:num' (y=None: a 1D curve). directions: a normalisation for random directions
            ('filter', ...; '' for none), 'hessian[:<norm>]', or explicit direction tensors.
            model2 / model3: the x / y direction is model2 - model / model3 - model (interpolation, planes).
        out: an .h5 surface file (the direction file beside it), with resume, locking and crash safety.
        regenerate: random directions drawn entry by entry on the device at every point, never stored.
        curvature, hvp: the matrix whose top eigenvectors directions='hessian' takes ('hessian', 'ggn',
            'ef') and how its products are made ('autograd', 'finite_difference'); see hessian().
    Returns: Result(x, y, values={'train_loss', ['train_acc'], ['train_<metric>'], ['test_...']}, ...).
    """
    job = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, test_data, out, model2=model2,
                            model3=model3, metrics=metrics, dir_type=dir_type, params=params, batch_size=batch_size,
                            precision=precision, points_per_pass=points_per_pass, regenerate=regenerate,
                            orthogonalize=orthogonalize, dir_file=dir_file, save_directions=save_directions,
                            same_dir=same_dir, fold_bn=fold_bn, memory_format=memory_format, compile=compile,
                            flush_seconds=flush_seconds, progress=progress, curvature=curvature, hvp=hvp)
    return run_job(job, auto_comm(comm))


def interpolation(model, model2, data, loss=None, x="-0.5:1.5:41", dir_type="states", **kwargs):
    """The loss along the line from `model` (x=0) to `model2` (x=1), as the reference's --model_file2."""
    return surface(model, data, loss, x=x, y=None, directions="", ignore="", model2=model2, dir_type=dir_type,
                   **kwargs)


def eigen_surface(model, data, loss=None, x="-1:1:21", y=None, directions="filter", ignore="biasbn", seed=123,
                  device=None, out=None, *, curvature="hessian", hvp="autograd", tol=algorithms.LANCZOS_TOL,
                  max_iter=100, precision="fp32", batch_size="auto", comm="auto", progress=False, **kwargs):
    """The largest and smallest eigenvalues of the curvature matrix (curvature='hessian', 'ggn' or 'ef';
    see hessian()) over a grid: values 'max_eig', 'min_eig', 'eig_iters' (products used) and
    'eig_converged' (1 where Lanczos met tol within max_iter, else 0, with a warning). Exact fp32
    arithmetic by default."""
    check_lanczos_args(tol, max_iter)
    job = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, None, out,
                            model2=kwargs.pop("model2", None), model3=kwargs.pop("model3", None), metrics=None,
                            dir_type=kwargs.pop("dir_type", "weights"), params=kwargs.pop("params", None),
                            batch_size=batch_size, precision=precision, points_per_pass=1,
                            regenerate=kwargs.pop("regenerate", False), orthogonalize=kwargs.pop("orthogonalize", False),
                            dir_file=kwargs.pop("dir_file", None), save_directions=None,
                            same_dir=kwargs.pop("same_dir", False), fold_bn=False, memory_format="contiguous",
                            compile=False, flush_seconds=kwargs.pop("flush_seconds", 5.0), progress=progress,
                            eig={"tol": tol, "max_iter": max_iter}, curvature=curvature, hvp=hvp)
    if kwargs:
        raise LandscapeError(f"eigen_surface() got unexpected arguments: {', '.join(kwargs)}")
    res = run_job(job, auto_comm(comm))
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
                      "raise max_iter", curvature_model.CurvatureWarning, stacklevel=3)


def check_lanczos_args(tol, max_iter):
    if not isinstance(max_iter, int) or max_iter < 1:
        raise LandscapeError(f"max_iter={max_iter!r} must be a whole number >= 1")
    if not tol > 0:
        raise LandscapeError(f"tol={tol!r} must be > 0")


def path(models, data, loss=None, path_type="polychain", x="0:1:21", dir_type="weights", device=None,
         test_data=None, out=None, *, metrics=None, batch_size="auto", precision="default", comm="auto",
         flush_seconds=5.0, progress=False):
    """The loss along a path through N models (polychain, or the Bezier curve they control), t in [0, 1]."""
    device = resolve_device(device)
    if path_type not in net_plotter.PATH_TYPES:
        raise LandscapeError(f"path_type {path_type!r} must be one of: {', '.join(net_plotter.PATH_TYPES)}")
    if not isinstance(models, (list, tuple)) or len(models) < 2:
        raise LandscapeError("path() needs a list of at least two models")
    nets = [private_copy(m, f"models[{i}]") for i, m in enumerate(models)]
    xs = path_axis(x)
    train = as_tensors(data, "data")
    sets = [("train", *train)] + ([("test", *as_tensors(test_data, "test_data"))] if test_data is not None else [])
    stats = evaluation.make_statistics(nets[0], train[0], train[1], loss, metrics)
    net = nets[0]
    spaces = [net_plotter.direction_space(n, dir_type) for n in nets]
    prov = {"model": type(models[0]).__name__, "path_type": path_type, "dir_type": dir_type,
            "path_sha256": tensors_sha256(*[n.state_dict() for n in nets]), "loss_name": stats.loss_name,
            "data_sha256": tensors_sha256([(s[1], s[2]) for s in sets]), "precision": precision,
            "command": "landscape.path"}
    say = print if progress else (lambda *a, **k: None)
    job = GridJob(net, xs, None, loss_keys([s[0] for s in sets], stats),
                  loss_job_compute(net, sets, stats, device, (), batch_size, precision, 1, True, "auto", False, say),
                  spec=net_plotter.DirectionSpec(dir_type=dir_type), path=spaces, path_type=path_type,
                  surf_file=out or "", prov=prov, device=device, flush_seconds=flush_seconds,
                  progress=progress, quiet=not progress)
    return run_job(job, auto_comm(comm))


def path_axis(x):
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


def check_hessian_args(top_k, trace_samples, max_iter, esd_probes, esd_steps, tol, precision, per_layer):
    """Refuse bad arguments of hessian() in one line each."""
    for name, value, lo in (("top_k", top_k, 1), ("trace_samples", trace_samples, 2), ("max_iter", max_iter, 1),
                            ("esd_probes", esd_probes, 1), ("esd_steps", esd_steps, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise LandscapeError(f"{name}={value!r} must be a whole number >= {lo}")
    if top_k > max_iter:
        raise LandscapeError(f"top_k={top_k} exceeds max_iter={max_iter}: Lanczos finds at most max_iter eigenvalues")
    if not tol > 0:
        raise LandscapeError(f"tol={tol!r} must be > 0")
    if precision == "bf16":
        raise LandscapeError("precision bf16 is too coarse for Hessian-vector products; use fp32, default or tf32")
    if not isinstance(per_layer, bool):
        raise LandscapeError(f"per_layer={per_layer!r} must be True or False")


def hessian(model, data, loss=None, *, curvature="hessian", hvp="autograd", top_k=1, min_eig=True, vectors=False,
            trace=True, trace_samples=100, trace_rel_se=0.02, esd=False, esd_probes=1, esd_steps=100,
            per_layer=False, params=None, device=None, batch_size="auto", precision="fp32",
            tol=algorithms.LANCZOS_TOL, max_iter=100, seed=0, cache="auto"):
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
    """
    device = resolve_device(device)
    check_hessian_args(top_k, trace_samples, max_iter, esd_probes, esd_steps, tol, precision, per_layer)
    curvature_model.check_choices(curvature, hvp)
    net = private_copy(model).to(device)
    if device.type == "cpu":
        fast_model.keep_freed_memory()
    x, y = as_tensors(data, "data")
    stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
    stats.check(net, x, y)
    x, y = evaluation.to_device(x, device), y.to(device)
    curvature_model.check_curvature_loss(curvature, stats.criterion, stats.loss_name, net, x, y)
    named = curvature_model.covered_params(net, params or "")
    t0 = time.perf_counter()
    with evaluation.arithmetic(precision, device):
        op = curvature_model.curvature_operator(net, x, y, stats.criterion,
                                                resolve_hessian_batch(batch_size, net, x, device), named, curvature,
                                                hvp, cache, stats.loss_name)
        if top_k > op.dim:
            raise LandscapeError(f"top_k={top_k} exceeds the {op.dim} parameters the curvature covers")
        r = algorithms.lanczos(op, top_k=top_k, tol=tol, max_iter=max_iter, seed=seed, want_min=min_eig,
                               want_vectors=vectors, keep_basis=trace,
                               min_steps=curvature_model.TRACE_DEFLATION if trace else 0)
        res = HessianResult(np.asarray(r.eigenvalues, dtype=np.float64),
                            None if r.eigenvectors is None else r.eigenvectors.cpu().numpy(),
                            float(r.min_eig) if min_eig else float("nan"), r.iterations,
                            parameters=op.dim, param_names=[n for n, _ in named], converged=r.converged,
                            curvature=curvature, hvp=hvp)
        if trace:
            res.trace, res.trace_stderr, res.trace_samples, res.trace_converged = point_trace(
                op, r, trace_samples, trace_rel_se, seed)
        if esd:
            out = algorithms.esd(op, n_probes=esd_probes, n_steps=min(esd_steps, op.dim), seed=seed)
            res.esd_grid, res.esd_density = np.asarray(out[0]), np.asarray(out[1])
        if per_layer:
            blocks = curvature_model.layer_blocks(named, params or "")
            res.per_layer = curvature_model.per_layer_spectra(op, blocks, tol, max_iter, seed, trace_samples,
                                                              trace_rel_se)
    res.seconds, res.products = time.perf_counter() - t0, op.products
    warn_unconverged(res, max_iter, trace_rel_se)
    curvature_model.product_warnings(op)
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
                      "estimates (converged=False); raise max_iter", curvature_model.CurvatureWarning, stacklevel=3)
    if not res.trace_converged:
        warnings.warn(f"the trace's standard error {res.trace_stderr:.2g} is above trace_rel_se={rel_se} of it after "
                      f"{res.trace_samples} probes (trace_converged=False); raise trace_samples",
                      curvature_model.CurvatureWarning, stacklevel=3)
    bad = [layer.name for layer in res.per_layer or [] if not layer.converged]
    if bad:
        warnings.warn(f"Lanczos did not converge within max_iter={max_iter} products for layer(s) "
                      f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}", curvature_model.CurvatureWarning,
                      stacklevel=3)


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
