"""The library core and its Python API: loss landscapes of any model, loss and data.

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

The core under it, shared with the scripts: a `GridJob` says what moves the model (directions or a
path), what each point computes and where results go; `run_job` prepares the files on rank 0 under
the surface's lock (direction file, surface file, resume checks; a refused run writes nothing),
computes the missing points on every rank (scheduler.py) and records them on rank 0
(h5_util.Recorder: atomic rewrites every flush_seconds, and on the way out whatever happens).
"""
import copy
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

import evaluation
import fast_model
import h5_util
import hess_vec_prod
import mpi4pytorch
import net_plotter
import projection
import scheduler
from errors import LandscapeError
from surface_lock import SurfaceLock

__all__ = ["surface", "interpolation", "path", "eigen_surface", "hessian", "pca", "Result", "HessianResult",
           "PCAResult", "LandscapeError", "parse_range"]


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    """A computed surface: x (nx,), y (ny,) or None, and value maps (nx,) or (ny, nx), Z[j, i] at (x[i], y[j])."""
    x: np.ndarray
    y: np.ndarray
    values: dict
    path: str = ""            # the surface file ('' when kept in memory)
    dir_file: str = ""
    attrs: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)   # points computed, seconds, seconds per point, ranks

    def __getitem__(self, key):
        return self.values[key]


# ----------------------------------------------------------------------------- grids
def parse_range(text, flag="--x"):
    """'min:max:num' -> (min, max, num), with num an integer >= 1 and min <= max, all finite."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise LandscapeError(f"{flag}={text!r} must be min:max:num, e.g. -1:1:51")
    try:
        lo, hi, num = (float(p) for p in parts)
    except ValueError:
        raise LandscapeError(f"{flag}={text!r}: min, max and num must be numbers, e.g. -1:1:51") from None
    if not all(math.isfinite(v) for v in (lo, hi, num)):
        raise LandscapeError(f"{flag}={text!r}: min, max and num must be finite")
    if num != int(num) or num < 1:
        raise LandscapeError(f"{flag}={text!r}: num must be a whole number >= 1")
    if lo > hi:
        raise LandscapeError(f"{flag}={text!r}: min must not exceed max")
    return lo, hi, int(num)


def axis(spec, flag):
    """A grid axis from 'min:max:num', a (min, max, num) tuple, or an array of coordinates."""
    if spec is None:
        return None
    if isinstance(spec, str):
        lo, hi, num = parse_range(spec, flag)
        return np.linspace(lo, hi, num=num)
    if isinstance(spec, tuple) and len(spec) == 3:
        lo, hi, num = parse_range(":".join(str(v) for v in spec), flag)
        return np.linspace(lo, hi, num=num)
    a = np.asarray(spec, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        raise LandscapeError(f"{flag}: coordinates must be a non-empty list of finite numbers")
    return a


def grid_coords(x, y):
    """(points, ndim) coordinates in the surface's flat order: index j*nx + i is (x[i], y[j])."""
    return h5_util.new_surface("", x, y, "", {}).coords()


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


# ----------------------------------------------------------------------------- the grid job
@dataclass
class GridJob:
    """One grid run: what moves the model, what each point computes, and where the results go."""
    net: nn.Module                   # the model at the origin (CPU, eval mode); the run moves it
    x: np.ndarray
    y: np.ndarray                    # None for 1D
    keys: list                       # the value maps this run writes
    make_compute: object             # make_compute(make_mover) -> (coords (n, ndim) -> values (n, len(keys)))
    missing_keys: list = None        # maps whose sentinel marks a point as not computed (default: keys)
    spec: net_plotter.DirectionSpec = None
    explicit: list = None            # directions given as tensors
    path: list = None                # checkpoints' direction spaces, for a path
    path_type: str = "polychain"
    model2: object = None            # callables returning the target models
    model3: object = None
    build_model: object = None       # builds a fresh model right after seeding (the reference's draws)
    hessian: object = None           # () -> [(eigenvector, eigenvalue)] for hessian directions
    dir_file: str = ""               # '' keeps the directions in memory
    dir_given: bool = False          # the user named the direction file: it defines the directions,
    compare: object = True           # ... except these DirectionSpec fields (a set), which must match
    surf_file: str = ""              # '' keeps the surface in memory
    prov: dict = field(default_factory=dict)
    net_name: str = ""
    model_hash: str = ""
    model_file2: str = ""
    model_file3: str = ""
    save_directions: str = ""        # also write the directions (materialised) to this file
    device: object = "cpu"
    flush_seconds: float = 5.0
    progress: bool = True
    quiet: bool = False              # no printed lines (the API's default)

    def __post_init__(self):
        self.missing_keys = self.missing_keys or self.keys


