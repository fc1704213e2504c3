"""2D plots of a surface file: contours, filled contours, heat map, 3D surface, trajectories.

    python plot_2D.py --surf_file S.h5 [--surf_name train_loss] [--vmin 0.1 --vmax 10 --vlevel 0.5] [--log]
    python plot_2D.py --surf_file S.h5 --dir_file D.h5 --proj_file P.h5   (trajectory over the contours)
    python plot_2D.py --proj_file P.h5 --dir_file D.h5                    (trajectory alone)
    python plot_2D.py --surf_file S.h5 --html                             (interactive viewer, one file)

Writes <surf>_<name>_2dcontour, _2dcontourf, _2dheat and _3dsurface (matplotlib only). train_err
and test_err are 100 - accuracy. Points not computed are masked. When the levels implied by
--vmin/--vmax/--vlevel miss the data, levels are chosen from the data, and the script says so.
"""
import sys

import numpy as np

import h5_util
from errors import ArgParser, UserError, run_cli
from plot_util import computed, eig_ratio, exists, load_surface, new_figure, output_name, save_figure, show_all

LOG_LEVELS_PER_DECADE = 4


def data_range(Z, what):
    finite = Z[np.isfinite(Z)]
    if finite.size == 0:
        raise UserError(f"{what} has no computed points to plot yet")
    return float(finite.min()), float(finite.max())


def contour_levels(Z, vmin, vmax, vlevel, log=False, what="the surface"):
    """Levels from the flags; if fewer than two fall inside the data's range, levels from the data.

    Linear: vmin, vmin + vlevel, ... < vmax (the reference's np.arange). Log: LOG_LEVELS_PER_DECADE
    levels per decade between vmin and vmax.
    """
    lo, hi = data_range(Z, what)
    if log:
        vmin = max(vmin, 1e-12)
        levels = 10 ** np.arange(np.log10(vmin), np.log10(vmax) + 1e-9, 1.0 / LOG_LEVELS_PER_DECADE)
    else:
        levels = np.arange(vmin, vmax, vlevel) if vlevel > 0 else np.array([])
    if np.count_nonzero((levels > lo) & (levels < hi)) >= 2:
        return levels
    if hi <= lo:  # a flat map: two levels around its one value
        pad = max(abs(lo) * 0.01, 1e-12)
        chosen = np.array([lo - pad, lo + pad])
    elif log and lo > 0:
        chosen = np.geomspace(lo, hi, 12)
    else:
        from matplotlib.ticker import MaxNLocator
        chosen = MaxNLocator(nbins=12).tick_values(lo, hi)
    print(f"note: the contour levels from --vmin {vmin:g} --vmax {vmax:g} --vlevel {vlevel:g} miss the data of "
          f"{what} (range [{lo:.4g}, {hi:.4g}]); using {len(chosen)} levels from the data instead")
    return chosen


def load_map(surf_file, surf_name):
    surf = load_surface(surf_file)
    if surf.y is None:
        raise UserError(f"'{surf_file}' is a 1D surface; use plot_1D.py (or plot_2D.py --html)")
    Z = computed(surf, surf_name)
    X, Y = np.meshgrid(surf.x, surf.y)
    return surf, X, Y, Z


def draw_contours(ax, X, Y, Z, levels, log, labels=True):
    from matplotlib.colors import LogNorm
    norm = LogNorm(levels[0], levels[-1]) if log and levels[0] > 0 and len(levels) > 1 else None
    cs = ax.contour(X, Y, np.ma.masked_invalid(Z), levels=levels, cmap="viridis", norm=norm)
    if labels and cs.levels.size:
        step = max(1, int(np.ceil(len(cs.levels) / 12)))  # label at most about 12 levels, so labels stay legible
        ax.clabel(cs, cs.levels[::step], inline=True, fontsize=8, fmt="%.3g")
    return cs


