"""1D plots of surface files: loss and accuracy along x (the reference's outputs), overlays of
several files, any stored map, and the Hessian's eigenvalue spectral density.

    python plot_1D.py --surf_file S.h5 [--log] [--xmin -1 --xmax 1] [--loss_max 5] [--format png]
    python plot_1D.py --surf_file S.h5 --surf_name train_mae          (any map the file holds)
    python plot_1D.py --surf_file A.h5 B.h5 --labels SGD SAM          (overlay files on one set of axes)
    python plot_1D.py --prefix P --idx_min 1 --idx_max 10             (overlay P_1.h5 .. P_10.h5)
    python plot_1D.py --esd_file H.h5                                 (eigenvalue spectral density)
    python plot_1D.py --esd_file H.h5 G.h5 --labels Hessian GGN       (two densities overlaid)

One file, --surf_name train_loss (the default): writes <surf>_1d_loss_acc[_log],
<surf>_1d_train_loss[_log] and <surf>_1d_train_err; a file without train_acc (a regression or
language model) gets the loss figures only, with no accuracy axis and no train_err figure. When
the file has min_eig/max_eig, also <surf>_1d_eig_abs_ratio and <surf>_1d_eig_ratio.
One file, another --surf_name NAME: writes <surf>_1d_<NAME>[_log].
Several files: writes <first surf>_1d_overlay_<NAME>[_log], one colour per file (labels default to
the file names): loss-like maps on the left axis, solid; the matching accuracy (train_acc for
train_*, test_acc for test_*) dashed on the right axis when the files have it.
--esd_file H.h5: reads esd_grid, esd_density (and eigenvalues, if present) and writes <H>_esd;
--esd_file H.h5 G.h5 --labels Hessian GGN overlays them in <H>_esd_overlay.
Points not computed are gaps in the curves, never zeros or -1. A file's marked_points attribute
is drawn as labelled vertical dotted lines.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import numpy as np

from landscape import curves
from landscape.errors import ArgParser, UserError, run_cli
from landscape.io import h5
from landscape.plots.util import (
    computed,
    eig_ratio,
    has_map,
    load_surface,
    marked_points,
    new_figure,
    no_test_set,
    output_name,
    save_figure,
    show_all,
    surface_labels,
)

if TYPE_CHECKING:
    import argparse

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def x_limits(x: np.ndarray, xmin: float, xmax: float) -> tuple[float, float]:
    """The reference's convention: the defaults -1 and 1 mean 'the data's own range'."""
    return (xmin if xmin != -1.0 else float(np.nanmin(x))), (xmax if xmax != 1.0 else float(np.nanmax(x)))


def loss_limits(loss: np.ndarray, loss_max: float, log: bool) -> tuple[float, float]:
    if not log:
        return 0, loss_max
    positive = loss[np.isfinite(loss) & (loss > 0)]
    return (float(positive.min()) * 0.8 if positive.size else 1e-3), loss_max


def accuracy_partner(surf_name: str) -> Optional[str]:
    """The accuracy map drawn beside a loss-like map: train_acc for train_*, test_acc for test_*."""
    prefix = surf_name.split("_", 1)[0]
    if prefix not in ("train", "test") or surf_name.endswith(("_acc", "_err")):
        return None
    return prefix + "_acc"


def value_limits(values: np.ndarray, surf_name: str, loss_max: float,
                 log: bool) -> Optional[tuple[float, float]]:
    """y limits: losses up to --loss_max (the reference's), percentages 0..100, anything else its data's."""
    if surf_name.endswith("loss"):
        return loss_limits(values, loss_max, log)
    if surf_name.endswith(("_acc", "_err")) and not log:
        return 0, 100
    return None


def draw_loss_acc(ax1: Axes, ax2: Optional[Axes], x: np.ndarray, surf: h5.Surface, log: bool) -> None:
    """Loss (blue, left axis) and accuracy (red, right axis, when the file has it and ax2 is given);
    test curves dashed when present."""
    plot = ax1.semilogy if log else ax1.plot
    plot(x, computed(surf, "train_loss"), "b-", label="Training loss", linewidth=1)
    if "test_loss" in surf.values:
        plot(x, computed(surf, "test_loss"), "b--", label="Test loss", linewidth=1)
    if ax2 is None:
        return
    if "train_acc" in surf.values:
        ax2.plot(x, computed(surf, "train_acc"), "r-", label="Training accuracy", linewidth=1)
    if "test_acc" in surf.values:
        ax2.plot(x, computed(surf, "test_acc"), "r--", label="Test accuracy", linewidth=1)


def style_loss_acc(ax1: Axes, ax2: Optional[Axes], xlim: tuple[float, float],
                   ylim: tuple[float, float]) -> None:
    ax1.set_xlim(*xlim)
    ax1.set_ylabel("Loss", color="b", fontsize="xx-large")
    ax1.tick_params("y", colors="b", labelsize="x-large")
    ax1.tick_params("x", labelsize="x-large")
    ax1.set_ylim(*ylim)
    if ax2 is not None:
        ax2.set_ylabel("Accuracy", color="r", fontsize="xx-large")
        ax2.tick_params("y", colors="r", labelsize="x-large")
        ax2.set_ylim(0, 100)


def draw_marked_points(ax: Axes, points: Iterable[dict[str, Any]], color: str = "0.25",
                       prefix: str = "") -> None:
    """Each marked point as a vertical dotted line at its x, labelled at the top of the axes."""
    for p in points:
        ax.axvline(p["x"], color=color, linestyle=":", linewidth=1.2, zorder=1.5)
        ax.text(p["x"], 0.98, f"{prefix}{p['label']}", transform=ax.get_xaxis_transform(), rotation=90, ha="right",
                va="top", fontsize="medium", color=color, clip_on=True,
                bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.75))


def check_1d(surf: h5.Surface, surf_name: str = "train_loss") -> None:
    if surf.y is not None:
        raise UserError(f"'{surf.path}' is a 2D surface; use plot_2D.py")
    if not has_map(surf, surf_name):
        computed(surf, surf_name)  # raises, listing the maps the file holds


def plot_1d_loss_err(surf_file: str, xmin: float = -1.0, xmax: float = 1.0, loss_max: float = 5,
                     log: bool = False, show: bool = False, fmt: str = "pdf",
                     surf_name: str = "train_loss") -> list[str]:
    """The reference's three 1D figures (train_loss), or the one figure of another map; plus the
    eigenvalue ratio when the file has eigenvalues."""
    surf = load_surface(surf_file)
    check_1d(surf, surf_name)
    if surf_name != "train_loss":
        out = [plot_1d_map(surf, surf_name, xmin, xmax, loss_max, log, show, fmt)]
        show_all(show)
        return out
    x, loss, points = surf.x, computed(surf, "train_loss"), marked_points(surf)
    has_acc = "train_acc" in surf.values
    xlim, ylim, tag = x_limits(x, xmin, xmax), loss_limits(loss, loss_max, log), "_log" if log else ""
    out = []

    fig = new_figure(show)
    ax1 = fig.add_subplot()
    ax2 = ax1.twinx() if has_acc else None
    draw_loss_acc(ax1, ax2, x, surf, log)
    style_loss_acc(ax1, ax2, xlim, ylim)
    draw_marked_points(ax2 if ax2 is not None else ax1, points)  # on the top axes, so no curve hides a label
    if no_test_set(surf):
        ax1.text(0.02, 0.02, "no test set", transform=ax1.transAxes, fontsize="large", color="0.3")
    out.append(save_figure(fig, output_name(surf_file, "_1d_loss_acc" + tag, fmt), fmt))

    fig = new_figure(show)
    ax = fig.add_subplot()
    (ax.semilogy if log else ax.plot)(x, loss)
    ax.set(xlim=xlim, ylim=ylim)
    ax.set_ylabel("Training Loss", fontsize="xx-large")
    draw_marked_points(ax, points)
    out.append(save_figure(fig, output_name(surf_file, "_1d_train_loss" + tag, fmt), fmt))

    if has_acc:
        fig = new_figure(show)
        ax = fig.add_subplot()
        ax.plot(x, computed(surf, "train_err"))
        ax.set(xlim=xlim, ylim=(0, 100))
        ax.set_ylabel("Training Error", fontsize="xx-large")
        draw_marked_points(ax, points)
        out.append(save_figure(fig, output_name(surf_file, "_1d_train_err", fmt), fmt))

    if "min_eig" in surf.values and "max_eig" in surf.values:
        out += plot_1d_eig_ratio(surf_file, xmin, xmax, show=False, fmt=fmt)
    note_missing(loss)
    show_all(show)
    return out


def plot_1d_map(surf: h5.Surface, surf_name: str, xmin: float = -1.0, xmax: float = 1.0, loss_max: float = 5,
                log: bool = False, show: bool = False, fmt: str = "pdf") -> str:
    """One figure of one stored map (test_loss, train_mae, a custom metric ...): <surf>_1d_<name>[_log]."""
    values = computed(surf, surf_name)
    fig = new_figure(show)
    ax = fig.add_subplot()
    (ax.semilogy if log else ax.plot)(surf.x, values)
    ax.set_xlim(*x_limits(surf.x, xmin, xmax))
    ylim = value_limits(values, surf_name, loss_max, log)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(surf_name, fontsize="xx-large")
    draw_marked_points(ax, marked_points(surf))
    note_missing(values)
    return save_figure(fig, output_name(surf.path, f"_1d_{surf_name}" + ("_log" if log else ""), fmt), fmt)


def note_missing(values: np.ndarray) -> None:
    missing = int(np.isnan(values).sum())
    if missing:
        print(f"note: {missing} of {values.size} points are not computed (or not finite) and show as gaps")


def load_1d_surfaces(surf_files: Sequence[str], surf_name: str) -> list[h5.Surface]:
    surfs = [load_surface(f) for f in surf_files]
    for surf in surfs:
        check_1d(surf, surf_name)
    return surfs


def draw_overlay(fig: Figure, surfs: Sequence[h5.Surface], labels: Sequence[str],
                 surf_name: str = "train_loss", xmin: float = -1.0, xmax: float = 1.0, loss_max: float = 5,
                 log: bool = False) -> tuple[Axes, Optional[Axes]]:
    """Every surface's `surf_name` on the left axis (solid), its accuracy on the right (dashed), one colour each;
    the legend, below the axes, names each colour."""
    ax1 = fig.add_subplot()
    partner = accuracy_partner(surf_name)
    with_acc = [partner is not None and partner in s.values for s in surfs]
    ax2 = ax1.twinx() if any(with_acc) else None
    colours = [f"C{i % 10}" for i in range(len(surfs))]
    plot = ax1.semilogy if log else ax1.plot
    for surf, label, colour, acc in zip(surfs, labels, colours, with_acc):
        plot(surf.x, computed(surf, surf_name), "-", color=colour, linewidth=1.3, label=label)
        if acc:
            ax2.plot(surf.x, computed(surf, partner), "--", color=colour, linewidth=1.1)
    allx = np.concatenate([s.x for s in surfs])
    ax1.set_xlim(*x_limits(allx, xmin, xmax))
    ylim = value_limits(np.concatenate([computed(s, surf_name) for s in surfs]), surf_name, loss_max, log)
    if ylim is not None:
        ax1.set_ylim(*ylim)
    ax1.set_ylabel(f"{surf_name}{', solid' if ax2 is not None else ''}", fontsize="xx-large")
    ax1.tick_params(labelsize="x-large")
    if ax2 is not None:
        ax2.set_ylim(0, 100)
        ax2.set_ylabel(f"{partner} (%), dashed", fontsize="x-large")
        ax2.tick_params(labelsize="x-large")
    draw_overlay_marks(ax2 if ax2 is not None else ax1, surfs, labels, colours)
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=min(len(surfs), 4), frameon=False,
               fontsize="large")  # one entry per file: its colour
    return ax1, ax2


def draw_overlay_marks(ax: Axes, surfs: Sequence[h5.Surface], labels: Sequence[str],
                       colours: Sequence[str]) -> None:
    """Marked points: an x every file marks in gray, once (its labels joined where the files name it
    differently, as the end of two paths), the others in their file's colour, named after it."""
    marks = [[(p["label"], p["x"]) for p in marked_points(s)] for s in surfs]
    xs = set.intersection(*[{m[1] for m in own} for own in marks]) if len(surfs) > 1 else set()
    shared = []
    for x in sorted(xs):
        names = list(dict.fromkeys(m[0] for own in marks for m in own if m[1] == x))
        shared.append({"label": " / ".join(names), "x": x})
    draw_marked_points(ax, shared)
    for own, label, colour in zip(marks, labels, colours):
        draw_marked_points(ax, [{"label": m[0], "x": m[1]} for m in own if m[1] not in xs], colour, f"{label}: ")


def barrier_label(label: str, surf: Any, surf_name: str) -> str:
    """A path's legend label with its barrier height on the plotted loss map (stored, or computed here)."""
    if "path_type" not in surf.attrs or surf_name not in curves.BARRIER_MAPS:
        return label
    stored = surf.attrs.get(f"{surf_name}_barrier")
    if stored is None and surf_name in surf.values:
        stored = curves.path_barrier_attrs(surf.x, {surf_name: surf.values[surf_name]}).get(f"{surf_name}_barrier")
    return label if stored is None else f"{label} (barrier {float(stored):.3g})"


def plot_1d_overlay(surf_files: Sequence[str], labels: Optional[Sequence[str]] = None,
                    surf_name: str = "train_loss", xmin: float = -1.0, xmax: float = 1.0, loss_max: float = 5,
                    log: bool = False, show: bool = False, fmt: str = "pdf") -> list[str]:
    """Several 1D surface files on one set of axes: <first>_1d_overlay_<surf_name>[_log].<fmt>."""
    labels = surface_labels(surf_files, labels)
    surfs = load_1d_surfaces(surf_files, surf_name)
    labels = [barrier_label(label, surf, surf_name) for label, surf in zip(labels, surfs)]
    fig = new_figure(show, figsize=(7, 5))
    draw_overlay(fig, surfs, labels, surf_name, xmin, xmax, loss_max, log)
    tag = "_log" if log else ""
    path = save_figure(fig, f"{surf_files[0]}_1d_overlay_{surf_name}{tag}.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_1d_loss_err_repeat(prefix: str, idx_min: int = 1, idx_max: int = 10, xmin: float = -1.0,
                            xmax: float = 1.0, loss_max: float = 5, show: bool = False,
                            fmt: str = "pdf") -> list[str]:
    """Overlay the curves of <prefix>_<idx>.h5 for idx_min..idx_max (repeated random directions)."""
    if idx_min > idx_max:
        raise UserError(f"--idx_min {idx_min} > --idx_max {idx_max}: no files to overlay")
    surfs = load_1d_surfaces([f"{prefix}_{idx}.h5" for idx in range(idx_min, idx_max + 1)], "train_loss")
    fig = new_figure(show)
    ax1 = fig.add_subplot()
    ax2 = ax1.twinx() if any("train_acc" in s.values for s in surfs) else None
    for surf in surfs:
        draw_loss_acc(ax1, ax2, surf.x, surf, False)
    allx = np.concatenate([s.x for s in surfs])
    style_loss_acc(ax1, ax2, x_limits(allx, xmin, xmax), (0, loss_max))
    path = save_figure(fig, f"{prefix}_1d_loss_err_repeat.{fmt}", fmt)
    show_all(show)
    return [path]


def plot_1d_eig_ratio(surf_file: str, xmin: float = -1.0, xmax: float = 1.0, val_1: str = "min_eig",
                      val_2: str = "max_eig", ymax: float = 1, show: bool = False,
                      fmt: str = "pdf") -> list[str]:
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
        draw_marked_points(ax, marked_points(surf))
        out.append(save_figure(fig, output_name(surf_file, suffix, fmt), fmt))
    return out


# ----------------------------------------------------------------------------- eigenvalue spectral density
def read_esd(h5_path: str) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(grid (G,), density (G,), top eigenvalues (K,) or None) from a Hessian file."""
    with h5.open_h5(h5_path, "Hessian file") as f:
        missing = [k for k in ("esd_grid", "esd_density") if k not in f]
        if missing:
            raise UserError(f"Hessian file '{h5_path}' has no {' or '.join(missing)} dataset; "
                            f"it holds: {', '.join(sorted(f)) or 'nothing'}")
        grid = np.asarray(f["esd_grid"][()], dtype=np.float64).ravel()
        density = np.asarray(f["esd_density"][()], dtype=np.float64).ravel()
        eigs = np.asarray(f["eigenvalues"][()], dtype=np.float64).ravel() if "eigenvalues" in f else None
    if grid.size < 2 or grid.shape != density.shape:
        raise UserError(f"Hessian file '{h5_path}': esd_grid {grid.shape} and esd_density {density.shape} "
                        f"must be two 1D arrays of the same length (at least 2)")
    return grid, density, eigs


def draw_esd(ax: Axes, grid: np.ndarray, density: np.ndarray, eigs: Optional[np.ndarray] = None,
             color: str = "tab:blue", label: str = "spectral density", rug_color: str = "tab:red") -> None:
    """Density vs eigenvalue on a log density axis (as PyHessian plots it); eigenvalues as a rug.
    Called again on the same axes, it overlays another density, dashed (the y range covers both)."""
    positive = density[np.isfinite(density) & (density > 0)]
    floor = positive.max() * 1e-8 if positive.size else 1e-12  # log axis: zero density sits at the floor
    style = ["-", "--", ":", "-."][len(ax.lines) % 4]
    ax.semilogy(grid, np.where(np.isfinite(density), np.maximum(density, floor), np.nan), color=color,
                linewidth=1.6 if style == "-" else 1.3, linestyle=style, label=label)
    lo, hi = floor, max(positive.max() * 3, floor * 10) if positive.size else 1.0
    if ax.lines[:-1]:                                            # an overlay: keep the range of those before
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
    ax.set_ylim(lo, hi)
    if eigs is not None and eigs.size:
        ax.vlines(eigs, 0, 0.06, transform=ax.get_xaxis_transform(), color=rug_color, linewidth=1.2,
                  label=f"top {eigs.size} eigenvalue{'s' if eigs.size > 1 else ''}"
                        + (f" ({label})" if label != "spectral density" else ""))
    if eigs is not None and eigs.size or ax.lines[:-1]:
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("Eigenvalue", fontsize="x-large")
    ax.set_ylabel("Density (log scale)", fontsize="x-large")


def plot_esd(h5_paths: Union[str, Sequence[str]], show: bool = False, fmt: str = "pdf",
             labels: Optional[Sequence[str]] = None) -> list[str]:
    """The eigenvalue spectral density of a curvature file (several: overlaid, one colour each):
    writes <first h5_path>_esd[_overlay].<fmt>."""
    paths = [h5_paths] if isinstance(h5_paths, str) else list(h5_paths)
    names = surface_labels(paths, labels) if len(paths) > 1 else ["spectral density"]
    fig = new_figure(show)
    ax = fig.add_subplot()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for k, (path, name) in enumerate(zip(paths, names)):
        grid, density, eigs = read_esd(path)
        draw_esd(ax, grid, density, eigs if len(paths) == 1 else None, colours[k % 4], name)
    out = save_figure(fig, output_name(paths[0], "_esd" if len(paths) == 1 else "_esd_overlay", fmt), fmt)
    show_all(show)
    return [out]


def plot_per_layer(h5_path: str, show: bool = False, fmt: str = "pdf") -> list[str]:
    """Per-layer curvature from a curvature file's per_layer table: top eigenvalue and trace (+- 1 s.e.)
    of each layer's diagonal block, one bar per layer in network order (top to bottom); writes
    <h5_path>_per_layer.<fmt>."""
    t = h5.read_per_layer(h5_path)
    n = len(t["layer"])
    fig = new_figure(show, figsize=(10, 1.2 + 0.32 * n))
    rows = np.arange(n)
    for k, (key, title) in enumerate((("top_eig", "top eigenvalue"), ("trace", "trace (+- 1 s.e.)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        err = t["trace_stderr"] if key == "trace" else None
        colour = ["tab:blue" if c else "tab:gray" for c in t["converged"]] if key == "top_eig" else "tab:orange"
        ax.barh(rows, t[key], xerr=err, color=colour, capsize=2)
        ax.set_yticks(rows)
        ax.set_yticklabels(t["layer"] if k == 0 else [""] * n, fontsize="small")
        ax.invert_yaxis()                                         # the first layer on top
        ax.set_xlabel(title)
        ax.axvline(0, color="black", linewidth=0.6)
    grey = "" if t["converged"].all() else "; grey: not converged"
    matrix = {"ggn": "GGN", "ef": "empirical Fisher"}.get(t["curvature"], "Hessian")
    fig.suptitle(f"per-layer {matrix} (diagonal blocks){grey}")
    out = save_figure(fig, output_name(h5_path, "_per_layer", fmt), fmt)
    show_all(show)
    return [out]


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser.make("Plot 1D loss and error curves from surface files.")
    p.add_argument("--surf_file", "-f", nargs="+", default=[],
                   help="the .h5 surface file; several files are overlaid on one set of axes")
    p.add_argument("--labels", nargs="+", default=None, help="one legend label per surface file (default: file names)")
    p.add_argument("--surf_name", default="train_loss",
                   help="the map to plot: train_loss, test_loss, train_acc, train_err, train_<metric>, ...")
    p.add_argument("--log", action="store_true", help="log scale for the loss")
    p.add_argument("--xmin", default=-1, type=float, help="x axis minimum (-1: the data's)")
    p.add_argument("--xmax", default=1, type=float, help="x axis maximum (1: the data's)")
    p.add_argument("--loss_max", default=5, type=float, help="loss axis maximum")
    p.add_argument("--show", action="store_true", help="show the figures")
    p.add_argument("--prefix", default="", help="overlay <prefix>_<idx>.h5 files")
    p.add_argument("--idx_min", default=1, type=int, help="first idx to overlay")
    p.add_argument("--idx_max", default=10, type=int, help="last idx to overlay")
    p.add_argument("--esd_file", nargs="+", default=[],
                   help="plot the eigenvalue spectral density of this curvature file (several: overlaid, named by "
                        "--labels)")
    p.add_argument("--format", default="pdf", choices=["pdf", "png", "svg"], help="figure format")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.esd_file:
        plot_esd(a.esd_file, a.show, a.format, a.labels if not a.surf_file else None)
    if a.prefix:
        plot_1d_loss_err_repeat(a.prefix, a.idx_min, a.idx_max, a.xmin, a.xmax, a.loss_max, a.show, a.format)
    elif len(a.surf_file) > 1:
        plot_1d_overlay(a.surf_file, a.labels, a.surf_name, a.xmin, a.xmax, a.loss_max, a.log, a.show, a.format)
    elif a.surf_file:
        surface_labels(a.surf_file, a.labels)  # a count mismatch is an error even for one file
        plot_1d_loss_err(a.surf_file[0], a.xmin, a.xmax, a.loss_max, a.log, a.show, a.format, surf_name=a.surf_name)
    elif not a.esd_file:
        raise UserError("give --surf_file (or --prefix for repeated runs, or --esd_file)")
    for surf_file in a.surf_file or ():
        for line in curves.path_barriers(surf_file):
            print(f"{surf_file}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
