"""2D plots of surface files: contours, filled contours, heat map, 3D surface, trajectories, and
side-by-side comparisons of several files on one colour scale.

    python plot_2D.py --surf_file S.h5 [--surf_name train_loss] [--vmin 0.1 --vmax 10 --vlevel 0.5] [--log]
    python plot_2D.py --surf_file A.h5 B.h5 --labels SGD SAM              (side by side, shared levels)
    python plot_2D.py --surf_file S.h5 --dir_file D.h5 --proj_file P.h5   (trajectory over the contours)
    python plot_2D.py --proj_file P.h5 --dir_file D.h5                    (trajectory alone)
    python plot_2D.py --surf_file S.h5 --html                             (interactive viewer, one file)
    python plot_2D.py --surf_file A.h5 B.h5 [--labels SGD SAM] --html     (one viewer page switching surfaces)

One file: writes <surf>_<name>_2dcontour, _2dcontourf, _2dheat and _3dsurface (matplotlib only).
Several files: writes <first surf>_<name>_2dcontour_compare, _2dcontourf_compare, _2dheat_compare
and _3dsurface_compare: one panel per file (titled by --labels, default the file names; grids may
differ), one colour scale, the same contour levels and one colour bar for all. With --html, several
files (1D or 2D) give one page, <first surf>_<name>_viewer_compare.html, with a menu to switch.
--surf_name is any map the files hold (train_loss, test_loss, train_<metric>, max_eig, ...); train_err
and test_err are 100 - accuracy. Points not computed are masked. When the levels implied by
--vmin/--vmax/--vlevel miss the data (of all files together), levels are chosen from the data, and
the script says so. A file's marked_points attribute is drawn on its contour, filled contour and
heat maps as labelled markers.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from landscape.errors import ArgParser, UserError, run_cli
from landscape.io import h5
from landscape.plots.util import (
    computed,
    eig_ratio,
    exists,
    load_surface,
    marked_points,
    new_figure,
    output_name,
    save_figure,
    show_all,
    surface_labels,
)

if TYPE_CHECKING:
    import argparse

    from matplotlib.axes import Axes
    from matplotlib.collections import QuadMesh
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.contour import QuadContourSet
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d import Axes3D
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    Map = tuple[h5.Surface, np.ndarray, np.ndarray, np.ndarray]     # (surf, X, Y, Z) of one file

LOG_LEVELS_PER_DECADE = 4


def data_range(Z: np.ndarray, what: str) -> tuple[float, float]:
    finite = Z[np.isfinite(Z)]
    if finite.size == 0:
        raise UserError(f"{what} has no computed points to plot yet")
    return float(finite.min()), float(finite.max())


def contour_levels(Z: np.ndarray, vmin: float, vmax: float, vlevel: float, log: bool = False,
                   what: str = "the surface") -> np.ndarray:
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


def load_map(surf_file: str, surf_name: str) -> Map:
    surf = load_surface(surf_file)
    if surf.y is None:
        raise UserError(f"'{surf_file}' is a 1D surface; use plot_1D.py (or plot_2D.py --html)")
    Z = computed(surf, surf_name)
    X, Y = np.meshgrid(surf.x, surf.y)
    return surf, X, Y, Z


def color_norm(levels: np.ndarray, log: bool, shared: bool = False) -> Optional[Normalize]:
    """LogNorm over the levels for --log; a linear Normalize when several panels must share it, else None."""
    from matplotlib.colors import LogNorm, Normalize
    if log and levels[0] > 0 and len(levels) > 1:
        return LogNorm(levels[0], levels[-1])
    return Normalize(levels[0], levels[-1]) if shared else None


def gray_gaps_cmap() -> Colormap:
    import matplotlib
    return matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")  # points not computed: gray


def draw_contours(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, levels: np.ndarray, log: bool,
                  labels: bool = True, norm: Optional[Normalize] = None) -> QuadContourSet:
    norm = norm if norm is not None else color_norm(levels, log)
    cs = ax.contour(X, Y, np.ma.masked_invalid(Z), levels=levels, cmap="viridis", norm=norm)
    if labels and cs.levels.size:
        step = max(1, int(np.ceil(len(cs.levels) / 12)))  # label at most about 12 levels, so labels stay legible
        ax.clabel(cs, cs.levels[::step], inline=True, fontsize=8, fmt="%.3g")
    return cs


def draw_filled(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, levels: np.ndarray,
                norm: Optional[Normalize]) -> QuadContourSet:
    return ax.contourf(X, Y, np.ma.masked_invalid(Z), levels=levels, cmap="viridis", norm=norm, extend="both")


def draw_heat(ax: Axes, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, levels: np.ndarray,
              norm: Optional[Normalize]) -> QuadMesh:
    limits = {"norm": norm} if norm is not None else {"vmin": levels[0], "vmax": levels[-1]}
    return ax.pcolormesh(X, Y, np.ma.masked_invalid(Z), cmap=gray_gaps_cmap(), shading="nearest", **limits)


def draw_marked_points(ax: Axes, points: Iterable[dict[str, Any]], what: str = "the surface") -> None:
    """Each marked point as a white dot with its label, without moving the view; says which lie outside it."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    for p in points:
        ax.plot(p["x"], p["y"], "o", markersize=7, markerfacecolor="white", markeredgecolor="black",
                markeredgewidth=1.3, zorder=6)
        ax.annotate(p["label"], (p["x"], p["y"]), xytext=(6, 6), textcoords="offset points", fontsize=9, zorder=7,
                    bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85))
        if not (min(xlim) <= p["x"] <= max(xlim) and min(ylim) <= p["y"] <= max(ylim)):
            print(f"note: marked point '{p['label']}' at ({p['x']:g}, {p['y']:g}) lies outside the grid of {what}")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def curve_overlay(surf: h5.Surface) -> Optional[dict[str, Any]]:
    """The `curve_plane` attribute of a curve's plane (plot_surface.py --curve_plane), checked; None if absent."""
    import json
    raw = surf.attrs.get("curve_plane")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        overlay = json.loads(raw)
        pts = overlay["points"]
        ok = overlay["kind"] in ("bezier", "polychain") and len(pts) >= 3 and \
            all(len(p) == 2 and all(np.isfinite(float(v)) for v in p) for p in pts)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"attribute curve_plane of '{surf.path}' is not a curve's plane ({type(e).__name__})") from None
    if not ok:
        raise UserError(f"attribute curve_plane of '{surf.path}' is not a curve's plane (kind or points)")
    return overlay


