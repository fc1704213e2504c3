"""Every plot, export and the viewer, rendered from small surface files written here with h5py:
ours, the reference's (-1 sentinels, its non-square layout), and partly computed ones."""
import os
import shutil
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

import h52vtp
import plot_1D
import plot_2D
import plot_util
from landscape.plots import viewer
from helpers import run_script

X = np.linspace(-1, 1, 9)
Y = np.linspace(-0.5, 0.5, 6)


def bowl(x, y, scale=1.0):
    xx, yy = np.meshgrid(x, y)                       # (ny, nx)
    return scale * (0.05 + 2 * xx ** 2 + 5 * yy ** 2 + 0.5 * xx * yy)


def write_surface(path, x, y=None, maps=None, reference_layout=False, missing=()):
    """A surface file; `reference_layout` stores 2D maps as (nx, ny) arrays holding (ny, nx) buffers."""
    maps = maps or {}
    with h5py.File(path, "w") as f:
        f["dir_file"] = "d.h5"
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        for k, v in maps.items():
            v = np.array(v, dtype=np.float64)
            v.reshape(-1)[list(missing)] = -1
            f[k] = v.reshape(len(x), len(y)) if (reference_layout and y is not None) else v
    return str(path)


def surface_2d(path, **kw):
    Z = bowl(X, Y)
    return write_surface(path, X, Y, {"train_loss": Z, "train_acc": 100 - 10 * Z, "test_loss": Z * 1.2,
                                      "test_acc": 95 - 10 * Z}, **kw)


def surface_1d(path, **kw):
    loss = 0.1 + 3 * X ** 2
    return write_surface(path, X, None, {"train_loss": loss, "train_acc": 100 - 20 * loss,
                                         "test_loss": loss + 0.2, "test_acc": 90 - 20 * loss}, **kw)


def png_colors(path):
    import matplotlib.image as mpimg
    img = (mpimg.imread(path)[..., :3] * 255).astype(np.int32)
    packed = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]
    return img.shape, len(np.unique(packed))


def assert_figure_file(path, fmt):
    assert os.path.getsize(path) > 2000, path
    if fmt == "png":
        shape, colors = png_colors(path)
        assert shape[0] > 200 and shape[1] > 200 and colors > 20, (path, shape, colors)
    elif fmt == "pdf":
        from pypdf import PdfReader
        pages = PdfReader(path).pages
        assert len(pages) == 1 and len(pages[0].get_contents().get_data()) > 1000
    else:
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10


# ----------------------------------------------------------------------------- 1D
@pytest.mark.parametrize("fmt", ["pdf", "png", "svg"])
def test_1d_outputs(tmp_path, fmt):
    s = surface_1d(tmp_path / "s.h5")
    paths = plot_1D.plot_1d_loss_err(s, fmt=fmt) + plot_1D.plot_1d_loss_err(s, log=True, fmt=fmt)
    names = {os.path.basename(p) for p in paths}
    assert {f"s.h5_1d_loss_acc.{fmt}", f"s.h5_1d_train_loss.{fmt}", f"s.h5_1d_train_err.{fmt}",
            f"s.h5_1d_loss_acc_log.{fmt}", f"s.h5_1d_train_loss_log.{fmt}"} <= names
    for p in paths:
        assert_figure_file(p, fmt)


def test_1d_missing_points_are_gaps(tmp_path):
    s = surface_1d(tmp_path / "s.h5", reference_layout=True, missing=[2, 3])
    surf = plot_util.load_surface(s)
    fig = plot_util.new_figure(False)
    ax1 = fig.add_subplot()
    plot_1D.draw_loss_acc(ax1, ax1.twinx(), surf.x, surf, False)
    y = ax1.lines[0].get_ydata()
    assert np.isnan(y[[2, 3]]).all() and np.isfinite(np.delete(y, [2, 3])).all()
    assert (np.nan_to_num(y, nan=0) >= 0).all()  # never -1
    assert plot_1D.plot_1d_loss_err(s, fmt="png")


def test_1d_curves_colours(tmp_path):
    s = surface_1d(tmp_path / "s.h5")
    import matplotlib.image as mpimg
    path = plot_1D.plot_1d_loss_err(s, fmt="png")[0]
    img = mpimg.imread(path)[..., :3]
    blue = ((img[..., 2] > 0.8) & (img[..., 0] < 0.2)).sum()
    red = ((img[..., 0] > 0.8) & (img[..., 2] < 0.2)).sum()
    assert blue > 300 and red > 300  # loss (blue) and accuracy (red) curves are drawn


