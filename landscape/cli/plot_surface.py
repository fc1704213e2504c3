"""Compute a loss surface around a trained model and (with --plot) draw it: the command line over landscape.py.

    python plot_surface.py --dataset digits --model digits_cnn --model_file M/model_20.t7 \\
        --x=-1:1:51 --y=-1:1:51 --dir_type weights --xnorm filter --xignore biasbn \\
        --ynorm filter --yignore biasbn --plot
    mpirun -n 4 python plot_surface.py --mpi --cuda --model resnet56 ...   (the reference's command lines)
    python plot_surface.py ... --path_files A.t7 B.t7 C.t7 --path_type bezier --x=0:1:41   (a path)

Flow: parse and check the flags (options.py) -> every rank loads the model, the data and the loss
-> a grid.job.GridJob names the files and what each point computes -> grid.job.run_job: rank 0
checks or creates the direction file and the surface file under the surface's lock, every rank
computes missing points, rank 0 writes them -> rank 0 plots.
"""
import os
import shlex
import sys
import traceback

import numpy as np
import torch

from landscape import directions as net_plotter
from landscape import errors, evaluation, user_code
from landscape.cli import options
from landscape.evaluation import batches
from landscape.curvature.model import top_eigenvectors
from landscape.errors import UserError, run_cli
from landscape.grid import job as grid_job
from landscape.io import provenance
from landscape.parallel import dist
from landscape.parallel import mpi as mpi4pytorch
from landscape.zoo import data as dataloader
from landscape.zoo import loader as model_loader


def build_parser():
    return options.surface_parser()


def parse_config(argv=None, parser=None):
    return options.parse(argv, parser or build_parser())


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


def name_path_stem(cfg):
    """<F1>_<F2 name>_..._<path_type>_<dir_type>.h5: what a path's surface file is named after."""
    others = "_".join(os.path.basename(f) for f in cfg.path_files[1:])
    return f"{cfg.path_files[0]}_{others}_{cfg.path_type}_{cfg.dir_type}.h5"


def grid(cfg):
    x = np.linspace(cfg.xmin, cfg.xmax, num=cfg.xnum)
    y = None if cfg.y is None else np.linspace(cfg.ymin, cfg.ymax, num=cfg.ynum)
    return x, y


# ----------------------------------------------------------------------------- inputs
def load_model_and_data(cfg):
    """The model (CPU, eval mode) and the data as loaded (custom streams kept as they are)."""
    for flag in ("model_file", "model_file2", "model_file3"):
        path = getattr(cfg, flag)
        if path and not os.path.isfile(path):
            raise UserError(f"--{flag} '{path}' does not exist")
    for path in cfg.path_files or ():
        if not os.path.isfile(path):
            raise UserError(f"--path_files: '{path}' does not exist")
    if not cfg.model_file:     # as the reference: the model as built after torch.manual_seed(seed)
        torch.manual_seed(cfg.seed)
    net = model_loader.load(cfg.dataset, cfg.model, cfg.model_file)
    data = dataloader.load_data(cfg.dataset, cfg.datapath, cfg.raw_data, cfg.data_split, cfg.split_idx,
                                cfg.trainloader, cfg.testloader, cfg.allow_pickle, cfg.download)
    return net, data


def warn_no_model_file(cfg, rank):
    """Rank 0: one line saying a run without --model_file takes the seeded initialisation (load_model_and_data)."""
    if not cfg.model_file and rank == 0:
        print(f"warning: no --model_file: model '{cfg.model}' at its initialisation after "
              f"torch.manual_seed({cfg.seed}), as the reference takes it", file=sys.stderr, flush=True)


