"""Compute a loss surface around a trained model and (with --plot) draw it.

    python plot_surface.py --dataset digits --model digits_cnn --model_file M/model_20.t7 \
        --x=-1:1:51 --y=-1:1:51 --dir_type weights --xnorm filter --xignore biasbn \
        --ynorm filter --yignore biasbn --plot
    mpirun -n 4 python plot_surface.py --mpi --cuda --model resnet56 ...   (the reference's command lines)

Flow: parse and validate every flag -> load the model and the data (every rank) -> rank 0 creates
or checks the direction file and the surface file and takes the surface's lock -> every rank
computes the missing grid points, handed out dynamically by rank 0, which stores the results and
rewrites the surface file atomically every --flush_seconds -> rank 0 plots.
"""
import math
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, fields

import numpy as np
import torch

import dataloader
import evaluation
import fast_model
import h5_util
import model_loader
import mpi4pytorch
import net_plotter
import scheduler
import errors
from errors import ArgParser, UserError, run_cli
from surface_lock import SurfaceLock


# ----------------------------------------------------------------------------- configuration
@dataclass
class SurfaceConfig:
    """Every flag, validated; ranges parsed into (min, max, num)."""
    mpi: bool = False
    cuda: bool = False
    threads: int = 2
    ngpu: int = 1
    batch_size: int = 128
    dataset: str = "cifar10"
    datapath: str = "cifar10/data"
    raw_data: bool = False
    data_split: int = 1
    split_idx: int = 0
    trainloader: str = ""
    testloader: str = ""
    allow_pickle: bool = False
    download: bool = False
    model: str = "resnet56"
    model_folder: str = ""
    model_file: str = ""
    model_file2: str = ""
    model_file3: str = ""
    loss_name: str = "crossentropy"
    dir_file: str = ""
    dir_type: str = "weights"
    x: str = "-1:1:51"
    y: str = None
    xnorm: str = ""
    ynorm: str = ""
    xignore: str = ""
    yignore: str = ""
    same_dir: bool = False
    idx: int = 0
    surf_file: str = ""
    seed: int = 123
    eval_test: bool = False
    precision: str = "default"
    points_per_pass: int = 1
    no_fold_bn: bool = False
    memory_format: str = "auto"
    compile: bool = False
    flush_seconds: float = 5.0
    dry_run: bool = False
    proj_file: str = ""
    loss_max: float = 5.0
    vmax: float = 10.0
    vmin: float = 0.1
    vlevel: float = 0.5
    show: bool = False
    log: bool = False
    plot: bool = False
    format: str = "pdf"
    xmin: float = None
    xmax: float = None
    xnum: int = None
    ymin: float = None
    ymax: float = None
    ynum: int = None
    stats: dict = None       # filled by run() on rank 0: points, seconds, sec_per_point, ranks


def build_parser():
    p = ArgParser.make("Compute (and plot) the loss surface of a trained model along 1 or 2 directions.")
    a = p.add_argument
    a("--mpi", "-m", action="store_true", help="split the grid over MPI ranks (run under mpirun/srun)")
    a("--cuda", "-c", action="store_true", help="compute on the GPU of each rank's node-local rank")
    a("--threads", default=2, type=int, help="CPU threads per rank for torch (0: torch's default)")
    a("--ngpu", type=int, default=1, help="GPUs per rank, data parallel")
    a("--batch_size", default=128, type=int, help="evaluation batch size")
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
    # model
    a("--model", default="resnet56", help="model name, or path/to/file.py:factory | module:factory")
    a("--model_folder", default="", help="folder that relative --model_file/2/3 paths are in")
    a("--model_file", default="", help="the trained model's checkpoint")
    a("--model_file2", default="", help="use (model_file2 - model_file) as the x direction")
    a("--model_file3", default="", help="use (model_file3 - model_file) as the y direction")
    a("--loss_name", "-l", default="crossentropy", help="crossentropy | mse")
    # directions
    a("--dir_file", default="", help="an existing direction file to use")
    a("--dir_type", default="weights", help="weights | states (states includes BN running_mean/var)")
    a("--x", default="-1:1:51", help="xmin:xmax:xnum")
    a("--y", default=None, help="ymin:ymax:ynum (makes the surface 2D)")
    a("--xnorm", default="", help="x direction normalisation: filter | layer | weight | dfilter | dlayer")
    a("--ynorm", default="", help="y direction normalisation: filter | layer | weight | dfilter | dlayer")
    a("--xignore", default="", help="biasbn: zero the x direction in biases and BN parameters")
    a("--yignore", default="", help="biasbn: zero the y direction in biases and BN parameters")
    a("--same_dir", action="store_true", help="use the x direction as the y direction too")
    a("--idx", default=0, type=int, help="index of a repeated experiment (names the direction file)")
    a("--surf_file", default="", help="surface file name (default: built from the direction file)")
    a("--seed", default=123, type=int, help="seed of the random directions")
    a("--eval_test", action="store_true", help="also compute test_loss and test_acc")
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


