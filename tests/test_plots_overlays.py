"""Several surfaces in one figure or page, any stored map, files without accuracy, marked points,
and the eigenvalue spectral density: checked on what is drawn (matplotlib artists, PNG pixels, the
page in headless Chromium), from small surface files written here with h5py."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from landscape import errors
import plot_1D
import plot_2D
import plot_util
from landscape.plots import viewer
from landscape.errors import UserError

X1 = np.linspace(-1, 1, 11)


def write_surface(path, x, y=None, maps=None, marks=None):
    """A surface file holding `maps`; `marks` (a list, or a raw string) becomes the marked_points attribute."""
    with h5py.File(path, "w") as f:
        f["dir_file"] = "d.h5"
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        for k, v in (maps or {}).items():
            f[k] = np.asarray(v, dtype=np.float64)
        if marks is not None:
            f.attrs["marked_points"] = marks if isinstance(marks, str) else json.dumps(marks)
    return str(path)


def bowl(x, y, a, b):
    xx, yy = np.meshgrid(x, y)  # (ny, nx)
    return 0.05 + a * xx ** 2 + b * yy ** 2


def one_d(path, scale=1.0, x=X1, acc=True, marks=None):
    loss = 0.1 + scale * x ** 2
    maps = {"train_loss": loss, "test_loss": loss + 0.2}
    if acc:
        maps.update(train_acc=100 - 10 * loss, test_acc=95 - 10 * loss)
    return write_surface(path, x, None, maps, marks)


@pytest.fixture
def saved(monkeypatch):
    """Every figure plot_1D and plot_2D save, in order, as (figure, path); the files are still written."""
    figures = []
    real = plot_util.save_figure

    def spy(fig, path, fmt):
        figures.append((fig, path))
        return real(fig, path, fmt)
    monkeypatch.setattr(plot_1D, "save_figure", spy)
    monkeypatch.setattr(plot_2D, "save_figure", spy)
    return figures


def cli(module, args, capsys):
    """(exit code, stderr lines) of a script's main, run in this process."""
    capsys.readouterr()
    rc = errors.run_cli(module.main, [str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


def texts(ax):
    return [t.get_text().strip() for t in ax.texts]


# ----------------------------------------------------------------------------- 1D overlay
def test_1d_overlay_draws_each_file_on_shared_axes(tmp_path, saved):
    a = one_d(tmp_path / "a.h5", 1.0)
    b = one_d(tmp_path / "b.h5", 0.3, x=np.linspace(-0.5, 1.5, 9))
    c = one_d(tmp_path / "c.h5", 2.0, acc=False)
    out = plot_1D.plot_1d_overlay([a, b, c], ["SGD", "SAM", "MSE"], fmt="png")
    assert [os.path.basename(p) for p in out] == ["a.h5_1d_overlay_train_loss.png"]
    (fig, _), = saved
    ax1, ax2 = fig.axes  # loss on the left, accuracy on the right: one twin pair, not a pair per file
    assert [t.get_text() for t in ax1.get_legend().get_texts()] == ["SGD", "SAM", "MSE"]
    for line, path, scale in zip(ax1.lines, (a, b, c), (1.0, 0.3, 2.0)):
        surf = plot_util.load_surface(path)
        np.testing.assert_allclose(line.get_ydata(), 0.1 + scale * surf.x ** 2)
    assert len(ax2.lines) == 2  # the file without accuracy adds no accuracy curve
    np.testing.assert_allclose(ax2.lines[1].get_ydata(), 100 - 10 * (0.1 + 0.3 * np.linspace(-0.5, 1.5, 9) ** 2))
    assert ax1.lines[0].get_color() == ax2.lines[0].get_color() != ax1.lines[1].get_color()
    assert ax1.get_xlim() == (-1.0, 1.5)  # the union of the files' ranges


def test_1d_overlay_cli_and_its_one_line_errors(tmp_path, capsys):
    a, b = one_d(tmp_path / "a.h5", 1.0), one_d(tmp_path / "b.h5", 0.2)
    rc, err = cli(plot_1D, ["--surf_file", a, b, "--labels", "SGD", "SAM", "--format", "png", "--log"], capsys)
    assert rc == 0, err
    png = a + "_1d_overlay_train_loss_log.png"
    import matplotlib.image as mpimg
    img = (mpimg.imread(png)[..., :3] * 255).astype(int)
    blue = (np.abs(img - [31, 119, 180]).sum(-1) < 40).sum()    # C0: the first file
    orange = (np.abs(img - [255, 127, 14]).sum(-1) < 40).sum()  # C1: the second
    assert blue > 500 and orange > 500

    rc, err = cli(plot_1D, ["--surf_file", a, b, "--labels", "only-one"], capsys)
    assert rc == 2 and len(err) == 1 and "--labels" in err[0] and "only-one" in err[0]
    flat = write_surface(tmp_path / "flat.h5", X1, X1[:4], {"train_loss": np.ones((4, 11))})
    rc, err = cli(plot_1D, ["--surf_file", a, flat], capsys)
    assert rc == 2 and len(err) == 1 and "flat.h5" in err[0] and "2D surface" in err[0]


def test_default_labels_are_file_names(tmp_path):
    assert plot_util.surface_labels(["x/a.h5", "y/b.h5"]) == ["a.h5", "b.h5"]
    assert plot_util.surface_labels(["x/s.h5", "y/s.h5"]) == ["x/s.h5", "y/s.h5"]  # names alone would be ambiguous


# ----------------------------------------------------------------------------- any map; files without accuracy
def test_1d_without_accuracy_draws_the_loss_only(tmp_path, saved):
    s = one_d(tmp_path / "reg.h5", acc=False)
    out = plot_1D.plot_1d_loss_err(s, fmt="png")
    assert [os.path.basename(p) for p in out] == ["reg.h5_1d_loss_acc.png", "reg.h5_1d_train_loss.png"]
    fig = saved[0][0]
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2  # train and test loss, no accuracy axis
    import matplotlib.image as mpimg
    img = mpimg.imread(out[0])[..., :3]
    assert ((img[..., 0] > 0.8) & (img[..., 2] < 0.2)).sum() == 0  # nothing red: no accuracy drawn
    assert ((img[..., 2] > 0.8) & (img[..., 0] < 0.2)).sum() > 300


def test_surf_name_plots_any_map_and_names_the_maps_held(tmp_path, saved, capsys):
    mae = np.abs(X1) + 0.1
    s = write_surface(tmp_path / "r.h5", X1, None, {"train_loss": X1 ** 2, "train_mae": mae})
    rc, err = cli(plot_1D, ["--surf_file", s, "--surf_name", "train_mae", "--format", "png"], capsys)
    assert rc == 0, err
    (fig, path), = saved
    assert os.path.basename(path) == "r.h5_1d_train_mae.png" and os.path.exists(path)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), mae)
    rc, err = cli(plot_1D, ["--surf_file", s, "--surf_name", "test_mse"], capsys)
    assert rc == 2 and len(err) == 1 and "'test_mse'" in err[0] and "train_loss, train_mae" in err[0]


