"""1D plots of a surface file: loss and accuracy along x, the reference's outputs.

    python plot_1D.py --surf_file S.h5 [--log] [--xmin -1 --xmax 1] [--loss_max 5] [--format png]
    python plot_1D.py --prefix P --idx_min 1 --idx_max 10     (overlay P_1.h5 .. P_10.h5)

Writes <surf>_1d_loss_acc[_log], <surf>_1d_train_loss[_log], <surf>_1d_train_err (and, when the
file has min_eig/max_eig, <surf>_1d_eig_abs_ratio and <surf>_1d_eig_ratio). Points not computed are
gaps in the curves, never zeros or -1.
"""
import sys

import numpy as np

from errors import ArgParser, UserError, run_cli
from plot_util import computed, eig_ratio, load_surface, new_figure, output_name, save_figure, show_all


def x_limits(x, xmin, xmax):
    """The reference's convention: the defaults -1 and 1 mean 'the data's own range'."""
    return (xmin if xmin != -1.0 else float(np.min(x))), (xmax if xmax != 1.0 else float(np.max(x)))


def loss_limits(loss, loss_max, log):
    if not log:
        return 0, loss_max
    positive = loss[np.isfinite(loss) & (loss > 0)]
    return (float(positive.min()) * 0.8 if positive.size else 1e-3), loss_max


def draw_loss_acc(ax1, ax2, x, surf, log):
    """Loss (blue, left axis) and accuracy (red, right axis); test curves dashed when present."""
    plot = ax1.semilogy if log else ax1.plot
    plot(x, computed(surf, "train_loss"), "b-", label="Training loss", linewidth=1)
    ax2.plot(x, computed(surf, "train_acc"), "r-", label="Training accuracy", linewidth=1)
    if "test_loss" in surf.values:
        plot(x, computed(surf, "test_loss"), "b--", label="Test loss", linewidth=1)
    if "test_acc" in surf.values:
        ax2.plot(x, computed(surf, "test_acc"), "r--", label="Test accuracy", linewidth=1)


def style_loss_acc(ax1, ax2, xlim, ylim):
    ax1.set_xlim(*xlim)
    ax1.set_ylabel("Loss", color="b", fontsize="xx-large")
    ax1.tick_params("y", colors="b", labelsize="x-large")
    ax1.tick_params("x", labelsize="x-large")
    ax1.set_ylim(*ylim)
    ax2.set_ylabel("Accuracy", color="r", fontsize="xx-large")
    ax2.tick_params("y", colors="r", labelsize="x-large")
    ax2.set_ylim(0, 100)


def check_1d(surf):
    if surf.y is not None:
        raise UserError(f"'{surf.path}' is a 2D surface; use plot_2D.py")
    if "train_loss" not in surf.values:
        raise UserError(f"'{surf.path}' has no train_loss")


