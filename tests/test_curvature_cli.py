"""Curvature from the command line against the dense Hessian: top-k eigenpairs, trace and spectral
density in the --out file (`plot_hessian_eigen.py --at_center`), and directions along the Hessian's
top eigenvectors (`plot_surface.py --xdir hessian --ydir hessian`).

The model is small enough (296 parameters of dimension > 1) for torch.autograd.functional.hessian.
"""
import json
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dataloader
import h5_util
from landscape import user_code
from helpers import run_script

TINY = '''
import torch.nn as nn

def factory():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny digits classifier, trained a little, its checkpoint, and its dense Hessian (dim > 1 params)."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.py").write_text(TINY)
    torch.manual_seed(0)
    net = user_code.load_callable(str(folder / "tiny.py") + ":factory", "model")()
    d = dataloader.load_tensors("digits")
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(d.train_x), d.train_y).backward()
        opt.step()
    torch.save({"state_dict": net.state_dict()}, folder / "tiny.t7")
    w1, b1, w2, b2 = (p.detach().double() for p in net.parameters())
    x = d.train_x.double().flatten(1)

    def loss(flat):
        a, b = flat[:256].view(4, 64), flat[256:].view(10, 4)
        return F.cross_entropy(torch.tanh(x @ a.T + b1) @ b.T + b2, d.train_y)

    H = torch.autograd.functional.hessian(loss, torch.cat([w1.reshape(-1), w2.reshape(-1)]))
    return folder, H


def hessian_cli(folder, *args):
    r = run_script("plot_hessian_eigen.py", ["--dataset", "digits", "--model", str(folder / "tiny.py") + ":factory",
                                             "--model_file", str(folder / "tiny.t7"), "--threads", "1", *args],
                   cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_top_k_eigenpairs_trace_and_density_in_the_out_file(tiny):
    folder, H = tiny
    out = str(folder / "curv.h5")
    hessian_cli(folder, "--at_center", "--top_k", "4", "--esd", "--esd_probes", "30", "--esd_steps", "60",
                "--trace_samples", "200", "--out", out, "--format", "png")
    ev, V = torch.linalg.eigh(H)
    with h5py.File(out, "r") as f:
        vals, vecs = f["eigenvalues"][()], f["eigenvectors"][()]
        trace, trace_se = float(f["trace"][()]), float(f["trace_stderr"][()])
        grid, density = f["esd_grid"][()], f["esd_density"][()]
        assert json.loads(f.attrs["param_names"]) == ["1.weight", "3.weight"]
    assert vals.shape == (4,) and vecs.shape == (4, 296) and (np.diff(vals) <= 0).all()   # descending
    np.testing.assert_allclose(vals, ev.flip(0)[:4].numpy(), rtol=1e-4)
    norm_h = float(ev.abs().max())
    for lam, v in zip(vals, vecs):
        v = torch.tensor(v, dtype=torch.float64)
        assert float((H @ v - lam * v).norm()) <= 1e-3 * norm_h
    assert abs(trace - float(torch.trace(H))) <= 4 * trace_se
    dx = grid[1] - grid[0]
    mean = float((grid * density).sum() * dx)
    assert float(density.sum() * dx) == pytest.approx(1.0, abs=1e-3)
    # tr(H)/P with 30 probes of a 296-dimensional space: a few percent of the spread of the spectrum
    assert mean == pytest.approx(float(ev.mean()), abs=0.05 * float(ev.max() - ev.min()))
    assert os.path.getsize(out + "_esd.png") > 5000
    summary = json.load(open(str(folder / "tiny.t7") + "_hessian.json"))
    assert summary["eigenvalues"] == pytest.approx(list(vals)) and summary["max_eig"] == pytest.approx(vals[0])


def test_smallest_eigenvalue_with_default_flags(tiny):
    folder, H = tiny
    r = hessian_cli(folder, "--at_center", "--trace_samples", "2")
    summary = json.load(open(str(folder / "tiny.t7") + "_hessian.json"))
    ev = torch.linalg.eigvalsh(H)
    assert summary["min_eig"] == pytest.approx(float(ev[0]), rel=1e-4)
    assert summary["max_eig"] == pytest.approx(float(ev[-1]), rel=1e-4)
    assert summary["precision"] == "fp32" and "top eigenvalue" in r.stdout


def test_directions_along_the_top_eigenvectors(tiny):
    folder, H = tiny
    ev, V = torch.linalg.eigh(H)
    args = ["--dataset", "digits", "--model", str(folder / "tiny.py") + ":factory", "--model_file",
            str(folder / "tiny.t7"), "--threads", "1", "--xdir", "hessian", "--ydir", "hessian"]
    r = run_script("plot_surface.py", args + ["--x=-1:1:5", "--y=-1:1:5", "--plot", "--format", "png"], cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    dir_file = str(folder / "tiny.t7") + "_weights_xdir=hessian_ydir=hessian.h5"
    with h5py.File(dir_file, "r") as f:
        assert f.attrs["spec_xdir"] == "hessian" and f.attrs["spec_ydir"] == "hessian"
    dx, dy = h5_util.read_direction_file(dir_file)
    for d, k in ((dx, -1), (dy, -2)):
        v = torch.cat([d[0].reshape(-1), d[2].reshape(-1)]).double()
        assert float(d[1].abs().sum()) == 0 and float(d[3].abs().sum()) == 0   # biases: not in the Hessian
        assert abs(float(v @ V[:, k])) == pytest.approx(1.0, abs=1e-4)         # the k-th eigenvector, unit norm
    assert os.path.getsize(dir_file + "_[-1.0,1.0,5]x[-1.0,1.0,5].h5_train_loss_2dcontour.png") > 3000
    # filter-normalised eigenvector directions: each filter as long as the weights' own
    r = run_script("plot_surface.py", args[:-2] + ["--x=-1:1:3", "--xnorm", "filter"], cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(str(folder / "tiny.t7") + "_weights_xdir=hessian_xnorm=filter.h5", "r") as f:
        d0 = torch.tensor(f["xdirection"]["0"][()])
    w0 = torch.load(folder / "tiny.t7", weights_only=True)["state_dict"]["1.weight"]
    torch.testing.assert_close(d0.norm(dim=1), w0.norm(dim=1), rtol=1e-5, atol=1e-7)


def dense_at(folder, directions, step, curvature="hessian"):
    """The dense (296, 296) float64 curvature matrix of the tiny model moved to w + step * d (plain arithmetic)."""
    sd = torch.load(folder / "tiny.t7", weights_only=True)["state_dict"]
    w1, b1, w2, b2 = (sd[k].double() + step * torch.as_tensor(d).double()
                      for k, d in zip(["1.weight", "1.bias", "3.weight", "3.bias"], directions))
    d = dataloader.load_tensors("digits")
    x, y = d.train_x.double().flatten(1), d.train_y

    def outputs(flat):
        a, b = flat[:256].view(4, 64), flat[256:].view(10, 4)
        return torch.tanh(x @ a.T + b1) @ b.T + b2
    w = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    if curvature == "hessian":
        return torch.autograd.functional.hessian(lambda f: F.cross_entropy(outputs(f), y), w)
    # the Jacobian (N, C, P) of z = tanh(x A^T + b1) B^T + b2 in closed form: dz_c/dA_jk = B_cj (1 - h_j^2) x_k,
    # dz_c/dB_c'j = [c = c'] h_j
    a, b = w[:256].view(4, 64), w[256:].view(10, 4)
    h = torch.tanh(x @ a.T + b1)
    dA = torch.einsum("cj,nj,nk->ncjk", b, 1 - h ** 2, x).reshape(len(y), 10, 256)
    dB = torch.einsum("cd,nj->ncdj", torch.eye(10, dtype=w.dtype), h).reshape(len(y), 10, 40)
    Jr = torch.cat([dA, dB], 2)
    p = F.softmax(outputs(w), 1)                                                  # H_out per example: diag(p) - p p^T
    pj = torch.einsum("nc,ncp->np", p, Jr)
    return (torch.einsum("ncp,nc,ncq->pq", Jr, p, Jr) - pj.T @ pj) / len(y)


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_eigenvalue_maps_away_from_the_centre_match_the_dense_matrix_of_the_moved_model(tiny, curvature):
    folder, _ = tiny
    surf = str(folder / f"eig_{curvature}.h5")
    hessian_cli(folder, "--x=-1:1:3", "--xnorm", "filter", "--xignore", "biasbn", "--curvature", curvature,
                "--surf_file", surf)
    with h5py.File(surf, "r") as f:
        x, mx, mn, ok = f["xcoordinates"][()], f["max_eig"][()], f["min_eig"][()], f["eig_converged"][()]
        dir_file = f["dir_file"][()].decode()
        assert f.attrs["curvature"] == curvature and f.attrs["eig_max_iter"] == 100 and f.attrs["eig_tol"] == 1e-4
    (d,) = h5_util.read_direction_file(dir_file if os.path.isabs(dir_file) else str(folder / dir_file))
    assert (ok == 1).all()
    for i, step in enumerate(x):
        ev = torch.linalg.eigvalsh(dense_at(folder, d, float(step), curvature))
        assert mx[i] == pytest.approx(float(ev[-1]), rel=1e-4), (step, mx[i], float(ev[-1]))
        assert mn[i] == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-4 * float(ev.abs().max())), (step, mn[i])