def draw_curve_overlay(ax: Axes, overlay: dict[str, Any], what: str = "the surface") -> None:
    """The curve (its projection for bends off the plane), the straight line between its ends, the ends
    and the bends, without moving the view."""
    from landscape.curves import plane_curve
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    pts = np.asarray(overlay["points"], dtype=np.float64)
    xs, ys = plane_curve(overlay)
    ax.plot(pts[[0, -1], 0], pts[[0, -1], 1], "--", color="black", linewidth=1.5, label="straight line", zorder=5)
    ax.plot(xs, ys, "-", color="tab:red", linewidth=2, label=f"{overlay['kind']} curve", zorder=5)
    labels = ["end 1"] + [f"bend {i}" for i in range(1, len(pts) - 1)] + ["end 2"]
    for i, (p, label) in enumerate(zip(pts, labels)):
        end = i in (0, len(pts) - 1)
        ax.plot(p[0], p[1], "o" if end else "D", markersize=7 if end else 5, markerfacecolor="white",
                markeredgecolor="black", markeredgewidth=1.3, zorder=6)
        ax.annotate(label, (p[0], p[1]), xytext=(6, 6), textcoords="offset points", fontsize=9, zorder=7,
                    bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85))
        if not (min(xlim) <= p[0] <= max(xlim) and min(ylim) <= p[1] <= max(ylim)):
            print(f"note: {label} of the curve at ({p[0]:g}, {p[1]:g}) lies outside the grid of {what}")
    ax.legend(loc="best", fontsize="small")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def draw_points(ax: Axes, overlay: Optional[dict[str, Any]], points: Iterable[dict[str, Any]], what: str) -> None:
    """A curve's plane (`curve_overlay`): the curve, the straight line, its ends and bends; otherwise the
    marked points."""
    if overlay is not None:
        draw_curve_overlay(ax, overlay, what)
    else:
        draw_marked_points(ax, points, what)


