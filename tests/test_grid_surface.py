"""The surface engine: values at the right places, the file layout, resume, and refusals."""
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import h5_util
import net_plotter
import plot_surface
from helpers import load_net, run_script
from landscape.errors import UserError

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


def surface(args):
    """Run plot_surface in-process on digits; return the surface file path."""
    c = plot_surface.parse_config(["--dataset", "digits", "--threads", "1", *args])
    assert plot_surface.main(["--dataset", "digits", "--threads", "1", *args]) == 0
    return plot_surface.name_surface_file(c, net_plotter.name_direction_file(c))


def direct_loss(net, x, y):
    """An independent evaluation: one forward pass over the whole set in float64."""
    net = net.double().eval()
    with torch.no_grad():
        out = net(x.double())
    return F.cross_entropy(out, y).item(), 100.0 * (out.argmax(1) == y).double().mean().item()


def test_center_point_equals_the_checkpoint(in_tmp, cnn_ckpt, digits):
    s = surface(["--model", "digits_cnn", "--model_file", cnn_ckpt, "--x=-1:1:3", "--y=-1:1:3", *FILTER,
                 "--surf_file", "s.h5"])
    with h5py.File(s, "r") as f:
        loss, acc = f["train_loss"][1, 1], f["train_acc"][1, 1]
    ref_loss, ref_acc = direct_loss(load_net("digits_cnn", cnn_ckpt), digits.train_x, digits.train_y)
    assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == pytest.approx(ref_acc, abs=1e-9)


def test_interpolation_reaches_model2_at_x_equals_1(in_tmp, cnn_run, digits):
    a, b = f"{cnn_run}/model_1.t7", f"{cnn_run}/model_4.t7"
    s = surface(["--model", "digits_cnn", "--model_file", a, "--model_file2", b, "--dir_type", "states",
                 "--x=0:1:2"])
    assert s == f"{cnn_run}/model_1.t7_model_4.t7_states.h5_[0.0,1.0,2].h5"
    with h5py.File(s, "r") as f:
        losses = f["train_loss"][()]
    assert losses[0] == pytest.approx(direct_loss(load_net("digits_cnn", a), digits.train_x, digits.train_y)[0], rel=1e-5)
    assert losses[1] == pytest.approx(direct_loss(load_net("digits_cnn", b), digits.train_x, digits.train_y)[0], rel=1e-4)


def test_non_square_grid_puts_each_value_in_its_cell(in_tmp, cnn_ckpt, digits):
    s = surface(["--model", "digits_cnn", "--model_file", cnn_ckpt, "--x=-0.5:0.5:3", "--y=-0.4:0.4:2", *FILTER,
                 "--surf_file", "ns.h5"])
    with h5py.File(s, "r") as f:
        Z = f["train_loss"][()]
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        dir_file = f["dir_file"][()].decode()
    assert Z.shape == (2, 3)
    dx, dy = h5_util.read_direction_file(dir_file)
    for j in range(2):
        for i in range(3):
            net = load_net("digits_cnn", cnn_ckpt)
            with torch.no_grad():
                for p, a, b in zip(net.parameters(), dx, dy):
                    p.add_(x[i] * a + y[j] * b)
            assert Z[j, i] == pytest.approx(direct_loss(net, digits.train_x, digits.train_y)[0], rel=1e-4), (j, i)


def test_surface_file_layout_and_provenance(in_tmp, mlp_ckpt):
    s = surface(["--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:4", "--y=0:1:3", *FILTER,
                 "--eval_test", "--surf_file", "p.h5"])
    with h5py.File(s, "r") as f:
        assert {"dir_file", "xcoordinates", "ycoordinates", "train_loss", "train_acc", "test_loss",
                "test_acc"} == set(f)
        assert f["train_loss"].shape == (3, 4) and f["test_acc"].shape == (3, 4)
        np.testing.assert_array_equal(f["ycoordinates"][()], np.linspace(0, 1, 3))
        for key in ("command", "seed", "model_file_sha256", "tool", "dataset", "train_size", "precision", "created"):
            assert key in f.attrs, key
        assert f.attrs["train_size"] == 1437 and f.attrs["dataset"] == "digits"
        assert (f["test_loss"][()] != -1).all()