def test_2d_without_accuracy(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    s = write_surface(tmp_path / "lm.h5", x, y, {"train_loss": bowl(x, y, 1, 2), "train_ppl": bowl(x, y, 3, 3)})
    assert len(plot_2D.plot_2d_contour(s, "train_ppl", fmt="svg")) == 4
    with pytest.raises(UserError, match=r"'train_err' is not in .*it holds: train_loss, train_ppl$"):
        plot_2D.plot_2d_contour(s, "train_err")


# ----------------------------------------------------------------------------- marked points
def test_marked_points_are_parsed_and_bad_ones_refused(tmp_path):
    marks = [{"label": "epoch 1", "x": -0.5}, {"label": "end", "x": 1, "y": None}]
    surf = plot_util.load_surface(one_d(tmp_path / "m.h5", marks=marks))
    assert plot_util.marked_points(surf) == [{"label": "epoch 1", "x": -0.5, "y": None},
                                             {"label": "end", "x": 1.0, "y": None}]
    assert plot_util.marked_points(plot_util.load_surface(one_d(tmp_path / "n.h5"))) == []
    x = np.linspace(-1, 1, 3)
    two = write_surface(tmp_path / "t.h5", x, x, {"train_loss": np.ones((3, 3))}, [{"label": "A", "x": 0, "y": 0.5}])
    assert plot_util.marked_points(plot_util.load_surface(two)) == [{"label": "A", "x": 0.0, "y": 0.5}]
    bad = {"[{'label': 'a'": "not valid JSON", '{"label": "a", "x": 0}': "JSON list",
           '[{"label": "a", "x": "left"}]': "'left'", '[{"x": 1}]': "string 'label'"}
    for i, (raw, words) in enumerate(bad.items()):
        surf = plot_util.load_surface(one_d(tmp_path / f"bad{i}.h5", marks=raw))
        with pytest.raises(UserError, match=f"bad{i}.h5") as e:
            plot_util.marked_points(surf)
        assert words in str(e.value) and "\n" not in str(e.value)
    no_y = write_surface(tmp_path / "noy.h5", x, x, {"train_loss": np.ones((3, 3))}, [{"label": "A", "x": 0}])
    with pytest.raises(UserError, match="'y'"):
        plot_util.marked_points(plot_util.load_surface(no_y))


def test_1d_marked_points_are_labelled_dotted_lines(tmp_path, saved):
    s = one_d(tmp_path / "m.h5", marks=[{"label": "epoch 5", "x": -0.4}, {"label": "final", "x": 0.6}])
    plot_1D.plot_1d_loss_err(s, fmt="svg")
    assert len(saved) == 3
    for fig, path in saved:
        ax = fig.axes[-1]  # the top axes (the accuracy twin, where there is one)
        dotted = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
        assert sorted(ln.get_xdata()[0] for ln in dotted) == [-0.4, 0.6], path
        assert {"epoch 5", "final"} <= set(texts(ax)), path


def test_2d_marked_points_on_contour_filled_contour_and_heat_map(tmp_path, saved):
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    marks = [{"label": "model A", "x": 0.0, "y": 0.0}, {"label": "model B", "x": 0.5, "y": -0.5},
             {"label": "far away", "x": 5.0, "y": 5.0}]
    s = write_surface(tmp_path / "p.h5", x, y, {"train_loss": bowl(x, y, 2, 1)}, marks)
    plot_2D.plot_2d_contour(s, fmt="svg")
    for fig, path in saved[:3]:
        ax = fig.axes[0]
        dots = [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in ax.lines if ln.get_marker() == "o"]
        assert dots == [(0.0, 0.0), (0.5, -0.5), (5.0, 5.0)], path
        assert texts(ax)[-3:] == ["model A", "model B", "far away"], path
        assert max(ax.get_xlim()) < 1.2, path  # the point off the grid does not move the view


# ----------------------------------------------------------------------------- 2D side by side
def compare_files(tmp_path):
    xa, ya = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    xb, yb = np.linspace(-2, 2, 13), np.linspace(-1, 1, 5)
    a = write_surface(tmp_path / "a.h5", xa, ya, {"train_loss": bowl(xa, ya, 2, 3)},
                      [{"label": "start", "x": 0.2, "y": 0.1}])
    b = write_surface(tmp_path / "b.h5", xb, yb, {"train_loss": bowl(xb, yb, 8, 20)})
    return a, b


def test_2d_compare_shares_levels_colour_scale_and_colour_bar(tmp_path, saved):
    a, b = compare_files(tmp_path)
    out = plot_2D.plot_2d_compare([a, b], ["SGD", "SAM"], vmin=0.5, vmax=4, vlevel=0.5, fmt="png")
    assert [os.path.basename(p) for p in out] == [f"a.h5_train_loss_{k}_compare.png" for k in
                                                  ("2dcontour", "2dcontourf", "2dheat", "3dsurface")]
    for fig, path in saved[:3]:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == 2 and len(fig.axes) == 3, path  # two panels, one colour bar
        assert [ax.get_title() for ax in panels] == ["SGD", "SAM"]
        mappables = [c for ax in panels for c in ax.collections if c.get_array() is not None]
        assert {(m.norm.vmin, m.norm.vmax) for m in mappables} == {(0.5, 3.5)}, path
        sets = [c for ax in panels for c in ax.collections if hasattr(c, "levels")]
        for cs in sets:
            np.testing.assert_allclose(cs.levels, np.arange(0.5, 4, 0.5))
    for fig, path in saved[:3]:  # a.h5's marked point on its own panel only
        assert "start" in texts(fig.axes[0]) and "start" not in texts(fig.axes[1]), path


def test_2d_compare_levels_fall_back_to_the_union_of_the_data(tmp_path, saved, capsys):
    a, b = compare_files(tmp_path)
    plot_2D.plot_2d_compare([a, b], vmin=100, vmax=200, vlevel=10, fmt="svg")
    assert "miss the data" in capsys.readouterr().out
    za = plot_util.load_surface(a).values["train_loss"]
    zb = plot_util.load_surface(b).values["train_loss"]
    fig = saved[0][0]
    levels = [c.levels for ax in fig.axes[:2] for c in ax.collections if hasattr(c, "levels")]
    np.testing.assert_array_equal(levels[0], levels[1])
    from matplotlib.ticker import MaxNLocator  # about 12 levels over the range of both maps together
    lo, hi = min(za.min(), zb.min()), max(za.max(), zb.max())
    np.testing.assert_allclose(levels[0], MaxNLocator(nbins=12).tick_values(lo, hi))
    assert levels[0][0] <= lo and levels[0][-1] >= hi


def test_2d_compare_cli(tmp_path, capsys):
    a, b = compare_files(tmp_path)
    rc, err = cli(plot_2D, ["--surf_file", a, b, "--labels", "SGD", "SAM", "--format", "svg"], capsys)
    assert rc == 0, err
    assert os.path.exists(a + "_train_loss_2dheat_compare.svg")
    rc, err = cli(plot_2D, ["--surf_file", a, b, "--labels", "x", "y", "z"], capsys)
    assert rc == 2 and len(err) == 1 and "3 label(s)" in err[0]


# ----------------------------------------------------------------------------- the compare viewer
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is not installed (apt-get install chromium); the viewer is not browser-tested here")
    return path


def test_compare_viewer_switches_surfaces_in_chromium(tmp_path, capsys):
    from playwright.sync_api import sync_playwright
    exe = chromium()
    a, b = compare_files(tmp_path)
    c = one_d(tmp_path / "c.h5", acc=False, marks=[{"label": "ckpt", "x": 0.3}])
    rc, err = cli(plot_2D, ["--surf_file", a, b, c, "--labels", "SGD", "SAM", "</script>MSE", "--html"], capsys)
    assert rc == 0, err
    html = a + "_train_loss_viewer_compare.html"
    assert "<script src=" not in open(html).read()
    drawn = "() => { const p = document.getElementById('plot'); return [p.data[0].type, p.data[0].z || p.data[0].y," \
            " p.data.map(t => t.name), (p.layout.shapes || []).length]; }"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu", "--use-gl=swiftshader",
                                                              "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1300, "height": 700})
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:")) else problems.append(r.url))
        page.goto("file://" + os.path.abspath(html))
        page.wait_for_function("document.getElementById('plot')._fullLayout !== undefined")
        assert page.eval_on_selector_all("#surface option", "els => els.map(e => e.textContent)") == \
            ["SGD", "SAM", "</script>MSE"]
        seen = [page.evaluate(drawn)]
        for i in (1, 2):
            page.select_option("#surface", str(i))
            page.wait_for_timeout(300)
            seen.append(page.evaluate(drawn))
        page.wait_for_timeout(500)
        browser.close()
    assert problems == []
    (ta, za, na, _), (tb, zb, nb, _), (tc, yc, nc, shapes) = seen
    assert ta == tb == "surface" and tc == "scatter"
    np.testing.assert_allclose(np.array(za, dtype=float), plot_util.load_surface(a).values["train_loss"])
    np.testing.assert_allclose(np.array(zb, dtype=float), plot_util.load_surface(b).values["train_loss"])
    assert "marked points" in na and "marked points" not in nb  # only a.h5 marks a point
    np.testing.assert_allclose(yc, 0.1 + X1 ** 2)
    assert nc == ["train_loss", "test_loss"] and shapes == 1  # no accuracy; the marked point's dotted line


def test_viewer_1d_figure_follows_surf_name(tmp_path):
    s = write_surface(tmp_path / "r.h5", X1, None, {"train_loss": X1 ** 2, "train_mae": np.abs(X1),
                                                    "test_mae": np.abs(X1) + 1, "train_acc": 90 + 0 * X1})
    fig = viewer.figure_1d(plot_util.load_surface(s), "train_mae")
    assert [t.name for t in fig.data] == ["train_mae", "test_mae", "train_acc"]
    assert fig.layout.yaxis.title.text == "mae"


# ----------------------------------------------------------------------------- eigenvalue spectral density
def test_esd_plot(tmp_path, saved, capsys):
    grid = np.linspace(-1, 10, 200)
    density = np.exp(-grid ** 2) + 1e-4 * np.exp(-(grid - 8) ** 2)
    density[:20] = 0.0
    path = tmp_path / "h.h5"
    with h5py.File(path, "w") as f:
        f["esd_grid"], f["esd_density"], f["eigenvalues"] = grid, density, np.array([8.3, 7.9, 7.5])
    rc, err = cli(plot_1D, ["--esd_file", path, "--format", "png"], capsys)
    assert rc == 0, err
    (fig, out), = saved
    assert out == f"{path}_esd.png" and os.path.getsize(out) > 2000
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    y = ax.lines[0].get_ydata()
    shown = density > 1e-8 * density.max()
    np.testing.assert_allclose(y[shown], density[shown])
    assert (y[~shown] > 0).all() and y[:20].max() < 1e-7  # zero density sits at the log axis' floor, not at -inf
    rug = [c for c in ax.collections if len(c.get_segments()) == 3]
    assert len(rug) == 1 and sorted(s[0][0] for s in rug[0].get_segments()) == [7.5, 7.9, 8.3]

    with h5py.File(tmp_path / "no.h5", "w") as f:
        f["esd_grid"] = grid
    with pytest.raises(UserError, match="no.h5.*esd_density"):
        plot_1D.plot_esd(str(tmp_path / "no.h5"))
