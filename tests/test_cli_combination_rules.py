"""Direction flags and API arguments compose correctly, or are refused; never a silent wrong number.

--params with a regenerated or saved direction file, with --path_files and with the API's explicit
directions; Hessian directions (their loss and data, a BatchNorm subset of --dir_type states); targets
(--model_file2, a changed target checkpoint, a model_file2 identical to model_file); orthogonalised
and vanishing regenerated directions.

Each combination of flags (or API arguments) is checked against an independent computation: the
weights rebuilt by plain tensor arithmetic from the direction file (or from the checkpoints),
evaluated by a plain float64 PyTorch loop. Refusals must be clean: exit code 2, one `error: ...` line
on stderr, no traceback, and no file written or changed (API: LandscapeError, nothing written). Where
a choice was open, the test holds the behaviour the README documents ("What each combination does").

Single-process command lines run in this process (conftest.py's `cli` fixture), as a user's shell would
run them but without paying the interpreter's start-up; runs under mpiexec are real subprocesses.
"""
import copy
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from helpers import (CNN, FILTER_X, MLP, assert_refused, copy_ckpt, load_net as load, loss_of, moved, mpiexec, ok,
                     read_map, run_script, snapshot, surf_attrs, surf_dir_file)


def read_dirs(path):
    """[xdir(, ydir)] of a direction file, each a list of float64 tensors (plain h5py)."""
    with h5py.File(path, "r") as f:
        return [[torch.tensor(np.asarray(f[g][str(i)][()], dtype=np.float64)) for i in range(len(f[g]))]
                for g in ("xdirection", "ydirection") if g in f]


def flat(direction):
    return torch.cat([torch.as_tensor(d).double().reshape(-1) for d in direction])


def softmax_mse(out, y):
    """The reference's `mse`: softmax over the classes against one-hot targets, mean over both."""
    return (F.softmax(out, 1) - F.one_hot(y, out.shape[1]).to(out.dtype)).pow(2).mean()


