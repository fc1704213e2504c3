"""Directions in parameter space, and moving a model to a grid point (or along a path).

A direction is a list of tensors, one per entry of the space it lives in:
- `weights`: the model's parameters, in `net.parameters()` order;
- `states`: the model's state_dict, in order, including BatchNorm running_mean/var. Integer entries
  (num_batches_tracked) get zero directions and are never perturbed. A tensor that appears under
  two names (tied weights) moves once: its later entries are zero.

Random directions are Gaussian per tensor, then normalised against the weights w they perturb
(Li et al. 2018, Sec. 4). For each entry d of dimension > 1:
- filter:  each filter d_i (slice along dim 0: one output feature map, or one neuron) is rescaled
           to ||d_i|| = ||w_i||  (d_i <- d_i * ||w_i|| / (||d_i|| + 1e-10));
- layer:   d <- d * ||w|| / ||d||;
- weight:  d <- d * w (elementwise);
- dfilter: d_i <- d_i / (||d_i|| + 1e-10)  (unit-norm filters);
- dlayer:  d <- d / ||d||;
- '' (none): d is left as drawn.
Entries of dimension <= 1 (biases, BN parameters and statistics) are zeroed with `ignore=biasbn`;
otherwise they are set to the weights themselves, w (the reference's semantics: moving by x*d
scales those entries by (1 + x)).

The draws are the reference's own: `torch.manual_seed(seed)`, then the model's construction (its
initialisation consumes random numbers), then `torch.randn(shape)` per entry from the global
generator, x before y; a target model (--model_file2/3) is built where the reference built it.
So the default seed, 123, gives exactly the reference's directions. The global generator is
forked for this, so the caller's random state is left as it was.

Other directions: the difference of two checkpoints (`target`), the Hessian's top eigenvectors
(`hessian`), optionally Gram-Schmidt orthogonalised (`orthogonalize`), and directions regenerated
entry by entry from their seed on the device (`SeededDirections`), which are never stored whole.
`params` (a regular expression searched in the entry names) keeps only the matching entries.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import dataclasses
from os.path import commonprefix
from typing import Any, Callable, Collection, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from landscape.errors import LandscapeError
from landscape.io import h5
from landscape.io import provenance
from landscape.spec import (  # noqa: F401  (DirectionSpec under its old home too)
    PATH_TYPES,
    DirectionSpec,
    compile_params,
)

Space = list[tuple[str, torch.Tensor]]        # [(name, tensor)]: the entries a direction covers, in order
Direction = list[torch.Tensor]                # one tensor per entry of a space
Tensors = Union[dict[str, torch.Tensor], Sequence[torch.Tensor]]   # a state_dict, or tensors in a space's order
MarkedPoint = tuple[str, float, Optional[float]]   # (label, x, y) of a checkpoint on the grid (y None in 1D)
Coordinate = Union[float, Sequence[float], np.ndarray]   # a grid point: x, or (x, y)


# ----------------------------------------------------------------------------- the space a direction lives in
def get_weights(net: nn.Module) -> list[torch.Tensor]:
    """The parameters, as a list of tensors (the reference's helper)."""
    return [p.data for p in net.parameters()]


def direction_space(net: nn.Module, dir_type: str) -> Space:
    """[(name, tensor)] the direction covers: parameters (weights) or the whole state_dict (states).

    The tensors share storage with the model, so writing into them moves the model.
    """
    if dir_type == "weights":
        return [(n, p.data) for n, p in net.named_parameters()]
    if dir_type == "states":
        return list(net.state_dict().items())
    raise LandscapeError(f"--dir_type '{dir_type}' must be weights or states")


def entry_mask(space: Space, params: str = "") -> list[bool]:
    """[bool] per entry: float, first occurrence of its storage, and (if given) name matching `params`."""
    pattern = compile_params(params)
    seen, mask = set(), []
    for name, t in space:
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (name,)
        mask.append(t.is_floating_point() and key not in seen and (pattern is None or bool(pattern.search(name))))
        seen.add(key)
    if pattern is not None and not any(mask):
        names = [n for n, _ in space]
        raise LandscapeError(f"--params {params!r} matches none of the model's {len(names)} entry names "
                             f"(they look like {', '.join(names[:3])})")
    return mask


def params_summary(space: Space, mask: Sequence[bool]) -> tuple[int, int]:
    """What a --params subset covers, for the files: (entries, numbers)."""
    return sum(mask), int(sum(t.numel() for (_, t), m in zip(space, mask) if m))


# ----------------------------------------------------------------------------- normalisation
def normalize_direction(d: torch.Tensor, w: torch.Tensor, norm: str) -> None:
    """Rescale one direction tensor `d` in place against its weights `w` (see the module docstring)."""
    if norm == "filter":
        scale = w.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + 1e-10)   # (filters,)
        d.mul_(scale.view(-1, *([1] * (d.dim() - 1))))
    elif norm == "layer":
        d.mul_(w.norm() / d.norm())
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        d.div_(d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-10)
    elif norm == "dlayer":
        d.div_(d.norm())
    elif norm != "":
        raise LandscapeError(f"unknown normalisation '{norm}'; choose one of: filter, layer, weight, dfilter, dlayer")


def normalize_entry(d: torch.Tensor, w: torch.Tensor, norm: str, ignore: str) -> None:
    """The reference's rule for one entry: normalise if dim > 1, else zero (biasbn) or copy w."""
    if not w.is_floating_point():
        d.zero_()
    elif d.dim() <= 1:
        d.zero_() if ignore == "biasbn" else d.copy_(w)
    else:
        normalize_direction(d, w.float(), norm)


def normalize_directions(direction: Sequence[torch.Tensor], space: Space, norm: str, ignore: str) -> None:
    """Normalise every entry of dim > 1; zero (ignore=biasbn) or copy the weights into the rest."""
    for d, (_, w) in zip(direction, space):
        normalize_entry(d, w, norm, ignore)


