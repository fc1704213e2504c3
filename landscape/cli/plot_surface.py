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
from landscape import errors, evaluation
from landscape.cli import options
from landscape.curvature.model import top_eigenvectors
from landscape.errors import UserError, run_cli
from landscape.grid import job as grid_job
from landscape.io import provenance
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
def load_inputs(cfg):
    """The model (CPU, eval mode), the data, and what a point computes; checks they fit each other."""
    for flag in ("model_file", "model_file2", "model_file3"):
        path = getattr(cfg, flag)
        if path and not os.path.isfile(path):
            raise UserError(f"--{flag} '{path}' does not exist")
    for path in cfg.path_files or ():
        if not os.path.isfile(path):
            raise UserError(f"--path_files: '{path}' does not exist")
    net = model_loader.load(cfg.dataset, cfg.model, cfg.model_file)
    data = dataloader.load_tensors(cfg.dataset, cfg.datapath, cfg.raw_data, cfg.data_split, cfg.split_idx,
                                   cfg.trainloader, cfg.testloader, cfg.allow_pickle, cfg.download)
    stats = evaluation.make_statistics(net, data.train_x, data.train_y, cfg.loss_name, cfg.metrics or None,
                                       model_name=f"model '{cfg.model}'", data_name=data.name)
    if cfg.bn_recalibrate and not evaluation.has_batchnorm(net):
        raise UserError(f"--bn_recalibrate: model '{cfg.model}' has no BatchNorm layer with running statistics "
                        "to recompute; drop the flag")
    return net, data, stats


def data_inputs(cfg, data, stats):
    """The model, checkpoints, data and loss this run uses (keys of io/provenance.py's tables)."""
    sha = model_loader.file_sha256
    return {"model": cfg.model, "model_file": cfg.model_file, "model_file_sha256": sha(cfg.model_file),
            "model_file2": cfg.model_file2, "model_file2_sha256": sha(cfg.model_file2),
            "model_file3": cfg.model_file3, "model_file3_sha256": sha(cfg.model_file3),
            "dataset": data.name, "train_size": len(data.train_y), "test_size": len(data.test_y),
            "raw_data": int(cfg.raw_data), "data_split": cfg.data_split, "split_idx": cfg.split_idx,
            "trainloader_sha256": sha(cfg.trainloader), "testloader_sha256": sha(cfg.testloader),
            "data_sha256": provenance.tensors_sha256(data.train_x, data.train_y),
            "test_data_sha256": provenance.tensors_sha256(data.test_x, data.test_y), "loss_name": stats.loss_name}


def surface_provenance(cfg, inputs, computed):
    """The surface file's record: this run's inputs and what its maps compute (`computed`)."""
    fields = {k: v for k, v in inputs.items() if k not in ("model_file2", "model_file3")}
    fields.update(computed, command=" ".join(shlex.quote(a) for a in sys.argv), seed=cfg.seed,
                  dir_type=cfg.dir_type, params=cfg.params)
    if cfg.path_files:
        sha = model_loader.file_sha256
        fields.update(path_type=cfg.path_type, path_files=" ".join(cfg.path_files),
                      path_sha256=" ".join(sha(f) for f in cfg.path_files))
    return provenance.record("surface", **fields)


def loss_compute(cfg, net, data, stats, device, gpu_ids=()):
    """(keys, keys whose sentinel marks a missing point, make_compute, what the values depend on) of loss maps."""
    sets = [("train", data.train_x, data.train_y)] + ([("test", data.test_x, data.test_y)] if cfg.eval_test else [])
    keys = evaluation.loss_keys([s[0] for s in sets], stats)
    make = evaluation.loss_job_compute(net, sets, stats, device, gpu_ids, cfg.batch_size, cfg.precision,
                                      cfg.points_per_pass, not cfg.no_fold_bn, cfg.memory_format, cfg.compile,
                                      bn_recalibrate=cfg.bn_recalibrate)
    return keys, keys, make, evaluation.loss_inputs(cfg.precision, cfg.batch_size, cfg.bn_recalibrate, cfg.metrics)


