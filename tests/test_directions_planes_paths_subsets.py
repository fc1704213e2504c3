"""Beyond the reference: planes through three checkpoints, paths between minima, parameter subsets.

Every value is checked against an independent computation: the checkpoint itself evaluated
directly, or the weights built by hand from the checkpoints (float64).
"""
import copy
import json
import os

import h5py
import pytest
import torch
import torch.nn.functional as F

from landscape import errors
import h5_util
import plot_surface
from helpers import load_net, run_script


def direct_loss(net, data):
    net = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        return F.cross_entropy(net(data.train_x.double()), data.train_y).item()


def states_vector(net):
    return torch.cat([v.double().reshape(-1) for v in net.state_dict().values() if v.is_floating_point()])


def with_states(template, vec):
    """A copy of `template` whose float state entries are the flat float64 vector `vec`."""
    net = copy.deepcopy(template)
    i = 0
    with torch.no_grad():
        for v in net.state_dict().values():
            if v.is_floating_point():
                v.copy_(vec[i:i + v.numel()].reshape(v.shape))
                i += v.numel()
    return net


def cli(args, cwd):
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_cnn", "--threads", "1", *args], cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


# ----------------------------------------------------------------------------- a plane through three checkpoints
def test_plane_through_three_checkpoints_holds_each_models_loss(tmp_path, cnn_run, digits):
    m1, m2, m3 = (f"{cnn_run}/model_{e}.t7" for e in (1, 2, 4))
    cli(["--model_file", m1, "--model_file2", m2, "--model_file3", m3, "--dir_type", "states", "--x=0:1:2",
         "--y=0:1:2", "--surf_file", "plane.h5"], tmp_path)
    with h5py.File(tmp_path / "plane.h5", "r") as f:
        Z = f["train_loss"][()]
        points = json.loads(f.attrs["marked_points"])
    assert [(p["label"], p["x"], p["y"]) for p in points] == [("model_file", 0, 0), ("model_file2", 1, 0),
                                                               ("model_file3", 0, 1)]
    for (j, i), path in (((0, 0), m1), ((0, 1), m2), ((1, 0), m3)):
        assert Z[j, i] == pytest.approx(direct_loss(load_net("digits_cnn", path), digits), rel=1e-4), path


def test_orthogonalized_plane_is_orthogonal_and_puts_model3_where_the_hand_built_plane_does(tmp_path, cnn_run,
                                                                                          digits):
    m1, m2, m3 = (f"{cnn_run}/model_{e}.t7" for e in (1, 2, 4))
    w1, w2, w3 = (states_vector(load_net("digits_cnn", p)) for p in (m1, m2, m3))
    x, y = w2 - w1, w3 - w1                            # the hand-built plane
    a = float(y @ x / (x @ x))
    b = float((y - a * x).norm() / x.norm())           # model 3 at (a, b) once y is orthogonalised to |x|
    common = ["--model_file", m1, "--model_file2", m2, "--model_file3", m3, "--dir_type", "states", "--orthogonalize"]
    cli(common + [f"--x={a}:{a}:1", f"--y={b}:{b}:1", "--surf_file", "m3.h5"], tmp_path)
    with h5py.File(tmp_path / "m3.h5", "r") as f:
        loss = f["train_loss"][0, 0]
        dir_file = f["dir_file"][()].decode()
        points = {p["label"]: (p["x"], p["y"]) for p in json.loads(f.attrs["marked_points"])}
    assert loss == pytest.approx(direct_loss(load_net("digits_cnn", m3), digits), rel=1e-4)
    assert points["model_file3"] == pytest.approx((a, b), rel=1e-6)
    assert "_ortho" in dir_file
    dx, dy = (torch.cat([t.double().reshape(-1) for t in d]) for d in h5_util.read_direction_file(dir_file))
    assert abs(float(dx @ dy)) <= 1e-6 * float(dx.norm() * dy.norm())
    assert float(dy.norm()) == pytest.approx(float(dx.norm()), rel=1e-6)
    cli(common + ["--x=0:1:2", "--y=0:0:1", "--surf_file", "m12.h5"], tmp_path)  # model 2 still at (1, 0)
    with h5py.File(tmp_path / "m12.h5", "r") as f:
        assert f["train_loss"][0, 1] == pytest.approx(direct_loss(load_net("digits_cnn", m2), digits), rel=1e-4)


def test_plane_contours_mark_the_three_models(tmp_path, cnn_run):
    m1, m2, m3 = (f"{cnn_run}/model_{e}.t7" for e in (1, 2, 4))
    cli(["--model_file", m1, "--model_file2", m2, "--model_file3", m3, "--dir_type", "states", "--orthogonalize",
         "--x=-0.5:1.5:5", "--y=-0.5:1.5:5", "--surf_file", "p.h5", "--plot", "--format", "png"], tmp_path)
    assert os.path.getsize(tmp_path / "p.h5_train_loss_2dcontour.png") > 5000


