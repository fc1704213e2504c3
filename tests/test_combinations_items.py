"""Issue #20: flags and API arguments compose correctly, or are refused; never a silent wrong number.

One or more tests per numbered item of the issue (test names start with test_itemNN_; the curvature
items 7, 9, 10 and 12 belong to landscape/curvature's own tests). Every number is checked against
an independent computation: the weights rebuilt by plain tensor arithmetic from the direction file
(or from the checkpoints), evaluated by a plain float64 PyTorch loop. Refusals must be clean: exit
code 2, one `error: ...` line on stderr, no traceback, and no file written or changed (API:
LandscapeError, nothing written). Where the issue left a choice, the test holds the behaviour the
README documents ("What each combination does").

Single-process command lines run in this process (`plot_surface.main`), as a user's shell would run
them but without paying the interpreter's start-up; runs under mpiexec are real subprocesses.
"""
import copy
import os
import shutil
import signal
import subprocess
import sys
import types
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dataloader
import landscape
import model_loader
import plot_hessian_eigen
import plot_surface
from conftest import REPO, mpi_env, mpiexec, run_script, snapshot
from landscape import errors

MLP = ["--dataset", "digits", "--model", "digits_mlp", "--threads", "1"]
CNN = ["--dataset", "digits", "--model", "digits_cnn", "--threads", "1"]
FILTER_X = ["--xnorm", "filter", "--xignore", "biasbn"]
SCRIPTS = {"plot_surface.py": plot_surface, "plot_hessian_eigen.py": plot_hessian_eigen}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def digits():
    return dataloader.load_tensors("digits")


@pytest.fixture
def cli(capsys, monkeypatch):
    """run(args, cwd, script=..., env={...}) -> (returncode, stdout, stderr) of a command line, in this process."""
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling

    def run(args, cwd, script="plot_surface.py", env=None):
        monkeypatch.chdir(cwd)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        rc = errors.run_cli(SCRIPTS[script].main, [str(a) for a in args])
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)
    return run


def ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def assert_refused(r, folder, before, *words):
    """Exit code 2, one `error:` line (warnings aside), no traceback, nothing written or changed."""
    err = r.stderr.strip()
    assert r.returncode == 2, f"exit code {r.returncode}, expected a refusal (2):\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors_ = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors_) == 1 and all(ln.startswith(("error: ", "warning: ")) for ln in lines), err
    for w in words:
        assert w in errors_[0], (w, errors_[0])
    assert snapshot(folder) == before, "a refused run wrote or changed files"


def copy_ckpt(src, folder, name):
    dst = os.path.join(str(folder), name)
    shutil.copy(src, dst)
    return dst


def read_map(path, key="train_loss"):
    with h5py.File(path, "r") as f:
        return f[key][()]


def surf_attrs(path):
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def surf_dir_file(path, cwd):
    with h5py.File(path, "r") as f:
        d = f["dir_file"][()]
    d = d.decode() if isinstance(d, bytes) else str(d)
    return d if os.path.isabs(d) else os.path.join(str(cwd), d)


def read_dirs(path):
    """[xdir(, ydir)] of a direction file, each a list of float64 tensors (plain h5py)."""
    with h5py.File(path, "r") as f:
        return [[torch.tensor(np.asarray(f[g][str(i)][()], dtype=np.float64)) for i in range(len(f[g]))]
                for g in ("xdirection", "ydirection") if g in f]


def flat(direction):
    return torch.cat([torch.as_tensor(d).double().reshape(-1) for d in direction])


def entries(net, dir_type="weights"):
    return list(net.named_parameters()) if dir_type == "weights" else list(net.state_dict().items())


def moved(net, dirs, coord, dir_type="weights"):
    """A float64 copy of `net` at w + x dx (+ y dy): plain tensor arithmetic."""
    m = copy.deepcopy(net).double()
    with torch.no_grad():
        for step, d in zip(coord, dirs):
            for (name, t), di in zip(entries(m, dir_type), d):
                if t.is_floating_point() and step != 0:
                    t.add_(float(step) * torch.as_tensor(di).double().reshape(t.shape))
    return m


def loss_of(net, x, y, loss=F.cross_entropy):
    """The mean loss of `net` over (x, y): a plain float64 forward pass in eval mode."""
    m = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        out = m(x.double() if x.is_floating_point() else x)
        return float(loss(out, y))


def softmax_mse(out, y):
    """The reference's `mse`: softmax over the classes against one-hot targets, mean over both."""
    return (F.softmax(out, 1) - F.one_hot(y, out.shape[1]).to(out.dtype)).pow(2).mean()


def load(model, path):
    return model_loader.load("digits", model, path)


