"""What the curvature reports and refuses: Lanczos non-convergence (API, --at_center, eigenvalue maps
that refuse to resume with another --tol or --max_iter), NaN at diverged points or checkpoints,
top_k above max_iter, and models with frozen parameters.

Lanczos starts from the gradient: 3 steps land 0.4% below the top eigenvalue, far outside the
tolerance (1e-4), which is what the non-convergence tests rely on.
"""
import json
import math
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from helpers import FILTER_X, MLP, assert_refused, copy_ckpt, load_net as load, ok, run_script, snapshot


def surface_cli(args, cwd, script="plot_surface.py", env=None):
    r = run_script(script, [str(a) for a in args], cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _reported_non_convergence(result, caught, captured):
    if getattr(result, "converged", None) is False:
        return True
    if any("converg" in str(w.message).lower() for w in caught):
        return True
    return "converg" in (captured.out + captured.err).lower()


def test_hessian_reports_lanczos_non_convergence(mlp_ckpt, digits, capsys):
    net = load("digits_mlp", mlp_ckpt)
    data = (digits.train_x, digits.train_y)
    full = landscape.hessian(net, data, trace=False, device="cpu")
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            short = landscape.hessian(net, data, max_iter=3, trace=False, device="cpu")
        except landscape.LandscapeError as e:        # refusing to return an unconverged value reports it too
            assert "converg" in str(e).lower(), str(e)
            return
    captured = capsys.readouterr()
    assert short.eigenvalues[0] < (1 - 1e-4) * full.eigenvalues[0]    # the premise: 3 steps are not enough
    assert _reported_non_convergence(short, caught, captured), (
        f"max_iter=3 returned {short.eigenvalues[0]:.4g} for a top eigenvalue of {full.eigenvalues[0]:.4g} "
        "without saying Lanczos did not converge")


def test_at_center_reports_lanczos_non_convergence(tmp_path, mlp_ckpt):
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    r = run_script("plot_hessian_eigen.py", MLP + ["--model_file", ckpt, "--at_center", "--max_iter", "3",
                                                   "--trace_samples", "2", "--batch_size", "2000"], cwd=tmp_path)
    if r.returncode == 2:                              # a clean refusal that says why is a report too
        assert "Traceback" not in r.stderr and "converg" in r.stderr.lower(), r.stderr[-3000:]
        return
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(ckpt + "_hessian.json"))
    assert "converg" in (r.stdout + r.stderr).lower() or summary.get("converged") is False, (r.stdout, r.stderr)


@pytest.mark.parametrize("first,second", [(["--max_iter", "3"], ["--max_iter", "100"]),
                                          (["--tol", "1e-2"], ["--tol", "1e-4"])], ids=["max_iter", "tol"])
def test_eigen_map_resume_refuses_another_tol_or_max_iter_in_a_fresh_process(tmp_path, mlp_ckpt, first, second):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:2", *FILTER_X, "--batch_size", "2000", "--surf_file", "e.h5"]
    surface_cli(args + first, tmp_path, script="plot_hessian_eigen.py")
    with h5py.File(tmp_path / "e.h5", "r+") as f:          # one point not computed yet
        mx, mn = f["max_eig"][()], f["min_eig"][()]
        mx[1], mn[1] = -1, 1
        f["max_eig"][...], f["min_eig"][...] = mx, mn
    before = snapshot(tmp_path)
    r = run_script("plot_hessian_eigen.py", args + second, cwd=tmp_path)
    assert_refused(r, tmp_path, before, second[0])


@pytest.mark.parametrize("first,second", [(["--max_iter", "3"], ["--max_iter", "100"]),
                                          (["--tol", "1e-2"], ["--tol", "1e-4"])], ids=["max_iter", "tol"])