def parse_range(text, flag):
    """'min:max:num' -> (min, max, num), with num an integer >= 1 and min <= max, all finite."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise UserError(f"{flag}={text!r} must be min:max:num, e.g. -1:1:51")
    try:
        lo, hi, num = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"{flag}={text!r}: min, max and num must be numbers, e.g. -1:1:51") from None
    if not all(math.isfinite(v) for v in (lo, hi, num)):
        raise UserError(f"{flag}={text!r}: min, max and num must be finite")
    if num != int(num) or num < 1:
        raise UserError(f"{flag}={text!r}: num must be a whole number >= 1")
    if lo > hi:
        raise UserError(f"{flag}={text!r}: min must not exceed max")
    return lo, hi, int(num)


def validate(cfg):
    """Check flag values and combinations; fill in the parsed ranges. Pure: touches no file."""
    cfg.xmin, cfg.xmax, cfg.xnum = parse_range(cfg.x, "--x")
    if cfg.y is not None:
        cfg.ymin, cfg.ymax, cfg.ynum = parse_range(cfg.y, "--y")
    choices = {"dir_type": net_plotter.DIR_TYPES, "xnorm": net_plotter.NORMS, "ynorm": net_plotter.NORMS,
               "xignore": ("", "biasbn"), "yignore": ("", "biasbn"), "loss_name": evaluation.LOSS_NAMES,
               "precision": evaluation.PRECISIONS, "format": ("pdf", "png", "svg"),
               "memory_format": ("auto", "channels_last", "contiguous")}
    for flag, allowed in choices.items():
        if getattr(cfg, flag) not in allowed:
            raise UserError(f"--{flag} {getattr(cfg, flag)!r} must be one of: "
                            f"{', '.join(repr(v) if v == '' else v for v in allowed)}")
    if cfg.model_file3 and cfg.y is None:
        raise UserError("--model_file3 sets the y direction, so it needs --y")
    if not cfg.model_file:
        raise UserError("--model_file is required: the checkpoint whose surroundings are plotted")
    for flag in ("batch_size", "ngpu", "points_per_pass"):
        if getattr(cfg, flag) < 1:
            raise UserError(f"--{flag} {getattr(cfg, flag)} must be >= 1")
    if cfg.threads < 0 or not cfg.flush_seconds > 0:
        raise UserError("--threads must be >= 0 and --flush_seconds > 0")
    if cfg.data_split < 1 or not 0 <= cfg.split_idx < cfg.data_split:
        raise UserError(f"--split_idx {cfg.split_idx} must be in [0, --data_split={cfg.data_split})")
    if cfg.model_folder:
        for flag in ("model_file", "model_file2", "model_file3"):
            path = getattr(cfg, flag)
            if path and not os.path.isabs(path):
                setattr(cfg, flag, os.path.join(cfg.model_folder, path))
    return cfg


def parse_config(argv=None, parser=None, config_cls=SurfaceConfig):
    args = (parser or build_parser()).parse_args(argv)
    names = {f.name for f in fields(config_cls)}
    return validate(config_cls(**{k: v for k, v in vars(args).items() if k in names}))


# ----------------------------------------------------------------------------- file names
def name_surface_file(cfg, dir_file):
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


@dataclass
class Job:
    """What a grid run computes: the maps it writes (`keys`), the maps whose sentinels mark a point
    as not yet computed (`missing_keys`), the per-rank compute factory and the final plot."""
    keys: list
    missing_keys: list
    make_compute: object   # (cfg, net, directions, data, device, gpu_ids) -> (flat indices -> values)
    plot: object           # (cfg, surf_file, dir_file) -> None


def value_keys(cfg):
    return ["train_loss", "train_acc"] + (["test_loss", "test_acc"] if cfg.eval_test else [])


def loss_job(cfg):
    keys = value_keys(cfg)
    return Job(keys, keys, make_evaluator, plot_results)


def grid(cfg):
    x = np.linspace(cfg.xmin, cfg.xmax, num=cfg.xnum)
    y = None if cfg.y is None else np.linspace(cfg.ymin, cfg.ymax, num=cfg.ynum)
    return x, y


# ----------------------------------------------------------------------------- set-up
def pick_device(cfg, comm):
    """cpu, or the GPU of this rank's node-local rank (--ngpu GPUs each)."""
    if not cfg.cuda:
        return torch.device("cpu"), []
    if not torch.cuda.is_available():
        raise UserError("--cuda was given, but no CUDA GPU is available (drop --cuda to run on the CPU)")
    count = torch.cuda.device_count()
    first = (mpi4pytorch.local_rank(comm) * cfg.ngpu) % count
    ids = [(first + i) % count for i in range(min(cfg.ngpu, count))]
    torch.cuda.set_device(ids[0])
    return torch.device("cuda", ids[0]), ids