def load_inputs(cfg, comm=None, group=None, device="cpu"):
    """Every rank: the model, the data, this rank's sets (evaluation.batches.HostSet: its shard, in
    memory or streamed), the path taken, and what a point computes; checks they fit. Collective."""
    net, data = mpi4pytorch.agree(comm, lambda: load_model_and_data(cfg))
    warn_no_model_file(cfg, mpi4pytorch.get_rank(comm))
    if cfg.eval_test and not data.has("test"):
        if mpi4pytorch.get_rank(comm) == 0:
            print(f"warning: dataset '{data.name}' has no test set: --eval_test computes no test maps",
                  file=sys.stderr, flush=True)
        cfg.eval_test = False
    named = [("train", data.split("train"))] + ([("test", data.split("test"))] if cfg.eval_test else [])
    sets, in_memory = batches.prepare_sets(named, comm, group, device, cfg.data_in_memory, cfg.batch_size,
                                           dataloader.normalize_dtypes, mpi4pytorch.local_size(comm))
    inputs, targets = sets[0].sample[0], (data.train_y if data.train_y is not None else sets[0].sample[1])
    stats = mpi4pytorch.agree(comm, lambda: evaluation.make_statistics(
        net, inputs, targets, cfg.loss_name, cfg.metrics or None, model_name=f"model '{cfg.model}'",
        data_name=data.name))
    mpi4pytorch.agree(comm, lambda: check_bn_recalibrate(cfg, net, group, in_memory, sets[0].total))
    return net, data, sets, in_memory, stats


def check_bn_recalibrate(cfg, net, group, in_memory, examples):
    """--bn_recalibrate needs BatchNorm, and the whole training set (at least 2 examples) in memory on each
    rank of a point."""
    if not cfg.bn_recalibrate:
        return
    if not evaluation.has_batchnorm(net):
        raise UserError(f"--bn_recalibrate: model '{cfg.model}' has no BatchNorm layer with running statistics "
                        "to recompute; drop the flag")
    if group is not None and group.size > 1:
        raise UserError("--bn_recalibrate recomputes BatchNorm's statistics from the whole training set on one "
                        "rank; it does not combine with --ranks_per_point > 1")
    if in_memory != "yes":
        raise UserError("--bn_recalibrate reads the training set from memory at every point; this data is "
                        "streamed (use --data_in_memory yes if it fits, or drop --bn_recalibrate)")
    evaluation.recalibration_batches(examples, 1)


def data_inputs(cfg, data, stats, sets):
    """The model, checkpoints, data and loss this run uses (keys of io/provenance.py's tables). The data's
    hashes are recorded where the data is held as tensors (a stream is named by --dataset and its size)."""
    sha = model_loader.file_sha256
    test_size = sets[1].total if len(sets) > 1 else data.size("test") if data.has("test") else "none"
    inputs = {"model": cfg.model, "model_file": cfg.model_file, "model_file_sha256": sha(cfg.model_file),
              "model_file2": cfg.model_file2, "model_file2_sha256": sha(cfg.model_file2),
              "model_file3": cfg.model_file3, "model_file3_sha256": sha(cfg.model_file3),
              "dataset": data.name, "train_size": sets[0].total,
              "test_size": "unknown" if test_size is None else test_size,
              "raw_data": int(cfg.raw_data), "data_split": cfg.data_split, "split_idx": cfg.split_idx,
              "trainloader_sha256": sha(cfg.trainloader), "testloader_sha256": sha(cfg.testloader),
              "loss_name": stats.loss_name, **evaluation.code_inputs(cfg.loss_name, cfg.metrics or None)}
    for key, spec in (("model_code_sha256", cfg.model), ("dataset_code_sha256", cfg.dataset)):
        if user_code.is_user_spec(spec):   # the user's own code: an edited file makes other numbers
            inputs[key] = user_code.spec_sha256(spec)
    if data.train_x is not None:
        inputs["data_sha256"] = provenance.tensors_sha256(data.train_x, data.train_y)
    if data.test_x is not None:
        inputs["test_data_sha256"] = provenance.tensors_sha256(data.test_x, data.test_y)
    return inputs


def surface_provenance(cfg, inputs, computed, notes=None):
    """The surface file's record: this run's inputs, what its maps compute (`computed`), and `notes`."""
    fields = {k: v for k, v in inputs.items() if k not in ("model_file2", "model_file3")}
    fields.update(computed, command=" ".join(shlex.quote(a) for a in sys.argv), seed=cfg.seed,
                  dir_type=cfg.dir_type, params=cfg.params, **(notes or {}))
    if cfg.path_files:
        sha = model_loader.file_sha256
        fields.update(path_type=cfg.path_type, path_files=" ".join(cfg.path_files),
                      path_sha256=" ".join(sha(f) for f in cfg.path_files))
    return provenance.record("surface", **fields)