# ============================================================================= 1
def _regen_with_params(tmp_path, mlp_ckpt, cli):
    """A regenerated direction file made for --params '^fc2\\.', its surface and its saved twin."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    base = MLP + ["--model_file", "m.t7", "--x=-1:1:3"]
    ok(cli(base + ["--regenerate_directions", "--params", r"^fc2\.", "--xnorm", "filter", "--surf_file", "a.h5",
                   "--save_directions", "saved_a.h5"], tmp_path))
    return base, surf_dir_file(tmp_path / "a.h5", tmp_path)


def test_item01_dir_file_regenerated_moves_only_the_recorded_params_subset(tmp_path, mlp_ckpt, digits, cli):
    base, dir_file = _regen_with_params(tmp_path, mlp_ckpt, cli)
    net = load("digits_mlp", str(tmp_path / "m.t7"))
    names = [n for n, _ in net.named_parameters()]
    saved = read_dirs(tmp_path / "saved_a.h5")
    # the first run (with --params on the command line) is right: its saved directions move only fc2,
    # and its surface is those directions evaluated by hand
    assert [bool(float(d.abs().sum()) > 0) for d in saved[0]] == [n.startswith("fc2.") for n in names]
    a = read_map(tmp_path / "a.h5")
    for i, xx in enumerate((-1.0, 0.0, 1.0)):
        assert a[i] == pytest.approx(loss_of(moved(net, saved, (xx,)), digits.train_x, digits.train_y), rel=1e-4)
    # the same file given by --dir_file, without --params: the file's own spec (fc2 only) wins
    ok(cli(base + ["--dir_file", dir_file, "--surf_file", "b.h5"], tmp_path))
    b = read_map(tmp_path / "b.h5")
    for i, xx in enumerate((-1.0, 0.0, 1.0)):
        want = loss_of(moved(net, saved, (xx,)), digits.train_x, digits.train_y)
        assert b[i] == pytest.approx(want, rel=1e-4), f"x={xx}: {b[i]} (whole model moved?) vs {want} (fc2 only)"
    assert surf_attrs(tmp_path / "b.h5")["params"] == r"^fc2\."   # and the surface file says so


def test_item01_save_directions_of_a_given_regenerated_file_keeps_its_params_subset(tmp_path, mlp_ckpt, cli):
    base, dir_file = _regen_with_params(tmp_path, mlp_ckpt, cli)
    ok(cli(base + ["--dir_file", dir_file, "--surf_file", "b.h5", "--save_directions", "saved_b.h5"], tmp_path))
    names = [n for n, _ in load("digits_mlp", str(tmp_path / "m.t7")).named_parameters()]
    saved_b = read_dirs(tmp_path / "saved_b.h5")
    moving = [n for n, d in zip(names, saved_b[0]) if float(d.abs().sum()) > 0]
    assert moving == [n for n in names if n.startswith("fc2.")], f"materialised directions move {moving}"
    for da, db in zip(read_dirs(tmp_path / "saved_a.h5")[0], saved_b[0]):
        torch.testing.assert_close(db, da)


# ============================================================================= 2
def _two_mlp_checkpoints(tmp_path, mlp_run):
    return (copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "a.t7"),
            copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "b.t7"))


def test_item02_path_files_with_params_moves_only_the_subset(tmp_path, mlp_run, digits, cli):
    a, b = _two_mlp_checkpoints(tmp_path, mlp_run)
    ok(cli(MLP + ["--path_files", a, b, "--params", r"^fc2\.", "--x=0:1:3", "--surf_file", "p.h5"], tmp_path))
    na, nb = load("digits_mlp", a), load("digits_mlp", b)
    got = read_map(tmp_path / "p.h5")
    for i, t in enumerate((0.0, 0.5, 1.0)):
        m = copy.deepcopy(na).double()
        with torch.no_grad():
            for (n, p), pb in zip(m.named_parameters(), nb.parameters()):
                if n.startswith("fc2."):      # only the subset travels along the path; the rest stays at F1
                    p.copy_((1 - t) * p + t * pb.double())
        want = loss_of(m, digits.train_x, digits.train_y)
        assert got[i] == pytest.approx(want, rel=1e-4), f"t={t}: {got[i]} vs {want} (the whole model moved?)"
    attrs = surf_attrs(tmp_path / "p.h5")
    assert attrs["params"] == r"^fc2\." and "checkpoint 2" not in attrs["marked_points"]   # t=1 is a hybrid


@pytest.mark.parametrize("extra", [["--xdir", "hessian"], ["--xnorm", "filter"], ["--save_directions", "sd.h5"],
                                   ["--orthogonalize"], ["--seed", "7"]],
                         ids=["xdir_hessian", "xnorm", "save_directions", "orthogonalize", "seed"])
def test_item02_path_files_refuses_direction_flags_it_cannot_honour(tmp_path, mlp_run, extra, cli):
    a, b = _two_mlp_checkpoints(tmp_path, mlp_run)
    before = snapshot(tmp_path)
    r = cli(MLP + ["--path_files", a, b, "--x=0:1:3", "--surf_file", "p.h5", *extra], tmp_path)
    assert_refused(r, tmp_path, before, extra[0], "--path_files")


# ============================================================================= 3
def test_item03_api_explicit_directions_with_params_apply_the_subset(tmp_path, mlp_ckpt, digits):
    net = load("digits_mlp", mlp_ckpt)
    g = torch.Generator().manual_seed(1)
    dx = [torch.randn(p.shape, generator=g) * 0.3 for p in net.parameters()]
    res = landscape.surface(net, (digits.train_x, digits.train_y), x="0:1:3", directions=[dx], params=r"^fc2\.",
                            device="cpu", out=str(tmp_path / "s.h5"))
    sub = [d if n.startswith("fc2.") else torch.zeros_like(d) for (n, _), d in zip(net.named_parameters(), dx)]
    for i, xx in enumerate((0.0, 0.5, 1.0)):
        want = loss_of(moved(net, [sub], (xx,)), digits.train_x, digits.train_y)
        assert res["train_loss"][i] == pytest.approx(want, rel=1e-4), f"x={xx}: subset ignored?"
    stored = read_dirs(res.dir_file)[0]      # the direction file holds what was applied
    for s, want in zip(stored, sub):
        torch.testing.assert_close(s, want.double())
    assert res.attrs["params"] == r"^fc2\."


def test_item03_api_explicit_directions_refuse_model2_and_same_dir(tmp_path, mlp_ckpt, digits):
    net = load("digits_mlp", mlp_ckpt)
    dx = [torch.ones(p.shape) for p in net.parameters()]
    for extra in (dict(model2=copy.deepcopy(net)), dict(y="0:1:2", same_dir=True), dict(regenerate=True)):
        with pytest.raises(landscape.LandscapeError):
            landscape.surface(net, (digits.train_x, digits.train_y), x="0:1:3", directions=[dx], device="cpu",
                              out=str(tmp_path / "s.h5"), **extra)
    assert os.listdir(tmp_path) == []


# ============================================================================= 4
TINY = '''import torch.nn as nn


def factory():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
'''

PERMUTED_DIGITS = '''import dataloader


def dataset():
    d = dataloader.load_tensors("digits")
    return (d.train_x[:700], (d.train_y[:700] * 7 + 3) % 10), (d.test_x, (d.test_y * 7 + 3) % 10)
'''


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, digits):
    """A tiny digits classifier (296 parameters of dim > 1) trained a little: its factory and checkpoint."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.py").write_text(TINY)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(digits.train_x), digits.train_y).backward()
        opt.step()
    torch.save({"state_dict": net.state_dict()}, folder / "tiny.t7")
    return folder, net.eval()