@dataclass
class Plan:
    """What rank 0 decided before computing; nothing is written while making it."""
    directions: list                 # float32 CPU tensors, or None (seeded directions, or a path)
    seeded: object                   # net_plotter.SeededDirections, or None
    new_dirs: bool
    warning: str
    points: list                     # marked points [(label, x, y)]
    surf: h5_util.Surface


def space_of(job):
    return net_plotter.direction_space(job.net, job.spec.dir_type if job.spec else "weights")


def obtain_directions(job):
    """(directions, seeded, is_new, warning, points): an existing direction file, checked, or new ones."""
    if job.path is not None:
        n = len(job.path)
        ts = [i / (n - 1) for i in range(n)] if job.path_type == "polychain" else [0.0, 1.0]
        names = [f"checkpoint {i + 1}" for i in range(n)] if job.path_type == "polychain" else ["checkpoint 1",
                                                                                                 f"checkpoint {n}"]
        return None, None, False, None, [(lbl, t, None) for lbl, t in zip(names, ts)]
    spec = job.spec
    space = space_of(job)
    if job.explicit is not None:
        dirs = check_explicit(job.explicit, space, spec.ndim)
        if job.dir_file and os.path.exists(job.dir_file):
            stored = net_plotter.load_directions(job.dir_file, spec.ndim)
            if h5_util.directions_sha256(stored) != h5_util.directions_sha256(dirs):
                raise LandscapeError(f"direction file '{job.dir_file}' holds other directions than the ones given; "
                                     "use another dir_file or out")
            return dirs, None, False, None, []
        return dirs, None, True, None, []
    if job.dir_file and os.path.exists(job.dir_file):
        warning = net_plotter.check_direction_file(job.dir_file, spec, space, job.net_name, job.model_hash,
                                                   compare=job.compare)
        attrs = h5_util.read_direction_info(job.dir_file)["attrs"]
        points = [(p["label"], p["x"], p.get("y")) for p in json.loads(attrs.get("marked_points") or "[]")]
        if attrs.get("regenerated"):
            seeded = net_plotter.SeededDirections(spec_from_attrs(attrs, spec), attrs["regenerated_device_type"])
            return None, seeded, False, warning, points
        return net_plotter.load_directions(job.dir_file, spec.ndim), None, False, warning, points
    if job.dir_given:
        raise LandscapeError(f"direction file '{job.dir_file}' does not exist")
    if spec.regenerate:
        return None, net_plotter.SeededDirections(spec, torch.device(job.device).type), True, None, []
    dirs, points = net_plotter.make_directions(spec, job.net, job.model2, job.model3, job.build_model, job.hessian)
    return dirs, None, True, None, points


def spec_from_attrs(attrs, spec):
    """The DirectionSpec a (regenerated) direction file records, over `spec`'s defaults."""
    out = copy.copy(spec)
    for f in ("seed", "xnorm", "xignore", "ynorm", "yignore", "same_dir", "params", "dir_type"):
        v = net_plotter.recorded_value(attrs, f, getattr(spec, f))
        if v is not None:
            setattr(out, f, v)
    return out