def load_inputs(cfg):
    """The model (on CPU, eval mode) and the evaluation data; checks they fit each other."""
    for flag in ("model_file", "model_file2", "model_file3"):
        path = getattr(cfg, flag)
        if path and not os.path.isfile(path):
            raise UserError(f"--{flag} '{path}' does not exist")
    net = model_loader.load(cfg.dataset, cfg.model, cfg.model_file)
    data = dataloader.load_tensors(cfg.dataset, cfg.datapath, cfg.raw_data, cfg.data_split, cfg.split_idx,
                                   cfg.trainloader, cfg.testloader, cfg.allow_pickle, cfg.download)
    try:
        with torch.no_grad():
            out = net(data.train_x[:2])
    except Exception as e:
        raise UserError(f"model '{cfg.model}' cannot take {data.name} inputs of shape "
                        f"{tuple(data.train_x.shape[1:])}: {str(e).splitlines()[0][:120]}") from None
    if out.dim() != 2 or out.shape[1] < data.num_classes:
        raise UserError(f"model '{cfg.model}' outputs shape {tuple(out.shape)}, but {data.name} has "
                        f"{data.num_classes} classes")
    return net, data


def check_writable(path):
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


def provenance(cfg, data, dir_hash, model_hash):
    return {"command": " ".join(shlex.quote(a) for a in sys.argv), "tool": h5_util.tool_version(),
            "seed": cfg.seed, "model": cfg.model, "model_file": cfg.model_file,
            "model_file_sha256": model_hash, "model_file2_sha256": model_loader.file_sha256(cfg.model_file2),
            "model_file3_sha256": model_loader.file_sha256(cfg.model_file3), "dir_type": cfg.dir_type,
            "dir_sha256": dir_hash, "dataset": data.name, "train_size": len(data.train_y),
            "test_size": len(data.test_y), "raw_data": int(cfg.raw_data), "loss_name": cfg.loss_name,
            "precision": cfg.precision, "layout": "(ny, nx): Z[j, i] is the value at (x[i], y[j])",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def check_surface(surf, cfg, dir_file, prov):
    """Refuse to resume into a surface file made for another grid, model, direction or dataset."""
    x, y = grid(cfg)
    path = surf.path
    if (surf.y is None) != (y is None):
        raise UserError(f"surface file '{path}' is {'1D' if surf.y is None else '2D'}, but this run is "
                        f"{'1D' if y is None else '2D'}")
    for axis, mine, theirs in (("x", x, surf.x), ("y", y, surf.y)):
        if mine is not None and (len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=0, atol=1e-9)):
            raise UserError(f"surface file '{path}' has a different {axis} grid "
                            f"([{theirs[0]}, {theirs[-1]}] x {len(theirs)}); use another --surf_file")
    attrs = surf.attrs
    if attrs.get("dir_sha256"):
        if attrs["dir_sha256"] != prov["dir_sha256"]:
            raise UserError(f"surface file '{path}' was computed along other directions than '{dir_file}'")
    elif surf.dir_file and os.path.basename(surf.dir_file) != os.path.basename(dir_file):
        raise UserError(f"surface file '{path}' belongs to direction file '{surf.dir_file}', not '{dir_file}'")
    for key, what in (("model_file_sha256", "checkpoint"), ("model", "model"), ("dataset", "dataset"),
                      ("train_size", "training-set size"), ("loss_name", "loss"), ("dir_type", "--dir_type")):
        if key in attrs and str(attrs[key]) != str(prov[key]):
            raise UserError(f"surface file '{path}' was computed with another {what} "
                            f"({attrs[key]} vs {prov[key]}); use another --surf_file")