def tiny_top_eigenvector(net, x, y, loss):
    """The top eigenvector of the dense Hessian w.r.t. the dim > 1 parameters (1.weight, 3.weight)."""
    b1, b2 = net[1].bias.detach().double(), net[3].bias.detach().double()
    xf = x.double().flatten(1)

    def f(w):
        a, b = w[:256].view(4, 64), w[256:].view(10, 4)
        return loss(torch.tanh(xf @ a.T + b1) @ b.T + b2, y)
    w0 = torch.cat([net[1].weight.detach().double().reshape(-1), net[3].weight.detach().double().reshape(-1)])
    ev, vecs = torch.linalg.eigh(torch.autograd.functional.hessian(f, w0))
    return vecs[:, -1], ev


def test_item04_hessian_direction_is_the_top_eigenvector_of_its_loss_and_data(tmp_path, tiny_files, digits, cli):
    folder, net = tiny_files
    for name in ("tiny.py", "tiny.t7"):
        shutil.copy(folder / name, tmp_path / name)
    ok(cli(["--dataset", "digits", "--model", "tiny.py:factory", "--model_file", "tiny.t7", "--threads", "1",
            "--xdir", "hessian", "--x=0:1:2", "--surf_file", "a.h5"], tmp_path))
    top, _ = tiny_top_eigenvector(net, digits.train_x, digits.train_y, F.cross_entropy)
    d = read_dirs(surf_dir_file(tmp_path / "a.h5", tmp_path))[0]
    v = torch.cat([d[0].reshape(-1), d[2].reshape(-1)])
    assert abs(float(v @ top)) / float(v.norm()) > 0.9999
    attrs = surf_attrs(surf_dir_file(tmp_path / "a.h5", tmp_path))
    assert attrs["loss_name"] == "crossentropy" and attrs["data_sha256"] and attrs["dataset"] == "digits"


@pytest.mark.parametrize("change", ["loss", "data_split", "dataset"])
def test_item04_hessian_direction_file_is_not_reused_for_another_loss_or_data(tmp_path, tiny_files, change, cli):
    folder, _ = tiny_files
    for name in ("tiny.py", "tiny.t7"):
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "data.py").write_text(PERMUTED_DIGITS)
    base = ["--dataset", "digits", "--model", "tiny.py:factory", "--model_file", "tiny.t7", "--threads", "1",
            "--xdir", "hessian", "--x=0:1:2"]
    ok(cli(base + ["--surf_file", "a.h5"], tmp_path))
    args = {"loss": base + ["--loss_name", "mse"], "data_split": base + ["--data_split", "2"],
            "dataset": ["--dataset", "data.py:dataset"] + base[2:]}[change]
    words = {"loss": "loss", "data_split": "--data_split", "dataset": "dataset"}[change]
    before = snapshot(tmp_path)
    r = cli(args + ["--surf_file", "b.h5"], tmp_path)
    assert_refused(r, tmp_path, before, words, "direction file")


# ============================================================================= 5
@pytest.mark.parametrize("which", ["model_file2", "model_file3"])
def test_item05_resume_refuses_a_changed_target_checkpoint(tmp_path, mlp_run, which, cli):
    copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "m.t7")
    copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "t.t7")
    if which == "model_file2":
        args = MLP + ["--model_file", "m.t7", "--model_file2", "t.t7", "--x=0:1:3", "--surf_file", "s.h5"]
    else:
        args = MLP + ["--model_file", "m.t7", "--model_file3", "t.t7", "--x=-1:1:2", "--y=0:1:3", *FILTER_X,
                      "--surf_file", "s.h5"]
    ok(cli(args, tmp_path))
    with h5py.File(tmp_path / "s.h5", "r+") as f:       # an interrupted run: the last points are missing
        v = f["train_loss"][()]
        v[..., -1] = -1
        f["train_loss"][...] = v
    copy_ckpt(os.path.join(mlp_run, "model_4.t7"), tmp_path, "t.t7")   # the batch script's file was replaced
    before = snapshot(tmp_path)
    assert_refused(cli(args, tmp_path), tmp_path, before, f"--{which} checkpoint")
    # the surface file alone (its direction file gone) is refused too: it records the target's hash
    os.remove(surf_dir_file(tmp_path / "s.h5", tmp_path))
    before = snapshot(tmp_path)
    assert_refused(cli(args, tmp_path), tmp_path, before)