def make_job(cfg, net, data, stats, device, what):
    """The GridJob of this command line, files named as the reference names them; `what` is
    (keys, missing keys, make_compute, {what the values depend on})."""
    x, y = grid(cfg)
    keys, missing, make, *computed = what
    inputs = data_inputs(cfg, data, stats)
    load = lambda path: model_loader.load(cfg.dataset, cfg.model, path)
    common = dict(spec=net_plotter.directions_from_config(cfg), surf_file="",
                  prov=surface_provenance(cfg, inputs, computed[0] if computed else {}), dir_inputs=inputs,
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
        hessian = lambda: top_eigenvectors(net, (data.train_x, data.train_y), stats.criterion, device,
                                                     cfg.params, cfg.batch_size)
    job = grid_job.GridJob(net, x, y, keys, make, missing, model2=lambda: load(cfg.model_file2),
                            model3=lambda: load(cfg.model_file3), build_model=lambda: model_loader.build(cfg.model),
                            hessian=hessian, dir_file=dir_file, dir_given=bool(cfg.dir_file),
                            compare=options.direction_flags_set(cfg, build_parser()) if cfg.dir_file else True,
                            save_directions=cfg.save_directions, **common)
    job.surf_file = name_surface_file(cfg, dir_file)
    return job


# ----------------------------------------------------------------------------- running and plotting
def plot_results(cfg, surf_file, dir_file):
    from landscape.plots import plot_1d as plot_1D
    from landscape.plots import plot_2d as plot_2D
    if cfg.y is not None and cfg.proj_file:
        plot_2D.plot_contour_trajectory(surf_file, dir_file, cfg.proj_file, "train_loss", cfg.vmin, cfg.vmax,
                                        cfg.vlevel, cfg.show, fmt=cfg.format)
    elif cfg.y is not None:
        for name in ["train_loss"] + (["test_loss"] if cfg.eval_test else []):
            plot_2D.plot_2d_contour(surf_file, name, cfg.vmin, cfg.vmax, cfg.vlevel, cfg.show,
                                    log=cfg.log, fmt=cfg.format)
    else:
        plot_1D.plot_1d_loss_err(surf_file, cfg.xmin, cfg.xmax, cfg.loss_max, cfg.log, cfg.show, fmt=cfg.format)


def run(cfg, comm, rank, nproc, compute=None, plot=plot_results):
    """Every rank: load, build the job, compute the missing points (rank 0 writes), (rank 0) plot.
    `compute(cfg, net, data, stats, device)` -> (keys, missing keys, make_compute); default: loss maps."""
    device, gpu_ids = mpi4pytorch.agree(comm, lambda: mpi4pytorch.pick_device(cfg.cuda, cfg.ngpu, comm))
    torch.set_num_threads(cfg.threads or mpi4pytorch.default_threads(comm))
    net, data, stats = mpi4pytorch.agree(comm, lambda: load_inputs(cfg))
    what = compute(cfg, net, data, stats, device) if compute else loss_compute(cfg, net, data, stats, device, gpu_ids)
    job = mpi4pytorch.agree(comm, lambda: make_job(cfg, net, data, stats, device, what))
    warning = evaluation.bf16_warning(cfg.precision, device)
    if warning and rank == 0:
        print(warning, file=sys.stderr, flush=True)
    if cfg.dry_run:
        if rank == 0:
            grid_job.dry_run(job, nproc)
        mpi4pytorch.barrier(comm)
        return 0
    result = grid_job.run_job(job, comm)
    if rank == 0:
        cfg.stats = result.stats
        if cfg.plot:
            plot(cfg, job.surf_file, job.dir_file)
    mpi4pytorch.barrier(comm)
    return 0


def main(argv=None):
    cfg = parse_config(argv)
    return run_main(cfg, run)


def run_main(cfg, run_fn):
    """MPI set-up, SIGTERM handling, and one line instead of a traceback for bad input."""
    comm, rank, nproc = mpi4pytorch.setup_mpi(cfg.mpi)
    errors.exit_cleanly_on_sigterm()  # a pre-empted job still saves its computed points and its lock
    try:
        return run_fn(cfg, comm, rank, nproc)
    except (UserError, errors.Terminated):
        raise
    except Exception:
        traceback.print_exc()
        mpi4pytorch.abort(comm)  # never leave the other ranks waiting
        return 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