@dataclass
class Plan:
    """What a run would do, once every check has passed: nothing is written while making it."""
    directions: list
    new_dirs: bool          # the direction file does not exist yet
    warning: str            # to print only if the run goes on (or None)
    model_hash: str
    surf: h5_util.Surface   # the existing surface file (checked), or a new one in memory


def check_inputs(cfg, net, data, dir_file, surf_file):
    """Check the output folders, the direction file and the surface file against this run."""
    check_writable(surf_file)
    if not os.path.exists(dir_file):
        check_writable(dir_file)
    model_hash = model_loader.file_sha256(cfg.model_file)
    load_other = lambda path: model_loader.load(cfg.dataset, cfg.model, path)
    directions, new_dirs, warning = net_plotter.prepare_directions(cfg, dir_file, net, cfg.model, model_hash,
                                                                   load_other)
    prov = provenance(cfg, data, h5_util.directions_sha256(directions), model_hash)
    if os.path.exists(surf_file):
        surf = h5_util.read_surface(surf_file)
        check_surface(surf, cfg, dir_file, prov)
        surf.attrs.update({k: v for k, v in prov.items() if k not in surf.attrs})
        surf.attrs["last_command"] = prov["command"]
    else:
        x, y = grid(cfg)
        surf = h5_util.new_surface(surf_file, x, y, dir_file, prov)
    return Plan(directions, new_dirs, warning, model_hash, surf)


def prepare_files(cfg, net, data, dir_file, surf_file, keys, lock):
    """Rank 0: take the lock, check everything, then create what is missing.

    The direction file and the surface file are both checked before either is written, so a
    refused run changes no file. Returns the Surface (values in memory) and the directions.
    """
    check_writable(surf_file)
    lock.acquire()
    plan = check_inputs(cfg, net, data, dir_file, surf_file)
    if plan.warning:
        print(plan.warning, file=sys.stderr)
    if plan.new_dirs:
        net_plotter.write_directions(cfg, dir_file, plan.directions, cfg.model, plan.model_hash)
    for key in keys:
        plan.surf.ensure(key)  # the maps this run fills, all "not computed" if new
    h5_util.write_surface(plan.surf)
    return plan.surf, plan.directions


# ----------------------------------------------------------------------------- computing
class Recorder:
    """Rank 0: store results in the Surface, show progress, rewrite the file every flush_seconds."""

    def __init__(self, surf, keys, total, done, flush_seconds, show_progress=True):
        from tqdm import tqdm
        self.surf, self.keys, self.flush_seconds = surf, keys, flush_seconds
        self.dirty, self.last_flush = False, time.monotonic()
        self.bar = tqdm(total=total, initial=done, unit="pt", disable=not show_progress,
                        mininterval=0.5, dynamic_ncols=True, file=sys.stderr)

    def store(self, indices, values):
        for j, key in enumerate(self.keys):
            self.surf.values[key].reshape(-1)[indices] = values[:, j]
        self.dirty = True
        self.bar.update(len(indices))

    def tick(self):
        if self.dirty and time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self):
        if self.dirty:
            self.surf.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            h5_util.write_surface(self.surf)
            self.dirty, self.last_flush = False, time.monotonic()

    def close(self):
        self.flush()
        self.bar.close()


