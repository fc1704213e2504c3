"""Hessian eigenvalues and trace against the dense Hessian; eigenvalue maps under MPI and resume."""
import json
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hess_vec_prod
from helpers import run_script

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


@pytest.fixture(scope="module")
def tiny():
    """A tiny tanh network on random data, its flat dim>1 parameters and the dense Hessian."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))
    params = hess_vec_prod.hessian_params(net)
    w0 = torch.cat([p.detach().reshape(-1) for p in params]).double()

    def loss(w):
        a = w[:35].view(7, 5)
        b = w[35:].view(3, 7)
        h = torch.tanh(x.double() @ a.T + net[0].bias.double())
        return F.cross_entropy(h @ b.T + net[2].bias.double(), y)

    dense = torch.autograd.functional.hessian(loss, w0)
    return net, x, y, dense


def test_lanczos_matches_the_dense_hessian(tiny):
    net, x, y, dense = tiny
    ev = torch.linalg.eigvalsh(dense)
    top, bottom, iters = hess_vec_prod.min_max_hessian_eigs(net, x, y, batch_size=16, tol=1e-9)
    assert top == pytest.approx(ev[-1].item(), rel=1e-4)
    assert bottom == pytest.approx(ev[0].item(), rel=1e-4)
    assert bottom < 0 < top and iters <= 56


def test_hvp_matches_the_dense_hessian(tiny):
    net, x, y, dense = tiny
    hvp = hess_vec_prod.make_hvp(net, x, y, batch_size=7)  # batches must not change the product
    v = torch.randn(hvp.dim, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(hvp(v).double(), dense @ v.double(), rtol=1e-4, atol=1e-6)


def test_hutchinson_trace_within_3_standard_errors(tiny):
    net, x, y, dense = tiny
    hvp = hess_vec_prod.make_hvp(net, x, y)
    trace, se = hess_vec_prod.hutchinson_trace(hvp, hvp.dim, "cpu", samples=300, seed=1)
    assert se > 0 and abs(trace - torch.trace(dense).item()) < 3 * se


def eig_args(ckpt, surf):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt, "--x=-1:1:3", "--y=-1:1:3",
            *FILTER, "--threads", "1", "--batch_size", "2000", "--tol", "1e-4", "--surf_file", surf]


@pytest.fixture(scope="module")
def one_rank_eigs(tmp_path_factory, mlp_ckpt):
    surf = str(tmp_path_factory.mktemp("eig") / "one.h5")
    r = run_script("plot_hessian_eigen.py", eig_args(mlp_ckpt, surf) + ["--plot", "--format", "png"])
    assert r.returncode == 0, r.stderr
    with h5py.File(surf, "r") as f:
        assert {"max_eig", "min_eig", "eig_iters"} <= set(f)
        return surf, {k: f[k][()] for k in ("max_eig", "min_eig", "eig_iters")}


def test_eig_maps_and_ratio_plots(one_rank_eigs):
    surf, v = one_rank_eigs
    assert (v["max_eig"] > 0).all() and (v["max_eig"] >= v["min_eig"]).all() and (v["eig_iters"] >= 2).all()
    assert os.path.exists(surf + "_min_eig_max_eig_abs_ratio_heat_sns.png")


def test_eig_maps_under_mpi_equal_one_rank(tmp_path, mlp_ckpt, one_rank_eigs):
    surf = str(tmp_path / "two.h5")
    r = run_script("plot_hessian_eigen.py", ["--mpi"] + eig_args(mlp_ckpt, surf), mpi_ranks=2)
    assert r.returncode == 0, r.stderr
    with h5py.File(surf, "r") as f:
        for k, v in one_rank_eigs[1].items():
            np.testing.assert_array_equal(f[k][()], v)


def test_eig_maps_resume(tmp_path, mlp_ckpt, one_rank_eigs):
    import shutil
    surf = str(tmp_path / "resume.h5")
    shutil.copy(one_rank_eigs[0], surf)
    with h5py.File(surf, "r+") as f:
        mx, mn = f["max_eig"][()], f["min_eig"][()]
        mx[0, :2], mn[0, :2] = -1, 1          # the reference's "not computed" pair
        mn[2, 2] = 0.0                        # a computed value that happens to be 0 stays
        f["max_eig"][...], f["min_eig"][...] = mx, mn
    r = run_script("plot_hessian_eigen.py", eig_args(mlp_ckpt, surf))
    assert r.returncode == 0 and "computing 2 on" in r.stdout, r.stdout + r.stderr
    with h5py.File(surf, "r") as f:
        np.testing.assert_array_equal(f["max_eig"][0, :2], one_rank_eigs[1]["max_eig"][0, :2])
        assert f["min_eig"][2, 2] == 0.0


def test_at_center_sharpness(tmp_path, mlp_ckpt):
    import shutil
    ckpt = str(tmp_path / "m.t7")
    shutil.copy(mlp_ckpt, ckpt)
    r = run_script("plot_hessian_eigen.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt,
                                             "--at_center", "--batch_size", "2000", "--trace_samples", "20"])
    assert r.returncode == 0, r.stderr
    assert "top eigenvalue" in r.stdout and "trace" in r.stdout
    res = json.load(open(ckpt + "_hessian.json"))
    assert res["max_eig"] > 0 and res["max_eig"] >= res["min_eig"] and res["trace_stderr"] > 0
    assert res["parameters"] == 64 * 32 + 32 * 10