def plot_2d_contour(surf_file: str, surf_name: str = "train_loss", vmin: float = 0.1, vmax: float = 10,
                    vlevel: float = 0.5, show: bool = False, log: bool = False, fmt: str = "pdf",
                    zlim: Optional[float] = None) -> list[str]:
    """The reference's four 2D figures of one value map."""
    surf, X, Y, Z = load_map(surf_file, surf_name)
    check_contour_grid(surf)
    what = f"{surf_name} in {surf_file}"
    levels = contour_levels(Z, vmin, vmax, vlevel, log, what)
    norm, points, overlay = color_norm(levels, log), marked_points(surf), curve_overlay(surf)
    stem = f"_{surf_name}"
    out = []

    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_contours(ax, X, Y, Z, levels, log)
    draw_points(ax, overlay, points, surf_file)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dcontour", fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    fig.colorbar(draw_filled(ax, X, Y, Z, levels, norm), ax=ax)
    draw_points(ax, overlay, points, surf_file)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dcontourf", fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    fig.colorbar(draw_heat(ax, X, Y, Z, levels, norm), ax=ax, label=surf_name)
    draw_points(ax, overlay, points, surf_file)
    out.append(save_figure(fig, output_name(surf_file, stem + "_2dheat", fmt), fmt))

    out.append(plot_3d_surface(surf_file, surf_name, X, Y, Z, zlim, log, show, fmt))
    if "min_eig" in surf.values and "max_eig" in surf.values and surf_name not in ("min_eig", "max_eig"):
        out += plot_2d_eig_ratio(surf_file, show=False, fmt=fmt)
    note_masked(Z)
    show_all(show)
    return out


def check_contour_grid(surf: h5.Surface) -> None:
    if len(surf.x) < 2 or len(surf.y) < 2:
        raise UserError(f"'{surf.path}' needs at least 2 points on each axis for contours")


def note_masked(Z: np.ndarray, what: str = "") -> None:
    missing = int(np.isnan(Z).sum())
    if missing:
        print(f"note: {missing} of {Z.size} points{what} are not computed (or not finite) and are masked")


def heights_3d(Zs: Sequence[np.ndarray], zlim: Optional[float], log: bool,
               what: str) -> tuple[list[np.ndarray], float, float]:
    """The heights of 3D surfaces (log10 with --log), cut off above zlim, and their common (lo, hi)."""
    Zps = [np.log10(np.clip(Z, 1e-12, None)) if log else Z.copy() for Z in Zs]
    lo, hi = data_range(np.concatenate([Zp.ravel() for Zp in Zps]), what)
    top = None if zlim is None else (np.log10(zlim) if log and zlim > 0 else zlim)
    if top is not None and top > lo:
        Zps = [np.where(Zp > top, np.nan, Zp) for Zp in Zps]  # a clipped plateau would hide the shape
        hi = min(hi, top)
    return Zps, lo, (hi if hi > lo else lo + max(abs(lo) * 0.01, 1e-12))


def draw_3d(ax: Axes3D, X: np.ndarray, Y: np.ndarray, Zp: np.ndarray, lo: float, hi: float,
            zlabel: str) -> Poly3DCollection:
    from matplotlib import cm
    s = ax.plot_surface(X, Y, Zp, cmap=cm.coolwarm, linewidth=0, antialiased=False, vmin=lo, vmax=hi)
    ax.set_zlim(lo, hi)
    ax.set_zlabel(zlabel)
    return s