def loss_compute(cfg, net, sets, stats, device, gpu_ids=(), group=None):
    """(keys, keys whose sentinel marks a missing point, make_compute, what the values depend on) of loss maps."""
    named = [(s.name, s) for s in sets]
    keys = evaluation.loss_keys([name for name, _ in named], stats)
    make = evaluation.loss_job_compute(net, named, stats, device, gpu_ids, cfg.batch_size, cfg.precision,
                                       cfg.points_per_pass, not cfg.no_fold_bn, cfg.memory_format, cfg.compile,
                                       group=group, bn_recalibrate=cfg.bn_recalibrate)
    return keys, keys, make, evaluation.loss_inputs(cfg.precision, cfg.batch_size, cfg.bn_recalibrate, cfg.metrics,
                                                    device)


def make_job(cfg, net, data, stats, device, what, sets, notes=None):
    """The GridJob of this command line, files named as the reference names them; `what` is
    (keys, missing keys, make_compute, {what the values depend on}); `sets` this rank's data sets,
    `notes` attributes recorded for information only."""
    x, y = grid(cfg)
    keys, missing, make, *computed = what
    inputs = data_inputs(cfg, data, stats, sets)
    load = lambda path: model_loader.load(cfg.dataset, cfg.model, path)
    common = dict(spec=net_plotter.directions_from_config(cfg), surf_file="",
                  prov=surface_provenance(cfg, inputs, computed[0] if computed else {}, notes), dir_inputs=inputs,
                  net_name=cfg.model, model_hash=inputs["model_file_sha256"], device=device,
                  flush_seconds=cfg.flush_seconds)
    if cfg.path_files:
        spaces = [net_plotter.direction_space(load(f), cfg.dir_type) for f in cfg.path_files]
        job = grid_job.GridJob(net, x, None, keys, make, missing, path=spaces, path_type=cfg.path_type, **common)
        job.surf_file = name_surface_file(cfg, name_path_stem(cfg))
        return job
    dir_file = net_plotter.name_direction_file(cfg)
    hessian = None
    if "hessian" in (cfg.xdir, cfg.ydir):
        if data.train_x is None:
            raise UserError(f"--xdir/--ydir hessian needs the training data as tensors; dataset '{cfg.dataset}' "
                            "gives a Dataset, DataLoader or iterable")
        hessian = lambda: top_eigenvectors(net, (data.train_x, data.train_y), stats.criterion, device,
                                           cfg.params, cfg.batch_size, curvature=cfg.curvature, hvp=cfg.hvp,
                                           loss_name=stats.loss_name)
    job = grid_job.GridJob(net, x, y, keys, make, missing, model2=lambda: load(cfg.model_file2),
                            model3=lambda: load(cfg.model_file3), build_model=lambda: model_loader.build(cfg.model),
                            hessian=hessian, dir_file=dir_file, dir_given=bool(cfg.dir_file),
                            compare=direction_compare(cfg, keys),
                            save_directions=cfg.save_directions, **common)
    job.surf_file = name_surface_file(cfg, dir_file)
    return job


def direction_compare(cfg, keys):
    """What a named --dir_file must agree with: the direction flags the user set (True without one: every
    choice that changes the directions). An eigenvalue map's --curvature is the map's matrix, not the
    directions'; it is compared with the surface file instead."""
    if not cfg.dir_file:
        return True
    fields = options.direction_flags_set(cfg, build_parser())
    return fields - {"curvature"} if "max_eig" in keys else fields


# ----------------------------------------------------------------------------- running and plotting
def plot_results(cfg, surf_file, dir_file):
    from landscape.plots import plot_1d as plot_1D
    from landscape.plots import plot_2d as plot_2D
    if cfg.y is not None and cfg.proj_file:
        plot_2D.plot_contour_trajectory(surf_file, dir_file, cfg.proj_file, "train_loss", cfg.vmin, cfg.vmax,
                                        cfg.vlevel, cfg.show, fmt=cfg.format)
    elif cfg.y is not None:
        for name in ["train_loss"] + (["test_loss"] if cfg.eval_test else []):   # (no test set: eval_test off)
            plot_2D.plot_2d_contour(surf_file, name, cfg.vmin, cfg.vmax, cfg.vlevel, cfg.show,
                                    log=cfg.log, fmt=cfg.format)
    else:
        plot_1D.plot_1d_loss_err(surf_file, cfg.xmin, cfg.xmax, cfg.loss_max, cfg.log, cfg.show, fmt=cfg.format)