def check_explicit(directions, space, ndim):
    """Directions given as tensors: a list (x[, y]) of lists in the space's order or of {name: tensor}."""
    if not isinstance(directions, (list, tuple)) or len(directions) < ndim:
        raise LandscapeError(f"directions must be a list of {ndim} direction(s), each a list of tensors or a dict")
    out = []
    for a, d in enumerate(directions[:ndim]):
        if isinstance(d, dict):
            unknown = [k for k in d if k not in dict(space)]
            if unknown:
                raise LandscapeError(f"direction {a}: no model entry is named {unknown[0]!r}")
            d = [torch.as_tensor(d[n]) if n in d else torch.zeros(t.shape) for n, t in space]
        if len(d) != len(space):
            raise LandscapeError(f"direction {a} has {len(d)} tensors, the model has {len(space)} entries")
        for (name, t), v in zip(space, d):
            if tuple(torch.as_tensor(v).shape) != tuple(t.shape):
                raise LandscapeError(f"direction {a}, entry '{name}': shape {tuple(torch.as_tensor(v).shape)}, "
                                     f"the model's is {tuple(t.shape)}")
        out.append([torch.as_tensor(v).detach().float().cpu().clone() for v in d])
    return out


def directions_fingerprint(plan):
    if plan.seeded is not None:
        recipe = dict(plan.seeded.spec.attrs(), **plan.seeded.attrs())
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    return h5_util.directions_sha256(plan.directions) if plan.directions is not None else ""


def plan_job(job):
    """Check the output folders, the directions and the surface file against this run; write nothing."""
    if job.surf_file:
        h5_util.check_writable(job.surf_file)
    if job.dir_file and not os.path.exists(job.dir_file):
        h5_util.check_writable(job.dir_file)
    if job.save_directions:
        h5_util.check_writable(job.save_directions)
    directions, seeded, new_dirs, warning, points = obtain_directions(job)
    plan = Plan(directions, seeded, new_dirs, warning, points, None)
    prov = dict(job.prov, dir_sha256=directions_fingerprint(plan), marked_points=h5_util.points_json(points))
    if job.surf_file and os.path.exists(job.surf_file):
        surf = h5_util.read_surface(job.surf_file)
        h5_util.check_surface(surf, job.x, job.y, prov, job.dir_file)
        surf.attrs.update({k: v for k, v in prov.items() if k not in surf.attrs})
        surf.attrs["last_command"] = prov.get("command", "")
    else:
        surf = h5_util.new_surface(job.surf_file, job.x, job.y, job.dir_file, prov)
    plan.surf = surf
    return plan


def write_plan(job, plan):
    """Rank 0, every check passed: write the new direction file, then the surface file."""
    spec = job.spec
    if plan.new_dirs and job.dir_file:
        attrs = net_plotter.direction_attrs(spec, job.net_name, job.model_hash, job.model_file2, job.model_file3,
                                            plan.points)
        if plan.seeded is not None:
            attrs.update(plan.seeded.attrs())
            h5_util.write_direction_file(job.dir_file, [[]] * spec.ndim, attrs)
        else:
            h5_util.write_direction_file(job.dir_file, plan.directions, attrs)
    if job.save_directions and (plan.seeded is not None or plan.directions is not None):
        space = space_of(job)
        dirs = plan.seeded.materialize(space, net_plotter.entry_mask(space, spec.params)) \
            if plan.seeded is not None else plan.directions
        attrs = net_plotter.direction_attrs(spec, job.net_name, job.model_hash, job.model_file2, job.model_file3,
                                            plan.points)
        attrs.update({"spec_regenerate": False, "materialised_from": job.dir_file or "seeded directions"})
        h5_util.write_direction_file(job.save_directions, dirs, attrs)
    for key in job.keys:
        plan.surf.ensure(key)  # the maps this run fills, all "not computed" if new
    if job.surf_file:
        h5_util.write_surface(plan.surf)


def make_mover(job, shared):
    """What moves the model to a grid point: a PointSetter, a SeededSetter or a PathSetter."""
    if job.path is not None:
        return net_plotter.PathSetter(job.net, job.path, job.spec.dir_type if job.spec else "weights", job.path_type)
    if shared["seeded"] is not None:
        return net_plotter.SeededSetter(job.net, shared["seeded"], job.spec.dir_type, job.spec.params)
    return net_plotter.PointSetter(job.net, shared["directions"], job.spec.dir_type)