def test_1d_repeat_and_eig_ratio(tmp_path):
    for i in (1, 2, 3):
        surface_1d(tmp_path / f"rep_{i}.h5")
    out = plot_1D.plot_1d_loss_err_repeat(str(tmp_path / "rep"), 1, 3, fmt="png")
    assert_figure_file(out[0], "png")
    s = write_surface(tmp_path / "e.h5", X, None, {"train_loss": X ** 2 + 0.1, "train_acc": 90 + 0 * X,
                                                   "max_eig": 10 + X, "min_eig": -0.5 * np.abs(X)})
    names = {os.path.basename(p) for p in plot_1D.plot_1d_loss_err(s, fmt="png")}
    assert {"e.h5_1d_eig_abs_ratio.png", "e.h5_1d_eig_ratio.png"} <= names


def test_1d_cli(tmp_path):
    s = surface_1d(tmp_path / "s.h5")
    r = run_script("plot_1D.py", ["-f", s, "--format", "svg", "--loss_max", "4"])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(s + "_1d_loss_acc.svg")


# ----------------------------------------------------------------------------- 2D
@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
@pytest.mark.parametrize("kind", ["ours", "reference", "partial"])
def test_2d_outputs(tmp_path, fmt, kind):
    kw = {"reference": {"reference_layout": True, "missing": [3, 17]}, "partial": {"missing": list(range(20))}}
    s = surface_2d(tmp_path / "s.h5", **kw.get(kind, {}))
    paths = plot_2D.plot_2d_contour(s, "train_loss", fmt=fmt)
    assert [os.path.basename(p) for p in paths] == [f"s.h5_train_loss_{k}.{fmt}" for k in
                                                    ("2dcontour", "2dcontourf", "2dheat", "3dsurface")]
    for p in paths:
        assert_figure_file(p, fmt)


def test_reference_non_square_layout_is_read_correctly(tmp_path):
    s = surface_2d(tmp_path / "r.h5", reference_layout=True)
    surf = plot_util.load_surface(s)
    np.testing.assert_allclose(surf.values["train_loss"], bowl(X, Y))


def test_contours_carry_labels_and_levels_fall_back_to_the_data(tmp_path, capsys):
    s = write_surface(tmp_path / "big.h5", X, Y, {"train_loss": bowl(X, Y, 100) + 100})
    surf, XX, YY, Z = plot_2D.load_map(s, "train_loss")
    levels = plot_2D.contour_levels(Z, 0.1, 10, 0.5)
    assert "miss the data" in capsys.readouterr().out
    assert Z.min() <= levels[1] and levels[-2] <= Z.max()
    fig = plot_util.new_figure(False)
    cs = plot_2D.draw_contours(fig.add_subplot(), XX, YY, Z, levels, False)
    assert len(cs.labelTexts) > 3