def test_eigen_map_resume_refuses_another_tol_or_max_iter(tmp_path, mlp_ckpt, first, second, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:2", *FILTER_X, "--batch_size", "2000", "--surf_file", "e.h5"]
    ok(cli(args + first, tmp_path, script="plot_hessian_eigen.py"))
    with h5py.File(tmp_path / "e.h5", "r+") as f:          # one point not computed yet
        mx, mn = f["max_eig"][()], f["min_eig"][()]
        mx[1], mn[1] = -1, 1
        f["max_eig"][...], f["min_eig"][...] = mx, mn
    before = snapshot(tmp_path)
    assert_refused(cli(args + second, tmp_path, script="plot_hessian_eigen.py"), tmp_path, before, second[0])


def test_hessian_at_a_diverged_point_is_nan_not_a_crash(mlp_ckpt, digits):
    net = load("digits_mlp", mlp_ckpt)
    with torch.no_grad():
        net.fc2.weight[0, 0] = float("inf")
    r = landscape.hessian(net, (digits.train_x[:200], digits.train_y[:200]), trace_samples=4, device="cpu")
    assert np.isnan(r.eigenvalues).all() and math.isnan(r.trace)


def test_at_center_on_a_nan_checkpoint_records_nan(tmp_path, mlp_ckpt):
    sd = torch.load(mlp_ckpt, weights_only=True)
    sd["state_dict"]["fc1.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.t7")
    r = run_script("plot_hessian_eigen.py", MLP + ["--model_file", "nan.t7", "--at_center", "--trace_samples", "4"],
                   cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    summary = json.load(open(tmp_path / "nan.t7_hessian.json"))
    for key in ("max_eig", "trace"):                   # NaN (or JSON null for it)
        assert summary[key] is None or math.isnan(summary[key]), (key, summary[key])


def test_top_k_above_max_iter_from_the_command_line(tmp_path, mlp_ckpt):
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    before = snapshot(tmp_path)
    r = run_script("plot_hessian_eigen.py", MLP + ["--model_file", ckpt, "--at_center", "--top_k", "5", "--max_iter",
                                                   "3", "--trace_samples", "2", "--batch_size", "2000"], cwd=tmp_path)
    if r.returncode == 2:
        return assert_refused(r, tmp_path, before, "top_k")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(json.load(open(ckpt + "_hessian.json"))["eigenvalues"]) == 5


def test_top_k_above_max_iter_in_the_api(mlp_ckpt, digits):
    net = load("digits_mlp", mlp_ckpt)
    try:
        r = landscape.hessian(net, (digits.train_x[:200], digits.train_y[:200]), top_k=5, max_iter=3, trace=False,
                              device="cpu")
    except landscape.LandscapeError as e:
        assert "top_k" in str(e)
        return
    assert len(r.eigenvalues) == 5


@pytest.fixture
def frozen():
    """A tiny tanh network whose first layer is frozen (requires_grad=False, as in LoRA), with the top
    eigenvalues of its dense Hessian over all dim > 1 parameters and over the trainable ones only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    b0, b2 = net[0].bias.detach().double(), net[2].bias.detach().double()
    w0, w2 = net[0].weight.detach().double(), net[2].weight.detach().double()

    def f_all(w):
        return F.cross_entropy(torch.tanh(x.double() @ w[:30].view(6, 5).T + b0) @ w[30:].view(3, 6).T + b2, y)

    def f_trainable(w):
        return F.cross_entropy(torch.tanh(x.double() @ w0.T + b0) @ w.view(3, 6).T + b2, y)
    top_all = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(
        f_all, torch.cat([w0.reshape(-1), w2.reshape(-1)])))[-1])
    top_trainable = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(f_trainable, w2.reshape(-1)))[-1])
    assert abs(top_all - top_trainable) > 0.05 * top_all      # the two choices are told apart
    net[0].weight.requires_grad_(False)
    net[0].bias.requires_grad_(False)
    return net, (x, y), {("0.weight", "2.weight"): top_all, ("2.weight",): top_trainable}


def test_hessian_of_a_model_with_frozen_parameters(frozen):
    net, data, tops = frozen
    r = landscape.hessian(net, data, trace_samples=4, device="cpu")
    covered = tuple(r.param_names)
    assert covered in tops, f"the Hessian covers {covered}"
    assert r.eigenvalues[0] == pytest.approx(tops[covered], rel=1e-3)


def test_eigen_surface_of_a_model_with_frozen_parameters(frozen):
    net, data, tops = frozen
    res = landscape.eigen_surface(net, data, x="0:0:1", device="cpu")
    top = float(res["max_eig"][0])
    assert any(top == pytest.approx(v, rel=1e-3) for v in tops.values()), (top, tops)