def ignore_biasbn(direction: Iterable[torch.Tensor]) -> None:
    """Zero every entry of dimension <= 1, in place."""
    for d in direction:
        if d.dim() <= 1:
            d.zero_()


# ----------------------------------------------------------------------------- the reference's helpers, for users' scripts
# net_plotter's public functions, with the reference's signatures and meaning, on top of the code above.
# Lists of tensors are in net.parameters() order (weights) or state_dict() order (states).
def entries(tensors: Tensors) -> Space:
    """A list of tensors, or a state_dict, as [(name, tensor)] (a direction space)."""
    return list(tensors.items()) if isinstance(tensors, dict) else [("", torch.as_tensor(t)) for t in tensors]


def get_random_weights(weights: Tensors) -> Direction:
    """One Gaussian tensor per weight tensor, drawn from torch's global generator (as the reference)."""
    return [torch.randn(w.shape) for _, w in entries(weights)]


def get_random_states(states: Tensors) -> Direction:
    """One Gaussian tensor per state_dict entry, drawn from torch's global generator."""
    return get_random_weights(states)


def get_diff_weights(weights: Tensors, weights2: Tensors) -> Direction:
    """weights2 - weights, entry by entry."""
    return target_direction(entries(weights), entries(weights2))


def get_diff_states(states: Tensors, states2: Tensors) -> Direction:
    """states2 - states, entry by entry (integer entries such as num_batches_tracked: zero)."""
    return target_direction(entries(states), entries(states2))


def normalize_directions_for_weights(direction: Sequence[torch.Tensor], weights: Tensors, norm: str = "filter",
                                     ignore: str = "biasbn") -> None:
    """Normalise `direction` in place against `weights` (see the module docstring)."""
    if len(direction) != len(weights):
        raise LandscapeError(f"the direction has {len(direction)} tensors, the weights {len(weights)}")
    normalize_directions(direction, entries(weights), norm, ignore)


def normalize_directions_for_states(direction: Sequence[torch.Tensor], states: Tensors, norm: str = "filter",
                                    ignore: str = "ignore") -> None:
    """Normalise `direction` in place against a state_dict (the reference's default ignore='ignore' keeps
    entries of dim <= 1, copying the states into them)."""
    normalize_directions_for_weights(direction, states, norm, ignore)


def create_random_direction(net: nn.Module, dir_type: str = "weights", ignore: str = "biasbn",
                            norm: str = "filter") -> Direction:
    """A normalised random direction over net's weights or states, drawn from torch's global generator."""
    return random_direction(direction_space(net, dir_type), norm, ignore)


def create_target_direction(net: nn.Module, net2: nn.Module, dir_type: str = "states") -> Direction:
    """net2 - net over weights or states: the direction that moves net to net2 at step 1."""
    return target_direction(direction_space(net, dir_type), direction_space(net2, dir_type))


def set_weights(net: nn.Module, weights: Tensors, directions: Optional[Sequence[Sequence[torch.Tensor]]] = None,
                step: Optional[Coordinate] = None) -> None:
    """Set net's parameters to `weights`, plus step * directions[0] (1D, a number) or
    step[0] * directions[0] + step[1] * directions[1] (2D)."""
    move_entries([p.data for p in net.parameters()], weights, directions, step)


def set_states(net: nn.Module, states: dict[str, torch.Tensor],
               directions: Optional[Sequence[Sequence[torch.Tensor]]] = None,
               step: Optional[Coordinate] = None) -> None:
    """Load the state_dict `states` into net, moved as set_weights moves the weights (directions over
    state_dict entries; integer entries never move)."""
    net.load_state_dict(states)
    if directions is not None:
        targets = list(net.state_dict().values())
        move_entries(targets, targets, directions, step)


def move_entries(targets: Sequence[torch.Tensor], origin: Tensors,
                 directions: Optional[Sequence[Sequence[torch.Tensor]]] = None,
                 step: Optional[Coordinate] = None) -> None:
    """targets <- origin + sum_a step_a * directions[a], in place (float entries; integers keep origin)."""
    origin = [torch.as_tensor(w) for _, w in entries(origin)]
    if len(origin) != len(targets):
        raise LandscapeError(f"{len(origin)} tensors given for the model's {len(targets)} entries")
    steps = []
    if directions is not None:
        if step is None:
            raise LandscapeError("a step is needed to move along directions")
        steps = list(np.atleast_1d(np.asarray(step, dtype=np.float64)))
        if len(steps) != len(directions):
            raise LandscapeError(f"{len(directions)} direction(s) but {len(steps)} step(s)")
    with torch.no_grad():
        for k, t in enumerate(targets):
            moved = origin[k].to(t.device, torch.float64 if t.is_floating_point() else t.dtype).clone()
            if t.is_floating_point():
                for a, d in zip(steps, directions or ()):
                    moved.add_(torch.as_tensor(d[k]).to(t.device, torch.float64).reshape(t.shape), alpha=float(a))
            t.copy_(moved)


# ----------------------------------------------------------------------------- how directions are made
# ----------------------------------------------------------------------------- creating directions
def random_direction(space: Space, norm: str, ignore: str, generator: Optional[torch.Generator] = None) -> Direction:
    """A Gaussian direction over `space` (float32, CPU), normalised. Draws one tensor per entry, in
    order, from `generator` (default: torch's global generator, as the reference)."""
    direction = [torch.randn(w.shape, generator=generator, dtype=torch.float32) for _, w in space]
    normalize_directions(direction, space, norm, ignore)
    return direction


def target_direction(space: Space, space2: Space) -> Direction:
    """model2 - model1, entry by entry (integer entries: zero)."""
    if len(space) != len(space2) or any(tuple(a.shape) != tuple(b.shape) for (_, a), (_, b) in zip(space, space2)):
        raise LandscapeError("the two models do not have the same architecture (their entries differ in number "
                             "or shape)")
    return [(w2.float() - w.float()) if w.is_floating_point() else torch.zeros(w.shape)
            for (_, w), (_, w2) in zip(space, space2)]


