"""The interactive viewer: one self-contained HTML file (Plotly, its JavaScript inlined).

It works offline, with no server and no CDN. For a 2D surface: a rotatable 3D surface beside the
contour map, values on hover, a linear/log toggle, the trajectory over the contours when a
projection file is given, and the file's marked points (labelled markers). For a 1D surface: the
map and its train/test twin (loss by default), accuracy on a second axis when the file has it,
marked points as labelled dotted lines, and the same toggle. Points not computed are gaps.

    write_html(surf_file, surf_name)                  -> <surf>_<name>_viewer.html (2D), <surf>_1d_viewer.html (1D)
    write_html_compare(surf_files, labels, surf_name) -> <first surf>_<name>_viewer_compare.html

The compare page holds one figure per surface file (1D and 2D files may be mixed) and a menu,
labelled by `labels` (default: the file names), that switches the displayed surface.
"""
from __future__ import annotations

import html
import importlib
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from landscape.errors import UserError
from landscape.io import h5
from landscape.plots.util import computed, exists, has_map, load_surface, marked_points, surface_labels

if TYPE_CHECKING:
    import numpy.typing as npt
    import plotly.graph_objects as go

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script type="text/javascript">{plotly_js}</script>
<style>body {{ font-family: sans-serif; margin: 8px; }} #bar {{ margin: 4px 0 0 40px; font-size: 15px; }}</style>
</head><body>
<div id="bar"><label for="surface">Surface: </label><select id="surface">{options}</select></div>
<div id="plot" style="height: 620px;"></div>
<script type="text/javascript">
const FIGURES = {figures};
const CONFIG = {{displaylogo: false, responsive: true}};
function showSurface(i) {{
  const fig = JSON.parse(JSON.stringify(FIGURES[i]));  // a fresh copy: each switch starts from the file's view
  return Plotly.newPlot("plot", fig.data, fig.layout, CONFIG);
}}
document.getElementById("surface").addEventListener("change", e => showSurface(Number(e.target.value)));
showSurface(0);
</script>
</body></html>
"""


def _nullable(a: npt.ArrayLike) -> list[Any]:
    """Array -> nested lists with None for NaN (JSON null: a gap in Plotly)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, None).tolist()


def _log10(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.log10(a), np.nan)


PLOTLY_MISSING = "--html needs plotly: pip install 'loss-landscape[viewer]'"


def require_plotly() -> None:
    """Refuse in one line, before anything is written, where the [viewer] extra is not installed."""
    try:
        for module in ("plotly.graph_objects", "plotly.offline", "plotly.subplots"):
            importlib.import_module(module)
    except ImportError:
        raise UserError(PLOTLY_MISSING) from None


def _toggle(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(type="buttons", direction="right", x=1.0, y=1.13, xanchor="right", showactive=True, buttons=buttons)]


def marks_trace(points: Sequence[dict[str, Any]]) -> go.Scatter:
    """The marked points as white dots with their labels (a Plotly scatter)."""
    import plotly.graph_objects as go
    return go.Scatter(x=[p["x"] for p in points], y=[p["y"] for p in points], text=[p["label"] for p in points],
                      mode="markers+text", textposition="top right", name="marked points", showlegend=False,
                      marker=dict(size=10, color="white", line=dict(color="black", width=1.5)),
                      textfont=dict(color="black", size=13),
                      hovertemplate="%{text}<br>x=%{x:.4f}<br>y=%{y:.4f}<extra></extra>")


