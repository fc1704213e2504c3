"""What plot_1D, plot_2D and h52vtp share: reading value maps with gaps, and saving figures.

Value maps come through h5_util.read_surface, so files from the reference implementation (with
-1 for points not computed, and its non-square layout) read the same as ours. Points not
computed, and NaN or infinite results, become NaN here: gaps in curves, masked cells in maps.
"""
import os

import numpy as np

import h5_util
from errors import UserError

FORMATS = ("pdf", "png", "svg")


def new_figure(show, **kwargs):
    """A figure; through pyplot only when it is to be shown, so saving works without a display."""
    if show:
        import matplotlib.pyplot as plt
        return plt.figure(**kwargs)
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def save_figure(fig, path, fmt):
    from matplotlib.ticker import MaxNLocator
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    for ax in fig.axes:  # few enough ticks that their labels never run into each other
        if ax.name == "rectilinear" and ax.get_xscale() == "linear" and ax.get_label() != "<colorbar>":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=7))
        elif ax.name == "3d":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.savefig(path, dpi=300 if fmt == "png" else 150, bbox_inches="tight", format=fmt)
    print(f"wrote {path}")
    return path


def show_all(show):
    if show:
        import matplotlib.pyplot as plt
        plt.show()


def computed(surf, key):
    """surf.values[key] as float with NaN wherever the point is not computed (or not finite)."""
    if key in ("train_err", "test_err"):
        acc = computed(surf, key.replace("_err", "_acc"))
        return 100.0 - acc
    if key not in surf.values:
        names = sorted(surf.values) + [k.replace("_acc", "_err") for k in surf.values if k.endswith("_acc")]
        raise UserError(f"'{key}' is not in '{surf.path}'; it holds: {', '.join(names) or 'no value maps'}")
    v = np.array(surf.values[key], dtype=np.float64)
    if key in h5_util.EIG_MISSING:
        other = "min_eig" if key == "max_eig" else "max_eig"
        if other in surf.values:
            v[(surf.values["max_eig"] == -1.0) & (surf.values["min_eig"] == 1.0)] = np.nan
    else:
        v[v == h5_util.MISSING] = np.nan
    v[~np.isfinite(v)] = np.nan
    return v


def load_surface(path):
    surf = h5_util.read_surface(path)
    if not surf.values:
        raise UserError(f"surface file '{path}' holds no value maps yet")
    return surf


def output_name(surf_file, suffix, fmt):
    return f"{surf_file}{suffix}.{fmt}"


def eig_ratio(surf, val_1="min_eig", val_2="max_eig"):
    """(|val_1/val_2|, val_1/val_2), NaN where either is missing or val_2 is 0."""
    a, b = computed(surf, val_1), computed(surf, val_2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b != 0, a / b, np.nan)
    return np.abs(r), r


def exists(path):
    return bool(path) and os.path.exists(path)
