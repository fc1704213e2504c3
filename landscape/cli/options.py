"""The command-line options of plot_surface.py, which plot_hessian_eigen.py extends: one definition
feeds the parser, its defaults and its help. `parse(argv, parser)` returns the validated options
(an argparse Namespace, ranges parsed into xmin/xmax/xnum and ymin/ymax/ynum) with `run`, the
checked RunSpec (spec.py) that build.py builds the job from; nothing restates a default anywhere
else. The rules that the API shares are the RunSpec's; only the command line's own (flags that a
path or another flag makes inapplicable, file naming) are here.
"""
from __future__ import annotations

import argparse
import os
from typing import Literal, Optional, Sequence

import numpy as np

from landscape import curves
from landscape import evaluation
from landscape.compat.net_plotter import directions_from_config
from landscape.directions import direction_file_name
from landscape.errors import ArgParser, UserError
from landscape.grid.job import parse_range
from landscape.parallel.dist import RENDEZVOUS_SECONDS
from landscape.spec import (
    LANCZOS_TOL,
    PATH_TYPES,
    Axes,
    BatchSize,
    CurvatureSpec,
    EvaluationSpec,
    FileSpec,
    ParallelSpec,
    RunSpec,
)

FORMATS = ("pdf", "png", "svg")


def batch_size_arg(text: str) -> BatchSize:
    """`--batch_size`: a whole number >= 1, or auto."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--batch_size {text!r} must be a whole number >= 1 or auto") from None
    if value < 1:
        raise UserError(f"--batch_size {value} must be >= 1 (or auto)")
    return value


def surface_parser(description: str = "Compute (and plot) the loss surface of a trained model along 1 or 2 "
                                      "directions.") -> argparse.ArgumentParser:
    p = ArgParser.make(description)
    a = p.add_argument
    a("--mpi", "-m", action="store_true", help="split the grid over MPI ranks (run under mpirun/srun); under "
                                                "torchrun the ranks are found without it")
    a("--ranks_per_point", default=0, type=int,
      help="ranks that evaluate each point together, each on its own shard of the data (data-parallel points); "
           "must divide the number of ranks; 0: 1 for grids, every rank for --at_center")
    a("--rendezvous_timeout", default=RENDEZVOUS_SECONDS, type=float,
      help="seconds the ranks wait for each other to join torch.distributed (torchrun, or --ranks_per_point > 1 "
           "on GPUs under MPI)")
    a("--cuda", "-c", action="store_true", help="compute on the GPU of each rank's node-local rank")
    a("--threads", default=0, type=int,
      help="CPU threads per rank for torch; 0: every core this rank may use, divided among the ranks on its node")
    a("--ngpu", type=int, default=1, help="GPUs per rank, data parallel (never shared with another rank)")
    a("--batch_size", default="auto", type=batch_size_arg,
      help="evaluation batch size; auto: on a GPU the largest that fits half the free memory, on a CPU the "
           "batch whose largest activation is about 4 MB (the batch size changes only rounding)")
    # data
    a("--dataset", default="cifar10", help="cifar10 | digits | path/to/file.py:function | module:function")
    a("--datapath", default="cifar10/data", metavar="DIR", help="folder holding cifar-10-batches-py")
    a("--raw_data", action="store_true", help="no data normalisation")
    a("--data_split", default=1, type=int, help="use a 1/data_split random subset of the training set")
    a("--split_idx", default=0, type=int, help="index of the split (names the file; the reference's subset)")
    a("--trainloader", default="", help="training labels file, or a pickled DataLoader with --allow_pickle")
    a("--testloader", default="", help="test labels file, or a pickled DataLoader with --allow_pickle")
    a("--allow_pickle", action="store_true", help="allow loading pickled DataLoaders: this runs code from the file")
    a("--download", action="store_true", help="download CIFAR-10 into --datapath if it is missing")
    a("--data_in_memory", default="auto", help="auto | yes | no: keep the data on the device, or stream it for each "
                                               "point; auto streams a set that does not fit the memory budget "
                                               "(README, GPUs and clusters)")
    # model and loss
    a("--model", default="resnet56", help="model name, or path/to/file.py:factory | module:factory")
    a("--model_folder", default="", help="folder that relative --model_file/2/3 paths are in")
    a("--model_file", default="", help="the trained model's checkpoint")
    a("--model_file2", default="", help="use (model_file2 - model_file) as the x direction")
    a("--model_file3", default="", help="use (model_file3 - model_file) as the y direction")
    a("--loss_name", "-l", default="crossentropy",
      help="crossentropy | mse | path/to/file.py:fn (fn() returns a criterion(outputs, targets) -> mean loss)")
    a("--metrics", default="", help="path/to/file.py:fn: fn() returns {name: fn(outputs, targets) -> mean}; "
                                    "each becomes a train_<name> (test_<name>) map")
    # directions
    a("--dir_file", default="", help="an existing direction file to use")
    a("--dir_type", default="weights", help="weights | states (states includes BN running_mean/var)")
    a("--x", default="-1:1:51", help="xmin:xmax:xnum")
    a("--y", default=None, help="ymin:ymax:ynum (makes the surface 2D)")
    a("--xnorm", default="", help="x direction normalisation: filter | layer | weight | dfilter | dlayer")
    a("--ynorm", default="", help="y direction normalisation: filter | layer | weight | dfilter | dlayer")
    a("--xignore", default="", help="biasbn: zero the x direction in biases and BN parameters")
    a("--yignore", default="", help="biasbn: zero the y direction in biases and BN parameters")
    a("--xdir", default="", help="hessian: the x direction is the Hessian's top eigenvector (default: random)")
    a("--ydir", default="", help="hessian: the y direction is the Hessian's second eigenvector (default: random)")
    a("--curvature", default="hessian",
      help="hessian | ggn | ef: the curvature matrix (the Hessian, the generalised Gauss-Newton J^T H_out J, or "
           "the empirical Fisher); in plot_surface, the matrix whose eigenvectors --xdir/--ydir hessian take")
    a("--hvp", default="autograd",
      help="autograd | finite_difference: how curvature products are made (finite differences of the gradient, "
           "or of the outputs for ggn/ef: for kernels without double backward or forward mode)")
    a("--same_dir", action="store_true", help="use the x direction as the y direction too")
    a("--orthogonalize", action="store_true",
      help="Gram-Schmidt the y direction against x (and rescale it to |x|), e.g. for a plane through three "
           "checkpoints; the reference used the directions as they are")
    a("--params", default="", help="regular expression: only the parameters (state entries) whose names match "
                                   "it move; the rest stays fixed")
    a("--path_files", nargs="+", default=None, metavar="F",
      help="checkpoints F1 F2 ... FN: the loss along a path through them, t = --x in [0, 1]")
    a("--path_type", default=None,
      help="polychain (checkpoint i at t = i/(N-1); the default) | bezier (control points)")
    a("--curve_file", default="", help="a curve written by find_curve.py (its folder or curve.json): the loss "
                                       "along it, t = --x in [0, 1] (the path of its ends and bends)")
    a("--curve_plane", action="store_true",
      help="with --curve_file: the 2D surface in the plane through the curve's two ends and a bend (end 1 at "
           "(0, 0), end 2 at (1, 0), y orthogonal to x at the same scale), the curve and the straight line "
           "drawn over the contours")
    a("--curve_bend", default=0, type=int, help="with --curve_plane: the bend the plane goes through "
                                               "(1 .. the curve's bends; default: the middle one)")
    a("--idx", default=0, type=int, help="index of a repeated experiment (names the direction file)")
    a("--surf_file", default="", help="surface file name (default: built from the direction file)")
    a("--seed", default=123, type=int,
      help="seed of the random directions: as the reference, torch.manual_seed(seed), then the model is built, "
           "then the draws; 123 gives the reference's directions")
    a("--regenerate_directions", action="store_true",
      help="draw each random direction entry from its own seed on the device at every point instead of storing "
           "the directions: only the model and its origin need to fit")
    a("--save_directions", default="", metavar="FILE", help="also write the directions, materialised, to FILE")
    a("--bn_recalibrate", action="store_true",
      help="at every point, recompute BatchNorm's running statistics from the training data (train mode, "
           "cumulative average, batches of --batch_size, or 128 with auto) before evaluating, as "
           "mode-connectivity work does; with --dir_type weights")
    a("--eval_test", action="store_true", help="also compute the test set's maps")
    a("--precision", default="default", help="default | fp32 | tf32 | bf16 (see README)")
    a("--points_per_pass", default=1, type=int, help="grid points evaluated together on each data batch")
    a("--no_fold_bn", action="store_true", help="do not fold BatchNorm into the preceding layers (exact either way)")
    a("--memory_format", default="auto", help="auto (channels_last for conv nets) | channels_last | contiguous")
    a("--compile", action="store_true", help="torch.compile the model (pays off on large grids; cost is printed)")
    a("--flush_seconds", default=5.0, type=float, help="write computed points to the file at least this often")
    a("--dry_run", action="store_true", help="validate everything, name the files, time one point; compute nothing")
    # plotting
    a("--proj_file", default="", help="projection file of a trajectory to draw over the contours")
    a("--loss_max", default=5, type=float, help="largest loss shown in 1D plots")
    a("--vmax", default=10, type=float, help="largest contour level")
    a("--vmin", default=0.1, type=float, help="smallest contour level")
    a("--vlevel", default=0.5, type=float, help="spacing of contour levels")
    a("--show", action="store_true", help="show the figures")
    a("--log", action="store_true", help="log scale for loss values")
    a("--plot", action="store_true", help="plot the figures after the computation")
    a("--format", default="pdf", help="figure format: pdf | png | svg")
    return p


def check_choices(cfg: argparse.Namespace) -> None:
    """The command line's own choices (the settings' values are the RunSpec's to check)."""
    choices = {"format": FORMATS, "xdir": ("", "hessian"), "ydir": ("", "hessian"), "path_type": PATH_TYPES}
    for flag, allowed in choices.items():
        if getattr(cfg, flag) not in allowed:
            raise UserError(f"--{flag} {getattr(cfg, flag)!r} must be one of: "
                            f"{', '.join(repr(v) if v == '' else v for v in allowed)}")
    if cfg.loss_name not in evaluation.LOSS_NAMES and ":" not in cfg.loss_name:
        raise UserError(f"--loss_name {cfg.loss_name!r} must be one of: crossentropy, mse, or path/to/file.py:fn")