def test_item05_direction_file_of_a_changed_model_file2_is_not_reused(tmp_path, mlp_run, cli):
    """The direction file records --model_file2's contents: after the checkpoint changed, a new surface
    is never computed along the old difference."""
    copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "m.t7")
    copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "t.t7")
    args = MLP + ["--model_file", "m.t7", "--model_file2", "t.t7", "--x=0:1:2"]
    ok(cli(args + ["--surf_file", "s1.h5"], tmp_path))
    copy_ckpt(os.path.join(mlp_run, "model_4.t7"), tmp_path, "t.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(args + ["--surf_file", "s2.h5"], tmp_path), tmp_path, before, "--model_file2 checkpoint")


def test_item05_model_file2_with_params_marks_no_hybrid_as_model_file2(tmp_path, mlp_run, digits, cli):
    m = copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "m.t7")
    t = copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "t.t7")
    ok(cli(MLP + ["--model_file", "m.t7", "--model_file2", "t.t7", "--params", r"^fc2\.", "--x=0:1:2",
                  "--surf_file", "s.h5"], tmp_path))
    attrs = surf_attrs(tmp_path / "s.h5")
    assert "model_file2" not in attrs["marked_points"] and "model_file" in attrs["marked_points"]
    hybrid = load("digits_mlp", m)
    with torch.no_grad():
        for (n, p), q in zip(hybrid.named_parameters(), load("digits_mlp", t).parameters()):
            if n.startswith("fc2."):
                p.copy_(q)
    assert read_map(tmp_path / "s.h5")[1] == pytest.approx(loss_of(hybrid, digits.train_x, digits.train_y), rel=1e-4)


# ============================================================================= 6
class LinearBN3d(nn.Module):
    """Linear over the last dimension of (B, C, L), then BatchNorm1d over the C channels."""

    def __init__(self, channels, features, hidden):
        super().__init__()
        self.lin = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(channels)
        self.head = nn.Linear(channels * hidden, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu().flatten(1))


class LinearBN4d(nn.Module):
    """Linear over the last dimension of (B, C, H, W), then BatchNorm2d over the C channels."""

    def __init__(self, channels, width):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels * 2 * width, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu().flatten(1))


