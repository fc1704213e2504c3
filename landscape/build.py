"""The one builder of grid runs: a checked RunSpec and what its front end loaded -> a GridJob.

    flags (cli/options.run_spec) or API arguments (api.py)
        -> RunSpec (spec.py: axes, DirectionSpec, EvaluationSpec, CurvatureSpec, ParallelSpec, FileSpec), checked once
        -> Sources (the model, the data, the loss, and how the front end records them)
        -> build_grid_job: the data shared over the ranks (evaluation.batches), what each point computes
           (loss maps: evaluation; eigenvalue maps: curvature.model), the surface file's record (io.provenance)
        -> grid.job.run_job: the direction and surface files on rank 0, the points on every rank

plot_surface.py, plot_hessian_eigen.py, landscape.surface, landscape.interpolation, landscape.eigen_surface
and landscape.path all build their jobs here; landscape.hessian and --at_center build their operator
with curvature.model.operator from the same CurvatureSpec.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
import torch.nn as nn

from landscape import evaluation
from landscape.curvature import model as curvature_model
from landscape.evaluation.batches import HostSet, prepare_sets
from landscape.grid.job import GridJob
from landscape.io import provenance
from landscape.parallel import mpi
from landscape.parallel.dist import PointGroup
from landscape.spec import RunSpec, check_recalibration

if TYPE_CHECKING:
    import torch

    from landscape.grid.job import Compute, Mover

Named = list  # [(name, HostSet)]: this rank's sets, the training set first


@dataclass
class Sources:
    """What a front end loaded for a run, and how it records it.

    net: the model at the origin (the tool's own copy, CPU, eval mode); data: [(name, data)], the
    training set first (None: no such set); statistics(sets) -> the Statistics a point computes,
    checked on the data; inputs(sets, stats) -> the inputs that make its numbers (io/provenance keys:
    model, checkpoints, data, loss), recorded in the surface file and, where they define directions,
    in the direction file; record(inputs, sets) -> the surface file's record of them (with the command,
    seed, ...); metrics_record: what the record names the metrics by (None: their names);
    model2 / model3 / build_model: () -> a model (target directions; the reference's seeded draws);
    hessian_data: () -> the training set as tensors, for hessian directions; explicit: direction
    tensors given by the caller; path: the checkpoints' direction spaces of a path; model_hash: the
    origin's fingerprint, as the direction file records it."""
    net: nn.Module
    data: list
    statistics: Callable[[Named], evaluation.Statistics]
    inputs: Callable[[Named, evaluation.Statistics], dict]
    record: Callable[[dict, Named], dict]
    metrics_record: Optional[str] = None
    net_name: str = ""
    model_hash: Callable[[dict], str] = lambda inputs: ""
    convert: Optional[Callable] = None
    model2: Optional[Callable[[], nn.Module]] = None
    model3: Optional[Callable[[], nn.Module]] = None
    build_model: Optional[Callable[[], nn.Module]] = None
    hessian_data: Optional[Callable[[], tuple]] = None
    explicit: Optional[list] = None
    path: Optional[list] = None
    compare: Any = True                 # what a named direction file must agree with (grid.job.GridJob.compare)
    gpu_ids: tuple = ()


def prepare(src: Sources, run: RunSpec, comm: Any, group: PointGroup,
            device: Union[str, torch.device]) -> tuple[Named, str]:
    """This rank's share of every set, and the path taken ('yes': kept on the device, 'no': streamed).
    Collective; see evaluation/batches.py."""
    named = [(n, d) for n, d in src.data if d is not None]
    ranks_on_node = 1 if comm is None else mpi.local_size(comm)
    sets, in_memory = prepare_sets(named, comm, group, device, run.parallel.data_in_memory,
                                   run.evaluation.batch_size, src.convert, ranks_on_node)
    return [(n, hs) for (n, _), hs in zip(named, sets)], in_memory


def check_data(run: RunSpec, net: nn.Module, group: PointGroup, in_memory: str, train: HostSet,
               model_name: str) -> None:
    """The rules that need the model and the data's path: recalibration needs BatchNorm and the whole
    training set (at least 2 examples) in memory on one rank per point."""
    if run.evaluation.bn_recalibrate:
        check_recalibration(run.front, evaluation.has_batchnorm(net), group.size, in_memory, model_name)
        evaluation.recalibration_batches(train.total, 1)


def point_compute(run: RunSpec, net: nn.Module, sets: Named, stats: evaluation.Statistics,
                  device: Union[str, torch.device], group: Optional[PointGroup], gpu_ids: tuple = (),
                  say: Callable = print, metrics: Optional[str] = None
                  ) -> tuple[list[str], list[str], Callable[[Mover], Compute], dict[str, Any]]:
    """(keys, keys whose sentinel marks a missing point, make_compute, what the values depend on) of the
    run's maps: loss maps (evaluation), or the curvature's extreme eigenvalues (curvature.model)."""
    e = run.evaluation
    if run.maps == "eig":
        c = run.curvature
        train = sets[0][1]
        curvature_model.check_curvature_loss(c.matrix, stats.criterion, stats.loss_name, net, *train.sample)
        curvature_model.covered_params(net, c.params)
        make = curvature_model.eig_job_compute(net, train, stats.criterion, device, e.batch_size, e.precision, c,
                                               stats.loss_name, group)
        return (curvature_model.EIG_KEYS, ["max_eig", "min_eig"], make,
                curvature_model.eig_inputs(e.precision, c.tol, c.max_iter, c.matrix, c.hvp))
    keys = evaluation.loss_keys([n for n, _ in sets], stats)
    make = evaluation.loss_job_compute(net, sets, stats, device, gpu_ids, e.batch_size, e.precision,
                                       e.points_per_pass, e.fold_bn, e.memory_format, e.compile, say, group,
                                       bn_recalibrate=e.bn_recalibrate)
    return keys, keys, make, evaluation.loss_inputs(e.precision, e.batch_size, e.bn_recalibrate,
                                                          ",".join(stats.metrics) if metrics is None else metrics,
                                                          device)


def hessian_directions(run: RunSpec, src: Sources, stats: evaluation.Statistics,
                       device: Union[str, torch.device]) -> Optional[Callable]:
    """() -> the curvature's top eigenvectors, for hessian directions (computed on rank 0 when the
    direction file is made); None where no direction is a hessian one."""
    if "hessian" not in run.directions.kinds():
        return None
    whole = src.hessian_data()
    matrix = dataclasses.replace(run.curvature, params=run.directions.params)
    return lambda: curvature_model.top_eigenvectors(src.net, whole, stats.criterion, device, matrix,
                                                    run.evaluation.batch_size, loss_name=stats.loss_name)


def build_grid_job(run: RunSpec, src: Sources, comm: Any, group: PointGroup, device: Union[str, torch.device],
                   notes: Optional[dict] = None, say: Callable = print, compute_group: Any = "same",
                   model_name: str = "the model") -> GridJob:
    """The GridJob of a checked run. Collective over comm: every rank reads its share of the data, and
    a refusal (bad data, a loss that does not fit, ...) reaches every rank before anything is written.
    `compute_group`: the group the points' products and sums use ('same': `group`; None for a dry run,
    which times rank 0's shard alone); `notes`: recorded in the surface file for information."""
    sets, in_memory = prepare(src, run, comm, group, device)
    mpi.agree(comm, lambda: check_data(run, src.net, group, in_memory, sets[0][1], model_name))
    stats = mpi.agree(comm, lambda: src.statistics(sets))
    keys, missing, make, computed = point_compute(run, src.net, sets, stats, device,
                                                  group if compute_group == "same" else compute_group, src.gpu_ids,
                                                  say, src.metrics_record)

    def job():
        inputs = src.inputs(sets, stats)
        record = src.record(inputs, sets)
        record.update(computed, data_in_memory=in_memory, ranks_per_point=group.size, **(notes or {}))
        f = run.files
        return GridJob(src.net, np.asarray(run.axes.x), None if run.axes.y is None else np.asarray(run.axes.y),
                       keys, make, missing, spec=run.directions, explicit=src.explicit, path=src.path,
                       path_type=run.path_type or "polychain", model2=src.model2, model3=src.model3,
                       build_model=src.build_model, hessian=hessian_directions(run, src, stats, device),
                       dir_file=f.dir_file, dir_given=f.dir_given, compare=src.compare, surf_file=f.out,
                       prov=provenance.record("surface", **record), dir_inputs=inputs, net_name=src.net_name,
                       model_hash=src.model_hash(inputs), save_directions=f.save_directions, device=device,
                       flush_seconds=f.flush_seconds, progress=run.progress, quiet=not run.progress,
                       notes=[line for line in [evaluation.bf16_warning(run.evaluation.precision, device)] if line])
    return mpi.agree(comm, job)


def default_dir_file(out: str) -> str:
    """The API's direction file beside its surface file: <out without .h5>_directions.h5."""
    return os.path.splitext(out)[0] + "_directions.h5" if out else ""