def share_plan(job, plan, comm, rank):
    """Every rank's view of the directions: rank 0's plan, read back from the file or broadcast."""
    mine = None
    if rank == 0:
        in_file = bool(job.dir_file) and plan.seeded is None and plan.directions is not None
        mine = {"dir_file": job.dir_file if in_file else "", "seeded": plan.seeded,
                "directions": None if in_file or comm is None else plan.directions}
    shared = mine if comm is None else comm.bcast(mine, root=0)
    if rank == 0:
        shared = dict(shared, directions=plan.directions)
    elif shared["dir_file"]:
        shared["directions"] = net_plotter.load_directions(shared["dir_file"], job.spec.ndim)
    return shared


def run_job(job, comm=None):
    """Every rank: plan (rank 0, under the lock), compute the missing points, record them (rank 0)."""
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    lock = SurfaceLock(job.surf_file) if job.surf_file else None
    say = (lambda *a, **k: None) if job.quiet or rank != 0 else (lambda *a, **k: print(*a, flush=True, **k))
    try:
        def prepare():
            if lock is not None:
                h5_util.check_writable(job.surf_file)  # a missing folder is named as such, not as a lock failure
                lock.acquire()
            plan = plan_job(job)
            if plan.warning:
                print(plan.warning, file=sys.stderr)
            write_plan(job, plan)
            return plan
        plan = mpi4pytorch.agree(comm, prepare if rank == 0 else (lambda: None))
        shared = share_plan(job, plan, comm, rank)
        if rank == 0 and shared["directions"] is not None and len(shared["directions"]) == 2:
            say(f"cosine similarity of the x and y directions: {cosine(shared['directions']):.4f}")
        compute_coords = job.make_compute(lambda: make_mover(job, shared))
        coords = grid_coords(job.x, job.y)
        compute = lambda idx: compute_coords(coords[idx])
        stats = {}
        t0 = time.perf_counter()
        try:
            if rank == 0:
                surf = plan.surf
                missing = np.flatnonzero(surf.missing(job.missing_keys))
                total = int(np.prod(surf.shape))
                say(f"{job.surf_file or 'surface'}: {total - len(missing)} of {total} points done, computing "
                    f"{len(missing)} on {nproc} rank(s) ({job.device})")
                rec = h5_util.Recorder(surf, job.keys, total, total - len(missing), job.flush_seconds,
                                       show_progress=job.progress and not job.quiet)
                try:
                    scheduler.run_root(comm, nproc, missing, compute, rec.store, rec.tick)
                finally:
                    rec.close()  # whatever happened (Ctrl-C, SIGTERM, a crash), keep every computed point
                stats = report(len(missing), time.perf_counter() - t0, nproc, job.surf_file, say)
            else:
                scheduler.run_worker(comm, compute)
        except Exception as e:
            if nproc > 1:  # one rank failed mid-run: never leave the others waiting in a collective
                print(f"error on rank {rank}: {evaluation.first_line(e)}", file=sys.stderr, flush=True)
                mpi4pytorch.abort(comm)
            raise
    finally:
        if lock is not None:
            lock.release()
    result = None
    if rank == 0:
        s = plan.surf
        result = Result(s.x.copy(), None if s.y is None else s.y.copy(), {k: v.copy() for k, v in s.values.items()},
                        job.surf_file, job.dir_file, dict(s.attrs), stats)
    return result if comm is None else comm.bcast(result, root=0)


