"""All HDF5 I/O: direction files, surface files, projection files, curvature tables. Every write is atomic.

Direction file (as the reference): groups `xdirection` and, for 2D, `ydirection`, each holding
datasets '0'..'n-1' in parameter (or state_dict) order. Attributes record what made it.

Surface file (as the reference): datasets `dir_file` (string), `xcoordinates` (nx,),
`ycoordinates` (ny,), and value maps `train_loss`, `train_acc` [, `test_loss`, `test_acc`,
`max_eig`, `min_eig`]. A 2D map has shape (ny, nx), Z[j, i] being the value at (x[i], y[j]) --
what matplotlib's contour(X, Y, Z) expects with X, Y = meshgrid(x, y). For square grids that is
exactly the reference's layout; the reference stored non-square maps as (nx, ny) arrays whose
flat buffer is in (ny, nx) order, and `read_surface` reads those correctly too.
Points not yet computed hold -1 (losses, accuracies) or the pair max_eig=-1, min_eig=+1 (a pair no
real Hessian has, since max >= min). Every other value, 0, NaN and inf included, is a result.

Atomic writes: a new file is written next to the target, flushed to disk, then renamed over it,
so a process killed at any moment leaves either the old or the new complete file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping, Optional, Sequence, Union

import h5py
import numpy as np
import torch

from landscape.version import __version__
from landscape.io import provenance
from landscape.errors import UserError

if TYPE_CHECKING:
    import numpy.typing as npt

    from landscape.curvature.model import LayerCurvature

    Tensors = Iterable[Union[torch.Tensor, np.ndarray]]     # a direction: one array or tensor per entry

MISSING = -1.0
EIG_MISSING = {"max_eig": -1.0, "min_eig": 1.0}
COORD_KEYS = ("dir_file", "xcoordinates", "ycoordinates")


# ----------------------------------------------------------------------------- the reference's helpers
def write_list(f: h5py.Group, name: str, direction: Tensors) -> None:
    """Write a list of arrays/tensors as datasets '0'..'n-1' of group `name`."""
    grp = f.create_group(name)
    for i, d in enumerate(direction):
        grp.create_dataset(str(i), data=d.numpy() if isinstance(d, torch.Tensor) else np.asarray(d))


def read_list(f: h5py.Group, name: str) -> list[np.ndarray]:
    """Read group `name` back as a list of numpy arrays, in index order."""
    grp = f[name]
    return [np.asarray(grp[str(i)][()]) for i in range(len(grp))]


# ----------------------------------------------------------------------------- atomic writes
LOCKS_UNAVAILABLE = re.compile(r"unable to lock file, errno = (37|38|95)\b")  # ENOLCK, ENOSYS, EOPNOTSUPP


def h5_file(path: str, mode: str = "r") -> h5py.File:
    """h5py.File with best-effort locking: HDF5 locks the file where the file system supports
    flock, and goes on without where it does not, instead of refusing to open it: Lustre mounted
    without flock answers ENOSYS (which HDF5's best-effort mode ignores), NFS without a lock daemon
    ENOLCK (which it does not, so the file is opened again without locking). Two runs never share a
    surface file anyway: the tool's own lock file guards against that, and every write goes to a new
    file renamed into place, so no reader ever sees a file being written."""
    try:
        return h5py.File(path, mode, locking="best-effort")
    except OSError as e:
        if not LOCKS_UNAVAILABLE.search(str(e)):
            raise
        return h5py.File(path, mode, locking=False)


def atomic_write(path: str, write_fn: Callable[[h5py.File], Any]) -> None:
    """Call write_fn(h5py.File) on a temp file beside `path`, fsync it, and rename it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write to folder '{folder}'")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5_file(tmp, "w") as f:
            write_fn(f)
            f.attrs["landscape_version"] = __version__   # the version that last wrote it (`tool`: that made it)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass


def check_writable(path: str) -> None:
    """Fail early, before any computation, if `path`'s folder cannot take new files."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"output folder '{folder}' does not exist")
    probe = os.path.join(folder, f".write_probe_{os.getpid()}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"output folder '{folder}' is not writable ({e.strerror})") from None


def open_h5(path: str, what: str) -> h5py.File:
    """Open an existing HDF5 file read-only, with a one-line error if it is missing or unreadable."""
    if not os.path.isfile(path):
        raise UserError(f"{what} '{path}' does not exist")
    try:
        return h5_file(path, "r")
    except OSError as e:
        raise UserError(f"{what} '{path}' is not a readable HDF5 file ({str(e).splitlines()[0][:80]})") from None


def set_attrs(obj: Union[h5py.Group, h5py.Dataset], attrs: Mapping[str, Any]) -> None:
    for k, v in attrs.items():
        obj.attrs[k] = "" if v is None else v


def read_attrs(obj: Union[h5py.Group, h5py.Dataset]) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}


# ----------------------------------------------------------------------------- direction files
def write_direction_file(path: str, directions: Sequence[Tensors], attrs: Mapping[str, Any]) -> None:
    def write(f):
        write_list(f, "xdirection", directions[0])
        if len(directions) > 1:
            write_list(f, "ydirection", directions[1])
        set_attrs(f, dict(attrs, created=time.strftime("%Y-%m-%dT%H:%M:%S"), tool=tool_version()))
    atomic_write(path, write)


def read_direction_info(path: str) -> dict[str, Any]:
    """{'has_y', 'shapes' of xdirection entries, 'attrs'} without loading the arrays."""
    with open_h5(path, "direction file") as f:
        if "xdirection" not in f:
            raise UserError(f"'{path}' is not a direction file (it has no 'xdirection' group)")
        grp = f["xdirection"]
        try:
            shapes = [grp[str(i)].shape for i in range(len(grp))]
        except KeyError:
            raise UserError(f"direction file '{path}' is incomplete (missing entries in 'xdirection')") from None
        return {"has_y": "ydirection" in f, "shapes": shapes, "attrs": read_attrs(f)}


def read_direction_file(path: str) -> list[list[torch.Tensor]]:
    """[xdir] or [xdir, ydir], each a list of float32 CPU tensors."""
    with open_h5(path, "direction file") as f:
        names = ["xdirection"] + (["ydirection"] if "ydirection" in f else [])
        try:
            return [[torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in read_list(f, n)] for n in names]
        except (KeyError, OSError) as e:
            raise UserError(f"direction file '{path}' is damaged ({e})") from None


def directions_sha256(directions: Iterable[Tensors]) -> str:
    """A fingerprint of direction contents, stable across file names and copies."""
    h = hashlib.sha256()
    for direction in directions:
        for d in direction:
            a = np.ascontiguousarray(d.numpy() if isinstance(d, torch.Tensor) else d, dtype=np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- surface files
@dataclass
class Surface:
    """A surface file in memory. values[k] has shape (nx,) or (ny, nx)."""
    path: str
    x: np.ndarray
    y: Optional[np.ndarray] = None
    dir_file: str = ""
    values: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    def coords(self) -> np.ndarray:
        """(points, ndim) coordinates in flat order: index j*nx + i is (x[i], y[j])."""
        if self.y is None:
            return self.x.reshape(-1, 1)
        xx, yy = np.meshgrid(self.x, self.y)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def ensure(self, key: str) -> None:
        """Create an all-missing map for `key` if it does not exist yet."""
        if key not in self.values:
            self.values[key] = np.full(self.shape, EIG_MISSING.get(key, MISSING), dtype=np.float64)

    def missing(self, keys: Collection[str]) -> np.ndarray:
        """Flat boolean mask of points where any of `keys` is not computed yet."""
        mask = np.zeros(int(np.prod(self.shape)), dtype=bool)
        for k in keys:
            self.ensure(k)
        if any(k in EIG_MISSING for k in keys):
            mask |= (self.values["max_eig"].ravel() == -1.0) & (self.values["min_eig"].ravel() == 1.0)
        for k in keys:
            if k not in EIG_MISSING:
                mask |= self.values[k].ravel() == MISSING
        return mask


def new_surface(path: str, x: npt.ArrayLike, y: Optional[npt.ArrayLike], dir_file: str,
                attrs: Mapping[str, Any]) -> Surface:
    return Surface(path, np.asarray(x, dtype=np.float64), None if y is None else np.asarray(y, dtype=np.float64),
                   dir_file, {}, dict(attrs))


def _read_map(f: h5py.File, key: str, nx: int, ny: Optional[int], path: str) -> np.ndarray:
    a = np.asarray(f[key][()], dtype=np.float64)
    if ny is None:
        if a.shape != (nx,):
            raise UserError(f"'{key}' in '{path}' has shape {a.shape}, but the grid has {nx} points")
        return a
    if a.shape == (ny, nx):
        return a
    if a.shape == (nx, ny):  # the reference's non-square layout: (nx, ny) array, (ny, nx) buffer
        return a.reshape(ny, nx)
    raise UserError(f"'{key}' in '{path}' has shape {a.shape}, which fits neither ({ny}, {nx}) nor ({nx}, {ny})")


def read_surface(path: str, keys: Optional[Collection[str]] = None) -> Surface:
    """Read a surface file (ours or the reference's) into a Surface. `keys`: maps to load (default all)."""
    with open_h5(path, "surface file") as f:
        if "xcoordinates" not in f:
            raise UserError(f"'{path}' is not a surface file (it has no 'xcoordinates')")
        x = np.asarray(f["xcoordinates"][()], dtype=np.float64).ravel()
        y = np.asarray(f["ycoordinates"][()], dtype=np.float64).ravel() if "ycoordinates" in f else None
        dir_file = f["dir_file"][()] if "dir_file" in f else b""
        dir_file = dir_file.decode() if isinstance(dir_file, bytes) else str(dir_file)
        surf = Surface(path, x, y, dir_file, {}, read_attrs(f))
        for key in f:
            if key in COORD_KEYS or not isinstance(f[key], h5py.Dataset) or (keys and key not in keys):
                continue
            grid = (len(x),) if y is None else (len(y), len(x))
            if sorted(f[key].shape) == sorted(grid):  # a value map; anything else is kept as it is
                surf.values[key] = _read_map(f, key, len(x), None if y is None else len(y), path)
        return surf


def write_surface(surf: Surface) -> None:
    """Atomically (re)write `surf`, keeping any other objects the existing file holds."""
    def write(f):
        if os.path.exists(surf.path):
            with h5_file(surf.path, "r") as old:
                for key in old:
                    if key not in surf.values and key not in COORD_KEYS:
                        old.copy(old[key], f, name=key)
        f["dir_file"] = surf.dir_file
        f["xcoordinates"] = surf.x
        if surf.y is not None:
            f["ycoordinates"] = surf.y
        for key, v in surf.values.items():
            f.create_dataset(key, data=v)
        set_attrs(f, surf.attrs)
    atomic_write(surf.path, write)


# ----------------------------------------------------------------------------- resume checks
def check_renamed_direction_file(path: str, recorded: str, dir_file: str) -> None:
    """A surface file that records no direction hash (the reference's) names another direction file
    than this run's: the same directions under another name (compared, where the named file is still
    there) resume; other directions are refused; a recorded file that is gone cannot be compared, and
    the run goes on, as the reference's would, after one warning line."""
    candidates = [recorded, os.path.join(os.path.dirname(path), os.path.basename(recorded))]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if not os.path.isfile(dir_file):     # this run makes new directions: not those of the surface
        raise UserError(f"surface file '{path}' belongs to direction file '{recorded}', not '{dir_file}'")
    if found is None:
        print(f"warning: surface file '{path}' was made with direction file '{recorded}', which is gone; its "
              f"points are kept, and resumed along '{dir_file}' as the same directions", file=sys.stderr, flush=True)
        return
    if directions_sha256([d for group in read_direction_file(found) for d in group]) != \
            directions_sha256([d for group in read_direction_file(dir_file) for d in group]):
        raise UserError(f"surface file '{path}' belongs to direction file '{recorded}', not '{dir_file}', which "
                        "holds other directions; use another --surf_file")


def check_surface(surf: Surface, x: np.ndarray, y: Optional[np.ndarray], prov: Mapping[str, Any],
                  dir_file: str) -> None:
    """Refuse to resume into a surface file made for another grid or with other inputs (the compared
    entries of io/provenance.py's SURFACE table): every value it holds would be mixed with values
    of another surface."""
    path = surf.path
    if (surf.y is None) != (y is None):
        raise UserError(f"surface file '{path}' is {'1D' if surf.y is None else '2D'}, but this run is "
                        f"{'1D' if y is None else '2D'}")
    for axis, mine, theirs in (("x", x, surf.x), ("y", y, surf.y)):
        if mine is not None and (len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=0, atol=1e-9)):
            raise UserError(f"surface file '{path}' has a different {axis} grid "
                            f"([{theirs[0]}, {theirs[-1]}] x {len(theirs)}); use another --surf_file")
    attrs = surf.attrs
    if not attrs.get("dir_sha256") and surf.dir_file and dir_file and \
            os.path.basename(surf.dir_file) != os.path.basename(dir_file):
        check_renamed_direction_file(path, surf.dir_file, dir_file)
    diff = provenance.first_difference("surface", attrs, prov)
    if diff is None:
        return
    entry, theirs, mine = diff
    if entry.key == "dir_sha256":
        raise UserError(f"surface file '{path}' was computed along other directions than "
                        f"'{dir_file or 'these'}'; use another --surf_file")
    raise UserError(f"surface file '{path}' was computed with another {entry.what} "
                    f"({provenance.short(theirs)} vs {provenance.short(mine)}); use another --surf_file")


def points_json(points: Iterable[tuple[str, float, Optional[float]]]) -> str:
    """[(label, x, y)] -> the `marked_points` attribute: JSON [{"label", "x", "y"}] (y null in 1D)."""
    return json.dumps([{"label": label, "x": float(x), "y": None if y is None else float(y)}
                       for label, x, y in points])


class Recorder:
    """Rank 0: store results in the Surface, show progress, rewrite the file every flush_seconds.

    With `surf.path` empty (an in-memory run of the Python API) nothing is written.
    """

    def __init__(self, surf: Surface, keys: Sequence[str], total: int, done: int, flush_seconds: float,
                 show_progress: bool = True, status: Optional[Callable[[], str]] = None) -> None:
        from tqdm import tqdm
        self.surf, self.keys, self.flush_seconds = surf, keys, flush_seconds
        self.status = status        # () -> a few words for the progress line (the evaluation rate)
        self.dirty, self.last_flush = False, time.monotonic()
        self.bar = tqdm(total=total, initial=done, unit="pt", disable=not show_progress,
                        mininterval=0.5, dynamic_ncols=True, file=sys.stderr)

    def store(self, indices: np.ndarray, values: np.ndarray) -> None:
        for j, key in enumerate(self.keys):
            self.surf.values[key].reshape(-1)[indices] = values[:, j]
        self.dirty = True
        if self.status is not None and not self.bar.disable:
            self.bar.set_postfix_str(self.status(), refresh=False)
        self.bar.update(len(indices))

    def tick(self) -> None:
        if self.dirty and time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.dirty and self.surf.path:
            self.surf.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_surface(self.surf)
            self.dirty, self.last_flush = False, time.monotonic()

    def close(self) -> None:
        self.flush()
        self.bar.close()


# ----------------------------------------------------------------------------- projection files
def write_projection_file(path: str, xcoord: npt.ArrayLike, ycoord: npt.ArrayLike,
                          attrs: Optional[Mapping[str, Any]] = None) -> None:
    def write(f):
        f["proj_xcoord"] = np.asarray(xcoord, dtype=np.float64)
        f["proj_ycoord"] = np.asarray(ycoord, dtype=np.float64)
        set_attrs(f, attrs or {})
    atomic_write(path, write)


def read_projection_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open_h5(path, "projection file") as f:
        if "proj_xcoord" not in f or "proj_ycoord" not in f:
            raise UserError(f"'{path}' is not a projection file (no proj_xcoord/proj_ycoord)")
        return np.asarray(f["proj_xcoord"][()]), np.asarray(f["proj_ycoord"][()])


# ----------------------------------------------------------------------------- curvature files
PER_LAYER_FIELDS = (("layer", h5py.string_dtype()), ("parameters", np.int64), ("top_eig", np.float64),
                    ("trace", np.float64), ("trace_stderr", np.float64), ("lanczos_products", np.int64),
                    ("converged", np.int8))


def per_layer_table(layers: Iterable[LayerCurvature]) -> np.ndarray:
    """[LayerCurvature] -> the `per_layer` table: a structured array, one row per layer in network order."""
    rows = [(lay.name, lay.parameters, lay.top_eig, lay.trace, lay.trace_stderr, lay.lanczos_products,
             int(lay.converged)) for lay in layers]
    return np.array(rows, dtype=list(PER_LAYER_FIELDS))


def read_per_layer(path: str) -> dict[str, Any]:
    """{field: array} of a curvature file's `per_layer` table (layer names as str), and its 'curvature'."""
    with open_h5(path, "curvature file") as f:
        if "per_layer" not in f:
            raise UserError(f"curvature file '{path}' has no per_layer table (made without --per_layer?)")
        table = f["per_layer"][()]
        curvature = read_attrs(f).get("curvature", "hessian")
    out = {name: table[name] for name, _ in PER_LAYER_FIELDS}
    out["curvature"] = curvature
    out["layer"] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in out["layer"]])
    return out


def tool_version() -> str:
    """What wrote a file: this tool's version, with Python's, PyTorch's and h5py's."""
    return provenance.tool_version()
