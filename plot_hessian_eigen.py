"""Maps of the Hessian's extreme eigenvalues over a surface grid, or sharpness at one checkpoint.

    mpirun -n 4 python plot_hessian_eigen.py --mpi --cuda --model resnet56 --model_file M \
        --x=-1:1:21 --y=-1:1:21 --xnorm filter --xignore biasbn --ynorm filter --yignore biasbn --plot
    python plot_hessian_eigen.py --dataset digits --model digits_cnn --model_file M --at_center

Grid mode takes plot_surface.py's flags and writes `max_eig`, `min_eig` (and `eig_iters`, the
Hessian-vector products each point took) into the same surface file, with the same resume, MPI
splitting, locking and crash safety; --plot draws the |min/max| ratio maps. --at_center prints
and stores the top eigenvalue, the Hessian trace (Hutchinson, Rademacher vectors, with its
standard error) and the smallest eigenvalue of the checkpoint itself, in <model_file>_hessian.json.
"""
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import hess_vec_prod
import mpi4pytorch
import net_plotter
import plot_surface
from errors import UserError, run_cli


@dataclass
class HessianConfig(plot_surface.SurfaceConfig):
    tol: float = 1e-3
    max_iter: int = 100
    at_center: bool = False
    trace_samples: int = 100


def build_parser():
    p = plot_surface.build_parser()
    p.description = "Compute the Hessian's extreme eigenvalues over a grid (or at one checkpoint)."
    p.add_argument("--tol", default=1e-3, type=float, help="Lanczos tolerance, relative to the spectral radius")
    p.add_argument("--max_iter", default=100, type=int, help="most Hessian-vector products per point")
    p.add_argument("--at_center", action="store_true",
                   help="only the checkpoint itself: top eigenvalue, trace and smallest eigenvalue")
    p.add_argument("--trace_samples", default=100, type=int, help="Rademacher vectors for the trace (--at_center)")
    return p


def make_eig_compute(cfg, net, directions, data, device, gpu_ids):
    """Flat grid indices -> (max_eig, min_eig, products) at each point."""
    net.to(device)
    setter = net_plotter.PointSetter(net, directions, cfg.dir_type, device)
    x, y = data.train_x.to(device), data.train_y.to(device)
    hvp = hess_vec_prod.make_hvp(net, x, y, cfg.loss_name, cfg.batch_size)
    coords = plot_surface.grid_coords(cfg)

    def compute(indices):
        out = np.empty((len(indices), 3))
        for i, c in enumerate(coords[indices]):
            setter.set(c)
            out[i] = hess_vec_prod.lanczos_extremes(hvp, hvp.dim, hvp.device, cfg.tol, cfg.max_iter, cfg.seed)
        return out
    return compute


def plot_eigs(cfg, surf_file, dir_file):
    import plot_1D
    import plot_2D
    if cfg.y is not None:
        plot_2D.plot_2d_eig_ratio(surf_file, "min_eig", "max_eig", cfg.show, fmt=cfg.format)
    else:
        plot_1D.plot_1d_eig_ratio(surf_file, cfg.xmin, cfg.xmax, "min_eig", "max_eig", show=cfg.show, fmt=cfg.format)


def eig_job(cfg):
    return plot_surface.Job(["max_eig", "min_eig", "eig_iters"], ["max_eig", "min_eig"], make_eig_compute, plot_eigs)


def sharpness(cfg):
    """Top eigenvalue, trace (mean, standard error) and smallest eigenvalue of one checkpoint."""
    device, _ = plot_surface.pick_device(cfg, None)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    net, data = plot_surface.load_inputs(cfg)
    net.to(device)
    x, y = data.train_x.to(device), data.train_y.to(device)
    hvp = hess_vec_prod.make_hvp(net, x, y, cfg.loss_name, cfg.batch_size)
    t0 = time.perf_counter()
    top, bottom, iters = hess_vec_prod.lanczos_extremes(hvp, hvp.dim, device, cfg.tol, cfg.max_iter, cfg.seed)
    trace, se = hess_vec_prod.hutchinson_trace(hvp, hvp.dim, device, cfg.trace_samples, cfg.seed)
    result = {"model_file": cfg.model_file, "model": cfg.model, "dataset": data.name, "train_size": len(y),
              "parameters": hvp.dim, "max_eig": top, "min_eig": bottom, "lanczos_products": iters,
              "trace": trace, "trace_stderr": se, "trace_samples": cfg.trace_samples,
              "seconds": time.perf_counter() - t0}
    path = cfg.model_file + "_hessian.json"
    plot_surface.check_writable(path)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{cfg.model_file}: top eigenvalue {top:.5g}, smallest eigenvalue {bottom:.5g} ({iters} products); "
          f"trace {trace:.5g} +- {se:.2g} ({cfg.trace_samples} samples); written to {path}")
    return result


def main(argv=None):
    parser = build_parser()
    cfg = plot_surface.parse_config(argv, parser, HessianConfig)
    if cfg.tol <= 0 or cfg.max_iter < 1 or cfg.trace_samples < 2:
        raise UserError("--tol must be > 0, --max_iter >= 1 and --trace_samples >= 2")
    if cfg.precision == "bf16":
        raise UserError("--precision bf16 is too coarse for Hessian-vector products; use default, tf32 or fp32")
    if cfg.at_center:
        comm, rank, _ = mpi4pytorch.setup_mpi(cfg.mpi)
        if rank == 0:
            sharpness(cfg)
        return 0
    return plot_surface.main(argv, parser, HessianConfig, eig_job)


if __name__ == "__main__":
    sys.exit(run_cli(main))