def cosine(directions):
    a = torch.cat([d.flatten() for d in directions[0]]).double()
    b = torch.cat([d.flatten() for d in directions[1]]).double()
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def report(n_done, seconds, nproc, surf_file, say=print):
    """Print the summary line; return the figures (the benchmark reads them)."""
    if n_done == 0:
        say(f"nothing to compute: every point is done; surface file: {surf_file}")
        return {"points": 0, "seconds": seconds, "sec_per_point": float("nan"), "ranks": nproc}
    per_point = seconds / n_done
    each = f"{per_point * 1e3:.3g} ms" if per_point < 1 else f"{per_point:.3g} s"
    say(f"computed {n_done} points in {seconds:.1f} s ({n_done / max(seconds, 1e-9):.1f} points/s, {each}/point) "
        f"on {nproc} rank(s); surface file: {surf_file or '(in memory)'}")
    return {"points": n_done, "seconds": seconds, "sec_per_point": per_point, "ranks": nproc}


def dry_run(job, nproc=1):
    """Validate, name the files, time one point, estimate the total; write nothing."""
    plan = plan_job(job)
    if job.dir_file:
        print(f"direction file: {job.dir_file} ({'would be created' if plan.new_dirs else 'exists, fits the model'})")
    total = int(np.prod(plan.surf.shape))
    missing = int(plan.surf.missing(job.missing_keys).sum())
    done = f"exists: {total - missing} of {total} points done" if os.path.exists(job.surf_file) else "would be created"
    print(f"surface file:   {job.surf_file} ({done})")
    if plan.warning:
        print(plan.warning, file=sys.stderr)
    shared = {"directions": plan.directions, "seeded": plan.seeded}
    compute = job.make_compute(lambda: make_mover(job, shared))
    coords = grid_coords(job.x, job.y)
    center = coords[[int(np.argmin(np.abs(coords).sum(1)))]]
    compute(center)  # warm-up
    t0 = time.perf_counter()
    compute(center)
    sec = time.perf_counter() - t0
    print(f"one point takes {sec:.3f} s here; {missing} points on {nproc} rank(s): about "
          f"{missing * sec / nproc / 60:.1f} min. Nothing was computed or written.")
    return sec


# ----------------------------------------------------------------------------- what a point computes
def loss_keys(set_names, stats):
    return [f"{s}_{n}" for s in set_names for n in stats.names]


def loss_job_compute(net, sets, stats, device, gpu_ids=(), batch_size="auto", precision="default",
                     points_per_pass=1, fold_bn=True, memory_format="auto", compile=False, say=print):
    """make_compute for loss (and accuracy, metrics) maps; `sets`: [(name, inputs, targets)] on the CPU."""
    def make(make_mover):
        return evaluation.make_grid_evaluator(net, make_mover, [(x, y) for _, x, y in sets], stats, device, gpu_ids,
                                              batch_size, precision, points_per_pass, fold_bn, memory_format,
                                              compile, say)
    return make


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


def hessian_operator(net, inputs, targets, criterion, batch_size, params="", cache="auto"):
    """The Hessian of the mean loss over (inputs, targets) w.r.t. the covered parameters, on their device."""
    named = hessian_params(net, params)
    return hess_vec_prod.HessianOperator([p for _, p in named], loss_terms(net, inputs, targets, criterion,
                                                                           batch_size), cache=cache)


def eig_job_compute(net, data, criterion, device, batch_size, precision, tol, max_iter, seed, params=""):
    """make_compute for maps of the Hessian's extreme eigenvalues (and the products each took)."""
    def make(make_mover):
        if torch.device(device).type == "cpu":
            fast_model.keep_freed_memory()
        net.to(device)
        mover = make_mover()
        x, y = evaluation.to_device(data[0], device), data[1].to(device)
        bs = resolve_hessian_batch(batch_size, net, x, device)
        op = hessian_operator(net, x, y, criterion, bs, params)

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


