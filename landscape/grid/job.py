"""The grid job: what moves the model, what each point computes, and where the results go.

A `GridJob` says what moves the model (directions or a path), what each point computes and where
results go; `run_job` prepares the files on rank 0 under the surface's lock (direction file, surface
file, resume checks; a refused run writes nothing), computes the missing points on every rank
(scheduler.py) and records them on rank 0 (io.h5.Recorder: atomic rewrites every flush_seconds, and
on the way out whatever happens). The scripts and the Python API (landscape.api) both build jobs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from landscape import curves
from landscape import directions as dirlib
from landscape.errors import LandscapeError
from landscape.grid import scheduler
from landscape.grid.lock import SurfaceLock
from landscape.io import h5
from landscape.parallel import mpi

if TYPE_CHECKING:
    from landscape.parallel.dist import PointGroup

Mover = Callable[[], dirlib.PointSetter]       # () -> what moves the model to a grid point (make_mover)
Compute = Callable[[np.ndarray], np.ndarray]   # coords (n, ndim) -> values (n, len(keys))
# directions given as tensors: [x] or [x, y], each a list in the space's order or {entry name: tensor}
Explicit = Sequence[Union[Sequence[Any], dict[str, Any]]]


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    """A computed surface: x (nx,), y (ny,) or None, and value maps (nx,) or (ny, nx), Z[j, i] at (x[i], y[j])."""
    x: np.ndarray
    y: Optional[np.ndarray]
    values: dict[str, np.ndarray]
    path: str = ""            # the surface file ('' when kept in memory)
    dir_file: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)   # points computed, seconds, seconds per point, ranks

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


# ----------------------------------------------------------------------------- grids
def parse_range(text: str, flag: str = "--x") -> tuple[float, float, int]:
    """'min:max:num' -> (min, max, num), with num an integer >= 1, all finite; min > max runs the axis
    backwards (np.linspace(min, max, num), as the reference)."""
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
    return lo, hi, int(num)


def axis(spec: Union[str, Sequence[float], np.ndarray, None], flag: str) -> Optional[np.ndarray]:
    """A grid axis from 'min:max:num', a (min, max, num) tuple (a range, like the string), or a list or
    array of coordinates (a list [-1, 1, 3] is three coordinates); None: no axis."""
    if spec is None:
        return None
    if np.ndim(spec) == 0 and not isinstance(spec, str):
        raise LandscapeError(f"{flag}={spec!r} must be 'min:max:num', a (min, max, num) tuple or a list of "
                             "coordinates")
    if isinstance(spec, str):
        lo, hi, num = parse_range(spec, flag)
        return np.linspace(lo, hi, num=num)
    if isinstance(spec, tuple) and len(spec) == 3:
        lo, hi, num = parse_range(":".join(str(v) for v in spec), flag)
        return np.linspace(lo, hi, num=num)
    try:
        a = np.asarray(spec, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise LandscapeError(f"{flag}: coordinates must be a non-empty list of finite numbers") from None
    if a.size == 0 or not np.isfinite(a).all():
        raise LandscapeError(f"{flag}: coordinates must be a non-empty list of finite numbers")
    return a


def grid_coords(x: np.ndarray, y: Optional[np.ndarray]) -> np.ndarray:
    """(points, ndim) coordinates in the surface's flat order: index j*nx + i is (x[i], y[j])."""
    return h5.new_surface("", x, y, "", {}).coords()