def grid_coords(cfg):
    """(points, ndim) coordinates in the surface's flat order."""
    x, y = grid(cfg)
    return h5_util.new_surface("", x, y, "", {}).coords()


def make_evaluator(cfg, net, directions, data, device, gpu_ids):
    """The function rank r calls on a chunk of flat grid indices: loss and accuracy at each point."""
    fast = fast_model.prepare(net, device, fold_bn=not cfg.no_fold_bn, memory_format=cfg.memory_format,
                              compile=cfg.compile)
    setter = net_plotter.PointSetter(net, directions, cfg.dir_type, device)  # after the layout change
    runner = fast
    if len(gpu_ids) > 1:
        runner = torch.nn.DataParallel(fast.graph, device_ids=gpu_ids)
        runner.refresh = fast.refresh
    sets = [(fast.prepare_input(data.train_x.to(device)), data.train_y.to(device))]
    if cfg.eval_test:
        sets.append((fast.prepare_input(data.test_x.to(device)), data.test_y.to(device)))
    autocast = evaluation.set_precision(cfg.precision, device)
    if cfg.compile:
        with autocast():
            seconds = fast.warm_up(sets[0][0][:cfg.batch_size])
        print(f"torch.compile took {seconds:.1f} s", flush=True)
    evaluator = evaluation.GridEvaluator(net, setter, sets, cfg.loss_name, cfg.batch_size, autocast,
                                         1 if len(gpu_ids) > 1 else cfg.points_per_pass, runner=runner)
    coords = grid_coords(cfg)
    return lambda indices: evaluator(coords[indices])


def dry_run(cfg, net, data, dir_file, surf_file, job, device, gpu_ids, nproc):
    """Validate, name the files, time one point, estimate the total; write nothing."""
    plan = check_inputs(cfg, net, data, dir_file, surf_file)
    print(f"direction file: {dir_file} ({'would be created' if plan.new_dirs else 'exists, fits the model'})")
    total = int(np.prod(plan.surf.shape))
    missing = int(plan.surf.missing(job.missing_keys).sum())
    done = f"exists: {total - missing} of {total} points done" if os.path.exists(surf_file) else "would be created"
    print(f"surface file:   {surf_file} ({done})")
    if plan.warning:
        print(plan.warning, file=sys.stderr)
    compute = job.make_compute(cfg, net, plan.directions, data, device, gpu_ids)
    center = int(np.argmin(np.abs(grid_coords(cfg)).sum(1)))
    compute(np.array([center]))  # warm-up
    t0 = time.perf_counter()
    compute(np.array([center]))
    sec = time.perf_counter() - t0
    print(f"one point takes {sec:.3f} s here ({len(data.train_y)} training images"
          f"{' + test set' if cfg.eval_test else ''}); {missing} points on {nproc} rank(s): "
          f"about {missing * sec / nproc / 60:.1f} min. Nothing was computed or written.")


def report(n_done, seconds, nproc, surf_file):
    """Print the summary line; return the figures (the benchmark reads them)."""
    rate = n_done / seconds if seconds > 0 else float("inf")
    per_point = seconds / max(n_done, 1)
    if n_done == 0:
        print(f"nothing to compute: every point is done; surface file: {surf_file}", flush=True)
        return {"points": 0, "seconds": seconds, "sec_per_point": float("nan"), "ranks": nproc}
    each = f"{per_point * 1e3:.3g} ms" if per_point < 1 else f"{per_point:.3g} s"
    print(f"computed {n_done} points in {seconds:.1f} s ({rate:.1f} points/s, {each}/point) "
          f"on {nproc} rank(s); surface file: {surf_file}", flush=True)
    return {"points": n_done, "seconds": seconds, "sec_per_point": per_point, "ranks": nproc}