# flags that make or name directions: a path has none, so they are refused with --path_files
PATH_REFUSED = ("xdir", "ydir", "xnorm", "ynorm", "xignore", "yignore", "same_dir", "orthogonalize",
                "regenerate_directions", "save_directions", "seed", "idx")


# flags that choose the directions: the plane of a curve sets them all itself
PLANE_REFUSED = ("model_file2", "model_file3", "dir_type", "dir_file", "xdir", "ydir", "xnorm", "ynorm", "xignore",
                 "yignore", "same_dir", "orthogonalize", "regenerate_directions", "params", "idx")


def expand_curve_file(cfg: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> None:
    """--curve_file: the path through its end points and bends, with its kind (each file's hash checked),
    or with --curve_plane the plane through its ends and a bend. A BatchNorm model gets its statistics
    recomputed at every point (a bend carries none of its own)."""
    set_ = (lambda f: parser is not None and given(cfg, parser, f))
    if cfg.path_files:
        raise UserError("--curve_file names the path itself: drop --path_files")
    if getattr(cfg, "path_type_given", False):
        raise UserError("--curve_file records its own kind (bezier or polychain): drop --path_type")
    files, kind, _ = curves.read_curve_file(cfg.curve_file)
    bends = len(files) - 2
    if cfg.curve_plane:
        if cfg.y is None:
            raise UserError("--curve_plane makes a 2D surface in the plane of the curve: give --y too")
        refused = [f"--{f}" for f in PLANE_REFUSED if set_(f)]
        if cfg.model_file and not same_file(cfg.model_file, files[0]):
            refused.insert(0, "--model_file")
        if refused:
            raise UserError(f"--curve_plane puts the plane through the curve's ends and bend itself: "
                            f"{', '.join(refused)} cannot apply; drop {'it' if len(refused) == 1 else 'them'}")
        k = cfg.curve_bend or (bends + 1) // 2
        if not 1 <= k <= bends:
            raise UserError(f"--curve_bend {cfg.curve_bend} must be in 1..{bends}: the curve has {bends} bend(s)")
        cfg.model_file, cfg.model_file2, cfg.model_file3 = files[0], files[-1], files[k]
        cfg.dir_type, cfg.orthogonalize = "weights", True
        folder = os.path.dirname(os.path.abspath(files[k]))
        cfg.plane = {"files": files, "kind": kind, "bend": k, "dir_file": os.path.join(folder, f"plane_bend={k}.h5")}
    else:
        if cfg.curve_bend:
            raise UserError("--curve_bend picks the bend of --curve_plane's plane: add --curve_plane, or drop it")
        cfg.path_files, cfg.path_type = files, kind
    if not cfg.bn_recalibrate and getattr(parser, "maps", "loss") == "loss" and curves.has_batchnorm(files[0]):
        if cfg.dir_type == "states":
            cfg.notes.append("warning: the model has BatchNorm and --dir_type states moves its running statistics "
                             "along the curve, whose bends carry the first end's; --dir_type weights recomputes them")
        else:
            cfg.bn_recalibrate = True
            cfg.notes.append("note: the model has BatchNorm: its running statistics are recomputed at every point "
                             "(--bn_recalibrate), as a curve's bends carry none of their own")


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_combinations(cfg: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> None:
    cfg.plane, cfg.notes = None, getattr(cfg, "notes", [])
    if getattr(cfg, "curve_file", ""):
        expand_curve_file(cfg, parser)
    elif getattr(cfg, "curve_plane", False) or getattr(cfg, "curve_bend", 0):
        raise UserError(f"--{'curve_plane' if cfg.curve_plane else 'curve_bend'} is for the plane of a curve: "
                        "give --curve_file too")
    if cfg.path_files:
        flag = "--curve_file" if getattr(cfg, "curve_file", "") else "--path_files"
        if cfg.y is not None or cfg.model_file2 or cfg.model_file3 or cfg.dir_file:
            raise UserError(f"{flag} makes a 1D path: it takes no --y, --model_file2/3 or --dir_file"
                            + (" (--curve_plane makes the 2D plane of the curve)" if flag == "--curve_file" else ""))
        refused = [f"--{f}" for f in PATH_REFUSED if parser is not None and given(cfg, parser, f)]
        if refused:
            raise UserError(f"{flag} moves the model along the path through its checkpoints, which has no "
                            f"directions to make or save: {', '.join(refused)} cannot apply; drop "
                            f"{'it' if len(refused) == 1 else 'them'}")
        if len(cfg.path_files) < 2:
            raise UserError("--path_files needs at least two checkpoints")
        if not 0 <= min(cfg.xmin, cfg.xmax) <= max(cfg.xmin, cfg.xmax) <= 1:
            raise UserError(f"--x={cfg.x}: a path is parametrised by t in [0, 1]")
        cfg.model_file = cfg.model_file or cfg.path_files[0]
    if cfg.xdir == "hessian" and cfg.model_file2 or cfg.ydir == "hessian" and cfg.model_file3:
        raise UserError("--xdir/--ydir hessian and --model_file2/3 both set the same direction; give one")


def validate(cfg: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    """Check flag values and combinations; fill in the parsed ranges. Pure: touches no file."""
    cfg.xmin, cfg.xmax, cfg.xnum = parse_range(cfg.x, "--x")
    cfg.ymin = cfg.ymax = cfg.ynum = None
    if cfg.y is not None:
        cfg.ymin, cfg.ymax, cfg.ynum = parse_range(cfg.y, "--y")
    cfg.path_type_given = cfg.path_type is not None   # (even when it names the default: a curve refuses it)
    cfg.path_type = cfg.path_type or "polychain"
    check_choices(cfg)
    check_combinations(cfg, parser)
    if cfg.ngpu < 1:
        raise UserError(f"--ngpu {cfg.ngpu} must be >= 1")
    if cfg.threads < 0:
        raise UserError(f"--threads {cfg.threads} must be >= 0")
    if not cfg.rendezvous_timeout > 0:
        raise UserError(f"--rendezvous_timeout {cfg.rendezvous_timeout} must be > 0")
    if cfg.data_split < 1 or not 0 <= cfg.split_idx < cfg.data_split:
        raise UserError(f"--split_idx {cfg.split_idx} must be in [0, --data_split={cfg.data_split})")
    if cfg.model_folder:   # (a path that exists as given is taken as given, as the reference ignored --model_folder)
        for flag in ("model_file", "model_file2", "model_file3"):
            path = getattr(cfg, flag)
            if path and not os.path.isabs(path) and not os.path.exists(path):
                setattr(cfg, flag, os.path.join(cfg.model_folder, path))
    cfg.stats = None  # filled by the run on rank 0: points, seconds, sec_per_point, ranks
    cfg.run = run_spec(cfg, getattr(parser, "maps", "loss"))
    return cfg


def run_spec(cfg: argparse.Namespace, maps: Literal["loss", "eig"] = "loss") -> RunSpec:
    """The checked RunSpec of the parsed flags (maps: 'loss', or 'eig' for plot_hessian_eigen.py), its
    files named as the reference names them."""
    x = np.linspace(cfg.xmin, cfg.xmax, num=cfg.xnum)
    y = None if cfg.y is None else np.linspace(cfg.ymin, cfg.ymax, num=cfg.ynum)
    directions = directions_from_config(cfg)
    if cfg.path_files:
        dir_file, surf_file = "", name_surface_file(cfg, name_path_stem(cfg))
    else:
        dir_file = cfg.dir_file or (cfg.plane or {}).get("dir_file") or \
            direction_file_name(directions, cfg.model_file, cfg.model_file2, cfg.model_file3, cfg.idx)
        surf_file = name_surface_file(cfg, dir_file)
    return RunSpec(
        Axes(tuple(x), None if y is None else tuple(y)), directions,
        EvaluationSpec(cfg.batch_size, cfg.precision, cfg.points_per_pass, not cfg.no_fold_bn, cfg.memory_format,
                       cfg.compile, cfg.bn_recalibrate),
        CurvatureSpec(cfg.curvature, cfg.hvp, getattr(cfg, "tol", LANCZOS_TOL), getattr(cfg, "max_iter", 100),
                      cfg.seed, cfg.params),
        ParallelSpec(None, cfg.ranks_per_point or None, cfg.data_in_memory),
        FileSpec(surf_file, dir_file, cfg.save_directions, cfg.flush_seconds, dir_given=bool(cfg.dir_file)),
        maps=maps, path_type=cfg.path_type if cfg.path_files else "", front="cli").check()


def name_surface_file(cfg: argparse.Namespace, dir_file: str) -> str:
    """<dir_file>_[xmin,xmax,xnum][x[ymin,ymax,ynum]][_rawdata][_datasplit=K_splitidx=i].h5, as the reference."""
    if cfg.surf_file:
        return cfg.surf_file
    name = dir_file + f"_[{cfg.xmin},{cfg.xmax},{cfg.xnum}]"
    if cfg.y is not None:
        name += f"x[{cfg.ymin},{cfg.ymax},{cfg.ynum}]"
    if cfg.raw_data:
        name += "_rawdata"
    if cfg.data_split > 1:
        name += f"_datasplit={cfg.data_split}_splitidx={cfg.split_idx}"
    return name + ".h5"


def name_path_stem(cfg: argparse.Namespace) -> str:
    """<F1>_<F2 name>_..._<path_type>_<dir_type>.h5: what a path's surface file is named after."""
    others = "_".join(os.path.basename(f) for f in cfg.path_files[1:])
    return f"{cfg.path_files[0]}_{others}_{cfg.path_type}_{cfg.dir_type}.h5"


def parse(argv: Optional[Sequence[str]] = None,
          parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    parser = parser or surface_parser()
    return validate(parser.parse_args(argv), parser)


def given(cfg: argparse.Namespace, parser: argparse.ArgumentParser, flag: str) -> bool:
    """True if `flag` differs from its default (the user asked for something)."""
    return getattr(cfg, flag) != parser.get_default(flag)


# DirectionSpec fields and the flags that set them
SPEC_FLAGS = {"seed": "seed", "xnorm": "xnorm", "xignore": "xignore", "ynorm": "ynorm", "yignore": "yignore",
              "xdir": "xdir", "ydir": "ydir", "same_dir": "same_dir", "orthogonalize": "orthogonalize",
              "params": "params", "regenerate": "regenerate_directions", "curvature": "curvature"}


def direction_flags_set(cfg: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """The DirectionSpec fields whose flags the user set: a named --dir_file must agree with those
    (--model_file2/3 set the x/y direction's kind)."""
    fields = {field for field, flag in SPEC_FLAGS.items() if given(cfg, parser, flag)}
    return fields | ({"xdir"} if cfg.model_file2 else set()) | ({"ydir"} if cfg.model_file3 else set())