# ----------------------------------------------------------------------------- the grid job
@dataclass
class GridJob:
    """One grid run: what moves the model, what each point computes, and where the results go."""
    net: nn.Module                   # the model at the origin (CPU, eval mode); the run moves it
    x: np.ndarray
    y: Optional[np.ndarray]          # None for 1D
    keys: list[str]                  # the value maps this run writes
    make_compute: Callable[[Mover], Compute]   # make_compute(make_mover) -> (coords (n, ndim) -> values (n, len(keys)))
    missing_keys: Optional[list[str]] = None   # maps whose sentinel marks a point as not computed (default: keys)
    spec: Optional[dirlib.DirectionSpec] = None
    explicit: Optional[Explicit] = None        # directions given as tensors
    path: Optional[list[dirlib.Space]] = None  # checkpoints' direction spaces, for a path
    path_type: str = "polychain"
    model2: Optional[Callable[[], nn.Module]] = None   # callables returning the target models
    model3: Optional[Callable[[], nn.Module]] = None
    build_model: Optional[Callable[[], nn.Module]] = None   # builds a fresh model after seeding (the reference's draws)
    hessian: Optional[Callable[[], list[tuple[torch.Tensor, float]]]] = None   # () -> [(eigenvector, eigenvalue)]
    dir_file: str = ""               # '' keeps the directions in memory
    dir_given: bool = False          # the user named the direction file: it defines the directions,
    compare: Union[bool, set[str], frozenset[str]] = True   # ... except these DirectionSpec fields, which must match
    surf_file: str = ""              # '' keeps the surface in memory
    prov: dict[str, Any] = field(default_factory=dict)
    net_name: str = ""
    model_hash: str = ""
    dir_inputs: dict[str, Any] = field(default_factory=dict)  # inputs that may define directions (target
    #                       checkpoints' hashes, the loss and data of a Hessian): directions.defining_inputs
    save_directions: str = ""        # also write the directions (materialised) to this file
    device: Union[str, torch.device] = "cpu"
    flush_seconds: float = 5.0
    progress: bool = True
    quiet: bool = False              # no printed lines (the API's default)
    notes: list[str] = field(default_factory=list)   # warning lines rank 0 prints once every check has passed

    def __post_init__(self) -> None:
        self.missing_keys = self.missing_keys or self.keys


@dataclass
class Plan:
    """What rank 0 decided before computing; nothing is written while making it."""
    directions: Optional[list[dirlib.Direction]]   # float32 CPU tensors, or None (seeded directions, or a path)
    seeded: Optional[dirlib.SeededDirections]
    new_dirs: bool
    warnings: list[str]              # lines to print once every check has passed
    points: list[dirlib.MarkedPoint]   # marked points [(label, x, y)]
    spec: Optional[dirlib.DirectionSpec]   # what the directions are: this run's, or a named direction file's own
    surf: Optional[h5.Surface] = None
    created: list[str] = field(default_factory=list)   # files this run wrote new (removed if it fails before a point)
    unapplied: frozenset[str] = frozenset()            # direction flags a named file made inapplicable (not recorded)


def space_of(job: GridJob, spec: Optional[dirlib.DirectionSpec] = None) -> dirlib.Space:
    spec = spec or job.spec
    return dirlib.direction_space(job.net, spec.dir_type if spec else "weights")


def path_points(job: GridJob) -> list[dirlib.MarkedPoint]:
    """The checkpoints a path passes through, where they sit; with a --params subset only the first one
    is itself (elsewhere the other entries stay at the model's own values)."""
    n = len(job.path)
    ts = [i / (n - 1) for i in range(n)] if job.path_type == "polychain" else [0.0, 1.0]
    names = [f"checkpoint {i + 1}" for i in range(n)] if job.path_type == "polychain" else ["checkpoint 1",
                                                                                             f"checkpoint {n}"]
    points = [(lbl, t, None) for lbl, t in zip(names, ts)]
    return points[:1] if job.spec is not None and job.spec.params else points