def _regen_with_params(tmp_path, mlp_ckpt, cli):
    """A regenerated direction file made for --params '^fc2\\.', its surface and its saved twin."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    base = MLP + ["--model_file", "m.t7", "--x=-1:1:3"]
    ok(cli(base + ["--regenerate_directions", "--params", r"^fc2\.", "--xnorm", "filter", "--surf_file", "a.h5",
                   "--save_directions", "saved_a.h5"], tmp_path))
    return base, surf_dir_file(tmp_path / "a.h5", tmp_path)


def test_dir_file_regenerated_moves_only_the_recorded_params_subset(tmp_path, mlp_ckpt, digits, cli):
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


def test_save_directions_of_a_given_regenerated_file_keeps_its_params_subset(tmp_path, mlp_ckpt, cli):
    base, dir_file = _regen_with_params(tmp_path, mlp_ckpt, cli)
    ok(cli(base + ["--dir_file", dir_file, "--surf_file", "b.h5", "--save_directions", "saved_b.h5"], tmp_path))
    names = [n for n, _ in load("digits_mlp", str(tmp_path / "m.t7")).named_parameters()]
    saved_b = read_dirs(tmp_path / "saved_b.h5")
    moving = [n for n, d in zip(names, saved_b[0]) if float(d.abs().sum()) > 0]
    assert moving == [n for n in names if n.startswith("fc2.")], f"materialised directions move {moving}"
    for da, db in zip(read_dirs(tmp_path / "saved_a.h5")[0], saved_b[0]):
        torch.testing.assert_close(db, da)


def _two_mlp_checkpoints(tmp_path, mlp_run):
    return (copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "a.t7"),
            copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "b.t7"))


def test_path_files_with_params_moves_only_the_subset(tmp_path, mlp_run, digits, cli):
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
def test_path_files_refuses_direction_flags_it_cannot_honour(tmp_path, mlp_run, extra, cli):
    a, b = _two_mlp_checkpoints(tmp_path, mlp_run)
    before = snapshot(tmp_path)
    r = cli(MLP + ["--path_files", a, b, "--x=0:1:3", "--surf_file", "p.h5", *extra], tmp_path)
    assert_refused(r, tmp_path, before, extra[0], "--path_files")


def test_api_explicit_directions_with_params_apply_the_subset(tmp_path, mlp_ckpt, digits):
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


def test_api_explicit_directions_refuse_model2_and_same_dir(tmp_path, mlp_ckpt, digits):
    net = load("digits_mlp", mlp_ckpt)
    dx = [torch.ones(p.shape) for p in net.parameters()]
    for extra in (dict(model2=copy.deepcopy(net)), dict(y="0:1:2", same_dir=True), dict(regenerate=True)):
        with pytest.raises(landscape.LandscapeError):
            landscape.surface(net, (digits.train_x, digits.train_y), x="0:1:3", directions=[dx], device="cpu",
                              out=str(tmp_path / "s.h5"), **extra)
    assert os.listdir(tmp_path) == []


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


def test_hessian_direction_is_the_top_eigenvector_of_its_loss_and_data(tmp_path, tiny_files, digits, cli):
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
def test_hessian_direction_file_is_not_reused_for_another_loss_or_data(tmp_path, tiny_files, change, cli):
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


@pytest.mark.parametrize("which", ["model_file2", "model_file3"])
def test_resume_refuses_a_changed_target_checkpoint(tmp_path, mlp_run, which, cli):
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


def test_direction_file_of_a_changed_model_file2_is_not_reused(tmp_path, mlp_run, cli):
    """The direction file records --model_file2's contents: after the checkpoint changed, a new surface
    is never computed along the old difference."""
    copy_ckpt(os.path.join(mlp_run, "model_6.t7"), tmp_path, "m.t7")
    copy_ckpt(os.path.join(mlp_run, "model_2.t7"), tmp_path, "t.t7")
    args = MLP + ["--model_file", "m.t7", "--model_file2", "t.t7", "--x=0:1:2"]
    ok(cli(args + ["--surf_file", "s1.h5"], tmp_path))
    copy_ckpt(os.path.join(mlp_run, "model_4.t7"), tmp_path, "t.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(args + ["--surf_file", "s2.h5"], tmp_path), tmp_path, before, "--model_file2 checkpoint")


def test_model_file2_with_params_marks_no_hybrid_as_model_file2(tmp_path, mlp_run, digits, cli):
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


def test_regenerated_directions_are_orthogonalised(tmp_path, mlp_ckpt, digits, cli):
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


def test_hessian_direction_over_states_of_a_bn_subset(tmp_path, cnn_ckpt, digits, cli):
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


def test_hessian_direction_of_statistics_only_is_refused(tmp_path, cnn_ckpt, cli):
    copy_ckpt(cnn_ckpt, tmp_path, "c.t7")
    before = snapshot(tmp_path)
    r = cli(CNN + ["--model_file", "c.t7", "--xdir", "hessian", "--dir_type", "states", "--params", "running_",
                   "--x=-1:1:3"], tmp_path)
    assert_refused(r, tmp_path, before, "--params", "no parameter")


def _flat_line(r, surf, want):
    """Chosen behaviour for a direction that is zero everywhere: the flat line, and one warning line."""
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Tensor list must have at least one tensor" not in r.stderr
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ") and "zero everywhere" in ln]
    assert len(warned) == 1, r.stderr
    np.testing.assert_allclose(read_map(surf), want, rtol=1e-5)
    assert not os.path.exists(str(surf) + ".lock")


def test_model_file2_identical_to_model_file(tmp_path, mlp_ckpt, digits, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = cli(MLP + ["--model_file", "m.t7", "--model_file2", "m.t7", "--x=0:1:3", "--surf_file", "s.h5"], tmp_path)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)
    assert "--model_file2" in r.stderr


def test_model_file2_identical_to_model_file_under_mpiexec(tmp_path, mlp_ckpt, digits):
    if not mpiexec():
        pytest.skip("no mpiexec")
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = run_script("plot_surface.py", ["--mpi"] + MLP + ["--model_file", "m.t7", "--model_file2", "m.t7", "--x=0:1:3",
                                                         "--surf_file", "s.h5"], cwd=tmp_path, mpi_ranks=2, timeout=240)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)


def test_api_interpolation_between_identical_models(mlp_ckpt, digits, capsys):
    net = load("digits_mlp", mlp_ckpt)
    want = loss_of(net, digits.train_x, digits.train_y)
    res = landscape.interpolation(net, copy.deepcopy(net), (digits.train_x, digits.train_y), x="0:1:3", device="cpu")
    np.testing.assert_allclose(res["train_loss"], [want] * 3, rtol=1e-5)
    assert "warning: the x direction is zero everywhere" in capsys.readouterr().err


def test_regenerated_directions_that_vanish_are_warned_about(tmp_path, mlp_ckpt, digits, cli):
    """--params matching only biases, with --xignore biasbn: every drawn entry is zeroed."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    want = loss_of(load("digits_mlp", str(tmp_path / "m.t7")), digits.train_x, digits.train_y)
    r = cli(MLP + ["--model_file", "m.t7", "--x=-1:1:3", *FILTER_X, "--params", "bias", "--regenerate_directions",
                   "--surf_file", "s.h5"], tmp_path)
    _flat_line(r, tmp_path / "s.h5", [want] * 3)