def figure_2d(surf: h5.Surface, surf_name: str, proj: Optional[tuple[np.ndarray, np.ndarray]] = None,
              pca: Optional[np.ndarray] = None) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    Z = computed(surf, surf_name)
    hover = "x=%{x:.4f}<br>y=%{y:.4f}<br>" + surf_name + "=%{customdata:.5g}<extra></extra>"
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "surface"}, {"type": "xy"}]],
                        subplot_titles=("3D surface (drag to rotate)", "Contours"), horizontal_spacing=0.06)
    common = dict(x=surf.x.tolist(), y=surf.y.tolist(), customdata=_nullable(Z), hovertemplate=hover)
    fig.add_trace(go.Surface(z=_nullable(Z), colorscale="Viridis", showscale=False, name=surf_name, **common), 1, 1)
    fig.add_trace(go.Contour(z=_nullable(Z), colorscale="Viridis", ncontours=25, name=surf_name,
                             contours=dict(showlabels=True, labelfont=dict(size=10, color="white")),
                             colorbar=dict(title=dict(text=surf_name)), **common), 1, 2)
    if proj is not None:
        fig.add_trace(go.Scatter(x=proj[0].tolist(), y=proj[1].tolist(), mode="lines+markers", name="trajectory",
                                 line=dict(color="red", width=2), marker=dict(size=4),
                                 hovertemplate="x=%{x:.4f}<br>y=%{y:.4f}<extra>trajectory</extra>"), 1, 2)
    points = marked_points(surf)
    if points:
        fig.add_trace(marks_trace(points), 1, 2)
        fig.update_xaxes(range=[float(surf.x.min()), float(surf.x.max())], row=1, col=2)  # marks never move the view
        fig.update_yaxes(range=[float(surf.y.min()), float(surf.y.max())], row=1, col=2)
    lin, log = _nullable(Z), _nullable(_log10(Z))
    fig.update_layout(updatemenus=_toggle([
        dict(label="linear", method="restyle", args=[{"z": [lin, lin]}, [0, 1]]),
        dict(label="log10", method="restyle", args=[{"z": [log, log]}, [0, 1]])]))
    if pca is not None:
        fig.update_xaxes(title_text=f"1st PC: {pca[0] * 100:.2f} %", row=1, col=2)
        fig.update_yaxes(title_text=f"2nd PC: {pca[1] * 100:.2f} %", row=1, col=2)
    fig.update_scenes(xaxis_title="x", yaxis_title="y", zaxis_title=surf_name, aspectmode="cube",
                      camera=dict(eye=dict(x=1.5, y=-1.5, z=1.1)))
    return fig


def curve_keys(surf: h5.Surface, surf_name: str) -> tuple[list[str], list[str], str]:
    """(left-axis maps, right-axis accuracy maps, left-axis title) of the 1D viewer.

    A train_X/test_X map is drawn with its twin; beside a map that is not itself an accuracy or
    error, the accuracies the file holds go on the right axis. Other maps are drawn alone."""
    if not has_map(surf, surf_name):
        computed(surf, surf_name)  # raises, listing the maps the file holds
    prefix, _, stem = surf_name.partition("_")
    if prefix not in ("train", "test") or not stem:
        return [surf_name], [], surf_name
    left = [k for k in (f"train_{stem}", f"test_{stem}") if has_map(surf, k)]
    right = [] if stem in ("acc", "err") else [k for k in ("train_acc", "test_acc") if k in surf.values]
    return left, right, stem


def figure_1d(surf: h5.Surface, surf_name: str = "train_loss") -> go.Figure:
    import plotly.graph_objects as go
    left, right, title = curve_keys(surf, surf_name)
    fig = go.Figure()
    for keys, axis, colour in ((left, "y", "blue"), (right, "y2", "red")):
        for key in keys:
            fig.add_trace(go.Scatter(x=surf.x.tolist(), y=_nullable(computed(surf, key)), name=key, yaxis=axis,
                                     line=dict(color=colour, dash="dash" if key.startswith("test_") else "solid"),
                                     hovertemplate="x=%{x:.4f}<br>" + key + "=%{y:.5g}<extra></extra>"))
    fig.update_layout(xaxis=dict(title="x"), yaxis=dict(title=title, color="blue"),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"),
                      updatemenus=_toggle([dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                                           dict(label="log", method="relayout", args=[{"yaxis.type": "log"}])]))
    if right:  # accuracy ticks every 20 %, not Plotly's default of ticks synced to the loss grid
        fig.update_layout(yaxis2=dict(title="accuracy (%)", overlaying="y", side="right", range=[0, 100], color="red",
                                      tickmode="linear", tick0=0, dtick=20, showgrid=False))
    for p in marked_points(surf):  # a dotted vertical line at x, labelled at the top
        fig.add_vline(x=p["x"], line=dict(color="#444", dash="dot", width=1.5))
        fig.add_annotation(x=p["x"], y=0.98, xref="x", yref="paper", text=html.escape(p["label"]), showarrow=False,
                           textangle=-90, xanchor="right", yanchor="top", font=dict(color="#222", size=12))
    return fig