def plot_3d_surface(surf_file: str, surf_name: str, X: np.ndarray, Y: np.ndarray, Z: np.ndarray,
                    zlim: Optional[float], log: bool, show: bool, fmt: str) -> str:
    """A 3D surface on an Axes3D made by add_subplot (the reference's Axes3D(fig) draws nothing now)."""
    fig = new_figure(show, figsize=(7, 5.5))
    ax = fig.add_subplot(projection="3d")
    (Zp,), lo, hi = heights_3d([Z], zlim, log, f"{surf_name} in {surf_file}")
    surf = draw_3d(ax, X, Y, Zp, lo, hi, f"log10 {surf_name}" if log else surf_name)
    fig.colorbar(surf, shrink=0.5, aspect=8, pad=0.1)
    return save_figure(fig, output_name(surf_file, f"_{surf_name}_3dsurface", fmt), fmt)


# ----------------------------------------------------------------------------- several surfaces side by side
COMPARE_KINDS = ("2dcontour", "2dcontourf", "2dheat")


def load_maps(surf_files: Sequence[str], surf_name: str) -> list[Map]:
    """[(surf, X, Y, Z)] for every file, each on its own grid."""
    maps = [load_map(f, surf_name) for f in surf_files]
    for surf, *_ in maps:
        check_contour_grid(surf)
    return maps


def shared_levels(maps: Sequence[Map], vmin: float, vmax: float, vlevel: float, log: bool,
                  what: str) -> np.ndarray:
    """One set of contour levels for all maps: from the flags, else from the union of their data."""
    return contour_levels(np.concatenate([Z.ravel() for *_, Z in maps]), vmin, vmax, vlevel, log, what)