class LinearBN2d(nn.Module):
    """The foldable case: Linear on (B, F), BatchNorm1d over those F features."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu())


def _randomized_bn(net):
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("case", ["bn1d_3d_same_size", "bn1d_3d_other_size", "bn2d_4d", "bn1d_2d"])
def test_item06_linear_then_batchnorm_equals_the_unfolded_model(case):
    torch.manual_seed(0)
    net, x = {"bn1d_3d_same_size": (LinearBN3d(4, 6, 4), torch.randn(64, 4, 6)),
              "bn1d_3d_other_size": (LinearBN3d(3, 6, 4), torch.randn(64, 3, 6)),
              "bn2d_4d": (LinearBN4d(3, 4), torch.randn(64, 3, 2, 4)),
              "bn1d_2d": (LinearBN2d(), torch.randn(64, 6))}[case]
    net = _randomized_bn(net)
    y = torch.randint(0, 3, (64,))
    for fold_bn in (True, False):
        res = landscape.surface(net, (x, y), x="-0.5:0.5:3", directions="filter", ignore="biasbn", device="cpu",
                                fold_bn=fold_bn)
        assert res["train_loss"][1] == pytest.approx(loss_of(net, x, y), rel=1e-5)
        d = [torch.zeros(p.shape) for p in net.parameters()]
        d[0] = torch.ones_like(d[0]) * 0.1            # the Linear's weight moves: its fold must follow
        res = landscape.surface(net, (x, y), x="0:1:2", directions=[d], device="cpu", fold_bn=fold_bn)
        assert res["train_loss"][1] == pytest.approx(loss_of(moved(net, [d], (1.0,)), x, y), rel=1e-5)


def test_item06_only_the_2d_linear_is_folded():
    from landscape.evaluation import fast_model
    folded = fast_model.FastModel(_randomized_bn(LinearBN2d()), sample=((torch.randn(2, 6),), {}))
    kept = fast_model.FastModel(_randomized_bn(LinearBN3d(4, 6, 4)), sample=((torch.randn(2, 4, 6),), {}))
    blind = fast_model.FastModel(_randomized_bn(LinearBN2d()))          # without a sample: not folded
    assert len(folded.pairs) == 1 and kept.pairs == [] and blind.pairs == []


# ============================================================================= 8
def test_item08_regenerated_directions_are_orthogonalised(tmp_path, mlp_ckpt, digits, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    ok(cli(MLP + ["--model_file", "m.t7", "--x=-1:1:2", "--y=-1:1:2", *FILTER_X, "--ynorm", "filter", "--yignore",
                  "biasbn", "--regenerate_directions", "--orthogonalize", "--surf_file", "s.h5",
                  "--save_directions", "sd.h5"], tmp_path))
    dx, dy = read_dirs(tmp_path / "sd.h5")
    fx, fy = flat(dx), flat(dy)
    cos = float(fx @ fy / (fx.norm() * fy.norm()))
    assert abs(cos) < 1e-6, f"--orthogonalize is recorded but the directions have cosine {cos:.4g}"
    assert float(fy.norm()) == pytest.approx(float(fx.norm()), rel=1e-6)
    net = load("digits_mlp", str(tmp_path / "m.t7"))
    Z = read_map(tmp_path / "s.h5")
    for j, yy in enumerate((-1.0, 1.0)):
        for i, xx in enumerate((-1.0, 1.0)):
            want = loss_of(moved(net, [dx, dy], (xx, yy)), digits.train_x, digits.train_y)
            assert Z[j, i] == pytest.approx(want, rel=1e-4), (xx, yy)


# ============================================================================= 11
def test_item11_hessian_direction_over_states_of_a_bn_subset(tmp_path, cnn_ckpt, digits, cli):
    copy_ckpt(cnn_ckpt, tmp_path, "c.t7")
    ok(cli(CNN + ["--model_file", "c.t7", "--xdir", "hessian", "--dir_type", "states", "--params", "bn1",
                  "--x=-1:1:3", "--surf_file", "s.h5"], tmp_path))
    net = load("digits_cnn", str(tmp_path / "c.t7"))
    d = read_dirs(surf_dir_file(tmp_path / "s.h5", tmp_path))[0]
    names = list(net.state_dict())
    moving = [n for n, t in zip(names, d) if float(t.abs().sum()) != 0]
    assert moving == ["bn1.weight", "bn1.bias"], moving    # the Hessian's parameters; statistics never move
    assert float(flat(d).norm()) == pytest.approx(1.0, rel=1e-5)   # a unit eigenvector
    Z = read_map(tmp_path / "s.h5")
    assert Z[1] == pytest.approx(loss_of(net, digits.train_x, digits.train_y), rel=1e-4)
    assert Z[2] == pytest.approx(loss_of(moved(net, [d], (1.0,), "states"), digits.train_x, digits.train_y), rel=1e-4)


def test_item11_hessian_direction_of_statistics_only_is_refused(tmp_path, cnn_ckpt, cli):
    copy_ckpt(cnn_ckpt, tmp_path, "c.t7")
    before = snapshot(tmp_path)
    r = cli(CNN + ["--model_file", "c.t7", "--xdir", "hessian", "--dir_type", "states", "--params", "running_",
                   "--x=-1:1:3"], tmp_path)
    assert_refused(r, tmp_path, before, "--params", "no parameter")


# ============================================================================= 13
API_BAD_ARGUMENTS = [
    ("surface", dict(batch_size=0)),
    ("surface", dict(points_per_pass=0)),
    ("surface", dict(seed="abc")),
    ("surface", dict(comm=5)),
    ("surface", dict(memory_format="bogus")),
    ("hessian", dict(cache="yes")),
    ("hessian", dict(batch_size=0)),
    ("eigen_surface", dict(batch_size=0)),
    ("path", dict(batch_size=0)),
    ("surface", dict(precision="fp64")),
    ("surface", dict(batch_size=-3)),
    ("surface", dict(batch_size="big")),
    ("surface", dict(seed=1.5)),
    ("surface", dict(flush_seconds=0)),
    ("surface", dict(flush_seconds=float("nan"))),
    ("surface", dict(fold_bn="no")),
    ("surface", dict(regenerate=1)),
    ("surface", dict(ignore="bias")),
    ("surface", dict(dir_type="state")),
    ("surface", dict(save_directions="d.txt")),
    ("surface", dict(bn_recalibrate="yes")),
    ("surface", dict(bn_recalibrate=True)),          # a model without BatchNorm
    ("eigen_surface", dict(tol=0)),
    ("eigen_surface", dict(max_iter=0)),
    ("eigen_surface", dict(precision="bf16")),
    ("path", dict(path_type="spline")),
    ("path", dict(params="^nothing$")),
    ("path", dict(comm="world")),
    ("interpolation", dict(directions="filter")),
    ("pca", dict(dir_type="state")),
    ("pca", dict(ignore="all")),
    ("pca", dict(scratch_dir="no/such/folder")),
]


def _call_api(fn, kwargs, folder):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    data = (torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    if fn == "hessian":
        return landscape.hessian(net, data, device="cpu", trace_samples=2, **kwargs)
    out = str(folder / "o.h5")
    if fn == "path":
        return landscape.path([net, copy.deepcopy(net)], data, x="0:1:3", device="cpu", out=out, **kwargs)
    if fn == "pca":
        return landscape.pca([net, copy.deepcopy(net), copy.deepcopy(net)], **kwargs)
    if fn == "interpolation":
        return landscape.interpolation(net, copy.deepcopy(net), data, x="0:1:3", device="cpu", out=out, **kwargs)
    return getattr(landscape, fn)(net, data, x="-1:1:3", device="cpu", out=out, **kwargs)


@pytest.mark.parametrize("fn,kwargs", API_BAD_ARGUMENTS,
                         ids=[f"{f}-{k}={d[k]!r}" for f, d in API_BAD_ARGUMENTS for k in d])
def test_item13_api_refuses_bad_arguments_and_writes_nothing(tmp_path, fn, kwargs):
    with pytest.raises(landscape.LandscapeError) as e:
        _call_api(fn, kwargs, tmp_path)
    assert "\n" not in str(e.value) and next(iter(kwargs)) in str(e.value), str(e.value)
    assert os.listdir(tmp_path) == [], f"a refused run left {os.listdir(tmp_path)}"


def test_item13_a_run_that_fails_before_its_first_point_leaves_nothing(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    calls = []

    def loss(out, t):       # passes the two-sample check, then fails on the grid's first batch
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("boom")
        return F.cross_entropy(out, t)
    with pytest.raises(landscape.LandscapeError, match="boom"):
        landscape.surface(net, (torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))), loss=loss, x="-1:1:3",
                          device="cpu", out=str(tmp_path / "o.h5"))
    assert os.listdir(tmp_path) == []


# ============================================================================= 14
DATACLASS_MODEL = '''from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass
class Config:
    hidden: int = 16
    classes: int = 10


def factory(cfg: Config | None = None) -> nn.Module:
    cfg = cfg or Config()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.classes))
'''


def test_item14_model_file_with_future_annotations_and_a_dataclass(tmp_path, digits, cli):
    (tmp_path / "dcmodel.py").write_text(DATACLASS_MODEL)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "dc.t7")
    ok(cli(["--dataset", "digits", "--model", "dcmodel.py:factory", "--model_file", "dc.t7", "--threads", "1",
            "--x=-1:1:3", *FILTER_X, "--surf_file", "s.h5"], tmp_path))
    assert read_map(tmp_path / "s.h5")[1] == pytest.approx(loss_of(net, digits.train_x, digits.train_y), rel=1e-5)


def test_item14_model_loader_builds_a_dataclass_model_file(tmp_path, monkeypatch):
    (tmp_path / "dcmodel.py").write_text(DATACLASS_MODEL)
    monkeypatch.chdir(tmp_path)
    net = model_loader.build("dcmodel.py:factory")
    assert isinstance(net, nn.Module) and net[1].out_features == 16


# ============================================================================= 15
def _flat_line(r, surf, want):
    """Chosen behaviour for a direction that is zero everywhere: the flat line, and one warning line."""
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Tensor list must have at least one tensor" not in r.stderr
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ") and "zero everywhere" in ln]
    assert len(warned) == 1, r.stderr
    np.testing.assert_allclose(read_map(surf), want, rtol=1e-5)
    assert not os.path.exists(str(surf) + ".lock")


def test_item15_model_file2_identical_to_model_file(tmp_path, mlp_ckpt, digits, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = cli(MLP + ["--model_file", "m.t7", "--model_file2", "m.t7", "--x=0:1:3", "--surf_file", "s.h5"], tmp_path)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)
    assert "--model_file2" in r.stderr


def test_item15_model_file2_identical_to_model_file_under_mpiexec(tmp_path, mlp_ckpt, digits):
    if not mpiexec():
        pytest.skip("no mpiexec")
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = run_script("plot_surface.py", ["--mpi"] + MLP + ["--model_file", "m.t7", "--model_file2", "m.t7", "--x=0:1:3",
                                                         "--surf_file", "s.h5"], cwd=tmp_path, mpi_ranks=2, timeout=240)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)


def test_item15_api_interpolation_between_identical_models(mlp_ckpt, digits, capsys):
    net = load("digits_mlp", mlp_ckpt)
    want = loss_of(net, digits.train_x, digits.train_y)
    res = landscape.interpolation(net, copy.deepcopy(net), (digits.train_x, digits.train_y), x="0:1:3", device="cpu")
    np.testing.assert_allclose(res["train_loss"], [want] * 3, rtol=1e-5)
    assert "warning: the x direction is zero everywhere" in capsys.readouterr().err


def test_item15_regenerated_directions_that_vanish_are_warned_about(tmp_path, mlp_ckpt, digits, cli):
    """--params matching only biases, with --xignore biasbn: every drawn entry is zeroed."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = cli(MLP + ["--model_file", "m.t7", "--x=-1:1:3", *FILTER_X, "--params", "bias", "--regenerate_directions",
                   "--surf_file", "s.h5"], tmp_path)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)