def make_directions(spec: DirectionSpec, net: nn.Module, model2: Optional[Callable[[], nn.Module]] = None,
                    model3: Optional[Callable[[], nn.Module]] = None,
                    build_model: Optional[Callable[[], nn.Module]] = None,
                    hessian: Optional[Callable[[], Sequence[tuple[torch.Tensor, float]]]] = None
                    ) -> tuple[list[Direction], list[MarkedPoint]]:
    """The x (and y) directions `spec` asks for, as lists of float32 CPU tensors.

    model2/model3: callables returning the target models; build_model: builds a fresh model, called
    right after seeding as the reference did; hessian: callable returning the top eigenvectors as
    [(flat vector, eigenvalue)] over the Hessian's parameters.
    Returns (directions, marked points [(label, x, y)]).
    """
    spec.check()
    space = direction_space(net, spec.dir_type)
    mask = entry_mask(space, spec.params)
    if "hessian" in spec.kinds():
        hessian_slices(net, spec.params)  # refuses a subset the Hessian cannot cover, before any work
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if build_model is not None:
            build_model()  # the reference built the model after seeding: its initialisation draws first
        eig = hessian() if "hessian" in spec.kinds() else None
        dirs = []
        for axis, kind in zip("xy", spec.kinds()):
            if axis == "y" and spec.same_dir:
                dirs.append(dirs[0])
            elif kind == "target":
                dirs.append(target_direction(space, direction_space((model2 if axis == "x" else model3)(), spec.dir_type)))
            elif kind == "hessian":
                dirs.append(unflatten_eigenvector(eig[0 if axis == "x" else 1][0], net, space, mask,
                                                  getattr(spec, axis + "norm"), spec.params))
            else:
                dirs.append(random_direction(space, getattr(spec, axis + "norm"), getattr(spec, axis + "ignore")))
                warn_unnormalized(getattr(spec, axis + "norm"), axis)
    for d in dirs:
        for k, m in enumerate(mask):
            if not m:
                d[k] = torch.zeros_like(d[k])  # other subsets, tied duplicates and integers never move
    points = marked_points(spec, dirs)
    if spec.orthogonalize:
        dirs[1], points = orthogonalize(dirs[0], dirs[1], spec)
    return dirs, points


def hessian_slices(net: nn.Module, params: str = "") -> dict[str, tuple[int, int]]:
    """{parameter name: (start, stop)} of the Hessian's flat vectors: the parameters it covers (those
    matching --params, else those of dimension > 1), in net.parameters() order. BatchNorm statistics
    are no parameters: a Hessian direction never moves them, under --dir_type states either."""
    space = direction_space(net, "weights")
    pattern = compile_params(params)
    mask = [m and (pattern is None or bool(pattern.search(n))) for m, (n, _) in zip(entry_mask(space), space)]
    covered = hessian_entries(space, mask, bool(params))
    slices, i = {}, 0
    for (name, w), c in zip(space, covered):
        if c:
            slices[name] = (i, i + w.numel())
            i += w.numel()
    if not slices:
        raise LandscapeError(f"--xdir/--ydir hessian: --params {params!r} matches no parameter (BatchNorm statistics "
                             "are not parameters), so there is no Hessian to take")
    return slices


def unflatten_eigenvector(vector: torch.Tensor, net: nn.Module, space: Space,
                          mask: Sequence[bool], norm: str, params: str = "") -> Direction:
    """A flat vector over the Hessian's parameters (see hessian_slices) -> a direction over `space`
    (weights or states, matched by name); `norm` rescales entries of dim > 1."""
    slices = hessian_slices(net, params)
    size = max(stop for _, stop in slices.values())
    if size != len(vector):
        raise LandscapeError(f"the Hessian's eigenvector has {len(vector)} entries, its parameters {size}")
    out = []
    for k, (name, w) in enumerate(space):
        d = torch.zeros(w.shape, dtype=torch.float32)
        if mask[k] and name in slices:
            start, stop = slices[name]
            d.copy_(vector[start:stop].reshape(w.shape).float().cpu())
            if w.dim() > 1 and norm:
                normalize_direction(d, w.float(), norm)
        out.append(d)
    return out


def hessian_entries(space: Space, mask: Sequence[bool], subset: bool) -> list[bool]:
    """Which entries the Hessian covers: with a --params subset (`subset` True), every matching float
    entry; else, as the reference, the entries of dimension > 1."""
    return [m and (subset or t.dim() > 1) for m, (_, t) in zip(mask, space)]