# ----------------------------------------------------------------------------- paths between minima
def test_polychain_and_bezier_paths_against_hand_built_weights(tmp_path, cnn_run, digits):
    files = [f"{cnn_run}/model_{e}.t7" for e in (1, 2, 4)]
    nets = [load_net("digits_cnn", f) for f in files]
    w = [states_vector(n) for n in nets]
    cli(["--path_files", *files, "--path_type", "polychain", "--dir_type", "states", "--x=0:1:5",
         "--surf_file", "poly.h5", "--plot", "--format", "png"], tmp_path)
    cli(["--path_files", *files, "--path_type", "bezier", "--dir_type", "states", "--x=0:1:3",
         "--surf_file", "bez.h5"], tmp_path)
    with h5py.File(tmp_path / "poly.h5", "r") as f:
        poly = f["train_loss"][()]
        assert f.attrs["path_type"] == "polychain" and len(f.attrs["path_sha256"].split()) == 3
    with h5py.File(tmp_path / "bez.h5", "r") as f:
        bez = f["train_loss"][()]
    own = [direct_loss(n, digits) for n in nets]
    assert poly[[0, 2, 4]] == pytest.approx(own, rel=1e-4)                 # checkpoint i at t = i / (N - 1)
    assert poly[1] == pytest.approx(direct_loss(with_states(nets[0], 0.5 * w[0] + 0.5 * w[1]), digits), rel=1e-4)
    assert bez[[0, 2]] == pytest.approx([own[0], own[2]], rel=1e-4)        # the curve's ends are F1 and FN
    mid = with_states(nets[0], 0.25 * w[0] + 0.5 * w[1] + 0.25 * w[2])    # B(1/2) for three control points
    assert bez[1] == pytest.approx(direct_loss(mid, digits), rel=1e-4)
    assert os.path.getsize(tmp_path / "poly.h5_1d_loss_acc.png") > 5000


def test_path_refusals(tmp_path, cnn_run, mlp_ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = f"{cnn_run}/model_1.t7"
    for args, words in ((["--path_files", a, "--x=0:1:3"], "at least two"),
                        (["--path_files", a, a, "--x=-1:1:3"], "t in [0, 1]"),
                        (["--path_files", a, a, "--path_type", "spline"], "--path_type"),
                        (["--path_files", a, mlp_ckpt, "--x=0:1:3"], "does not fit model 'digits_cnn'")):
        capsys.readouterr()
        rc = errors.run_cli(plot_surface.main, ["--dataset", "digits", "--model", "digits_cnn", *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and words in err, err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- parameter subsets
def test_params_moves_only_the_matching_parameters(tmp_path, mlp_ckpt, digits):
    cli_args = ["--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3", "--y=-1:1:3", "--xnorm", "filter",
                "--ynorm", "filter", "--params", r"^fc2\.", "--surf_file", "sub.h5"]
    r = run_script("plot_surface.py", ["--dataset", "digits", "--threads", "1", *cli_args], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "sub.h5", "r") as f:
        Z = f["train_loss"][()]
        dir_file = f["dir_file"][()].decode()
        assert f.attrs["params"] == r"^fc2\."
    with h5py.File(dir_file, "r") as f:
        assert f.attrs["spec_params"] == r"^fc2\."
    dx, dy = h5_util.read_direction_file(dir_file)
    net = load_net("digits_mlp", mlp_ckpt)
    names = [n for n, _ in net.named_parameters()]
    for n, a, b in zip(names, dx, dy):
        assert (a.abs().sum() > 0) == n.startswith("fc2.") and (b.abs().sum() > 0) == n.startswith("fc2.")
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for p, a, b in zip(moved.parameters(), dx, dy):
            p.add_(1.0 * a - 1.0 * b)
    assert Z[0, 2] == pytest.approx(direct_loss(moved, digits), rel=1e-5)   # (x, y) = (1, -1)


def test_params_subset_of_a_trajectory(tmp_path, mlp_run):
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_folder", mlp_run,
                                          "--max_epoch", "6", "--params", r"^fc1\.weight$", "--format", "png"])
    assert r.returncode == 0, r.stderr
    folder = [f for f in os.listdir(mlp_run) if f.startswith("PCA_weights_save_epoch=1_params=")]
    assert len(folder) == 1
    dir_file = os.path.join(mlp_run, folder[0], "directions.h5")
    with h5py.File(dir_file, "r") as f:
        assert f.attrs["params"] == r"^fc1\.weight$" and f.attrs["params_numbers"] == 64 * 32
    for d in h5_util.read_direction_file(dir_file):
        assert [bool(t.abs().sum() > 0) for t in d] == [True, False, False, False]
    r = run_script("plot_trajectory.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_folder", mlp_run,
                                          "--max_epoch", "6", "--params", "^nothing$"])
    assert r.returncode == 2 and "matches none" in r.stderr


def test_a_params_regex_that_matches_nothing_or_is_invalid(tmp_path, mlp_ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for regex, words in (("^conv", "matches none"), ("fc1[", "not a valid regular expression")):
        capsys.readouterr()
        rc = errors.run_cli(plot_surface.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                                "--x=-1:1:3", "--params", regex])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and words in err and len(err.splitlines()) == 1, err
    assert os.listdir(tmp_path) == []