def resolve_hessian_batch(batch_size, net, inputs, device):
    """The Hessian's batch size: a number, or (auto) the evaluation's choice for this model and device."""
    if batch_size in (None, "auto"):
        return evaluation.auto_batch_size(net, inputs, evaluation.batch_count(inputs), device)
    return int(batch_size)


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
                      eig=None):
    """The GridJob of `surface()` and `eigen_surface()`."""
    device = resolve_device(device)
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
        orthogonalize=bool(orthogonalize), params=params or "", regenerate=bool(regenerate)).check()
    if out is not None and not str(out).endswith(".h5"):
        raise LandscapeError(f"out={out!r} must name an .h5 file")
    prov = {"model": type(model).__name__, "model_sha256": tensors_sha256(net.state_dict()),
            "data_sha256": tensors_sha256([(s[1], s[2]) for s in sets]), "train_size": len(train[1]),
            "loss_name": stats.loss_name, "metrics": ",".join(stats.metrics), "precision": precision,
            "dir_type": dir_type, "params": params or "", "seed": int(seed), "command": "landscape." +
            ("eigen_surface" if eig else "surface")}
    say = (lambda *a, **k: None) if not progress else print
    if eig is None:
        keys, missing = loss_keys([s[0] for s in sets], stats), None
        make = loss_job_compute(net, sets, stats, device, (), batch_size, precision, points_per_pass, fold_bn,
                                memory_format, compile, say)
    else:
        keys, missing = EIG_KEYS, ["max_eig", "min_eig"]
        make = eig_job_compute(net, train, stats.criterion, device, batch_size, precision, eig["tol"], eig["max_iter"],
                               int(seed), params or "")
    hessian = None
    if kind == "hessian":
        hessian = lambda: top_eigenvectors(net, train, stats.criterion, device, params or "", batch_size)
    job = GridJob(net, xs, ys, keys, make, missing, spec=spec, explicit=explicit,
                  model2=(lambda: m2) if m2 is not None else None, model3=(lambda: m3) if m3 is not None else None,
                  hessian=hessian, dir_file=dir_file or (os.path.splitext(out)[0] + "_directions.h5" if out else ""),
                  dir_given=False, surf_file=out or "", prov=prov, net_name=type(model).__name__,
                  model_hash=prov["model_sha256"], save_directions=save_directions or "", device=device,
                  flush_seconds=flush_seconds, progress=progress, quiet=not progress)
    return job


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


def surface(model, data, loss=None, x="-1:1:51", y=None, directions="filter", ignore="biasbn", seed=123,
            device=None, test_data=None, out=None, *, model2=None, model3=None, metrics=None, dir_type="weights",
            params=None, batch_size="auto", precision="default", points_per_pass=1, regenerate=False,
            orthogonalize=False, dir_file=None, save_directions=None, same_dir=False, fold_bn=True,
            memory_format="auto", compile=False, comm="auto", flush_seconds=5.0, progress=False):
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
    Returns: Result(x, y, values={'train_loss', ['train_acc'], ['train_<metric>'], ['test_...']}, ...).
    """
    job = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, test_data, out, model2=model2,
                            model3=model3, metrics=metrics, dir_type=dir_type, params=params, batch_size=batch_size,
                            precision=precision, points_per_pass=points_per_pass, regenerate=regenerate,
                            orthogonalize=orthogonalize, dir_file=dir_file, save_directions=save_directions,
                            same_dir=same_dir, fold_bn=fold_bn, memory_format=memory_format, compile=compile,
                            flush_seconds=flush_seconds, progress=progress)
    return run_job(job, auto_comm(comm))


def interpolation(model, model2, data, loss=None, x="-0.5:1.5:41", dir_type="states", **kwargs):
    """The loss along the line from `model` (x=0) to `model2` (x=1), as the reference's --model_file2."""
    return surface(model, data, loss, x=x, y=None, directions="", ignore="", model2=model2, dir_type=dir_type,
                   **kwargs)