def test_points_per_pass_gives_the_same_values(in_tmp, cnn_ckpt):
    args = ["--model", "digits_cnn", "--model_file", cnn_ckpt, "--x=-1:1:5", "--y=-1:1:3", *FILTER, "--eval_test"]
    a = surface(args + ["--surf_file", "k1.h5"])
    b = surface(args + ["--surf_file", "k4.h5", "--points_per_pass", "4"])
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            np.testing.assert_allclose(fb[key][()], fa[key][()], rtol=2e-5, atol=1e-6)


def test_mse_loss(in_tmp, mlp_ckpt, digits):
    s = surface(["--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=0:0:1", "--loss_name", "mse"])
    net = load_net("digits_mlp", mlp_ckpt)
    with torch.no_grad():
        p = F.softmax(net(digits.train_x), dim=1)
    ref = F.mse_loss(p, F.one_hot(digits.train_y, 10).float()).item()
    with h5py.File(s, "r") as f:
        assert f["train_loss"][0] == pytest.approx(ref, rel=1e-5)


def test_resume_computes_only_missing_points(in_tmp, mlp_ckpt):
    args = ["--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:5", "--y=-1:1:4", *FILTER, "--surf_file", "r.h5"]
    surface(args)
    with h5py.File("r.h5", "r+") as f:
        full = f["train_loss"][()]
        z = f["train_loss"][()]
        z[0, :3] = -1.0          # not computed
        z[2, 2] = 0.0            # computed, a (planted) zero loss
        z[3, 1] = np.nan         # computed, diverged
        f["train_loss"][...] = z
    surface(args)
    with h5py.File("r.h5", "r") as f:
        z = f["train_loss"][()]
    np.testing.assert_allclose(z[0, :3], full[0, :3])
    assert z[2, 2] == 0.0 and np.isnan(z[3, 1])


def test_reference_style_file_resumes(in_tmp, mlp_ckpt):
    """A file as the reference writes it: (nx, ny) arrays in (ny, nx) order, -1 sentinels, no attributes."""
    args = ["--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3", "--y=-1:1:2", *FILTER]
    clean = surface(args + ["--surf_file", "clean.h5"])
    with h5py.File(clean, "r") as f:
        truth = {k: f[k][()] for k in ("train_loss", "train_acc")}
        dir_file = f["dir_file"][()].decode()
    with h5py.File("legacy.h5", "w") as f:
        f["dir_file"] = dir_file
        f["xcoordinates"] = np.linspace(-1, 1, 3)
        f["ycoordinates"] = np.linspace(-1, 1, 2)
        for k, v in truth.items():
            flat = v.ravel().copy()
            flat[[1, 4]] = -1
            f[k] = flat.reshape(3, 2)  # the reference's (len(x), len(y)) array
    surface(args + ["--surf_file", "legacy.h5", "--dir_file", dir_file])
    surf = h5_util.read_surface("legacy.h5")
    for k, v in truth.items():
        np.testing.assert_allclose(surf.values[k], v, rtol=1e-6)


def test_resume_into_another_grid_is_refused(in_tmp, mlp_ckpt):
    args = ["--model", "digits_mlp", "--model_file", mlp_ckpt, *FILTER, "--surf_file", "g.h5", "--y=-1:1:3"]
    surface(args + ["--x=-1:1:3"])
    before = open("g.h5", "rb").read()
    with pytest.raises(UserError, match="different x grid"):
        plot_surface.main(["--dataset", "digits", *args, "--x=-1:1:4"])
    assert open("g.h5", "rb").read() == before


def test_zero_endpoint_and_single_point_ranges():
    c = plot_surface.parse_config(["--model_file", "m.t7", "--y=0:1:21", "--x=0.5:0.5:1"])
    assert (c.ymin, c.ymax, c.ynum) == (0.0, 1.0, 21)
    np.testing.assert_array_equal(plot_surface.grid(c)[0], [0.5])


@pytest.mark.parametrize("bad", ["a:b:c", "-1:1", "-1:1:0", "-1:1:2.5", "nan:1:3", "-1:inf:3"])
def test_malformed_ranges_are_refused(bad):
    with pytest.raises(UserError, match="--x"):
        plot_surface.parse_config(["--model_file", "m.t7", f"--x={bad}"])


def test_dry_run_validates_and_writes_nothing(tmp_path, mlp_ckpt):
    before = sorted(os.listdir(os.path.dirname(mlp_ckpt)))
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                       "--x=-1:1:11", "--y=-1:1:11", *FILTER, "--dry_run"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "would be created" in r.stdout and "121 points" in r.stdout and "about" in r.stdout
    assert sorted(os.listdir(os.path.dirname(mlp_ckpt))) == before
