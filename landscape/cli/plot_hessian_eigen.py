"""Maps of a curvature matrix's extreme eigenvalues over a surface grid, or curvature at one checkpoint.

    mpirun -n 4 python plot_hessian_eigen.py --mpi --cuda --model resnet56 --model_file M \\
        --x=-1:1:21 --y=-1:1:21 --xnorm filter --xignore biasbn --ynorm filter --yignore biasbn --plot
    python plot_hessian_eigen.py --dataset digits --model digits_cnn --model_file M --at_center \\
        [--top_k 5] [--esd] [--out M_hessian.h5]

Grid mode takes plot_surface.py's flags and writes `max_eig`, `min_eig` (and `eig_iters`, the
Hessian-vector products each point took) into the same surface file, with the same resume, MPI
splitting, locking and crash safety; a point whose products are NaN or inf (a diverged point) is
recorded as NaN and never recomputed. --plot draws the |min/max| ratio maps.
--at_center: the top_k largest eigenvalues (with eigenvectors), the smallest eigenvalue, the trace
(Hutchinson, Rademacher probes deflated by the Lanczos basis, with its standard error, stopped at
--trace_rel_se of itself) and, with
--esd, the eigenvalue spectral density (stochastic Lanczos quadrature), printed and stored in
<model_file>_hessian.json (_ggn.json, _ef.json for the other matrices) and, with --out, in an HDF5 file (datasets eigenvalues (K,),
eigenvectors (K, P), trace, esd_grid, esd_density; P counts the covered parameters, flattened in
net.parameters() order).

The matrix (--curvature) is the Hessian (the default), the generalised Gauss-Newton J^T H_out J or
the empirical Fisher of the mean loss over the training set, in eval mode, w.r.t. the trained
parameters of dimension > 1 (as the reference), or those matching --params; --hvp finite_difference
makes its products by central differences. --per_layer adds the top eigenvalue and trace of each
layer's diagonal block (a `per_layer` table in --out, a bar chart with --out). Grid maps also hold
`eig_converged` (1 where Lanczos met --tol within --max_iter); a value that did not converge is
reported with a warning, and in the files. Arithmetic is exact float32 by default (`--precision
fp32`: TF32 off, which on GPUs otherwise adds about 1e-3 relative error to every product); flags
that do nothing here are refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from landscape import api, evaluation
from landscape.cli import options, plot_surface
from landscape.curvature import algorithms
from landscape.curvature import model as curvature
from landscape.errors import UserError, run_cli
from landscape.io import h5
from landscape.parallel import dist
from landscape.parallel import mpi

if TYPE_CHECKING:
    from landscape.grid.job import Result
    from landscape.zoo.data import EvalData

# plot_surface.py flags that change nothing here: refused when given, rather than ignored; except the
# reference's own --ngpu (its plot_hessian_eigen.py took it), which is noted as not applied
NO_EFFECT = ("compile", "points_per_pass", "no_fold_bn", "memory_format", "eval_test", "metrics")
NOTED = ("ngpu",)


def build_parser() -> argparse.ArgumentParser:
    p = options.surface_parser("Compute a curvature matrix's extreme eigenvalues over a grid (or curvature at one "
                               "checkpoint).")
    p.set_defaults(precision="fp32")
    p.maps = "eig"      # grid runs compute eigenvalue maps (options.run_spec)
    a = p.add_argument
    a("--tol", default=algorithms.LANCZOS_TOL, type=float,
      help="Lanczos tolerance: the error estimate of each wanted eigenvalue relative to itself")
    a("--max_iter", default=100, type=int, help="most Hessian-vector products per point (Lanczos steps)")
    a("--at_center", action="store_true", help="only the checkpoint itself: eigenvalues, trace (and --esd)")
    a("--top_k", default=1, type=int, help="--at_center: the number of largest eigenvalues (and eigenvectors)")
    a("--trace_samples", default=100, type=int, help="--at_center: the most Rademacher probes for the trace")
    a("--trace_rel_se", default=0.02, type=float,
      help="--at_center: stop the trace once its standard error is below this fraction of it (0: always "
           "--trace_samples probes)")
    a("--esd", action="store_true", help="--at_center: the eigenvalue spectral density (stochastic Lanczos quadrature)")
    a("--esd_probes", default=1, type=int, help="--esd: random probe vectors")
    a("--esd_steps", default=100, type=int, help="--esd: Lanczos steps per probe")
    a("--per_layer", action="store_true",
      help="--at_center: also the top eigenvalue and trace of each layer's diagonal block (by module, or by the "
           "groups of a --params regex)")
    a("--out", default="", help="--at_center: also write an HDF5 file with the eigenpairs, trace and density")
    a("--hvp_cache", default="auto", help="auto | on | off: keep the first-order graph between Hessian-vector "
                                          "products (auto: when it fits in memory; exact either way)")
    return p


def check_flags(cfg: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    refused = [f"--{f}" for f in NO_EFFECT if options.given(cfg, parser, f)]
    cfg.notes = [f"note: --{flag} is not applied: the curvature runs on one device per rank" for flag in NOTED
                 if options.given(cfg, parser, flag)]   # printed once, by rank 0 (run)
    if refused:
        raise UserError(f"{', '.join(refused)} {'has' if len(refused) == 1 else 'have'} no effect on Hessian "
                        "eigenvalues; drop it")
    if cfg.bn_recalibrate:
        raise UserError("--bn_recalibrate is for loss maps: the Hessian is taken with the BatchNorm statistics the "
                        "point has; drop it")
    if cfg.trace_samples < 2 or cfg.top_k < 1:
        raise UserError("--trace_samples must be >= 2 and --top_k >= 1")
    if cfg.top_k > cfg.max_iter:
        raise UserError(f"--top_k {cfg.top_k} exceeds --max_iter {cfg.max_iter}: Lanczos finds at most --max_iter "
                        "eigenvalues")
    if not cfg.trace_rel_se >= 0:
        raise UserError(f"--trace_rel_se {cfg.trace_rel_se} must be >= 0")
    if cfg.esd_probes < 1 or cfg.esd_steps < 2:
        raise UserError("--esd_probes must be >= 1 and --esd_steps >= 2")
    if cfg.hvp_cache not in ("auto", "on", "off"):
        raise UserError(f"--hvp_cache {cfg.hvp_cache!r} must be auto, on or off")
    if cfg.out and not cfg.at_center:
        raise UserError("--out is for --at_center (grid runs write the surface file)")
    at_center_only = [f for f in ("top_k", "esd", "out", "trace_rel_se", "per_layer") if options.given(cfg, parser, f)]
    if at_center_only and not cfg.at_center:
        raise UserError(f"--{at_center_only[0]} needs --at_center")


def warn_unconverged(result: Result, cfg: argparse.Namespace) -> None:
    """Rank 0, after a map: one warning line if some points stopped at --max_iter."""
    conv = result.values.get("eig_converged")
    if conv is None:
        return
    bad = int((conv == 0).sum())
    if bad:
        print(f"warning: Lanczos did not converge at {bad} of {conv.size} points within --max_iter {cfg.max_iter} "
              "(eig_converged = 0 there): those eigenvalues are estimates; raise --max_iter", file=sys.stderr)


def plot_eigs(cfg: argparse.Namespace, surf_file: str, dir_file: str) -> None:
    from landscape.plots import plot_1d
    from landscape.plots import plot_2d
    if cfg.y is not None:
        plot_2d.plot_2d_eig_ratio(surf_file, "min_eig", "max_eig", cfg.show, fmt=cfg.format)
    else:
        plot_1d.plot_1d_eig_ratio(surf_file, cfg.xmin, cfg.xmax, "min_eig", "max_eig", show=cfg.show, fmt=cfg.format)


def at_center(cfg: argparse.Namespace, comm: Any, rank: int, nproc: int) -> int:
    """Curvature of one checkpoint: printed, in <model_file>_hessian.json and (--out) an HDF5 file.
    Every rank takes part: groups of --ranks_per_point ranks (default: all) share each product."""
    device, _ = mpi.agree(comm, lambda: mpi.pick_device(cfg.cuda, 1, comm))
    torch.set_num_threads(cfg.threads or mpi.default_threads(comm))
    k = cfg.ranks_per_point or nproc
    mpi.agree(comm, lambda: dist.check_ranks_per_point(k, nproc))
    net, data = mpi.agree(comm, lambda: plot_surface.load_model_and_data(cfg))
    plot_surface.warn_no_model_file(cfg, rank)
    path = f"{checkpoint_name(cfg)}_{cfg.curvature}.json"     # _hessian.json as the reference; _ggn.json, _ef.json

    def loss_and_outputs():
        for out in (path, cfg.out) if rank == 0 else ():
            if out:
                h5.check_writable(out)
        return evaluation.resolve_loss(cfg.loss_name)
    criterion, _ = mpi.agree(comm, loss_and_outputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", curvature.CurvatureWarning)
        r = api.hessian(net, data.split("train"), criterion, curvature=cfg.curvature, hvp=cfg.hvp, top_k=cfg.top_k,
                        vectors=bool(cfg.out), trace_samples=cfg.trace_samples,
                        trace_rel_se=cfg.trace_rel_se or None, esd=cfg.esd, esd_probes=cfg.esd_probes,
                        esd_steps=cfg.esd_steps, per_layer=cfg.per_layer, params=cfg.params, device=device,
                        batch_size=cfg.batch_size, precision=cfg.precision, tol=cfg.tol, max_iter=cfg.max_iter,
                        seed=cfg.seed, cache={"on": True, "off": False}.get(cfg.hvp_cache, "auto"), comm=comm,
                        ranks_per_point=k, data_in_memory=cfg.data_in_memory)
    if rank != 0:
        return 0
    result = summary(cfg, data, r, nproc, k)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    if cfg.out:
        write_hessian_file(cfg.out, r, result)
    tops = ", ".join(f"{v:.5g}" for v in r.eigenvalues)
    name = {"hessian": "", "ggn": " (GGN)", "ef": " (empirical Fisher)"}[cfg.curvature]
    print(f"{checkpoint_name(cfg)}{name}: top eigenvalue{'s' if cfg.top_k > 1 else ''} {tops}, smallest eigenvalue "
          f"{r.min_eig:.5g} ({r.lanczos_products} products{'' if r.converged else ', NOT converged'}); trace "
          f"{r.trace:.5g} +- {r.trace_stderr:.2g} ({r.trace_samples} samples); {r.seconds:.1f} s on {nproc} "
          f"rank(s), {k} per point; written to {path}{' and ' + cfg.out if cfg.out else ''}")
    for layer in r.per_layer or []:
        print(f"  {layer.name}: {layer.parameters} parameters, top eigenvalue {layer.top_eig:.5g}"
              f"{'' if layer.converged else ' (not converged)'}, trace {layer.trace:.5g} +- {layer.trace_stderr:.2g}")
    for w in caught:
        if issubclass(w.category, curvature.CurvatureWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:                                         # anyone else's: as Python would have shown it
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if cfg.out and (cfg.esd or cfg.per_layer):
        from landscape.plots import plot_1d
        if cfg.esd:
            plot_1d.plot_esd(cfg.out, show=cfg.show, fmt=cfg.format)
        if cfg.per_layer:
            plot_1d.plot_per_layer(cfg.out, show=cfg.show, fmt=cfg.format)
    return 0


def checkpoint_name(cfg: argparse.Namespace) -> str:
    """What the curvature's files are named after: --model_file, or without one the seeded initialisation
    (<model>_init_seed=<seed>, in the working directory)."""
    if cfg.model_file:
        return cfg.model_file
    return os.path.basename(cfg.model).replace(":", "-").replace(".py", "") + f"_init_seed={cfg.seed}"


def summary(cfg: argparse.Namespace, data: EvalData, r: api.HessianResult, nproc: int = 1,
            k: int = 1) -> dict[str, Any]:
    """The numbers of the JSON file (and the HDF5 file's attributes): what was computed, and how."""
    out = {"model_file": cfg.model_file, "model": cfg.model, "dataset": data.name, "train_size": r.examples,
           "curvature": cfg.curvature, "hvp": cfg.hvp, "parameters": r.parameters, "params": cfg.params,
           "max_eig": float(r.eigenvalues[0]), "eigenvalues": [float(v) for v in r.eigenvalues],
           "min_eig": r.min_eig, "lanczos_products": r.lanczos_products, "converged": bool(r.converged),
           "tol": cfg.tol, "max_iter": cfg.max_iter, "trace": r.trace, "trace_stderr": r.trace_stderr,
           "trace_samples": r.trace_samples, "trace_converged": bool(r.trace_converged),
           "precision": cfg.precision, "seconds": r.seconds, "products": r.products,
           "ranks": nproc, "ranks_per_point": k, "data_in_memory": r.data_in_memory, "tool": h5.tool_version(),
           "landscape_version": h5.__version__}
    if r.per_layer is not None:
        out["per_layer"] = [{"layer": lay.name, "parameters": lay.parameters, "top_eig": lay.top_eig,
                             "trace": lay.trace, "trace_stderr": lay.trace_stderr,
                             "lanczos_products": lay.lanczos_products, "converged": bool(lay.converged)}
                            for lay in r.per_layer]
    return out


def write_hessian_file(path: str, r: api.HessianResult, summary: dict[str, Any]) -> None:
    def write(f):
        f["eigenvalues"] = np.asarray(r.eigenvalues, dtype=np.float64)
        if r.eigenvectors is not None:
            f["eigenvectors"] = np.asarray(r.eigenvectors, dtype=np.float32)
        f["trace"] = r.trace
        f["trace_stderr"] = r.trace_stderr
        f["min_eig"] = r.min_eig
        if r.esd_grid is not None:
            f["esd_grid"] = r.esd_grid
            f["esd_density"] = r.esd_density
        if r.per_layer is not None:
            f["per_layer"] = h5.per_layer_table(r.per_layer)
        h5.set_attrs(f, {k: json.dumps(v) if isinstance(v, (list, bool)) else v for k, v in summary.items()
                         if v is not None and k != "per_layer"})
        f.attrs["param_names"] = json.dumps(r.param_names)
        f.attrs["tool"] = h5.tool_version()
    h5.atomic_write(path, write)


def run(cfg: argparse.Namespace, comm: Any, rank: int, nproc: int) -> int:
    for line in getattr(cfg, "notes", []) if rank == 0 else ():
        print(line, file=sys.stderr, flush=True)
    cfg.notes = []      # (printed once: plot_surface.run prints the notes it is given)
    if cfg.at_center:
        return at_center(cfg, comm, rank, nproc)
    return plot_surface.run(cfg, comm, rank, nproc, plot=plot_eigs,
                            after=lambda result: warn_unconverged(result, cfg))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    cfg = plot_surface.parse_config(argv, parser)
    check_flags(cfg, parser)
    return plot_surface.run_main(cfg, run)


if __name__ == "__main__":
    sys.exit(run_cli(main))