def plot_2d_contour(surf_file, surf_name="train_loss", vmin=0.1, vmax=10, vlevel=0.5, show=False,
                    log=False, fmt="pdf", zlim=None):
    """The reference's four 2D figures of one value map."""
    import matplotlib
    from matplotlib.colors import LogNorm
    surf, X, Y, Z = load_map(surf_file, surf_name)
    if len(surf.x) < 2 or len(surf.y) < 2:
        raise UserError(f"'{surf_file}' needs at least 2 points on each axis for contours")
    what = f"{surf_name} in {surf_file}"
    levels = contour_levels(Z, vmin, vmax, vlevel, log, what)
    stem = f"_{surf_name}"
    out = []

    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_contours(ax, X, Y, Z, levels, log)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dcontour", fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    norm = LogNorm(levels[0], levels[-1]) if log and levels[0] > 0 and len(levels) > 1 else None
    cf = ax.contourf(X, Y, np.ma.masked_invalid(Z), levels=levels, cmap="viridis", norm=norm, extend="both")
    fig.colorbar(cf, ax=ax)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dcontourf", fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")
    lo, hi = levels[0], levels[-1]
    kwargs = {"norm": LogNorm(lo, hi)} if norm is not None else {"vmin": lo, "vmax": hi}
    mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(Z), cmap=cmap, shading="nearest", **kwargs)
    fig.colorbar(mesh, ax=ax, label=surf_name)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dheat", fmt), fmt))

    out.append(plot_3d_surface(surf_file, surf_name, X, Y, Z, zlim, log, show, fmt))
    if "min_eig" in surf.values and "max_eig" in surf.values and surf_name not in ("min_eig", "max_eig"):
        out += plot_2d_eig_ratio(surf_file, show=False, fmt=fmt)
    missing = int(np.isnan(Z).sum())
    if missing:
        print(f"note: {missing} of {Z.size} points are not computed (or not finite) and are masked")
    show_all(show)
    return out


def plot_3d_surface(surf_file, surf_name, X, Y, Z, zlim, log, show, fmt):
    """A 3D surface on an Axes3D made by add_subplot (the reference's Axes3D(fig) draws nothing now)."""
    from matplotlib import cm
    fig = new_figure(show, figsize=(7, 5.5))
    ax = fig.add_subplot(projection="3d")
    Zp = np.log10(np.clip(Z, 1e-12, None)) if log else Z.copy()
    lo, hi = data_range(Zp, f"{surf_name} in {surf_file}")
    if zlim is not None and zlim > lo:
        top = np.log10(zlim) if log else zlim
        Zp = np.where(Zp > top, np.nan, Zp)  # cut the surface off at zlim (a clipped plateau would hide its shape)
        hi = min(hi, top)
    surf = ax.plot_surface(X, Y, Zp, cmap=cm.coolwarm, linewidth=0, antialiased=False, vmin=lo, vmax=hi)
    ax.set_zlim(lo, hi if hi > lo else lo + max(abs(lo) * 0.01, 1e-12))
    ax.set_zlabel(f"log10 {surf_name}" if log else surf_name)
    fig.colorbar(surf, shrink=0.5, aspect=8, pad=0.1)
    return save_figure(fig, output_name(surf_file, f"_{surf_name}_3dsurface", fmt), fmt)


def pca_labels(ax, dir_file):
    """Axis labels with the variance each principal direction explains (when dir_file has it)."""
    if not exists(dir_file):
        return
    with h5_util.open_h5(dir_file, "direction file") as f:
        if "explained_variance_ratio_" in f:
            r = f["explained_variance_ratio_"][()]
            ax.set_xlabel(f"1st PC: {r[0] * 100:.2f} %", fontsize="xx-large")
            ax.set_ylabel(f"2nd PC: {r[1] * 100:.2f} %", fontsize="xx-large")


def draw_path(ax, xs, ys):
    ax.plot(xs, ys, marker=".", color="tab:red", linewidth=1, markersize=4, label="trajectory")
    ax.plot(xs[:1], ys[:1], "o", color="black", markersize=5, label="start")
    ax.plot(xs[-1:], ys[-1:], "*", color="gold", markeredgecolor="black", markersize=12, label="end")