def run(cfg, comm, rank, nproc, compute=None, plot=plot_results, after=None):
    """Every rank: load, build the job, compute the missing points (rank 0 writes), (rank 0) plot.
    `compute(cfg, net, sets, stats, device, group)` -> (keys, missing keys, make_compute, {what the values
    depend on}); default: loss maps. `after(result)`: rank 0, once the points are computed."""
    device, gpu_ids = mpi4pytorch.agree(comm, lambda: mpi4pytorch.pick_device(cfg.cuda, cfg.ngpu, comm))
    torch.set_num_threads(cfg.threads or mpi4pytorch.default_threads(comm))
    k = cfg.ranks_per_point or 1
    mpi4pytorch.agree(comm, lambda: dist.check_ranks_per_point(k, nproc))
    group = dist.point_groups(comm, k, device, cfg.rendezvous_timeout)
    net, data, sets, in_memory, stats = load_inputs(cfg, comm, group, device)
    own = None if cfg.dry_run else group            # a dry run times rank 0's shard alone
    what = compute(cfg, net, sets, stats, device, own) if compute else loss_compute(cfg, net, sets, stats, device,
                                                                                    gpu_ids, own)
    notes = {"data_in_memory": in_memory, "ranks_per_point": k}
    job = mpi4pytorch.agree(comm, lambda: make_job(cfg, net, data, stats, device, what, sets, notes))
    warning = evaluation.bf16_warning(cfg.precision, device)
    if warning and rank == 0:
        print(warning, file=sys.stderr, flush=True)
    if cfg.dry_run:
        if rank == 0:
            grid_job.dry_run(job, nproc, k)
        mpi4pytorch.barrier(comm)
        return 0
    result = grid_job.run_job(job, comm, group)
    if rank == 0:
        cfg.stats = result.stats
        if after is not None:
            after(result)
        if cfg.plot:
            plot(cfg, job.surf_file, job.dir_file)
    mpi4pytorch.barrier(comm)
    return 0


def check_curvature_flags(cfg, parser):
    """--curvature and --hvp choose the matrix of --xdir/--ydir hessian; without those they do nothing."""
    given = [f"--{f}" for f in ("curvature", "hvp") if options.given(cfg, parser, f)]
    if cfg.dir_file and os.path.exists(cfg.dir_file):
        if "--hvp" in given:     # (--curvature must agree with the file's: compared with its other flags)
            raise UserError(f"--hvp changes how hessian directions are computed, but --dir_file '{cfg.dir_file}' "
                            "already holds its directions; drop it")
        return
    if given and "hessian" not in (cfg.xdir, cfg.ydir):
        raise UserError(f"{given[0]} applies to --xdir/--ydir hessian (the curvature's eigenvectors); these "
                        "directions use no curvature")


def main(argv=None):
    parser = build_parser()
    cfg = parse_config(argv, parser)
    check_curvature_flags(cfg, parser)
    return run_main(cfg, run)


def run_main(cfg, run_fn):
    """Ranks (MPI, torchrun), SIGTERM handling, and one line instead of a traceback for bad input."""
    comm, rank, nproc = dist.setup_ranks(cfg.mpi, cfg.rendezvous_timeout)
    errors.exit_cleanly_on_sigterm()  # a pre-empted job still saves its computed points and its lock
    try:
        rc = run_fn(cfg, comm, rank, nproc)
    except (UserError, errors.Terminated):
        dist.leave(comm)
        raise
    except Exception:
        traceback.print_exc()
        mpi4pytorch.abort(comm)  # never leave the other ranks waiting
        return 1
    dist.leave(comm)
    return rc


if __name__ == "__main__":
    sys.exit(run_cli(main))