def compare_figure(kind: str, maps: Sequence[Map], labels: Sequence[str], levels: np.ndarray, log: bool,
                   surf_name: str, show: bool = False) -> Figure:
    """One panel per map, all drawn with the same levels and colour norm, and one colour bar."""
    fig = new_figure(show, figsize=(4.3 * len(maps) + 1.3, 4.3), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    norm = color_norm(levels, log, shared=True)
    for ax, (surf, X, Y, Z), label in zip(axes, maps, labels):
        if kind == "2dcontour":
            mappable = draw_contours(ax, X, Y, Z, levels, log, norm=norm)
        elif kind == "2dcontourf":
            mappable = draw_filled(ax, X, Y, Z, levels, norm)
        else:
            mappable = draw_heat(ax, X, Y, Z, levels, norm)
        ax.set_title(label)
        draw_marked_points(ax, marked_points(surf), surf.path)
    fig.colorbar(mappable, ax=list(axes), label=surf_name)
    return fig


def compare_3d_figure(maps: Sequence[Map], labels: Sequence[str], zlim: Optional[float], log: bool,
                      surf_name: str, show: bool = False) -> Figure:
    """One 3D panel per map, with the same z range and colours."""
    fig = new_figure(show, figsize=(4.6 * len(maps) + 1.0, 4.6), layout="constrained")
    Zps, lo, hi = heights_3d([Z for *_, Z in maps], zlim, log, f"{surf_name} in {len(maps)} files")
    for i, ((surf, X, Y, _), Zp, label) in enumerate(zip(maps, Zps, labels)):
        ax = fig.add_subplot(1, len(maps), i + 1, projection="3d")
        mappable = draw_3d(ax, X, Y, Zp, lo, hi, f"log10 {surf_name}" if log else surf_name)
        ax.set_title(label)
    fig.colorbar(mappable, ax=fig.axes, shrink=0.6, aspect=12)
    return fig


def plot_2d_compare(surf_files: Sequence[str], labels: Optional[Sequence[str]] = None,
                    surf_name: str = "train_loss", vmin: float = 0.1, vmax: float = 10, vlevel: float = 0.5,
                    show: bool = False, log: bool = False, fmt: str = "pdf",
                    zlim: Optional[float] = None) -> list[str]:
    """Several 2D surfaces side by side, one colour scale and one set of levels:
    <first>_<surf_name>_{2dcontour,2dcontourf,2dheat,3dsurface}_compare.<fmt>."""
    labels = surface_labels(surf_files, labels)
    maps = load_maps(surf_files, surf_name)
    levels = shared_levels(maps, vmin, vmax, vlevel, log, f"{surf_name} in {len(maps)} files")
    stem = f"{surf_files[0]}_{surf_name}"
    out = [save_figure(compare_figure(kind, maps, labels, levels, log, surf_name, show), f"{stem}_{kind}_compare.{fmt}",
                       fmt) for kind in COMPARE_KINDS]
    out.append(save_figure(compare_3d_figure(maps, labels, zlim, log, surf_name, show),
                           f"{stem}_3dsurface_compare.{fmt}", fmt))
    for (surf, *_, Z) in maps:
        note_masked(Z, f" of '{surf.path}'")
    show_all(show)
    return out


def pca_labels(ax: Axes, dir_file: str) -> None:
    """Axis labels with the variance each principal direction explains (when dir_file has it)."""
    if not exists(dir_file):
        return
    with h5.open_h5(dir_file, "direction file") as f:
        if "explained_variance_ratio_" in f:
            r = f["explained_variance_ratio_"][()]
            ax.set_xlabel(f"1st PC: {r[0] * 100:.2f} %", fontsize="xx-large")
            ax.set_ylabel(f"2nd PC: {r[1] * 100:.2f} %", fontsize="xx-large")


def draw_path(ax: Axes, xs: np.ndarray, ys: np.ndarray) -> None:
    ax.plot(xs, ys, marker=".", color="tab:red", linewidth=1, markersize=4, label="trajectory")
    ax.plot(xs[:1], ys[:1], "o", color="black", markersize=5, label="start")
    ax.plot(xs[-1:], ys[-1:], "*", color="gold", markeredgecolor="black", markersize=12, label="end")


def plot_trajectory(proj_file: str, dir_file: str, show: bool = False, fmt: str = "pdf") -> list[str]:
    """The projected optimisation path alone, with PCA variance on the axes."""
    xs, ys = h5.read_projection_file(proj_file)
    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_path(ax, xs, ys)
    ax.tick_params(labelsize="x-large")
    pca_labels(ax, dir_file)
    path = save_figure(fig, f"{proj_file}.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_contour_trajectory(surf_file: str, dir_file: str, proj_file: str, surf_name: str = "train_loss",
                            vmin: float = 0.1, vmax: float = 10, vlevel: float = 0.5, show: bool = False,
                            fmt: str = "pdf", log: bool = False) -> list[str]:
    """Loss contours with the projected trajectory on top (the paper's Figure 9)."""
    surf, X, Y, Z = load_map(surf_file, surf_name)
    xs, ys = h5.read_projection_file(proj_file)
    fig = new_figure(show)
    ax = fig.add_subplot()
    draw_contours(ax, X, Y, Z, contour_levels(Z, vmin, vmax, vlevel, log, f"{surf_name} in {surf_file}"), log)
    hi = data_range(Z, surf_name)[1]
    if hi > 10:  # the reference's extra log-spaced contours for the far, high-loss region
        big = np.logspace(1, 8, num=8)
        draw_contours(ax, X, Y, Z, big[big < hi], True)
    draw_path(ax, xs, ys)
    draw_marked_points(ax, marked_points(surf), surf_file)
    pca_labels(ax, dir_file)
    ax.legend(loc="best", fontsize="small")
    path = save_figure(fig, f"{proj_file}_{surf_name}_2dcontour_proj.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_2d_eig_ratio(surf_file: str, val_1: str = "min_eig", val_2: str = "max_eig", show: bool = False,
                      fmt: str = "pdf") -> list[str]:
    """Heat maps of |min_eig / max_eig| (0 to 0.5) and min_eig / max_eig: where the surface is convex."""
    surf = load_surface(surf_file)
    abs_ratio, ratio = eig_ratio(surf, val_1, val_2)
    X, Y = np.meshgrid(surf.x, surf.y)
    cmap, points = gray_gaps_cmap(), marked_points(surf)
    out = []
    for values, suffix, lim in ((abs_ratio, "_abs_ratio_heat_sns", (0, 0.5)), (ratio, "_ratio_heat_sns", (None, None))):
        fig = new_figure(show)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(values), cmap=cmap, shading="nearest", vmin=lim[0], vmax=lim[1])
        fig.colorbar(mesh, ax=ax, label=f"{'|' if 'abs' in suffix else ''}{val_1}/{val_2}{'|' if 'abs' in suffix else ''}")
        draw_marked_points(ax, points, surf_file)
        out.append(save_figure(fig, output_name(surf_file, f"_{val_1}_{val_2}{suffix}", fmt), fmt))
    show_all(show)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Plot 2D contours, heat maps, 3D surfaces and trajectories from surface files.")
    p.add_argument("--surf_file", "-f", nargs="+", default=[],
                   help="the .h5 surface file; several files are drawn side by side on one colour scale")
    p.add_argument("--labels", nargs="+", default=None, help="one panel title per surface file (default: file names)")
    p.add_argument("--dir_file", default="", help="the direction file (PCA variance labels)")
    p.add_argument("--proj_file", default="", help="the projection file of a trajectory")
    p.add_argument("--surf_name", default="train_loss",
                   help="the map to plot: train_loss, test_loss, train_acc, train_err, train_<metric>, max_eig, ...")
    p.add_argument("--vmax", default=10, type=float, help="largest contour level")
    p.add_argument("--vmin", default=0.1, type=float, help="smallest contour level")
    p.add_argument("--vlevel", default=0.5, type=float, help="spacing of contour levels")
    p.add_argument("--zlim", default=10, type=float, help="largest value shown in the 3D surface")
    p.add_argument("--show", action="store_true", help="show the figures")
    p.add_argument("--log", action="store_true", help="log scale for the values")
    p.add_argument("--format", default="pdf", choices=["pdf", "png", "svg"], help="figure format")
    p.add_argument("--html", action="store_true",
                   help="also write an interactive, self-contained HTML viewer (one page for all --surf_file)")
    return p


