"""Compute a loss surface around a trained model and (with --plot) draw it: the command line over landscape.py.

    python plot_surface.py --dataset digits --model digits_cnn --model_file M/model_20.t7 \\
        --x=-1:1:51 --y=-1:1:51 --dir_type weights --xnorm filter --xignore biasbn \\
        --ynorm filter --yignore biasbn --plot
    mpirun -n 4 python plot_surface.py --mpi --cuda --model resnet56 ...   (the reference's command lines)
    python plot_surface.py ... --path_files A.t7 B.t7 C.t7 --path_type bezier --x=0:1:41   (a path)

Flow: parse the flags into a checked RunSpec (options.py, spec.py) -> every rank loads the model and
the data (build.Sources: what they are and how the files record them) -> build.build_grid_job: each
rank's share of the data, what each point computes, the GridJob -> grid.job.run_job: rank 0 checks or
creates the direction file and the surface file under the surface's lock, every rank computes the
missing points, rank 0 writes them -> rank 0 plots.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from landscape import build, curves, errors, evaluation, user_code
from landscape import directions as dirs
from landscape.cli import options
from landscape.errors import UserError, run_cli
from landscape.grid import job as grid_job
from landscape.io import provenance
from landscape.parallel import dist
from landscape.parallel import mpi
from landscape.zoo import data as zoo_data
from landscape.zoo import loader as zoo_loader

if TYPE_CHECKING:
    from landscape.evaluation.batches import HostSet


def build_parser() -> argparse.ArgumentParser:
    return options.surface_parser()


def parse_config(argv: Optional[Sequence[str]] = None,
                 parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    return options.parse(argv, parser or build_parser())


name_surface_file = options.name_surface_file
name_path_stem = options.name_path_stem


def grid(cfg: argparse.Namespace) -> tuple[np.ndarray, Optional[np.ndarray]]:
    x = np.linspace(cfg.xmin, cfg.xmax, num=cfg.xnum)
    y = None if cfg.y is None else np.linspace(cfg.ymin, cfg.ymax, num=cfg.ynum)
    return x, y


# ----------------------------------------------------------------------------- inputs
def load_model_and_data(cfg: argparse.Namespace) -> tuple[nn.Module, zoo_data.EvalData]:
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
    net = zoo_loader.load(cfg.dataset, cfg.model, cfg.model_file)
    data = zoo_data.load_data(cfg.dataset, cfg.datapath, cfg.raw_data, cfg.data_split, cfg.split_idx,
                              cfg.trainloader, cfg.testloader, cfg.allow_pickle, cfg.download)
    return net, data


def warn_no_model_file(cfg: argparse.Namespace, rank: int) -> None:
    """Rank 0: one line saying a run without --model_file takes the seeded initialisation (load_model_and_data)."""
    if not cfg.model_file and rank == 0:
        print(f"warning: no --model_file: model '{cfg.model}' at its initialisation after "
              f"torch.manual_seed({cfg.seed}), as the reference takes it", file=sys.stderr, flush=True)


def sources(cfg: argparse.Namespace, net: nn.Module, data: zoo_data.EvalData,
            gpu_ids: Sequence[int] = ()) -> build.Sources:
    """What this command line runs on (build.Sources): the model, its data sets (--eval_test: the test
    set too), the loss and metrics, the checkpoints of target directions or a path, and how the files
    record them (the reference's keys: --model_file and its hash, --dataset, ...)."""
    load = lambda path: zoo_loader.load(cfg.dataset, cfg.model, path)
    named = [("train", data.split("train"))] + ([("test", data.split("test"))] if cfg.eval_test else [])

    def statistics(sets):
        sample = sets[0][1].sample
        targets = data.train_y if data.train_y is not None else sample[1]
        return evaluation.make_statistics(net, sample[0], targets, cfg.loss_name, cfg.metrics or None,
                                          model_name=f"model '{cfg.model}'", data_name=data.name)

    def hessian_data():
        if data.train_x is None:
            raise UserError(f"--xdir/--ydir hessian needs the training data as tensors; dataset '{cfg.dataset}' "
                            "gives a Dataset, DataLoader or iterable")
        return data.train_x, data.train_y

    common = dict(net_name=cfg.model, model_hash=lambda inputs: inputs["model_file_sha256"],
                  convert=zoo_data.normalize_dtypes, metrics_record=cfg.metrics, gpu_ids=gpu_ids)
    args = (net, named, statistics, lambda sets, stats: data_inputs(cfg, data, stats, [hs for _, hs in sets]),
            lambda inputs, sets: surface_record(cfg, inputs))
    if cfg.path_files:
        return build.Sources(*args, path=[dirs.direction_space(load(f), cfg.dir_type) for f in cfg.path_files],
                             **common)
    return build.Sources(*args, model2=lambda: load(cfg.model_file2), model3=lambda: load(cfg.model_file3),
                         build_model=lambda: zoo_loader.build(cfg.model), hessian_data=hessian_data,
                         compare=direction_compare(cfg), **common)


def data_inputs(cfg: argparse.Namespace, data: zoo_data.EvalData, stats: evaluation.Statistics,
                sets: Sequence[HostSet]) -> dict[str, Any]:
    """The model, checkpoints, data and loss this run uses (keys of io/provenance.py's tables). The data's
    hashes are recorded where the data is held as tensors (a stream is named by --dataset and its size)."""
    sha = zoo_loader.file_sha256
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


def surface_record(cfg: argparse.Namespace, inputs: dict[str, Any]) -> dict[str, Any]:
    """The surface file's record of this command line's inputs (build adds what its maps compute)."""
    fields = {k: v for k, v in inputs.items() if k not in ("model_file2", "model_file3")}
    fields.update(command=" ".join(shlex.quote(a) for a in sys.argv), seed=cfg.seed, dir_type=cfg.dir_type,
                  params=cfg.params)
    if cfg.path_files:
        sha = zoo_loader.file_sha256
        fields.update(path_type=cfg.path_type, path_files=" ".join(cfg.path_files),
                      path_sha256=" ".join(sha(f) for f in cfg.path_files))
    return fields


def direction_compare(cfg: argparse.Namespace) -> Union[bool, set[str]]:
    """What a named --dir_file must agree with: the direction flags the user set (True without one: every
    choice that changes the directions). An eigenvalue map's --curvature is the map's matrix, not the
    directions'; it is compared with the surface file instead."""
    if not cfg.dir_file:
        return True
    fields = options.direction_flags_set(cfg, build_parser())
    return fields - {"curvature"} if cfg.run.maps == "eig" else fields


# ----------------------------------------------------------------------------- running and plotting
def plot_results(cfg: argparse.Namespace, surf_file: str, dir_file: str) -> None:
    from landscape.plots import plot_1d
    from landscape.plots import plot_2d
    if cfg.y is not None and cfg.proj_file:
        plot_2d.plot_contour_trajectory(surf_file, dir_file, cfg.proj_file, "train_loss", cfg.vmin, cfg.vmax,
                                        cfg.vlevel, cfg.show, fmt=cfg.format)
    elif cfg.y is not None:
        for name in ["train_loss"] + (["test_loss"] if cfg.eval_test else []):   # (no test set: eval_test off)
            plot_2d.plot_2d_contour(surf_file, name, cfg.vmin, cfg.vmax, cfg.vlevel, cfg.show,
                                    log=cfg.log, fmt=cfg.format)
    else:
        plot_1d.plot_1d_loss_err(surf_file, cfg.xmin, cfg.xmax, cfg.loss_max, cfg.log, cfg.show, fmt=cfg.format)


def run(cfg: argparse.Namespace, comm: Any, rank: int, nproc: int,
        plot: Callable[[argparse.Namespace, str, str], Any] = plot_results,
        after: Optional[Callable[[grid_job.Result], Any]] = None) -> int:
    """Every rank: load, build the job (build.build_grid_job), compute the missing points (rank 0 writes),
    (rank 0) plot. What the points compute is cfg.run.maps (loss maps, or plot_hessian_eigen.py's
    eigenvalue maps). `after(result)`: rank 0, once the points are computed."""
    device, gpu_ids = mpi.agree(comm, lambda: mpi.pick_device(cfg.cuda, cfg.ngpu, comm))
    torch.set_num_threads(cfg.threads or mpi.default_threads(comm))
    k = cfg.ranks_per_point or 1
    mpi.agree(comm, lambda: dist.check_ranks_per_point(k, nproc))
    group = dist.point_groups(comm, k, device, cfg.rendezvous_timeout)
    net, data = mpi.agree(comm, lambda: load_model_and_data(cfg))
    warn_no_model_file(cfg, rank)
    if cfg.eval_test and not data.has("test"):
        if rank == 0:
            print(f"warning: dataset '{data.name}' has no test set: --eval_test computes no test maps",
                  file=sys.stderr, flush=True)
        cfg.eval_test = False
    src = mpi.agree(comm, lambda: sources(cfg, net, data, gpu_ids))
    job = build.build_grid_job(cfg.run, src, comm, group, device, compute_group=None if cfg.dry_run else group,
                               model_name=f"model '{cfg.model}'")
    if cfg.dry_run:
        if rank == 0:
            grid_job.dry_run(job, nproc, k)
        mpi.barrier(comm)
        return 0
    if rank == 0 and cfg.path_files and not cfg.curve_file and not cfg.bn_recalibrate and \
            cfg.dir_type == "weights" and cfg.run.maps == "loss" and evaluation.has_batchnorm(net):
        # (after the build: a path checkpoint that does not fit the model is refused first, with one line)
        print("warning: the model has BatchNorm, and along --path_files only its parameters move: every point "
              "keeps the first checkpoint's running statistics; --bn_recalibrate recomputes them at each point",
              file=sys.stderr, flush=True)
    for line in getattr(cfg, "notes", []) if rank == 0 else ():
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout, flush=True)
    result = grid_job.run_job(job, comm, group)
    if rank == 0:
        cfg.stats = result.stats
        if getattr(cfg, "plane", None) and job.surf_file:
            store_plane_overlay(cfg, net, job)
        for line in curves.path_barriers(job.surf_file) if cfg.path_files else ():
            print(line, flush=True)
        if after is not None:
            after(result)
        if cfg.plot:
            plot(cfg, job.surf_file, job.dir_file)
    mpi.barrier(comm)
    return 0