def plot_1d_loss_err(surf_file, xmin=-1.0, xmax=1.0, loss_max=5, log=False, show=False, fmt="pdf"):
    """The reference's three 1D figures, plus the eigenvalue ratio when the file has eigenvalues."""
    surf = load_surface(surf_file)
    check_1d(surf)
    x, loss = surf.x, computed(surf, "train_loss")
    xlim, ylim, tag = x_limits(x, xmin, xmax), loss_limits(loss, loss_max, log), "_log" if log else ""
    out = []

    fig = new_figure(show)
    ax1 = fig.add_subplot()
    ax2 = ax1.twinx()
    draw_loss_acc(ax1, ax2, x, surf, log)
    style_loss_acc(ax1, ax2, xlim, ylim)
    out.append(save_figure(fig, output_name(surf_file, "_1d_loss_acc" + tag, fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    (ax.semilogy if log else ax.plot)(x, loss)
    ax.set(xlim=xlim, ylim=ylim)
    ax.set_ylabel("Training Loss", fontsize="xx-large")
    out.append(save_figure(fig, output_name(surf_file, "_1d_train_loss" + tag, fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    ax.plot(x, computed(surf, "train_err"))
    ax.set(xlim=xlim, ylim=(0, 100))
    ax.set_ylabel("Training Error", fontsize="xx-large")
    out.append(save_figure(fig, output_name(surf_file, "_1d_train_err", fmt), fmt))

    if "min_eig" in surf.values and "max_eig" in surf.values:
        out += plot_1d_eig_ratio(surf_file, xmin, xmax, show=False, fmt=fmt)
    missing = int(np.isnan(loss).sum())
    if missing:
        print(f"note: {missing} of {loss.size} points are not computed (or not finite) and show as gaps")
    show_all(show)
    return out


def plot_1d_loss_err_repeat(prefix, idx_min=1, idx_max=10, xmin=-1.0, xmax=1.0, loss_max=5, show=False, fmt="pdf"):
    """Overlay the curves of <prefix>_<idx>.h5 for idx_min..idx_max (repeated random directions)."""
    fig = new_figure(show)
    ax1 = fig.add_subplot()
    ax2 = ax1.twinx()
    xs = []
    for idx in range(idx_min, idx_max + 1):
        surf = load_surface(f"{prefix}_{idx}.h5")
        check_1d(surf)
        draw_loss_acc(ax1, ax2, surf.x, surf, False)
        xs.append(surf.x)
    if not xs:
        raise UserError(f"--idx_min {idx_min} > --idx_max {idx_max}: no files to overlay")
    allx = np.concatenate(xs)
    style_loss_acc(ax1, ax2, x_limits(allx, xmin, xmax), (0, loss_max))
    path = save_figure(fig, f"{prefix}_1d_loss_err_repeat.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_1d_eig_ratio(surf_file, xmin=-1.0, xmax=1.0, val_1="min_eig", val_2="max_eig", ymax=1, show=False, fmt="pdf"):
    """|min_eig / max_eig| and min_eig / max_eig along x: how non-convex the surface is there."""
    surf = load_surface(surf_file)
    abs_ratio, ratio = eig_ratio(surf, val_1, val_2)
    out = []
    for values, suffix, lim in ((abs_ratio, "_1d_eig_abs_ratio", (0, ymax)), (ratio, "_1d_eig_ratio", (-ymax, ymax))):
        fig = new_figure(show)
        ax = fig.add_subplot()
        ax.plot(surf.x, values)
        ax.set(xlim=x_limits(surf.x, xmin, xmax), ylim=lim)
        ax.set_ylabel(f"{'|' if 'abs' in suffix else ''}{val_1} / {val_2}{'|' if 'abs' in suffix else ''}",
                      fontsize="x-large")
        out.append(save_figure(fig, output_name(surf_file, suffix, fmt), fmt))
    return out


def build_parser():
    p = ArgParser.make("Plot 1D loss and error curves from a surface file.")
    p.add_argument("--surf_file", "-f", default="", help="the .h5 surface file")
    p.add_argument("--log", action="store_true", help="log scale for the loss")
    p.add_argument("--xmin", default=-1, type=float, help="x axis minimum (-1: the data's)")
    p.add_argument("--xmax", default=1, type=float, help="x axis maximum (1: the data's)")
    p.add_argument("--loss_max", default=5, type=float, help="loss axis maximum")
    p.add_argument("--show", action="store_true", help="show the figures")
    p.add_argument("--prefix", default="", help="overlay <prefix>_<idx>.h5 files")
    p.add_argument("--idx_min", default=1, type=int, help="first idx to overlay")
    p.add_argument("--idx_max", default=10, type=int, help="last idx to overlay")
    p.add_argument("--format", default="pdf", choices=["pdf", "png", "svg"], help="figure format")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.prefix:
        plot_1d_loss_err_repeat(a.prefix, a.idx_min, a.idx_max, a.xmin, a.xmax, a.loss_max, a.show, a.format)
    elif a.surf_file:
        plot_1d_loss_err(a.surf_file, a.xmin, a.xmax, a.loss_max, a.log, a.show, a.format)
    else:
        raise UserError("give --surf_file (or --prefix for repeated runs)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
