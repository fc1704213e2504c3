"""Directions in parameter space, and setting a model's weights to a grid point.

A direction is a list of tensors, one per entry of the space it lives in:
- `weights`: the model's parameters, in `net.parameters()` order;
- `states`: the model's state_dict, in order, including BatchNorm running_mean/var. Integer entries
  (num_batches_tracked) get zero directions and are never perturbed.

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
"""
import os
import sys
from os.path import commonprefix

import numpy as np
import torch

import h5_util
from errors import UserError

NORMS = ("", "filter", "layer", "weight", "dfilter", "dlayer")
DIR_TYPES = ("weights", "states")


# ----------------------------------------------------------------------------- the space a direction lives in
def get_weights(net):
    """The parameters, as a list of tensors (the reference's helper)."""
    return [p.data for p in net.parameters()]


def direction_space(net, dir_type):
    """[(name, tensor)] the direction covers: parameters (weights) or the whole state_dict (states).

    The tensors share storage with the model, so writing into them moves the model.
    """
    if dir_type == "weights":
        return [(n, p.data) for n, p in net.named_parameters()]
    if dir_type == "states":
        return list(net.state_dict().items())
    raise UserError(f"--dir_type '{dir_type}' must be weights or states")


# ----------------------------------------------------------------------------- normalisation
def normalize_direction(d, w, norm):
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
        raise UserError(f"unknown normalisation '{norm}'; choose one of: filter, layer, weight, dfilter, dlayer")


def normalize_directions(direction, space, norm, ignore):
    """Normalise every entry of dim > 1; zero (ignore=biasbn) or copy the weights into the rest."""
    for d, (_, w) in zip(direction, space):
        if not w.is_floating_point():
            d.zero_()
        elif d.dim() <= 1:
            d.zero_() if ignore == "biasbn" else d.copy_(w)
        else:
            normalize_direction(d, w.float(), norm)


def ignore_biasbn(direction):
    """Zero every entry of dimension <= 1, in place."""
    for d in direction:
        if d.dim() <= 1:
            d.zero_()


# ----------------------------------------------------------------------------- creating directions
def random_direction(space, norm, ignore, generator):
    """A Gaussian direction over `space` (float32, CPU), normalised. Draws one tensor per entry, in order."""
    direction = [torch.randn(w.shape, generator=generator, dtype=torch.float32) for _, w in space]
    normalize_directions(direction, space, norm, ignore)
    return direction


def target_direction(space, space2):
    """model2 - model1, entry by entry (integer entries: zero)."""
    return [(w2.float() - w.float()) if w.is_floating_point() else torch.zeros(w.shape)
            for (_, w), (_, w2) in zip(space, space2)]


def create_directions(cfg, net, load_model):
    """The x (and y) directions that `cfg` asks for. `load_model(path)` loads a same-architecture model."""
    space = direction_space(net, cfg.dir_type)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.model_file2:
        xdir = target_direction(space, direction_space(load_model(cfg.model_file2), cfg.dir_type))
    else:
        xdir = random_direction(space, cfg.xnorm, cfg.xignore, gen)
        warn_unnormalized(cfg.xnorm, "x")
    if not cfg.y:
        return [xdir]
    if cfg.same_dir:
        ydir = xdir
    elif cfg.model_file3:
        ydir = target_direction(space, direction_space(load_model(cfg.model_file3), cfg.dir_type))
    else:
        ydir = random_direction(space, cfg.ynorm, cfg.yignore, gen)
        warn_unnormalized(cfg.ynorm, "y")
    return [xdir, ydir]


def warn_unnormalized(norm, axis):
    if norm == "":
        print(f"warning: the {axis} direction is not normalised (--{axis}norm ''); its scale is arbitrary "
              f"and the plot is likely meaningless (losses may be NaN). Use --{axis}norm filter.",
              file=sys.stderr)


# ----------------------------------------------------------------------------- file names
def _split_path(path):
    """(folder, file name) split at the last '/', as the reference splits; folder '' if there is none."""
    i = path.rfind("/")
    return (path[:i], path[i + 1:]) if i >= 0 else ("", path)


def name_direction_file(cfg):
    """The reference's direction-file name, e.g. <model_file>_weights_xignore=biasbn_xnorm=filter.h5.

    Identical to the reference's for paths with folders; two of its bugs are fixed: a --model_file3
    in the same folder as --model_file no longer glues a path into the name, and files in different
    folders with no common folder no longer lose the first character of the second folder.
    """
    if cfg.dir_file:
        return cfg.dir_file
    file1, file2, file3 = cfg.model_file, cfg.model_file2, cfg.model_file3
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
            name = dir1 + "_" + base1 + "_" + rel2 + "_" + base2
    name += "_" + cfg.dir_type
    if cfg.xignore:
        name += "_xignore=" + cfg.xignore
    if cfg.xnorm:
        name += "_xnorm=" + cfg.xnorm
    if cfg.y:
        if file3:
            dir3, base3 = _split_path(file3)
            name += "_" + base3 if dir3 == dir1 else "_" + dir3.replace("/", "_") + "_" + base3
        else:
            if cfg.yignore:
                name += "_yignore=" + cfg.yignore
            if cfg.ynorm:
                name += "_ynorm=" + cfg.ynorm
            if cfg.same_dir:
                name += "_same_dir"
    if cfg.idx > 0:
        name += "_idx=" + str(cfg.idx)
    return name + ".h5"