def obtain_directions(job: GridJob) -> Plan:
    """A Plan (no surface yet): an existing direction file, checked, or new directions."""
    spec = job.spec
    if job.path is not None:
        return Plan(None, None, False, [], path_points(job), spec)
    space = space_of(job)
    if job.explicit is not None:
        dirs = explicit_directions(job.explicit, space, spec)
        new = True
        if job.dir_file and os.path.exists(job.dir_file):
            stored = dirlib.load_directions(job.dir_file, spec.ndim)
            if h5.directions_sha256(stored) != h5.directions_sha256(dirs):
                raise LandscapeError(f"direction file '{job.dir_file}' holds other directions than the ones given; "
                                     "use another dir_file or out")
            new = False
        return Plan(dirs, None, new, [], [], spec)
    if job.dir_file and os.path.exists(job.dir_file):
        attrs = h5.read_direction_info(job.dir_file)["attrs"]
        compare, notes, unapplied = job.compare, [], set()
        if isinstance(compare, (set, frozenset)):  # a file the user named defines what they did not set
            unapplied = dirlib.unapplied_fields(attrs, spec, compare)
            spec = dirlib.recorded_spec(attrs, spec, keep=compare, unapplied=unapplied)
            compare = frozenset(compare) - unapplied
            notes = [dirlib.unapplied_note(job.dir_file, unapplied)] if unapplied else []
        warning = dirlib.check_direction_file(job.dir_file, spec, space_of(job, spec), job.net_name,
                                              job.model_hash, compare=compare, inputs=job.dir_inputs)
        notes += [warning] if warning else []
        points = [(p["label"], p["x"], p.get("y")) for p in json.loads(attrs.get("marked_points") or "[]")]
        if attrs.get("regenerated"):
            seeded = dirlib.SeededDirections(spec, attrs["regenerated_device_type"])
            if spec.ndim == 2 and spec.orthogonalize:
                ortho = attrs.get("regenerated_ortho")
                seeded.ortho = tuple(json.loads(ortho)) if ortho else seeded.gram_schmidt(
                    space_of(job, spec), dirlib.entry_mask(space_of(job, spec), spec.params))
            return Plan(None, seeded, False, notes, points, spec, unapplied=frozenset(unapplied))
        dirs = dirlib.load_directions(job.dir_file, spec.ndim, space_of(job, spec))
        return Plan(dirs, None, False, notes, points, spec, unapplied=frozenset(unapplied))
    if job.dir_given:
        raise LandscapeError(f"direction file '{job.dir_file}' does not exist")
    if spec.regenerate:
        spec.check()
        seeded = dirlib.SeededDirections(spec, torch.device(job.device).type)
        if spec.orthogonalize:
            seeded.ortho = seeded.gram_schmidt(space, dirlib.entry_mask(space, spec.params))
        return Plan(None, seeded, True, [], [], spec)
    dirs, points = dirlib.make_directions(spec, job.net, job.model2, job.model3, job.build_model, job.hessian)
    return Plan(dirs, None, True, [], points, spec)


def explicit_directions(given: Explicit, space: dirlib.Space, spec: dirlib.DirectionSpec) -> list[dirlib.Direction]:
    """Directions given as tensors, checked, restricted to the --params subset (and tied duplicates and
    integer entries, which never move), then orthogonalised if asked."""
    dirs = check_explicit(given, space, spec.ndim)
    mask = dirlib.entry_mask(space, spec.params)
    for d in dirs:
        for k, m in enumerate(mask):
            if not m:
                d[k] = torch.zeros_like(d[k])
    if spec.orthogonalize:
        dirs[1], _ = dirlib.orthogonalize(dirs[0], dirs[1], spec)
    return dirs


def check_explicit(directions: Explicit, space: dirlib.Space, ndim: int) -> list[dirlib.Direction]:
    """Directions given as tensors: a list (x[, y]) of lists in the space's order or of {name: tensor}."""
    if not isinstance(directions, (list, tuple)) or not directions or \
            not all(isinstance(d, (list, tuple, dict)) for d in directions):
        raise LandscapeError(f"directions must be a list of {ndim} direction(s), each a list of tensors or a dict")
    if len(directions) != ndim:
        raise LandscapeError(f"directions: {len(directions)} given for a {ndim}D surface, which takes exactly "
                             f"{ndim} ({'x' if ndim == 1 else 'x and y'})")
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
        tensors = [torch.as_tensor(v).detach().float().cpu().clone() for v in d]
        bad = next((name for (name, _), v in zip(space, tensors) if not torch.isfinite(v).all()), None)
        if bad is not None:
            raise LandscapeError(f"direction {a}, entry '{bad}' holds NaN or inf values")
        out.append(tensors)
    return out


def directions_fingerprint(plan: Plan) -> str:
    if plan.seeded is not None:
        recipe = dict(plan.seeded.spec.attrs(), **plan.seeded.attrs())
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    return h5.directions_sha256(plan.directions) if plan.directions is not None else ""