def store_plane_overlay(cfg: argparse.Namespace, net: Any, job: Any) -> None:
    """--curve_plane: the curve's control points in the plane, kept in the surface file (plot_2D.py draws
    the curve and the straight line from them); printed once."""
    from landscape.io import h5
    plane = cfg.plane
    attrs = curves.plane_overlay(net, plane["files"], plane["kind"], job.dir_file, plane["bend"])
    surf = h5.read_surface(job.surf_file)
    if surf.attrs.get("curve_plane") != attrs["curve_plane"]:
        surf.attrs.update(attrs)
        h5.write_surface(surf)
    pts = json.loads(attrs["curve_plane"])["points"]
    where = ", ".join(f"bend {i} at ({p[0]:.4g}, {p[1]:.4g})" for i, p in enumerate(pts[1:-1], 1))
    print(f"the plane of the curve: end 1 at (0, 0), end 2 at (1, 0), {where}", flush=True)


def check_curvature_flags(cfg: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--hvp changes how hessian directions are computed: a named --dir_file that exists already holds its
    directions (its --curvature is compared with the file's other flags; without hessian directions both
    are refused by the RunSpec)."""
    if cfg.dir_file and os.path.exists(cfg.dir_file) and options.given(cfg, parser, "hvp"):
        raise UserError(f"--hvp changes how hessian directions are computed, but --dir_file '{cfg.dir_file}' "
                        "already holds its directions; drop it")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    cfg = parse_config(argv, parser)
    check_curvature_flags(cfg, parser)
    return run_main(cfg, run)


def run_main(cfg: argparse.Namespace, run_fn: Callable[[argparse.Namespace, Any, int, int], int]) -> int:
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
        mpi.abort(comm)  # never leave the other ranks waiting
        return 1
    dist.leave(comm)
    return rc


if __name__ == "__main__":
    sys.exit(run_cli(main))