def plot_trajectory(proj_file, dir_file, show=False, fmt="pdf"):
    """The projected optimisation path alone, with PCA variance on the axes."""
    xs, ys = h5_util.read_projection_file(proj_file)
    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_path(ax, xs, ys)
    ax.tick_params(labelsize="x-large")
    pca_labels(ax, dir_file)
    path = save_figure(fig, f"{proj_file}.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_contour_trajectory(surf_file, dir_file, proj_file, surf_name="train_loss", vmin=0.1, vmax=10,
                            vlevel=0.5, show=False, fmt="pdf", log=False):
    """Loss contours with the projected trajectory on top (the paper's Figure 9)."""
    surf, X, Y, Z = load_map(surf_file, surf_name)
    xs, ys = h5_util.read_projection_file(proj_file)
    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_contours(ax, X, Y, Z, contour_levels(Z, vmin, vmax, vlevel, log, f"{surf_name} in {surf_file}"), log)
    hi = data_range(Z, surf_name)[1]
    if hi > 10:  # the reference's extra log-spaced contours for the far, high-loss region
        big = np.logspace(1, 8, num=8)
        draw_contours(ax, X, Y, Z, big[big < hi], True)
    draw_path(ax, xs, ys)
    pca_labels(ax, dir_file)
    ax.legend(loc="best", fontsize="small")
    path = save_figure(fig, f"{proj_file}_{surf_name}_2dcontour_proj.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_2d_eig_ratio(surf_file, val_1="min_eig", val_2="max_eig", show=False, fmt="pdf"):
    """Heat maps of |min_eig / max_eig| (0 to 0.5) and min_eig / max_eig: where the surface is convex."""
    import matplotlib
    surf = load_surface(surf_file)
    abs_ratio, ratio = eig_ratio(surf, val_1, val_2)
    X, Y = np.meshgrid(surf.x, surf.y)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")
    out = []
    for values, suffix, lim in ((abs_ratio, "_abs_ratio_heat_sns", (0, 0.5)), (ratio, "_ratio_heat_sns", (None, None))):
        fig = new_figure(show)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(values), cmap=cmap, shading="nearest", vmin=lim[0], vmax=lim[1])
        fig.colorbar(mesh, ax=ax, label=f"{'|' if 'abs' in suffix else ''}{val_1}/{val_2}{'|' if 'abs' in suffix else ''}")
        out.append(save_figure(fig, output_name(surf_file, f"_{val_1}_{val_2}{suffix}", fmt), fmt))
    show_all(show)
    return out


def build_parser():
    p = ArgParser.make("Plot 2D contours, heat maps, 3D surfaces and trajectories from surface files.")
    p.add_argument("--surf_file", "-f", default="", help="the .h5 surface file")
    p.add_argument("--dir_file", default="", help="the direction file (PCA variance labels)")
    p.add_argument("--proj_file", default="", help="the projection file of a trajectory")
    p.add_argument("--surf_name", default="train_loss",
                   help="train_loss | test_loss | train_acc | test_acc | train_err | test_err | max_eig | min_eig")
    p.add_argument("--vmax", default=10, type=float, help="largest contour level")
    p.add_argument("--vmin", default=0.1, type=float, help="smallest contour level")
    p.add_argument("--vlevel", default=0.5, type=float, help="spacing of contour levels")
    p.add_argument("--zlim", default=10, type=float, help="largest value shown in the 3D surface")
    p.add_argument("--show", action="store_true", help="show the figures")
    p.add_argument("--log", action="store_true", help="log scale for the values")
    p.add_argument("--format", default="pdf", choices=["pdf", "png", "svg"], help="figure format")
    p.add_argument("--html", action="store_true", help="also write an interactive, self-contained HTML viewer")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    for flag in ("surf_file", "dir_file", "proj_file"):
        if getattr(a, flag) and not exists(getattr(a, flag)):
            raise UserError(f"--{flag} '{getattr(a, flag)}' does not exist")
    if a.html:
        if not a.surf_file:
            raise UserError("--html needs --surf_file")
        import viewer
        viewer.write_html(a.surf_file, a.surf_name, proj_file=a.proj_file, dir_file=a.dir_file)
        if load_surface(a.surf_file).y is None:
            return 0
    if a.surf_file and a.proj_file and a.dir_file:
        plot_contour_trajectory(a.surf_file, a.dir_file, a.proj_file, a.surf_name, a.vmin, a.vmax, a.vlevel,
                                a.show, a.format, a.log)
    elif a.proj_file and a.dir_file:
        plot_trajectory(a.proj_file, a.dir_file, a.show, a.format)
    elif a.surf_file:
        plot_2d_contour(a.surf_file, a.surf_name, a.vmin, a.vmax, a.vlevel, a.show, a.log, a.format, a.zlim)
    else:
        raise UserError("give --surf_file, or --proj_file with --dir_file")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