def flat(direction: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([d.reshape(-1).double() for d in direction])


def marked_points(spec: DirectionSpec, dirs: Sequence[Sequence[torch.Tensor]]) -> list[MarkedPoint]:
    """Where the checkpoints sit on the grid: the model at 0, --model_file2 at x=1, --model_file3 at y=1.
    With a --params subset the point x=1 moves only the subset to model_file2's: it is not that
    checkpoint, so it is not marked."""
    if "target" not in spec.kinds():
        return []
    points = [("model_file", 0.0, 0.0 if spec.ndim == 2 else None)]
    if spec.params:
        return points
    if spec.xdir == "target":
        points.append(("model_file2", 1.0, 0.0 if spec.ndim == 2 else None))
    if spec.ndim == 2 and spec.ydir == "target" and not spec.same_dir:
        points.append(("model_file3", 0.0, 1.0))
    return points


def orthogonalize(xdir: Sequence[torch.Tensor], ydir: Sequence[torch.Tensor], spec: DirectionSpec
                  ) -> tuple[Direction, list[MarkedPoint]]:
    """Gram-Schmidt: y' = y - (y.x / x.x) x, rescaled to |x|, so the plane's axes are orthogonal and
    equally scaled (the reference used y as it is, which skews the plot). Returns (y', points):
    a point at m + a x + b y before is at (a + b (y.x)/(x.x), b |y - (y.x/x.x) x| / |x|) after."""
    x, y = flat(xdir), flat(ydir)
    xx = float(x @ x)
    if xx == 0 or float(y @ y) == 0:
        raise LandscapeError("--orthogonalize needs two non-zero directions")
    a = float(y @ x) / xx
    rest = y - a * x
    if float(rest.norm()) <= 1e-12 * float(y.norm()):
        raise LandscapeError("--orthogonalize: the two directions are parallel, they span no plane")
    scale = math.sqrt(xx) / float(rest.norm())
    out, i = [], 0
    for d in ydir:
        n = d.numel()
        out.append((rest[i:i + n] * scale).reshape(d.shape).float())
        i += n
    points = [("model_file", 0.0, 0.0)] if "target" in spec.kinds() else []
    if spec.xdir == "target" and not spec.params:
        points.append(("model_file2", 1.0, 0.0))
    if spec.ydir == "target" and not spec.params:
        points.append(("model_file3", a, 1.0 / scale))
    return out, points


def warn_unnormalized(norm: str, axis: str) -> None:
    if norm == "":
        print(f"warning: the {axis} direction is not normalised (--{axis}norm ''); its scale is arbitrary "
              f"and the plot is likely meaningless (losses may be NaN). Use --{axis}norm filter.",
              file=sys.stderr)


# ----------------------------------------------------------------------------- directions regenerated from their seed
class SeededDirections:
    """Random directions that are never stored whole: entry i of axis a is drawn, when needed, from its
    own generator seeded with hash(seed, a, i), on the device type recorded at creation, and
    normalised against the origin's entry. Only the model and its origin need to fit in memory.

    The same (seed, entry, device type) always gives the same tensor, so every rank, and a resumed
    run, sees the same directions. (These draws differ from the default mode's, which follow the
    reference's single global stream.) With --orthogonalize the y direction is Gram-Schmidt'ed
    against x entry by entry, y' = s (y - a x), with the two numbers a = y.x / x.x and
    s = |x| / |y - a x| computed once over all entries (`gram_schmidt`) and recorded.
    """

    def __init__(self, spec: DirectionSpec, device_type: str, ortho: Optional[tuple[float, float]] = None) -> None:
        self.spec, self.device_type = spec, device_type
        self.ortho = ortho            # (a, s) of y' = s (y - a x), or None

    def entry_seed(self, axis: int, i: int) -> int:
        digest = hashlib.sha256(f"{self.spec.seed}/{axis}/{i}".encode()).digest()
        return int.from_bytes(digest[:7], "little")

    def raw(self, axis: int, i: int, w: torch.Tensor) -> torch.Tensor:
        """Entry i of the drawn direction `axis` (0 or 1), normalised against `w`, on w's device."""
        norm, ignore = (self.spec.xnorm, self.spec.xignore) if axis == 0 else (self.spec.ynorm, self.spec.yignore)
        gen = torch.Generator(device=self.device_type).manual_seed(self.entry_seed(axis, i))
        d = torch.randn(w.shape, generator=gen, device=self.device_type, dtype=torch.float32).to(w.device)
        normalize_entry(d, w, norm, ignore)
        return d

    def entry(self, i: int, w: torch.Tensor) -> list[torch.Tensor]:
        """Entry i of every direction: [dx] or [dx, dy], y orthogonalised against x if asked."""
        x = self.raw(0, i, w)
        if self.spec.ndim == 1:
            return [x]
        if self.spec.same_dir:
            return [x, x]
        y = self.raw(1, i, w)
        if self.ortho is not None:
            a, s = self.ortho
            y.sub_(x, alpha=a).mul_(s)
        return [x, y]

    def draw(self, axis: int, i: int, w: torch.Tensor) -> torch.Tensor:
        """Entry i of direction `axis` (0 or 1), normalised against `w`, on w's device."""
        return self.entry(i, w)[axis]

    def gram_schmidt(self, space: Space, mask: Sequence[bool]) -> tuple[float, float]:
        """(a, s) for y' = s (y - a x): a = y.x / x.x, s = |x| / |y - a x|, summed entry by entry in float64."""
        if self.spec.same_dir:
            raise LandscapeError("--orthogonalize: the two directions are parallel (--same_dir), they span no plane")
        xx = xy = yy = 0.0
        for i, ((_, w), m) in enumerate(zip(space, mask)):
            if m:
                x, y = self.raw(0, i, w).double(), self.raw(1, i, w).double()
                xx, xy, yy = xx + float((x * x).sum()), xy + float((x * y).sum()), yy + float((y * y).sum())
        if xx == 0 or yy == 0:
            raise LandscapeError("--orthogonalize needs two non-zero directions")
        a = xy / xx
        rest = yy - a * xy           # |y - a x|^2
        if rest <= 1e-24 * yy:
            raise LandscapeError("--orthogonalize: the two directions are parallel, they span no plane")
        return a, math.sqrt(xx / rest)

    def materialize(self, space: Space, mask: Sequence[bool]) -> list[Direction]:
        """The equivalent stored directions (for --save_directions), as CPU tensors."""
        out = [[] for _ in range(self.spec.ndim)]
        for i, ((_, w), m) in enumerate(zip(space, mask)):
            ds = self.entry(i, w) if m else [torch.zeros(w.shape)] * self.spec.ndim
            for a, d in enumerate(ds):
                out[a].append(d.cpu())
        return out

    def attrs(self) -> dict[str, Any]:
        a = {"regenerated": 1, "regenerated_device_type": self.device_type,
             "regenerated_scheme": "entry i of axis a: torch.Generator(device).manual_seed(int.from_bytes("
                                   "sha256(f'{seed}/{a}/{i}')[:7], 'little')), randn(shape), normalised"}
        if self.ortho is not None:
            a["regenerated_ortho"] = json.dumps(list(self.ortho))
        return a


# ----------------------------------------------------------------------------- file names
def _split_path(path: str) -> tuple[str, str]:
    """(folder, file name) split at the last '/', as the reference splits; folder '' if there is none."""
    i = path.rfind("/")
    return (path[:i], path[i + 1:]) if i >= 0 else ("", path)


def direction_file_name(spec: DirectionSpec, model_file: str, model_file2: str = "", model_file3: str = "",
                        idx: int = 0) -> str:
    """The reference's direction-file name, e.g. <model_file>_weights_xignore=biasbn_xnorm=filter.h5.

    Identical to the reference's for paths with folders; three of its bugs are fixed: a --model_file3
    in the same folder as --model_file no longer glues a path into the name, files in different
    folders with no common folder no longer lose the first character of the second folder, and the
    folders of a --model_file2 elsewhere (an absolute path, ../x, a deeper folder) are part of the
    name with '_' for '/', so the file lands beside model_file's folder, as for the reference's
    sibling folders, instead of in a folder that does not exist. Choices
    the reference did not have are appended only when used (_xdir=hessian, _ortho, _params=<hash>,
    _regen, _seed=<s> for a seed other than 123), so the reference's names stay as they were.
    """
    file1, file2, file3 = model_file, model_file2, model_file3
    dir1, base1 = _split_path(file1)
    name = file1
    if file2:
        dir2, base2 = _split_path(file2)
        if dir1 == dir2:
            name = file1 + "_" + base2
        else:
            prefix = commonprefix([file1, file2])
            prefix = prefix[:prefix.rfind("/")] if "/" in prefix else None
            rel2 = file2[len(prefix) + 1:file2.rfind("/")] if prefix is not None else dir2
            # the name's only folder is model_file's: the second file's folders become part of the name
            name = dir1 + "_" + base1 + "_" + rel2.replace("/", "_") + "_" + base2
    name += "_" + spec.dir_type
    if spec.xdir == "hessian" and not file2:
        name += "_xdir=hessian"
    if spec.xignore:
        name += "_xignore=" + spec.xignore
    if spec.xnorm:
        name += "_xnorm=" + spec.xnorm
    if spec.ndim == 2:
        if file3:
            dir3, base3 = _split_path(file3)
            name += "_" + base3 if dir3 == dir1 else "_" + dir3.replace("/", "_") + "_" + base3
        else:
            if spec.ydir == "hessian":
                name += "_ydir=hessian"
            if spec.yignore:
                name += "_yignore=" + spec.yignore
            if spec.ynorm:
                name += "_ynorm=" + spec.ynorm
            if spec.same_dir:
                name += "_same_dir"
        if spec.orthogonalize:
            name += "_ortho"
    if spec.params:
        name += "_params=" + hashlib.sha256(spec.params.encode()).hexdigest()[:8]
    if spec.regenerate:
        name += "_regen"
    if spec.seed != 123 and "random" in spec.kinds():
        name += f"_seed={spec.seed}"
    if spec.curvature != "hessian" and "hessian" in spec.kinds():
        name += "_curvature=" + spec.curvature
    if idx > 0:
        name += "_idx=" + str(idx)
    return name + ".h5"


# ----------------------------------------------------------------------------- direction files
# The run's inputs, beyond the spec and the origin, that define a direction (recorded in the direction
# file and compared when it is reused; the keys are those of io/provenance.py's DIRECTION table).
TARGET_INPUTS = {"x": ("model_file2", "model_file2_sha256", "model2_sha256"),
                 "y": ("model_file3", "model_file3_sha256", "model3_sha256")}
HESSIAN_INPUTS = ("loss_name", "loss_sha256", "dataset", "data_split", "split_idx", "train_size", "data_sha256")


def defining_inputs(spec: DirectionSpec, inputs: dict[str, Any]) -> dict[str, Any]:
    """The entries of `inputs` that define `spec`'s directions: the target checkpoints of a target
    direction, the loss and data of a Hessian direction, and then the origin's checkpoint too (a
    difference or an eigenvector belongs to its origin). Empty values (not given) are left out."""
    keys = []
    for axis, kind in zip("xy", spec.kinds()):
        if kind == "target" and not (axis == "y" and spec.same_dir):
            keys += TARGET_INPUTS[axis]
    if "hessian" in spec.kinds():
        keys += HESSIAN_INPUTS
    if keys:
        keys.append("model_file_sha256")
    return {k: inputs[k] for k in keys if inputs.get(k) not in (None, "")}


def direction_attrs(spec: DirectionSpec, net_name: str, model_hash: str, inputs: Optional[dict[str, Any]] = None,
                    points: Sequence[MarkedPoint] = (), extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What made a direction file (io/provenance.py's DIRECTION table), so a later run can refuse one
    made for something else: the spec, the origin's checkpoint, the inputs that define these
    directions, where the checkpoints sit; `extra`, e.g. a regenerated recipe."""
    a = {f"spec_{k}": v for k, v in spec.attrs().items()}
    a.update({"dir_type": spec.dir_type, "model": net_name, "model_file_sha256": model_hash, "seed": spec.seed,
              "xnorm": spec.xnorm, "xignore": spec.xignore, "ynorm": spec.ynorm, "yignore": spec.yignore,
              "marked_points": h5.points_json(points)})
    a.update(defining_inputs(spec, dict(inputs or {}, model_file_sha256=model_hash)))
    a.update(extra or {})
    return provenance.record("direction", **a)


SPEC_FIELDS = ("seed", "xdir", "xnorm", "xignore", "ydir", "ynorm", "yignore", "same_dir", "orthogonalize", "params",
               "regenerate", "curvature")
# what a message calls each field (the flag that sets it)
SPEC_WHAT = (("seed", "--seed"), ("xdir", "x direction (--xdir, --model_file2)"), ("xnorm", "--xnorm"),
             ("xignore", "--xignore"), ("ydir", "y direction (--ydir, --model_file3)"), ("ynorm", "--ynorm"),
             ("yignore", "--yignore"), ("same_dir", "--same_dir"), ("orthogonalize", "--orthogonalize"),
             ("params", "--params"), ("regenerate", "--regenerate_directions"), ("curvature", "--curvature"))
Y_FIELDS = ("ydir", "ynorm", "yignore", "same_dir", "orthogonalize")


def relevant_fields(spec: DirectionSpec) -> set[str]:
    """The DirectionSpec fields that change this spec's directions (a target ignores --xnorm, ...)."""
    kinds = spec.kinds()
    fields = {"xdir", "params", "regenerate"}
    if "hessian" in kinds:
        fields.add("curvature")
    if "random" in kinds:
        fields.add("seed")
    if kinds[0] not in ("target", "explicit"):
        fields |= {"xnorm"} | ({"xignore"} if kinds[0] == "random" else set())
    if spec.ndim == 2:
        fields |= {"ydir", "same_dir", "orthogonalize"}
        if kinds[1] not in ("target", "explicit") and not spec.same_dir:
            fields |= {"ynorm"} | ({"yignore"} if kinds[1] == "random" else set())
    return fields


def recorded_value(attrs: dict[str, Any], field: str, like: Any) -> Optional[Union[bool, int, str]]:
    """A DirectionSpec field as recorded in a file (spec_<field>, or the older top-level name), or None."""
    value = attrs.get("spec_" + field, attrs.get(field))
    if field == "regenerate" and value is None and attrs.get("regenerated"):
        value = True
    if field == "curvature" and value is None and "hessian" in (attrs.get("spec_xdir"), attrs.get("spec_ydir")):
        value = "hessian"             # files record the curvature of hessian directions only when it is not the Hessian
    if value is None:
        return None
    if isinstance(like, bool):
        return bool(int(value)) if not isinstance(value, str) else value.lower() in ("1", "true")
    if isinstance(like, int):
        return int(value)
    return str(value)


# DirectionSpec fields set by the reference's own flags (--xnorm, ..., --same_dir; --model_file2/3 make a
# target direction): the reference's plot_surface.py ignores them when --dir_file is given
REFERENCE_FIELDS = ("xnorm", "xignore", "ynorm", "yignore", "same_dir")


def unapplied_fields(attrs: dict[str, Any], spec: DirectionSpec, given: Iterable[str]) -> set[str]:
    """The fields in `given` (set by the user) that a named direction file does not record and that the
    reference's own flags set: the file holds its directions, so they are not applied (noted once,
    never refused), as the reference ignores them with --dir_file. A reference-made file records none."""
    ref = set(REFERENCE_FIELDS) | {a + "dir" for a, kind in zip("xy", spec.kinds()) if kind == "target"}
    return {f for f in set(given) & ref if recorded_value(attrs, f, getattr(spec, f)) is None}


def unapplied_note(dir_file: str, fields: Collection[str]) -> str:
    """One line naming the flags a named direction file made inapplicable (unapplied_fields)."""
    flags = {"xdir": "--model_file2", "ydir": "--model_file3"}
    names = [flags.get(f, "--" + f) for f in SPEC_FIELDS if f in fields]
    return (f"note: direction file '{dir_file}' holds its own directions and records no {', '.join(names)}: "
            f"{'that flag was' if len(names) == 1 else 'those flags were'} not applied (as the reference, "
            "which ignores them with --dir_file)")


def recorded_spec(attrs: dict[str, Any], spec: DirectionSpec, keep: Collection[str] = (),
                  unapplied: Collection[str] = ()) -> DirectionSpec:
    """The DirectionSpec a direction file records, over `spec` (this run's) where it records nothing;
    the fields in `keep` (those the user set) and the dimensionality stay this run's (a 1D run may use
    the x direction of a 2D file), except those in `unapplied` (unapplied_fields), which take their
    defaults: the run is then the same as one without those flags."""
    changes = {}
    defaults = DirectionSpec()
    for f in SPEC_FIELDS:      # (--dir_type is this run's: a file of another one is refused)
        if f in unapplied:
            changes[f] = getattr(defaults, f)
            continue
        if f in keep or (spec.ndim == 1 and f in Y_FIELDS):
            continue
        v = recorded_value(attrs, f, getattr(spec, f))
        if v is not None:
            changes[f] = v
    return dataclasses.replace(spec, **changes)


def check_direction_file(dir_file: str, spec: DirectionSpec, space: Space, net_name: str,
                         model_hash: str, compare: Union[bool, set[str], frozenset[str]] = True,
                         inputs: Optional[dict[str, Any]] = None) -> Optional[str]:
    """Refuse a direction file made for another model, direction type, dimensionality, seed,
    normalisation, ignore rule or subset, or from other inputs that define its directions (target
    checkpoints; the loss and data of a Hessian direction; the origin of either): the compared
    entries of io/provenance.py's DIRECTION table. `compare`: True compares every choice that
    changes the directions; a set of DirectionSpec fields compares only those (for a --dir_file the
    user named, the flags the user set: the file defines the rest). `spec` is this run's, for a
    named file already read over the file's own (recorded_spec).

    Returns a warning to print once every other check has passed (or None).
    """
    info = h5.read_direction_info(dir_file)
    attrs = info["attrs"]
    if spec.ndim == 2 and not info["has_y"]:
        raise LandscapeError(f"direction file '{dir_file}' holds only an x direction, but --y asks for a 2D surface")
    recorded = attrs.get("dir_type")
    if recorded and recorded != spec.dir_type:
        raise LandscapeError(f"direction file '{dir_file}' was made with --dir_type {recorded}, not {spec.dir_type}")
    recorded_model = attrs.get("model")
    if recorded_model and recorded_model != net_name:
        raise LandscapeError(f"direction file '{dir_file}' was made for model '{recorded_model}', not '{net_name}'")
    # a named file: every flag the user set must agree with it; else every field that changes these directions
    fields = set(compare) if isinstance(compare, (set, frozenset)) else relevant_fields(spec) if compare else set()
    unrecorded = [f for f in SPEC_FIELDS if f in fields and recorded_value(attrs, f, getattr(spec, f)) is None]
    if unrecorded and isinstance(compare, (set, frozenset)):
        f = unrecorded[0]
        what = {"xdir": f"--xdir {spec.xdir}", "ydir": f"--ydir {spec.ydir}"}.get(f, dict(SPEC_WHAT)[f])
        raise LandscapeError(f"direction file '{dir_file}' does not record {what}: it holds its own directions, "
                             f"which {what} cannot change; drop it")
    mine = {f"spec_{f}": getattr(spec, f) for f in SPEC_FIELDS if f in fields}
    mine.update(defining_inputs(spec, dict(inputs or {}, model_file_sha256=model_hash)))
    theirs = dict(attrs, **{f"spec_{f}": recorded_value(attrs, f, getattr(spec, f)) for f in SPEC_FIELDS
                            if recorded_value(attrs, f, getattr(spec, f)) is not None})
    diff = provenance.first_difference("direction", theirs, mine)
    if diff is not None:
        entry, was, now = diff
        if entry.key.startswith("spec_"):
            raise LandscapeError(f"direction file '{dir_file}' was made with {entry.what} "
                                 f"{recorded_value(attrs, entry.key[5:], now)!r}, not {now!r}; use another "
                                 "--dir_file, or delete it to make new directions")
        raise LandscapeError(f"direction file '{dir_file}' was made with another {entry.what} "
                             f"({provenance.short(was)} vs {provenance.short(now)}), which defines its directions; "
                             "delete it to make new ones, or give another --idx or --dir_file")
    if not attrs.get("regenerated"):
        shapes = [tuple(a) for a in info["shapes"]]
        want = [tuple(w.shape) for _, w in space]
        shapes = fill_batch_counts(shapes, [(n, torch.empty(0)) for n, _ in space])   # a 0.4.0 states file
        shapes = [want[i] if i in batch_count_entries(space) and len(shapes) == len(want) else a
                  for i, a in enumerate(shapes)]
        if len(shapes) != len(want) or any(tuple(a) != b and not (len(b) == 0 and tuple(a) in ((), (1,)))
                                           for a, b in zip(shapes, want)):
            other = "states" if spec.dir_type == "weights" else "weights"    # (states has the more entries)
            fewer = len(shapes) < len(want)
            hint = f" (was it made with --dir_type {other}?)" if fewer == (other == "weights") else ""
            raise LandscapeError(f"direction file '{dir_file}' does not fit model '{net_name}' with --dir_type "
                                 f"{spec.dir_type}: it has {len(shapes)} entries, the model has {len(want)}{hint}")
    recorded_hash = attrs.get("model_file_sha256")
    if recorded_hash and model_hash and recorded_hash != model_hash:
        return (f"warning: direction file '{dir_file}' was made from a different checkpoint than this model; "
                "its normalisation follows that checkpoint's weights")
    return None


def zero_direction_warning(directions: Sequence[Sequence[torch.Tensor]],
                           spec: Optional[DirectionSpec]) -> Optional[str]:
    """A one-line warning for a direction that is zero everywhere (every point along it is the origin),
    or None. The grid is still computed: a flat line, as the reference computes it."""
    for axis, d in zip("xy", directions):
        if all(not bool(torch.count_nonzero(t)) for t in d):
            kind = getattr(spec, axis + "dir") if spec is not None else "random"
            why = {"target": f" (--model_file{2 if axis == 'x' else 3} holds the same weights as --model_file"
                             f"{' in the --params subset' if spec.params else ''})"}.get(kind, "")
            return (f"warning: the {axis} direction is zero everywhere{why}: every point along {axis} is the "
                    "model itself, a flat line")
    return None


def batch_count_entries(space: Sequence[tuple[str, Any]]) -> list[int]:
    """Indices of BatchNorm's num_batches_tracked in a direction space: a --dir_type states direction file
    written under PyTorch 0.4.0 (the reference's) has no entries for them."""
    return [i for i, (name, _) in enumerate(space) if name.endswith("num_batches_tracked")]


def fill_batch_counts(direction: list[Any], space: Space) -> list[Any]:
    """A direction of the 0.4.0 states layout (no num_batches_tracked entries) in this space's layout,
    zeros in their places (integer entries never move); other directions as they are."""
    missing = set(batch_count_entries(space))
    if not missing or len(direction) != len(space) - len(missing):
        return direction
    rest = iter(direction)
    return [torch.zeros(tuple(t.shape)) if i in missing else next(rest) for i, (_, t) in enumerate(space)]


def load_directions(dir_file: str, ndim: Optional[int] = None, space: Optional[Space] = None) -> list[Direction]:
    """[xdirection] or [xdirection, ydirection] as lists of float32 tensors; `ndim` keeps the first n;
    `space` (the model's direction space) fills a 0.4.0 states file's missing num_batches_tracked."""
    directions = h5.read_direction_file(dir_file)
    directions = directions[:ndim] if ndim else directions
    return [fill_batch_counts(d, space) for d in directions] if space is not None else directions


# ----------------------------------------------------------------------------- moving the model
class PointSetter:
    """Set a model to w + x*dx (+ y*dy) in place, on the model's device, with no host copies.

    Only the entries some direction moves are touched: the origin w and the directions of those
    entries are kept on the device once, and each point costs a few fused multi-tensor kernels.
    A tensor listed twice (tied weights) moves once; integer entries never move.
    """

    def __init__(self, net: nn.Module, directions: Sequence[Sequence[torch.Tensor]], dir_type: str,
                 device: Union[str, torch.device, None] = None) -> None:
        space = direction_space(net, dir_type)
        mask = entry_mask(space)
        dirs = [[torch.as_tensor(d[i]) for d in directions] for i in range(len(space))]
        keep = [i for i, m in enumerate(mask) if m and any(bool(torch.count_nonzero(d)) for d in dirs[i])]
        self.names = [space[i][0] for i in keep]
        self.targets = [space[i][1] for i in keep]
        self.origin = [t.detach().clone() for t in self.targets]
        # directions in the targets' own layout (e.g. channels_last), so the fused updates stay simple
        self.dirs = [[torch.empty_like(self.targets[k]).copy_(dirs[i][a].reshape(self.targets[k].shape))
                      for k, i in enumerate(keep)] for a in range(len(directions))]

    def set(self, coord: Coordinate) -> None:
        """Move the model to grid coordinate `coord` (a scalar or an (x, y) pair)."""
        coord = np.atleast_1d(coord)
        if not self.targets:  # every direction is zero: every point is the origin
            return
        with torch.no_grad():
            torch._foreach_copy_(self.targets, self.origin)
            for step, d in zip(coord, self.dirs):
                if step != 0 and d:
                    torch._foreach_add_(self.targets, d, alpha=float(step))

    def entry(self, k: int, axis: int) -> torch.Tensor:
        """The direction `axis` of moving entry k, in the entry's own shape and layout."""
        return self.dirs[axis][k]

    def stacked(self, coords: Union[np.ndarray, Sequence[Coordinate]]) -> dict[str, torch.Tensor]:
        """{name: (K, *shape)} tensors for K points at once: w + x_k dx + y_k dy, for functional_call."""
        coords = torch.as_tensor(np.asarray(coords, dtype=np.float64).reshape(len(coords), -1))
        out = {}
        for k, (name, w) in enumerate(zip(self.names, self.origin)):
            c = coords.to(w.device, w.dtype)
            t = w.unsqueeze(0).expand(len(c), *w.shape).clone()
            for axis in range(coords.shape[1]):
                t.add_(c[:, axis].view(-1, *([1] * w.dim())) * self.entry(k, axis).view(w.shape).unsqueeze(0))
            out[name] = t
        return out

    def restore(self) -> None:
        if self.targets:
            with torch.no_grad():
                torch._foreach_copy_(self.targets, self.origin)


class SeededSetter(PointSetter):
    """PointSetter for SeededDirections: each entry's direction is drawn again at every point, so
    beside the model only its origin is kept (the masked, moving entries)."""

    def __init__(self, net: nn.Module, seeded: SeededDirections) -> None:
        # the subset and the space are the recipe's own (a reused file's, whatever the command line says)
        space = direction_space(net, seeded.spec.dir_type)
        mask = entry_mask(space, seeded.spec.params)
        self.seeded = seeded
        self.index = [i for i, m in enumerate(mask) if m]
        self.names = [space[i][0] for i in self.index]
        self.targets = [space[i][1] for i in self.index]
        self.origin = [t.detach().clone() for t in self.targets]

    def entry(self, k: int, axis: int) -> torch.Tensor:
        return self.seeded.draw(axis, self.index[k], self.origin[k])

    def set(self, coord: Coordinate) -> None:
        coord = np.atleast_1d(coord)
        with torch.no_grad():
            for k, (t, w) in enumerate(zip(self.targets, self.origin)):
                t.copy_(w)
                if any(step != 0 for step in coord):
                    for step, d in zip(coord, self.seeded.entry(self.index[k], w)):
                        if step != 0:
                            t.add_(d.view(t.shape), alpha=float(step))


def path_coefficients(path_type: str, points: int, t: float) -> list[float]:
    """Weights of the `points` checkpoints of a path at t in [0, 1] (polychain: checkpoint i at
    t = i / (points - 1); bezier: the Bernstein polynomials of the control points)."""
    n = points - 1
    if path_type == "bezier":
        return [math.comb(n, i) * t ** i * (1 - t) ** (n - i) for i in range(n + 1)]
    seg = min(int(math.floor(t * n)), n - 1)
    u = t * n - seg
    c = [0.0] * (n + 1)
    c[seg], c[seg + 1] = 1.0 - u, u
    return c


class PathSetter(PointSetter):
    """Move a model along a path through N checkpoints, t in [0, 1]:
    - polychain: the polygonal chain, checkpoint i at t = i / (N - 1);
    - bezier: the Bezier curve with the checkpoints as control points,
      w(t) = sum_i C(N-1, i) t^i (1 - t)^(N-1-i) w_i (for N = 3, the quadratic curve bent by w_2).
    Only the entries matching `params` travel; the others keep the model's own values.
    """

    def __init__(self, net: nn.Module, spaces: Sequence[Space], dir_type: str,
                 path_type: str, device: Union[str, torch.device, None] = None, params: str = "") -> None:
        if path_type not in PATH_TYPES:
            raise LandscapeError(f"--path_type {path_type!r} must be polychain or bezier")
        if len(spaces) < 2:
            raise LandscapeError("a path needs at least two checkpoints (--path_files F1 F2 ...)")
        space = direction_space(net, dir_type)
        for other in spaces:
            target_direction(space, other)  # same architecture, or one line saying it is not
        mask = entry_mask(space, params)    # the rest (other subsets, integers) stays at the model's own
        keep = [i for i, m in enumerate(mask) if m]
        self.names = [space[i][0] for i in keep]
        self.targets = [space[i][1] for i in keep]
        self.origin = [t.detach().clone() for t in self.targets]
        self.points = [[torch.empty_like(self.targets[k]).copy_(s[i][1].reshape(self.targets[k].shape))
                        for k, i in enumerate(keep)] for s in spaces]
        self.path_type = path_type

    def coefficients(self, t: float) -> list[float]:
        """Weights of the N checkpoints at t."""
        return path_coefficients(self.path_type, len(self.points), t)

    def set(self, coord: Coordinate) -> None:
        c = self.coefficients(float(np.atleast_1d(coord)[0]))
        first = next(i for i, ci in enumerate(c) if ci != 0)
        with torch.no_grad():
            torch._foreach_copy_(self.targets, self.points[first])
            if c[first] != 1.0:
                torch._foreach_mul_(self.targets, c[first])
            for i in range(first + 1, len(c)):
                if c[i] != 0:
                    torch._foreach_add_(self.targets, self.points[i], alpha=c[i])

    def stacked(self, coords: Union[np.ndarray, Sequence[Coordinate]]) -> dict[str, torch.Tensor]:
        cs = [self.coefficients(float(t)) for t in np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)[:, 0]]
        out = {}
        for k, name in enumerate(self.names):
            out[name] = torch.stack([sum(ci * p[k] for ci, p in zip(c, self.points) if ci != 0) for c in cs])
        return out