def test_err_maps_derive_from_accuracy(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    surf = plot_util.load_surface(s)
    np.testing.assert_allclose(plot_util.computed(surf, "test_err"), 100 - surf.values["test_acc"])
    assert plot_2D.plot_2d_contour(s, "train_err", vmin=0, vmax=100, vlevel=5, fmt="png")


def test_3d_surface_is_not_blank(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    path = plot_2D.plot_2d_contour(s, "train_loss", fmt="png")[3]
    _, colors = png_colors(path)
    assert colors > 200  # a rendered surface has many shades; the reference's Axes3D(fig) left it blank


def test_log_scale_2d(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    for p in plot_2D.plot_2d_contour(s, "train_loss", log=True, fmt="png"):
        assert_figure_file(p, "png")


def write_pca_files(tmp_path):
    d = tmp_path / "dirs.h5"
    with h5py.File(d, "w") as f:
        f["explained_variance_ratio_"] = np.array([0.8, 0.15])
    p = tmp_path / "proj.h5"
    with h5py.File(p, "w") as f:
        t = np.linspace(0, 1, 12)
        f["proj_xcoord"] = 0.8 * (1 - t) * np.cos(3 * t)
        f["proj_ycoord"] = 0.3 * (1 - t) * np.sin(3 * t)
    return str(d), str(p)


def test_trajectory_plots(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    d, p = write_pca_files(tmp_path)
    out = plot_2D.plot_contour_trajectory(s, d, p, "train_loss", fmt="png")
    assert os.path.basename(out[0]) == "proj.h5_train_loss_2dcontour_proj.png"
    assert_figure_file(out[0], "png")
    assert_figure_file(plot_2D.plot_trajectory(p, d, fmt="svg")[0], "svg")
    r = run_script("plot_2D.py", ["--surf_file", s, "--dir_file", d, "--proj_file", p, "--format", "pdf"])
    assert r.returncode == 0 and os.path.exists(p + "_train_loss_2dcontour_proj.pdf"), r.stderr


def test_eig_ratio_heat_maps(tmp_path):
    Z = bowl(X, Y)
    s = write_surface(tmp_path / "e.h5", X, Y, {"train_loss": Z, "train_acc": 90 + 0 * Z, "max_eig": 10 + Z,
                                                "min_eig": -Z}, missing=[5])
    names = {os.path.basename(p) for p in plot_2D.plot_2d_contour(s, fmt="png")}
    assert {"e.h5_min_eig_max_eig_abs_ratio_heat_sns.png", "e.h5_min_eig_max_eig_ratio_heat_sns.png"} <= names


def test_2d_cli_errors_are_one_line(tmp_path):
    s = surface_1d(tmp_path / "one.h5")
    r = run_script("plot_2D.py", ["--surf_file", s])
    assert r.returncode == 2 and "1D surface" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_script("plot_2D.py", ["--surf_file", str(tmp_path / "nope.h5")])
    assert r.returncode == 2 and "does not exist" in r.stderr


# ----------------------------------------------------------------------------- VTK
def read_vtp(path):
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy
    r = vtk.vtkXMLPolyDataReader()
    r.SetFileName(path)
    r.Update()
    out = r.GetOutput()
    pts = vtk_to_numpy(out.GetPoints().GetData())
    z = vtk_to_numpy(out.GetPointData().GetArray("zvalue"))
    return out, pts, z


def test_vtp_non_square_points_and_values(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    path = h52vtp.h5_to_vtp(s, "train_loss")
    assert os.path.basename(path) == "s.h5_train_loss.vtp"
    out, pts, z = read_vtp(path)
    assert out.GetNumberOfPoints() == 9 * 6 and out.GetNumberOfPolys() == 2 * 8 * 5
    Z = bowl(X, Y)
    np.testing.assert_allclose(z.min(), Z.min(), rtol=1e-6)
    np.testing.assert_allclose(z.max(), Z.max(), rtol=1e-6)
    for k in (0, 7, 30, 53):  # the point at (x_i, y_j) carries Z[j, i]
        i = int(np.argmin(np.abs(X - pts[k, 0])))
        j = int(np.argmin(np.abs(Y - pts[k, 1])))
        assert z[k] == pytest.approx(Z[j, i], rel=1e-6)


def test_vtp_log_zmax_interp_and_missing(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    path = h52vtp.h5_to_vtp(s, "train_loss", log=True, zmax=1.0, interp=25)
    assert os.path.basename(path) == "s.h5_train_loss_zmax=1.0_log.vtp"
    out, _, z = read_vtp(path)
    assert out.GetNumberOfPoints() == 25 * 25
    assert z.max() <= np.log(1.0 + 0.1) + 1e-6
    p = surface_2d(tmp_path / "p.h5", missing=[0])
    out, _, _ = read_vtp(h52vtp.h5_to_vtp(p, "train_loss"))
    assert out.GetNumberOfPolys() == 2 * 8 * 5 - 2  # the cell touching the missing corner is left out


def test_vtp_cli(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    r = run_script("h52vtp.py", ["--surf_file", s, "--surf_name", "test_loss", "--zmax", "10", "--log"])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(s + "_test_loss_zmax=10.0_log.vtp")


# ----------------------------------------------------------------------------- the HTML viewer
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is not installed (apt-get install chromium); the viewer is not browser-tested here")
    return path


def open_in_browser(html, shot):
    """Load the page in headless Chromium; return (console errors, canvas count, colours in the shot)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 700})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
        page.goto("file://" + os.path.abspath(html))
        page.wait_for_function("document.querySelector('.js-plotly-plot') && "
                               "document.querySelector('.js-plotly-plot')._fullLayout !== undefined")
        page.wait_for_timeout(1500)
        canvases = page.eval_on_selector_all("canvas", "els => els.length")
        page.screenshot(path=shot)
        browser.close()
    _, colors = png_colors(shot)
    return errors, requests, canvases, colors


def test_viewer_2d_with_trajectory_in_chromium(tmp_path):
    chromium()
    s = surface_2d(tmp_path / "s.h5", missing=[4])
    d, p = write_pca_files(tmp_path)
    html = viewer.write_html(s, "train_loss", proj_file=p, dir_file=d)
    text = open(html).read()
    assert "cdn" not in text.lower().split("plotly.js v")[0][:2000] and "<script src=" not in text
    errors, requests, canvases, colors = open_in_browser(html, str(tmp_path / "shot.png"))
    assert errors == [] and requests == []
    assert canvases >= 1 and colors > 200  # the WebGL surface and the contour map are drawn


def test_viewer_1d_in_chromium(tmp_path):
    chromium()
    html = viewer.write_html(surface_1d(tmp_path / "s.h5"))
    errors, requests, _, colors = open_in_browser(html, str(tmp_path / "shot1.png"))
    assert errors == [] and requests == [] and colors > 50


def test_viewer_cli(tmp_path):
    s = surface_2d(tmp_path / "s.h5")
    r = run_script("plot_2D.py", ["--surf_file", s, "--html", "--format", "png"])
    assert r.returncode == 0, r.stderr
    html = s + "_train_loss_viewer.html"
    assert os.path.getsize(html) > 1_000_000  # plotly.js is inlined: no network needed