def check_inputs(a: argparse.Namespace) -> None:
    for flag, paths in (("surf_file", a.surf_file), ("dir_file", [a.dir_file]), ("proj_file", [a.proj_file])):
        for path in paths:
            if path and not exists(path):
                raise UserError(f"--{flag} '{path}' does not exist")
    if a.surf_file:
        surface_labels(a.surf_file, a.labels)  # a count mismatch is an error even for one file
    if len(a.surf_file) > 1 and a.proj_file:
        raise UserError(f"--proj_file draws a trajectory over one surface, but --surf_file gives {len(a.surf_file)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    check_inputs(a)
    files = a.surf_file
    if a.html:
        if not files:
            raise UserError("--html needs --surf_file")
        from landscape.plots import viewer
        viewer.require_plotly()
        if len(files) == 1:
            viewer.write_html(files[0], a.surf_name, proj_file=a.proj_file, dir_file=a.dir_file)
        else:
            viewer.write_html_compare(files, a.labels, a.surf_name)
        if any(load_surface(f).y is None for f in files):
            return 0
    if files and a.proj_file and a.dir_file:
        plot_contour_trajectory(files[0], a.dir_file, a.proj_file, a.surf_name, a.vmin, a.vmax, a.vlevel,
                                a.show, a.format, a.log)
    elif a.proj_file and a.dir_file:
        plot_trajectory(a.proj_file, a.dir_file, a.show, a.format)
    elif len(files) > 1:
        plot_2d_compare(files, a.labels, a.surf_name, a.vmin, a.vmax, a.vlevel, a.show, a.log, a.format, a.zlim)
    elif files:
        plot_2d_contour(files[0], a.surf_name, a.vmin, a.vmax, a.vlevel, a.show, a.log, a.format, a.zlim)
    else:
        raise UserError("give --surf_file, or --proj_file with --dir_file")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
