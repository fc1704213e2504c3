"""The interactive viewer: one self-contained HTML file (Plotly, its JavaScript inlined).

It works offline, with no server and no CDN. For a 2D surface: a rotatable 3D surface beside the
contour map, values on hover, a linear/log toggle, and the trajectory over the contours when a
projection file is given. For a 1D surface: loss and accuracy curves, with the same toggle.
Points not computed are gaps.
"""
import numpy as np

import h5_util
from plot_util import computed, exists, load_surface


def _nullable(a):
    """Array -> nested lists with None for NaN (JSON null: a gap in Plotly)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, None).tolist()


def _log10(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.log10(a), np.nan)


def _toggle(buttons):
    return [dict(type="buttons", direction="right", x=1.0, y=1.13, xanchor="right", showactive=True, buttons=buttons)]


def figure_2d(surf, surf_name, proj=None, pca=None):
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


def figure_1d(surf):
    import plotly.graph_objects as go
    fig = go.Figure()
    for key, axis, dash in (("train_loss", "y", "solid"), ("test_loss", "y", "dash"),
                            ("train_acc", "y2", "solid"), ("test_acc", "y2", "dash")):
        if key in surf.values:
            fig.add_trace(go.Scatter(x=surf.x.tolist(), y=_nullable(computed(surf, key)), name=key, yaxis=axis,
                                     line=dict(color="blue" if "loss" in key else "red", dash=dash),
                                     hovertemplate="x=%{x:.4f}<br>" + key + "=%{y:.5g}<extra></extra>"))
    fig.update_layout(xaxis=dict(title="x"), yaxis=dict(title="loss", color="blue"),
                      yaxis2=dict(title="accuracy (%)", overlaying="y", side="right", range=[0, 100], color="red"),
                      updatemenus=_toggle([dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                                           dict(label="log", method="relayout", args=[{"yaxis.type": "log"}])]))
    return fig


def write_html(surf_file, surf_name="train_loss", proj_file="", dir_file="", path=None):
    """Write the viewer for `surf_file` and return its path."""
    surf = load_surface(surf_file)
    if surf.y is None:
        fig = figure_1d(surf)
        path = path or f"{surf_file}_1d_viewer.html"
    else:
        proj = h5_util.read_projection_file(proj_file) if exists(proj_file) else None
        pca = None
        if exists(dir_file):
            with h5_util.open_h5(dir_file, "direction file") as f:
                pca = f["explained_variance_ratio_"][()] if "explained_variance_ratio_" in f else None
        fig = figure_2d(surf, surf_name, proj, pca)
        path = path or f"{surf_file}_{surf_name}_viewer.html"
    fig.update_layout(title=dict(text=surf_file.split("/")[-1], font=dict(size=12)), height=620,
                      margin=dict(l=40, r=40, t=90, b=40))
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    print(f"wrote {path}")
    return path