# Attributes that say how the last run computed its points, not what the values are: they are
# overwritten on resume, never compared (evaluation/batches.py, parallel/dist.py).
RUN_INFO = ("data_in_memory", "ranks_per_point")


def check_distinct_files(job: GridJob) -> None:
    """The surface file, the direction file and the file --save_directions writes must be three files."""
    named = [(what, path) for what, path in (("surface file (--surf_file, out=)", job.surf_file),
                                               ("direction file (--dir_file, dir_file=)", job.dir_file),
                                               ("--save_directions file (save_directions=)", job.save_directions))
             if path]
    for i, (what, path) in enumerate(named):
        for other, path2 in named[i + 1:]:
            if os.path.abspath(path) == os.path.abspath(path2):
                raise LandscapeError(f"the {what} and the {other} are the same file '{path}': give them different names")


def plan_job(job: GridJob) -> Plan:
    """Check the output folders, the directions and the surface file against this run; write nothing."""
    check_distinct_files(job)
    if job.surf_file:
        h5.check_writable(job.surf_file)
    if job.dir_file and not os.path.exists(job.dir_file):
        h5.check_writable(job.dir_file)
    if job.save_directions:
        h5.check_writable(job.save_directions)
    plan = obtain_directions(job)
    zero = None
    if plan.directions is not None:
        zero = dirlib.zero_direction_warning(plan.directions, plan.spec)
    elif plan.seeded is not None:  # drawn directions vanish where every moving entry is zeroed (biasbn)
        space = space_of(job, plan.spec)
        moving = [t for (_, t), m in zip(space, dirlib.entry_mask(space, plan.spec.params)) if m]
        if plan.spec.xignore == "biasbn" and all(t.dim() <= 1 for t in moving):
            zero = dirlib.zero_direction_warning([[torch.zeros(1)]], plan.spec)
    plan.warnings += ([zero] if zero else []) + list(job.notes)
    prov = dict(job.prov, dir_sha256=directions_fingerprint(plan), marked_points=h5.points_json(plan.points))
    if plan.spec is not None:  # the subset and space the directions really have (a named file's own)
        prov.update(params=plan.spec.params, dir_type=plan.spec.dir_type)
    for axis in ("x", "y"):    # a target checkpoint that was not applied does not define this surface
        if axis + "dir" in plan.unapplied:
            for key in dirlib.TARGET_INPUTS[axis]:
                prov.pop(key, None)
    if job.surf_file and os.path.exists(job.surf_file):
        surf = h5.read_surface(job.surf_file)
        h5.check_surface(surf, job.x, job.y, prov, job.dir_file)
        surf.attrs.update({k: v for k, v in prov.items() if k not in surf.attrs or k in RUN_INFO})
        surf.attrs["last_command"] = prov.get("command", "")
    else:
        surf = h5.new_surface(job.surf_file, job.x, job.y, job.dir_file, prov)
    plan.surf = surf
    return plan


def write_plan(job: GridJob, plan: Plan) -> None:
    """Rank 0, every check passed: write the new direction file, then the surface file."""
    spec = plan.spec
    if plan.new_dirs and job.dir_file:
        extra = plan.seeded.attrs() if plan.seeded is not None else None
        attrs = dirlib.direction_attrs(spec, job.net_name, job.model_hash, job.dir_inputs, plan.points, extra)
        h5.write_direction_file(job.dir_file, [[]] * spec.ndim if plan.seeded is not None else plan.directions,
                                attrs)
        plan.created.append(job.dir_file)
    if job.save_directions and (plan.seeded is not None or plan.directions is not None):
        space = space_of(job, spec)
        dirs = plan.seeded.materialize(space, dirlib.entry_mask(space, spec.params)) \
            if plan.seeded is not None else plan.directions
        attrs = dirlib.direction_attrs(spec, job.net_name, job.model_hash, job.dir_inputs, plan.points,
                                       {"spec_regenerate": False,
                                             "materialised_from": job.dir_file or "seeded directions"})
        if not os.path.exists(job.save_directions):
            plan.created.append(job.save_directions)
        h5.write_direction_file(job.save_directions, dirs, attrs)
    for key in job.keys:
        plan.surf.ensure(key)  # the maps this run fills, all "not computed" if new
    if job.surf_file:
        if not os.path.exists(job.surf_file):
            plan.created.append(job.surf_file)
        h5.write_surface(plan.surf)