def test_an_mpi_abort_leaves_no_lock(tmp_path, mlp_ckpt):
    """A rank failing mid-run aborts every rank; rank 0 releases the surface's lock first."""
    if not mpiexec():
        pytest.skip("no mpiexec")
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    (tmp_path / "bad.py").write_text("import torch.nn.functional as F\n\n\ndef loss():\n    n = [0]\n\n"
                                     "    def f(out, t):\n        n[0] += 1\n        if n[0] > 3:\n"
                                     "            raise RuntimeError('boom')\n        return F.cross_entropy(out, t)\n"
                                     "    return f\n")
    r = run_script("plot_surface.py", ["--mpi"] + MLP + ["--model_file", "m.t7", "--x=-1:1:9", *FILTER_X,
                                                         "--loss_name", "bad.py:loss", "--surf_file", "s.h5"],
                   cwd=tmp_path, mpi_ranks=2, timeout=240)
    assert r.returncode != 0 and "boom" in r.stderr, r.stderr[-3000:]
    assert not os.path.exists(tmp_path / "s.h5.lock")


# ============================================================================= 16
BLOCK_TRANSFORMERS = '''import sys


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "transformers" or name.startswith("transformers."):
            raise ModuleNotFoundError("No module named 'transformers' (blocked for this test)", name=name)
        return None


sys.meta_path.insert(0, _Block())
'''


