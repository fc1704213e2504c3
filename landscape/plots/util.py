"""What plot_1D, plot_2D, viewer and h52vtp share: value maps with gaps, marked points, labels, saving.

Value maps come through h5.read_surface, so files from the reference implementation (with
-1 for points not computed, and its non-square layout) read the same as ours. Points not
computed, and NaN or infinite results, become NaN here: gaps in curves, masked cells in maps.

Marked points: a surface file may carry the attribute `marked_points`, a JSON list of
{"label": str, "x": float, "y": float} (y absent or null on 1D files): where the checkpoints
sit on a plane through three models, or along a path. The plots draw them; `marked_points`
parses them.
"""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from landscape.version import __version__
from landscape.errors import UserError
from landscape.io import h5

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("pdf", "png", "svg")


def new_figure(show: bool, **kwargs: Any) -> Figure:
    """A figure; through pyplot only when it is to be shown, so saving works without a display."""
    if show:
        import matplotlib.pyplot as plt
        return plt.figure(**kwargs)
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def save_figure(fig: Figure, path: str, fmt: str) -> str:
    from matplotlib.ticker import MaxNLocator
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    for ax in fig.axes:  # few enough ticks that their labels never run into each other
        if ax.name == "rectilinear" and ax.get_xscale() == "linear" and ax.get_label() != "<colorbar>":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=7))
        elif ax.name == "3d":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.savefig(path, dpi=300 if fmt == "png" else 150, bbox_inches="tight", format=fmt,
                metadata={"Creator": f"loss-landscape {__version__}"})
    print(f"wrote {path}")
    return path


def show_all(show: bool) -> None:
    if show:
        import matplotlib.pyplot as plt
        plt.show()


def map_names(surf: h5.Surface) -> list[str]:
    """The maps `computed` can give for `surf`: the stored ones, plus X_err for every stored X_acc."""
    errs = [k[:-4] + "_err" for k in sorted(surf.values) if k.endswith("_acc")]
    return sorted(surf.values) + [k for k in errs if k not in surf.values]


def has_map(surf: h5.Surface, key: str) -> bool:
    return key in map_names(surf)


def computed(surf: h5.Surface, key: str) -> np.ndarray:
    """surf.values[key] as float with NaN wherever the point is not computed (or not finite)."""
    if not has_map(surf, key):
        why = " (its dataset has no test set)" if key.startswith("test_") and no_test_set(surf) else ""
        raise UserError(f"'{key}' is not in '{surf.path}'{why}; it holds: "
                        f"{', '.join(map_names(surf)) or 'no value maps'}")
    if key.endswith("_err") and key[:-4] + "_acc" in surf.values:  # the reference's error maps: 100 - accuracy (%)
        return 100.0 - computed(surf, key[:-4] + "_acc")
    v = np.array(surf.values[key], dtype=np.float64)
    if key in h5.EIG_MISSING:
        other = "min_eig" if key == "max_eig" else "max_eig"
        if other in surf.values:
            v[(surf.values["max_eig"] == -1.0) & (surf.values["min_eig"] == 1.0)] = np.nan
    else:
        v[v == h5.MISSING] = np.nan
    v[~np.isfinite(v)] = np.nan
    return v


def no_test_set(surf: h5.Surface) -> bool:
    """The surface's dataset has no test set (a custom dataset that gave None): the file records it."""
    return str(surf.attrs.get("test_size", "")) == "none"


def load_surface(path: str) -> h5.Surface:
    surf = h5.read_surface(path)
    if not surf.values:
        raise UserError(f"surface file '{path}' holds no value maps yet")
    return surf


def output_name(surf_file: str, suffix: str, fmt: str) -> str:
    return f"{surf_file}{suffix}.{fmt}"


def eig_ratio(surf: h5.Surface, val_1: str = "min_eig",
              val_2: str = "max_eig") -> tuple[np.ndarray, np.ndarray]:
    """(|val_1/val_2|, val_1/val_2), NaN where either is missing or val_2 is 0."""
    a, b = computed(surf, val_1), computed(surf, val_2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b != 0, a / b, np.nan)
    return np.abs(r), r


def exists(path: Optional[str]) -> bool:
    return bool(path) and os.path.exists(path)


def surface_labels(surf_files: Sequence[str], labels: Optional[Sequence[str]] = None) -> list[str]:
    """One label per surface file: `labels` as given, else the file names (whole paths if names repeat)."""
    if labels:
        if len(labels) != len(surf_files):
            raise UserError(f"--labels gives {len(labels)} label(s) ({' '.join(labels)}) for {len(surf_files)} "
                            f"surface file(s); give one per file")
        return list(labels)
    names = [os.path.basename(f) for f in surf_files]
    return names if len(set(names)) == len(names) else list(surf_files)


def _number(entry: dict[str, Any], key: str, where: str) -> float:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{where} needs a finite number for '{key}', got {v!r}")
    return float(v)


def marked_points(surf: h5.Surface) -> list[dict[str, Any]]:
    """The surface's `marked_points` attribute as [{'label', 'x', 'y'}] (y None on 1D); [] if absent."""
    raw = surf.attrs.get("marked_points")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return []
    where = f"attribute marked_points of '{surf.path}'"
    if not isinstance(raw, str):
        raise UserError(f"{where} must be a JSON string, got {type(raw).__name__} {str(raw)[:60]!r}")
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg} at character {e.pos}): {raw[:60]!r}") from None
    if not isinstance(entries, list):
        raise UserError(f"{where} must be a JSON list of {{label, x, y}}, got {raw[:60]!r}")
    points = []
    for i, entry in enumerate(entries):
        at = f"marked_points[{i}] of '{surf.path}'"
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
            raise UserError(f"{at} must be an object with a string 'label', got {json.dumps(entry)[:60]}")
        x = _number(entry, "x", at)
        y = None if surf.y is None else _number(entry, "y", f"{at} (a 2D surface)")
        points.append({"label": entry["label"], "x": x, "y": y})
    return points