def eigen_surface(model, data, loss=None, x="-1:1:21", y=None, directions="filter", ignore="biasbn", seed=123,
                  device=None, out=None, *, tol=hess_vec_prod.LANCZOS_TOL, max_iter=100, precision="fp32",
                  batch_size="auto",
                  comm="auto", progress=False, **kwargs):
    """The Hessian's largest and smallest eigenvalues (and the products each took) over a grid:
    values 'max_eig', 'min_eig', 'eig_iters'. Exact fp32 arithmetic by default."""
    job = build_surface_job(model, data, loss, x, y, directions, ignore, seed, device, None, out,
                            model2=kwargs.pop("model2", None), model3=kwargs.pop("model3", None), metrics=None,
                            dir_type=kwargs.pop("dir_type", "weights"), params=kwargs.pop("params", None),
                            batch_size=batch_size, precision=precision, points_per_pass=1,
                            regenerate=kwargs.pop("regenerate", False), orthogonalize=kwargs.pop("orthogonalize", False),
                            dir_file=kwargs.pop("dir_file", None), save_directions=None,
                            same_dir=kwargs.pop("same_dir", False), fold_bn=False, memory_format="contiguous",
                            compile=False, flush_seconds=kwargs.pop("flush_seconds", 5.0), progress=progress,
                            eig={"tol": tol, "max_iter": max_iter})
    if kwargs:
        raise LandscapeError(f"eigen_surface() got unexpected arguments: {', '.join(kwargs)}")
    return run_job(job, auto_comm(comm))


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


def hessian(model, data, loss=None, *, top_k=1, min_eig=True, vectors=False, trace=True, trace_samples=100,
            trace_rel_se=0.02, esd=False, esd_probes=1, esd_steps=100, params=None, device=None,
            batch_size="auto", precision="fp32", tol=hess_vec_prod.LANCZOS_TOL, max_iter=100, seed=0, cache="auto"):
    """Top-k eigenvalues (and eigenvectors), the smallest eigenvalue, the trace (Hutchinson) and the
    spectral density of the Hessian of the mean loss at `model`. Exact fp32 arithmetic by default."""
    device = resolve_device(device)
    for name, value, lo in (("top_k", top_k, 1), ("trace_samples", trace_samples, 2), ("max_iter", max_iter, 1),
                            ("esd_probes", esd_probes, 1), ("esd_steps", esd_steps, 2)):
        if not isinstance(value, int) or value < lo:
            raise LandscapeError(f"{name}={value!r} must be a whole number >= {lo}")
    if not tol > 0:
        raise LandscapeError(f"tol={tol!r} must be > 0")
    if precision == "bf16":
        raise LandscapeError("precision bf16 is too coarse for Hessian-vector products; use fp32, default or tf32")
    net = private_copy(model).to(device)
    if device.type == "cpu":
        fast_model.keep_freed_memory()
    x, y = as_tensors(data, "data")
    stats = evaluation.Statistics(*evaluation.resolve_loss(loss))
    stats.check(net, x, y)
    x, y = evaluation.to_device(x, device), y.to(device)
    named = hessian_params(net, params or "")
    t0 = time.perf_counter()
    with evaluation.arithmetic(precision, device):
        terms = loss_terms(net, x, y, stats.criterion, resolve_hessian_batch(batch_size, net, x, device))
        op = hess_vec_prod.HessianOperator([p for _, p in named], terms, cache=cache)
        if top_k > op.dim:
            raise LandscapeError(f"top_k={top_k} exceeds the {op.dim} parameters the Hessian covers")
        r = hess_vec_prod.lanczos(op, top_k=top_k, tol=tol, max_iter=max_iter, seed=seed, want_min=min_eig,
                                  want_vectors=vectors, keep_basis=trace)
        res = HessianResult(np.asarray(r.eigenvalues, dtype=np.float64),
                            None if r.eigenvectors is None else r.eigenvectors.cpu().numpy(),
                            float(r.min_eig) if min_eig else float("nan"), r.iterations,
                            parameters=op.dim, param_names=[n for n, _ in named])
        if trace:  # deflated by the Lanczos basis: its part of the trace is exact, the rest is sampled
            res.trace, res.trace_stderr, res.trace_samples = hess_vec_prod.trace_estimate(
                op, max_samples=trace_samples, rel_se=trace_rel_se, seed=seed, deflate=r)
        if esd:
            out = hess_vec_prod.esd(op, n_probes=esd_probes, n_steps=min(esd_steps, op.dim), seed=seed)
            res.esd_grid, res.esd_density = np.asarray(out[0]), np.asarray(out[1])
    res.seconds = time.perf_counter() - t0
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