def plot_results(cfg, surf_file, dir_file):
    import plot_1D
    import plot_2D
    if cfg.y is not None and cfg.proj_file:
        plot_2D.plot_contour_trajectory(surf_file, dir_file, cfg.proj_file, "train_loss", cfg.vmin, cfg.vmax,
                                        cfg.vlevel, cfg.show, fmt=cfg.format)
    elif cfg.y is not None:
        for name in ["train_loss"] + (["test_loss"] if cfg.eval_test else []):
            plot_2D.plot_2d_contour(surf_file, name, cfg.vmin, cfg.vmax, cfg.vlevel, cfg.show,
                                    log=cfg.log, fmt=cfg.format)
    else:
        plot_1D.plot_1d_loss_err(surf_file, cfg.xmin, cfg.xmax, cfg.loss_max, cfg.log, cfg.show, fmt=cfg.format)


def run(cfg, comm, rank, nproc, job=None):
    """Every rank: load, (rank 0) prepare the files, compute the missing points, (rank 0) plot."""
    job = job or loss_job(cfg)
    device, gpu_ids = mpi4pytorch.agree(comm, lambda: pick_device(cfg, comm))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    net, data = mpi4pytorch.agree(comm, lambda: load_inputs(cfg))
    dir_file = net_plotter.name_direction_file(cfg)
    surf_file = name_surface_file(cfg, dir_file)
    if cfg.dry_run:
        if rank == 0:
            dry_run(cfg, net, data, dir_file, surf_file, job, device, gpu_ids, nproc)
        mpi4pytorch.barrier(comm)
        return 0

    lock = SurfaceLock(surf_file)
    try:
        prepared = mpi4pytorch.agree(comm, lambda: prepare_files(cfg, net, data, dir_file, surf_file, job.keys, lock)
                                     if rank == 0 else None)
        directions = prepared[1] if rank == 0 else net_plotter.load_directions(dir_file, 2 if cfg.y is not None else 1)
        if rank == 0 and len(directions) == 2:
            print(f"cosine similarity of the x and y directions: {cosine(directions):.4f}")
        compute = job.make_compute(cfg, net, directions, data, device, gpu_ids)
        multiple = cfg.points_per_pass
        t0 = time.perf_counter()
        if rank == 0:
            surf = prepared[0]
            missing = np.flatnonzero(surf.missing(job.missing_keys))
            total = int(np.prod(surf.shape))
            print(f"{surf_file}: {total - len(missing)} of {total} points done, computing {len(missing)} "
                  f"on {nproc} rank(s) ({device})", flush=True)
            rec = Recorder(surf, job.keys, total, total - len(missing), cfg.flush_seconds)
            try:
                scheduler.run_root(comm, nproc, missing, compute, rec.store, rec.tick, multiple)
            finally:
                rec.close()  # whatever happened (Ctrl-C, SIGTERM, a crash), keep every computed point
            cfg.stats = report(len(missing), time.perf_counter() - t0, nproc, surf_file)
        else:
            scheduler.run_worker(comm, compute, multiple)
    finally:
        lock.release()
    if cfg.plot and rank == 0:
        job.plot(cfg, surf_file, dir_file)
    mpi4pytorch.barrier(comm)
    return 0


def cosine(directions):
    a = torch.cat([d.flatten() for d in directions[0]]).double()
    b = torch.cat([d.flatten() for d in directions[1]]).double()
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def main(argv=None, parser=None, config_cls=SurfaceConfig, make_job=None):
    """Entry point; plot_hessian_eigen.py reuses it with its own parser, config and job."""
    cfg = parse_config(argv, parser, config_cls)
    comm, rank, nproc = mpi4pytorch.setup_mpi(cfg.mpi)
    errors.exit_cleanly_on_sigterm()  # a pre-empted job still saves its computed points and its lock
    try:
        return run(cfg, comm, rank, nproc, make_job(cfg) if make_job else None)
    except (UserError, errors.Terminated):
        raise
    except Exception:
        traceback.print_exc()
        mpi4pytorch.abort(comm)  # never leave the other ranks waiting
        return 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