def test_item16_gpu_tests_collect_without_the_optional_transformers(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TRANSFORMERS)
    env = dict(mpi_env(), PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    check = subprocess.run([sys.executable, "-c", "import transformers"], env=env, capture_output=True, text=True)
    assert check.returncode != 0, "the sitecustomize did not block transformers"
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider",
                        os.path.join(REPO, "tests")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode in (0, 5), out[-3000:]
    assert "error collecting" not in out.lower() and "errors during collection" not in out.lower(), out[-3000:]


# ============================================================================= 17
def test_item17_eigen_maps_go_into_the_loss_surface_file_with_the_same_flags(tmp_path, mlp_ckpt, cli):
    """README: plot_hessian_eigen.py takes plot_surface.py's flags and writes into the same surface file;
    each map family records its own --precision."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:2", *FILTER_X, "--batch_size", "2000", "--surf_file", "s.h5"]
    ok(cli(args, tmp_path))
    loss = read_map(tmp_path / "s.h5")
    ok(cli(args, tmp_path, script="plot_hessian_eigen.py"))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["train_loss"][()], loss)
        assert (f["max_eig"][()] >= f["min_eig"][()]).all() and np.isfinite(f["max_eig"][()]).all()
        assert f.attrs["precision"] == "default" and f.attrs["eig_precision"] == "fp32"


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


# ============================================================================= 18
@pytest.fixture(scope="module")
def bn_checkpoints(tmp_path_factory, cnn_run, digits):
    """Two BatchNorm checkpoints whose running statistics are the training data's own (recomputed at
    batch 128, train mode, cumulative average), the second with conv1 scaled by 5 (BN undoes that when
    its statistics follow): each checkpoint's own loss is then what recalibration at its weights gives."""
    folder = tmp_path_factory.mktemp("bn")
    paths, nets = [], []
    for epoch, scale in ((4, 1.0), (2, 5.0)):
        net = load("digits_cnn", os.path.join(cnn_run, f"model_{epoch}.t7"))
        with torch.no_grad():
            net.conv1.weight.mul_(scale)
            net.conv1.bias.mul_(scale)
        recalibrated(net, digits.train_x, 128)
        path = str(folder / f"bn{epoch}.t7")
        torch.save({"state_dict": net.state_dict()}, path)
        paths.append(path)
        nets.append(net)
    own = [loss_of(n, digits.train_x, digits.train_y) for n in nets]
    assert abs(own[0] - own[1]) > 0.05 * own[0]
    return paths, nets, own