def discard_if_unstarted(job: GridJob, plan: Optional[Plan]) -> None:
    """After a failure: remove the files this run created if it computed no point, so a run that
    fails before its first point (a refusal found late, the user's loss raising) leaves nothing."""
    if plan is None or plan.surf is None or not plan.surf.missing(job.missing_keys).all():
        return
    for path in plan.created:
        if os.path.exists(path):
            os.remove(path)


def make_mover(job: GridJob, shared: dict[str, Any]) -> dirlib.PointSetter:
    """What moves the model to a grid point: a PointSetter, a SeededSetter or a PathSetter."""
    if job.path is not None:
        return dirlib.PathSetter(job.net, job.path, job.spec.dir_type if job.spec else "weights", job.path_type,
                                 params=job.spec.params if job.spec else "")
    if shared["seeded"] is not None:
        return dirlib.SeededSetter(job.net, shared["seeded"])
    return dirlib.PointSetter(job.net, shared["directions"], job.spec.dir_type)


def share_plan(job: GridJob, plan: Optional[Plan], comm: Any, rank: int) -> dict[str, Any]:
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
        shared["directions"] = dirlib.load_directions(shared["dir_file"], job.spec.ndim, space_of(job))
    return shared


def run_job(job: GridJob, comm: Any = None, group: Optional[PointGroup] = None) -> Result:
    """Every rank: plan (rank 0, under the lock), compute the missing points, record them (rank 0).
    `group`: this rank's PointGroup when K ranks share each point (parallel/dist.py)."""
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    lock = SurfaceLock(job.surf_file) if job.surf_file else None
    say = (lambda *a, **k: None) if job.quiet or rank != 0 else (lambda *a, **k: print(*a, flush=True, **k))
    where = group.describe(nproc) if group is not None else f"{nproc} rank(s)"
    planned = []
    try:
        def prepare():
            if lock is not None:
                h5.check_writable(job.surf_file)  # a missing folder is named as such, not as a lock failure
                lock.acquire()
            plan = plan_job(job)
            for line in plan.warnings:
                print(line, file=sys.stderr, flush=True)
            planned.append(plan)
            write_plan(job, plan)
            return plan
        plan = mpi.agree(comm, prepare if rank == 0 else (lambda: None))
        shared = share_plan(job, plan, comm, rank)
        if rank == 0 and shared["directions"] is not None and len(shared["directions"]) == 2:
            c = cosine(shared["directions"])
            say(f"cosine similarity of the x and y directions: {'undefined (a direction is zero)' if c is None else f'{c:.4f}'}")
        compute_coords = mpi.agree(comm, lambda: job.make_compute(lambda: make_mover(job, shared)))
        status = getattr(compute_coords, "status", None)
        coords = grid_coords(job.x, job.y)
        compute = lambda idx: compute_coords(coords[idx])
        stats, missing, rec = {}, None, None
        t0 = time.perf_counter()
        try:
            if rank == 0:
                surf = plan.surf
                missing = np.flatnonzero(surf.missing(job.missing_keys))
                total = int(np.prod(surf.shape))
                say(f"{job.surf_file or 'surface'}: {total - len(missing)} of {total} points done, computing "
                    f"{len(missing)} on {where} ({job.device})")
                rec = h5.Recorder(surf, job.keys, total, total - len(missing), job.flush_seconds,
                                  show_progress=job.progress and not job.quiet, status=status)
            try:
                scheduler.run(comm, group, missing, compute, rec.store if rec else None, rec.tick if rec else None)
                if rec is not None:
                    store_barriers(plan.surf, job.missing_keys, rec)
            finally:
                if rec is not None:
                    rec.close()  # whatever happened (Ctrl-C, SIGTERM, a crash), keep every computed point
            if rank == 0:
                stats = report(len(missing), time.perf_counter() - t0, nproc, job.surf_file, say, where,
                               status() if status else "")
        except Exception as e:
            if nproc > 1:  # abort ends every rank at once: no `except` or `finally` below runs after it
                if rank == 0:
                    discard_if_unstarted(job, planned[0] if planned else None)
                    if lock is not None:
                        lock.release()
                elif lock is not None and os.path.exists(lock.path):
                    os.remove(lock.path)  # rank 0 holds it for this job and is about to be killed with it
            mpi.abort_on_error(comm, rank, e)  # one rank failed: never leave the others waiting
            raise
    except BaseException:
        if rank == 0 and planned:
            discard_if_unstarted(job, planned[0])
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