# ----------------------------------------------------------------------------- direction files
def direction_attrs(cfg, net_name, model_hash):
    """What made a direction file, so a later run can refuse one made for something else."""
    return {"dir_type": cfg.dir_type, "model": net_name, "model_file_sha256": model_hash,
            "seed": cfg.seed, "xnorm": cfg.xnorm, "xignore": cfg.xignore, "ynorm": cfg.ynorm,
            "yignore": cfg.yignore, "model_file2": cfg.model_file2, "model_file3": cfg.model_file3}


def check_direction_file(dir_file, cfg, space, net_name, model_hash):
    """Refuse a direction file made for another model, direction type or dimensionality.

    Returns a warning to print once every other check has passed (or None).
    """
    info = h5_util.read_direction_info(dir_file)
    if cfg.y and not info["has_y"]:
        raise UserError(f"direction file '{dir_file}' holds only an x direction, but --y asks for a 2D surface")
    recorded = info["attrs"].get("dir_type")
    if recorded and recorded != cfg.dir_type:
        raise UserError(f"direction file '{dir_file}' was made with --dir_type {recorded}, not {cfg.dir_type}")
    recorded_model = info["attrs"].get("model")
    if recorded_model and recorded_model != net_name:
        raise UserError(f"direction file '{dir_file}' was made for model '{recorded_model}', not '{net_name}'")
    shapes = info["shapes"]
    want = [tuple(w.shape) for _, w in space]
    if len(shapes) != len(want) or any(tuple(a) != b and not (len(b) == 0 and tuple(a) in ((), (1,)))
                                       for a, b in zip(shapes, want)):
        other = "states" if cfg.dir_type == "weights" else "weights"
        hint = f" (was it made with --dir_type {other}?)" if len(shapes) != len(want) else ""
        raise UserError(f"direction file '{dir_file}' does not fit model '{net_name}' with --dir_type "
                        f"{cfg.dir_type}: it has {len(shapes)} entries, the model has {len(want)}{hint}")
    recorded_hash = info["attrs"].get("model_file_sha256")
    if recorded_hash and model_hash and recorded_hash != model_hash:
        return (f"warning: direction file '{dir_file}' was made from a different checkpoint than "
                f"'{cfg.model_file}'; its normalisation follows that checkpoint's weights")
    return None


def prepare_directions(cfg, dir_file, net, net_name, model_hash, load_model):
    """(directions, is_new, warning): an existing direction file, checked and read, or new directions.

    New directions are not written here, so a run refused later leaves no file behind; write them
    with `write_directions` once every check has passed.
    """
    ndim = 2 if cfg.y is not None else 1
    if os.path.exists(dir_file):
        warning = check_direction_file(dir_file, cfg, direction_space(net, cfg.dir_type), net_name, model_hash)
        return load_directions(dir_file, ndim), False, warning
    if cfg.dir_file:
        raise UserError(f"direction file '{dir_file}' does not exist")
    return create_directions(cfg, net, load_model), True, None


def write_directions(cfg, dir_file, directions, net_name, model_hash):
    """Write a new direction file atomically (temp file, then rename)."""
    h5_util.write_direction_file(dir_file, directions, direction_attrs(cfg, net_name, model_hash))


def load_directions(dir_file, ndim=None):
    """[xdirection] or [xdirection, ydirection] as lists of float32 tensors; `ndim` keeps the first n."""
    directions = h5_util.read_direction_file(dir_file)
    return directions[:ndim] if ndim else directions


# ----------------------------------------------------------------------------- moving the model
class PointSetter:
    """Set a model to w + x*dx (+ y*dy) in place, on the model's device, with no host copies.

    The origin w and the directions are kept on the device once; each point costs a few fused
    multi-tensor kernels. Integer state entries are never touched.
    """

    def __init__(self, net, directions, dir_type, device=None):
        space = direction_space(net, dir_type)
        keep = [i for i, (_, w) in enumerate(space) if w.is_floating_point()]
        self.names = [space[i][0] for i in keep]
        self.targets = [space[i][1] for i in keep]
        self.origin = [t.detach().clone() for t in self.targets]
        # directions in the targets' own layout (e.g. channels_last), so the fused updates stay simple
        self.dirs = [[torch.empty_like(self.targets[k]).copy_(torch.as_tensor(d[i]).reshape(self.targets[k].shape))
                      for k, i in enumerate(keep)] for d in directions]

    def set(self, coord):
        """Move the model to grid coordinate `coord` (a scalar or an (x, y) pair)."""
        coord = np.atleast_1d(coord)
        with torch.no_grad():
            torch._foreach_copy_(self.targets, self.origin)
            for step, d in zip(coord, self.dirs):
                if step != 0:
                    torch._foreach_add_(self.targets, d, alpha=float(step))

    def stacked(self, coords):
        """{name: (K, *shape)} tensors for K points at once: w + x_k dx + y_k dy, for functional_call."""
        coords = torch.as_tensor(np.asarray(coords, dtype=np.float64).reshape(len(coords), -1))
        out = {}
        for k, (name, w) in enumerate(zip(self.names, self.origin)):
            c = coords.to(w.device, w.dtype)
            t = w.unsqueeze(0).expand(len(c), *w.shape).clone()
            for axis, d in enumerate(self.dirs):
                t.add_(c[:, axis].view(-1, *([1] * w.dim())) * d[k].unsqueeze(0))
            out[name] = t
        return out

    def restore(self):
        with torch.no_grad():
            torch._foreach_copy_(self.targets, self.origin)