def recalibrated(net, x, batch):
    """BatchNorm running statistics recomputed from x: BN layers in train mode, cumulative average."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            net(x[s:s + batch].to(next(net.parameters()).dtype))
    for m in bns:
        m.momentum = 0.1
        m.eval()
    return net.eval()


def test_item18_path_ends_are_the_checkpoints_own_losses_with_bn_recalibrate(tmp_path, bn_checkpoints, digits, cli):
    (a, b), nets, own = bn_checkpoints
    ok(cli(CNN + ["--path_files", a, b, "--dir_type", "weights", "--x=0:1:3", "--bn_recalibrate", "--surf_file",
                  "p.h5"], tmp_path))
    Z = read_map(tmp_path / "p.h5")
    assert Z[0] == pytest.approx(own[0], rel=1e-4) and Z[2] == pytest.approx(own[1], rel=1e-4), (Z, own)
    mid = copy.deepcopy(nets[0]).double()                   # t = 1/2: weights halfway, statistics recomputed
    with torch.no_grad():
        for p, q in zip(mid.parameters(), nets[1].parameters()):
            p.copy_(0.5 * p + 0.5 * q.double())
    want = loss_of(recalibrated(mid, digits.train_x.double(), 128), digits.train_x, digits.train_y)
    assert Z[1] == pytest.approx(want, rel=1e-4)
    attrs = surf_attrs(tmp_path / "p.h5")
    assert int(attrs["bn_recalibrate"]) == 1 and int(attrs["bn_recalibrate_batch"]) == 128


def test_item18_without_recalibration_the_path_end_keeps_the_first_statistics(tmp_path, bn_checkpoints, cli):
    """What the README now says: under --dir_type weights, BN's statistics stay the first checkpoint's."""
    (a, b), _, own = bn_checkpoints
    ok(cli(CNN + ["--path_files", a, b, "--dir_type", "weights", "--x=0:1:2", "--surf_file", "p.h5"], tmp_path))
    assert abs(read_map(tmp_path / "p.h5")[1] - own[1]) > 0.05 * own[1]


def test_item18_plane_end_with_bn_recalibrate(tmp_path, bn_checkpoints, cli):
    (a, b), nets, own = bn_checkpoints
    a, b = copy_ckpt(a, tmp_path, "a.t7"), copy_ckpt(b, tmp_path, "b.t7")    # the direction file goes beside a
    ok(cli(CNN + ["--model_file", a, "--model_file2", b, "--dir_type", "weights", "--x=0:1:2", "--bn_recalibrate",
                  "--surf_file", "s.h5"], tmp_path))
    Z = read_map(tmp_path / "s.h5")
    assert Z[0] == pytest.approx(own[0], rel=1e-4) and Z[1] == pytest.approx(own[1], rel=1e-4), (Z, own)


def test_item18_resume_refuses_another_bn_recalibrate(tmp_path, bn_checkpoints, cli):
    (a, b), _, _ = bn_checkpoints
    args = CNN + ["--path_files", a, b, "--dir_type", "weights", "--x=0:1:3", "--surf_file", "p.h5"]
    ok(cli(args + ["--bn_recalibrate"], tmp_path))
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        v = f["train_loss"][()]
        v[1] = -1
        f["train_loss"][...] = v
    before = snapshot(tmp_path)
    assert_refused(cli(args, tmp_path), tmp_path, before, "bn_recalibrate")
    assert_refused(cli(args + ["--bn_recalibrate", "--batch_size", "64"], tmp_path), tmp_path, before,
                   "--bn_recalibrate batch size")


@pytest.mark.parametrize("args,words", [
    (["--dir_type", "states", "--bn_recalibrate"], ["--bn_recalibrate", "--dir_type weights"]),
    (["--points_per_pass", "2", "--bn_recalibrate"], ["--bn_recalibrate", "--points_per_pass"]),
], ids=["states", "points_per_pass"])
def test_item18_bn_recalibrate_refusals(tmp_path, bn_checkpoints, args, words, cli):
    (a, _), _, _ = bn_checkpoints
    a = copy_ckpt(a, tmp_path, "a.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(CNN + ["--model_file", a, "--x=-1:1:3", *FILTER_X, *args], tmp_path), tmp_path, before, *words)


def test_item18_bn_recalibrate_refused_without_batchnorm_and_for_curvature(tmp_path, mlp_ckpt, cnn_ckpt, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    copy_ckpt(cnn_ckpt, tmp_path, "c.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(MLP + ["--model_file", "m.t7", "--x=-1:1:3", "--bn_recalibrate"], tmp_path), tmp_path, before,
                   "no BatchNorm")
    assert_refused(cli(CNN + ["--model_file", "c.t7", "--x=-1:1:3", "--bn_recalibrate"], tmp_path,
                       script="plot_hessian_eigen.py"), tmp_path, before, "--bn_recalibrate")


@pytest.mark.parametrize("fn", ["path", "interpolation", "surface"])
def test_item18_api_bn_recalibrate(bn_checkpoints, digits, fn):
    _, nets, own = bn_checkpoints
    data = (digits.train_x, digits.train_y)
    common = dict(x="0:1:2", dir_type="weights", bn_recalibrate=True, device="cpu", batch_size=128)
    if fn == "path":
        res = landscape.path(nets, data, **common)
    elif fn == "interpolation":
        res = landscape.interpolation(nets[0], nets[1], data, **common)
    else:
        res = landscape.surface(nets[0], data, directions="", ignore="", model2=nets[1], **common)
    np.testing.assert_allclose(res["train_loss"], own, rtol=1e-4)
    assert int(res.attrs["bn_recalibrate"]) == 1 and int(res.attrs["bn_recalibrate_batch"]) == 128


# ============================================================================= 19
def _bf16_warnings(stderr):
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    return lines, [i for i, ln in enumerate(lines)
                   if ln.lower().startswith("warning") and ("bf16" in ln.lower() or "bfloat16" in ln.lower())]


def test_item19_bf16_on_a_cpu_without_native_bf16_warns_once_before_the_run(tmp_path, mlp_ckpt, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:3", *FILTER_X, "--precision", "bf16", "--surf_file", "s.h5"]
    r = ok(cli(args, tmp_path, env={"LL_ASSUME_CPU_BF16": "0"}))
    lines, found = _bf16_warnings(r.stderr)
    assert len(found) == 1 and "emulated" in lines[found[0]], f"expected one bf16 warning line: {r.stderr!r}"
    progress = [i for i, ln in enumerate(lines) if "pt/s" in ln or "%|" in ln]
    assert not progress or found[0] < progress[0], "the warning must come before the run"
    r = ok(cli(args[:-1] + ["s2.h5"], tmp_path, env={"LL_ASSUME_CPU_BF16": "1"}))
    assert _bf16_warnings(r.stderr)[1] == [], r.stderr


def test_item19_api_warns_too(monkeypatch, capsys):
    monkeypatch.setenv("LL_ASSUME_CPU_BF16", "0")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    landscape.surface(net, (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))), x="-1:1:2", precision="bf16",
                      device="cpu")
    assert len(_bf16_warnings(capsys.readouterr().err)[1]) == 1


def test_item19_cpu_detection_reads_the_flags(monkeypatch):
    from landscape import evaluation
    monkeypatch.delenv("LL_ASSUME_CPU_BF16", raising=False)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if flags:
        assert evaluation.cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))
    with warnings.catch_warnings():
        monkeypatch.setenv("LL_ASSUME_CPU_BF16", "0")
        assert evaluation.bf16_warning("bf16", "cpu") and not evaluation.bf16_warning("fp32", "cpu")


def test_item19_readme_says_bf16_is_emulated_without_cpu_support():
    lines = open(os.path.join(REPO, "README.md")).read().splitlines()
    rows = [i for i, ln in enumerate(lines) if ln.startswith("| `bf16`")]
    assert rows, "the README's precision table has no bf16 row"
    near = "\n".join(lines[max(0, rows[0] - 3):rows[0] + 6]).lower()
    assert "emulat" in near, "the README's bf16 figures do not say bf16 is emulated on CPUs without bf16 instructions"