def store_barriers(surf: h5.Surface, keys: Sequence[str], rec: h5.Recorder) -> None:
    """A path's complete 1D surface: its loss maps' barrier heights (max along t minus the mean of the ends)
    become the attributes <map>_barrier of the file, written with its last flush."""
    if "path_type" not in surf.attrs or surf.y is not None or surf.missing(keys).any():
        return
    for key, value in curves.path_barrier_attrs(surf.x, surf.values).items():
        if surf.attrs.get(key) != value:
            surf.attrs[key] = value
            rec.dirty = True


def cosine(directions: Sequence[Sequence[torch.Tensor]]) -> Optional[float]:
    """The cosine of the x and y directions, or None where one of them is zero."""
    a = torch.cat([d.flatten() for d in directions[0]]).double()
    b = torch.cat([d.flatten() for d in directions[1]]).double()
    norms = float(a.norm() * b.norm())
    return float(a @ b) / norms if norms > 0 else None


def report(n_done: int, seconds: float, nproc: int, surf_file: str, say: Callable[..., Any] = print,
           where: Optional[str] = None, rate: str = "") -> dict[str, float]:
    """Print the summary line; return the figures (the benchmark reads them)."""
    if n_done == 0:
        say(f"nothing to compute: every point is done; surface file: {surf_file}")
        return {"points": 0, "seconds": seconds, "sec_per_point": float("nan"), "ranks": nproc}
    per_point = seconds / n_done
    each = f"{per_point * 1e3:.3g} ms" if per_point < 1 else f"{per_point:.3g} s"
    say(f"computed {n_done} points in {seconds:.1f} s ({n_done / max(seconds, 1e-9):.1f} points/s, {each}/point) "
        f"on {where or f'{nproc} rank(s)'}{f'; data: {rate}' if rate else ''}; surface file: "
        f"{surf_file or '(in memory)'}")
    return {"points": n_done, "seconds": seconds, "sec_per_point": per_point, "ranks": nproc}


def dry_run(job: GridJob, nproc: int = 1, ranks_per_point: int = 1) -> float:
    """Validate, name the files, time one point, estimate the total; write nothing. With K ranks per
    point the point is timed on rank 0's shard (1/K of the data), as each rank of a group takes it."""
    plan = plan_job(job)
    if job.dir_file:
        print(f"direction file: {job.dir_file} ({'would be created' if plan.new_dirs else 'exists, fits the model'})")
    total = int(np.prod(plan.surf.shape))
    missing = int(plan.surf.missing(job.missing_keys).sum())
    done = f"exists: {total - missing} of {total} points done" if os.path.exists(job.surf_file) else "would be created"
    print(f"surface file:   {job.surf_file} ({done})")
    for line in plan.warnings:
        print(line, file=sys.stderr)
    shared = {"directions": plan.directions, "seeded": plan.seeded}
    compute = job.make_compute(lambda: make_mover(job, shared))
    coords = grid_coords(job.x, job.y)
    center = coords[[int(np.argmin(np.abs(coords).sum(1)))]]
    compute(center)  # warm-up
    t0 = time.perf_counter()
    compute(center)
    sec = time.perf_counter() - t0
    print(f"one point takes {sec:.3f} s here; {missing} points on {nproc} rank(s): about "
          f"{missing * sec * ranks_per_point / nproc / 60:.1f} min. Nothing was computed or written.")
    return sec