def _finish(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=dict(text=html.escape(title), font=dict(size=12)), height=620,
                      margin=dict(l=40, r=40, t=90, b=40))
    return fig


def _read_pca(dir_file: str) -> Optional[np.ndarray]:
    if not exists(dir_file):
        return None
    with h5.open_h5(dir_file, "direction file") as f:
        return f["explained_variance_ratio_"][()] if "explained_variance_ratio_" in f else None


def surface_figure(surf_file: str, surf_name: str = "train_loss", proj_file: str = "", dir_file: str = "",
                   title: Optional[str] = None) -> tuple[go.Figure, bool]:
    """(the viewer's Plotly figure of one surface file, whether it is 1D)."""
    require_plotly()
    surf = load_surface(surf_file)
    if surf.y is None:
        fig = figure_1d(surf, surf_name)
    else:
        proj = h5.read_projection_file(proj_file) if exists(proj_file) else None
        fig = figure_2d(surf, surf_name, proj, _read_pca(dir_file))
    return _finish(fig, title or os.path.basename(surf_file)), surf.y is None


def write_html(surf_file: Union[str, Sequence[str]], surf_name: str = "train_loss", proj_file: str = "",
               dir_file: str = "", path: Optional[str] = None, labels: Optional[Sequence[str]] = None) -> str:
    """Write the viewer for `surf_file` and return its path; a list of several files gives the compare page."""
    require_plotly()
    if isinstance(surf_file, (list, tuple)):
        if len(surf_file) > 1:
            return write_html_compare(surf_file, labels, surf_name, path)
        surf_file = surf_file[0]
    fig, is_1d = surface_figure(surf_file, surf_name, proj_file, dir_file)
    path = path or (f"{surf_file}_1d_viewer.html" if is_1d else f"{surf_file}_{surf_name}_viewer.html")
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    print(f"wrote {path}")
    return path


def write_html_compare(surf_files: Sequence[str], labels: Optional[Sequence[str]] = None,
                       surf_name: str = "train_loss", path: Optional[str] = None) -> str:
    """One offline page with a menu switching between the surfaces (1D or 2D); returns its path."""
    require_plotly()
    from plotly.offline import get_plotlyjs
    labels = surface_labels(surf_files, labels)
    figures = []
    for surf_file, label in zip(surf_files, labels):
        name = os.path.basename(surf_file)
        fig, _ = surface_figure(surf_file, surf_name, title=name if label == name else f"{label}: {name}")
        figures.append(fig.to_json())
    options = "".join(f'<option value="{i}">{html.escape(label)}</option>' for i, label in enumerate(labels))
    # "</" inside a <script> would end it early: a label or file name must never be able to do that
    figures_js = ("[" + ",\n".join(figures) + "]").replace("</", "<\\/")
    page = PAGE.format(title=html.escape(f"{surf_name}: {' | '.join(labels)}"), plotly_js=get_plotlyjs(),
                       options=options, figures=figures_js)
    path = path or f"{surf_files[0]}_{surf_name}_viewer_compare.html"
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {path}")
    return path
