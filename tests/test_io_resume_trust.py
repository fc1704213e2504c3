"""Results that could be silently wrong, or runs that could stop for good: each is refused or fixed.

- a direction file made with another seed or normalisation is never reused silently;
- resuming a surface computed with other data, labels, split, precision or loss is refused;
- a tensor listed twice in the state_dict (tied weights) moves once with --dir_type states;
- a diverged point's curvature is recorded as NaN (never an abort, never recomputed);
- curvature applies --precision, defaults to exact fp32, and refuses flags that do nothing there.
"""
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dataloader
from landscape import errors
import plot_hessian_eigen
import plot_surface
from helpers import run_script

FILTER = ["--xnorm", "filter", "--xignore", "biasbn"]


def refused(capsys, main, args, *words):
    """Run a CLI in this process: exit code 2, one `error:` line holding every word."""
    capsys.readouterr()
    rc = errors.run_cli(main, [str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (rc, err)
    for w in words:
        assert w in err, (w, err)
    return err


def base(*extra):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--threads", "1", *extra]


# ----------------------------------------------------------------------------- direction files
def test_a_direction_file_of_another_seed_is_refused_under_its_name(work, capsys):
    assert plot_surface.main(base("--x=-1:1:3", *FILTER, "--seed", "7")) == 0
    # the seed-7 file, under the default seed's name, is what a stale or renamed file looks like
    os.replace("m.t7_weights_xignore=biasbn_xnorm=filter_seed=7.h5", "m.t7_weights_xignore=biasbn_xnorm=filter.h5")
    before = open("m.t7_weights_xignore=biasbn_xnorm=filter.h5", "rb").read()
    refused(capsys, plot_surface.main, base("--x=-1:1:3", *FILTER, "--surf_file", "s.h5"), "--seed", "7", "123")
    assert open("m.t7_weights_xignore=biasbn_xnorm=filter.h5", "rb").read() == before
    assert not os.path.exists("s.h5")


def test_a_named_direction_file_is_refused_only_for_flags_the_user_set(work, capsys):
    assert plot_surface.main(base("--x=-1:1:3", *FILTER)) == 0
    d = "m.t7_weights_xignore=biasbn_xnorm=filter.h5"
    assert plot_surface.main(base("--x=-1:1:3", "--dir_file", d, "--surf_file", "a.h5")) == 0  # the file decides
    refused(capsys, plot_surface.main, base("--x=-1:1:3", "--dir_file", d, "--seed", "7", "--surf_file", "b.h5"),
            "--seed")
    refused(capsys, plot_surface.main, base("--x=-1:1:3", "--dir_file", d, "--xnorm", "layer", "--surf_file", "c.h5"),
            "--xnorm", "layer")


# ----------------------------------------------------------------------------- resuming a surface
@pytest.mark.parametrize("extra,words", [
    (["--raw_data"], ["--raw_data"]),
    (["--data_split", "2"], ["--data_split"]),
    (["--data_split", "2", "--split_idx", "1"], ["--data_split"]),
    (["--precision", "bf16"], ["--precision", "bf16"]),
    (["--loss_name", "mse"], ["loss", "mse"]),
    (["--trainloader", "labels.t7"], ["--trainloader"]),
])
def test_resuming_with_other_data_or_arithmetic_is_refused(work, capsys, extra, words):
    surf = ["--x=-1:1:3", *FILTER, "--surf_file", "s.h5"]
    assert plot_surface.main(base(*surf)) == 0
    shuffled = dataloader.load_tensors("digits").train_y[torch.randperm(1437, generator=torch.Generator().manual_seed(0))]
    torch.save({"targets": shuffled}, "labels.t7")
    with h5py.File("s.h5", "r+") as f:  # an unfinished file: one point still to compute
        f["train_loss"][1] = -1
    before = open("s.h5", "rb").read()
    refused(capsys, plot_surface.main, base(*surf, *extra), "s.h5", *words)
    assert open("s.h5", "rb").read() == before


def test_resuming_with_the_other_split_index_is_refused(work, capsys):
    surf = ["--x=-1:1:3", *FILTER, "--surf_file", "s.h5", "--data_split", "2"]
    assert plot_surface.main(base(*surf, "--split_idx", "0")) == 0
    refused(capsys, plot_surface.main, base(*surf, "--split_idx", "1"), "--split_idx")


# ----------------------------------------------------------------------------- tied weights
TIED = '''
import torch.nn as nn

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64, bias=False)
        self.b = nn.Linear(64, 64, bias=False)
        self.b.weight = self.a.weight          # one tensor, two state_dict entries
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return self.out(self.b(self.a(x.flatten(1)).tanh()).tanh())

def factory():
    return Tied()
'''


def test_tied_weights_move_once_along_states_directions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tied.py").write_text(TIED)
    from landscape import user_code
    net = user_code.load_callable("tied.py:factory", "model")()
    assert list(net.state_dict()) == ["a.weight", "b.weight", "out.weight", "out.bias"]
    torch.save({"state_dict": net.state_dict()}, "tied.t7")
    args = ["--dataset", "digits", "--model", "tied.py:factory", "--model_file", "tied.t7", "--dir_type", "states",
            "--x=0.5:0.5:1", "--xnorm", "filter", "--xignore", "biasbn", "--surf_file", "s.h5", "--threads", "1"]
    assert plot_surface.main(args) == 0
    with h5py.File("s.h5", "r") as f:
        loss = f["train_loss"][0]
        dir_file = f["dir_file"][()].decode()
    with h5py.File(dir_file, "r") as f:
        d = [torch.tensor(f["xdirection"][str(i)][()]) for i in range(4)]
    assert d[0].abs().sum() > 0 and d[1].abs().sum() == 0  # the second name of the tensor does not move it again
    data = dataloader.load_tensors("digits")
    with torch.no_grad():
        for t, di in zip(net.state_dict().values(), d):
            t.add_(0.5 * di)  # the shared tensor moves once, by its first entry's direction
        expected = F.cross_entropy(net(data.train_x).double(), data.train_y).item()
    assert loss == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- curvature
def test_a_diverged_points_curvature_is_nan_and_is_not_recomputed(tmp_path, mlp_ckpt):
    ckpt = torch.load(mlp_ckpt, weights_only=True)
    ckpt["state_dict"]["fc1.weight"][0, 0] = float("nan")  # the far end of the line is a diverged model
    torch.save(ckpt, tmp_path / "nan.t7")
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--model_file2", "nan.t7",
            "--x=0:1:3", "--surf_file", "e.h5", "--batch_size", "2000", "--threads", "1"]
    r = run_script("plot_hessian_eigen.py", args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "e.h5", "r") as f:
        mx, mn = f["max_eig"][()], f["min_eig"][()]
    assert np.isfinite(mx[0]) and np.isfinite(mn[0]) and mx[0] > 0
    assert np.isnan(mx[1:]).all() and np.isnan(mn[1:]).all()
    r = run_script("plot_hessian_eigen.py", args, cwd=tmp_path)
    assert r.returncode == 0 and "computing 0 on" in r.stdout, r.stdout + r.stderr


def test_curvature_applies_the_precision_and_defaults_to_fp32(work, monkeypatch):
    from landscape.curvature import algorithms         # where the grid's curvature calls Lanczos
    seen = []
    real = algorithms.lanczos

    def spy(*a, **k):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real(*a, **k)
    monkeypatch.setattr(algorithms, "lanczos", spy)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # PyTorch's default
    args = base("--x=0:0:1", *FILTER, "--batch_size", "2000", "--max_iter", "5")
    assert plot_hessian_eigen.main(args + ["--surf_file", "a.h5"]) == 0
    assert plot_hessian_eigen.main(args + ["--surf_file", "b.h5", "--precision", "tf32"]) == 0
    assert seen == [(False, False), (True, True)]
    assert torch.backends.cudnn.allow_tf32  # restored afterwards
    with h5py.File("a.h5", "r") as f:   # the eigenvalue maps' own precision (a loss map's is `precision`)
        assert f.attrs["eig_precision"] == "fp32"


@pytest.mark.parametrize("flag", [["--compile"], ["--points_per_pass", "4"], ["--no_fold_bn"],
                                  ["--memory_format", "contiguous"], ["--eval_test"]])
def test_curvature_refuses_flags_that_do_nothing_there(work, capsys, flag):
    refused(capsys, plot_hessian_eigen.main, base("--x=0:0:1", *flag), flag[0], "no effect")


def test_curvature_notes_the_reference_ngpu_flag_and_runs(work, capsys):
    """The reference's plot_hessian_eigen.py took --ngpu: its lines run, with one note."""
    assert plot_hessian_eigen.main(base("--x=0:0:1", *FILTER, "--ngpu", "2", "--max_iter", "3")) == 0
    err = capsys.readouterr().err
    assert err.count("note: --ngpu is not applied") == 1, err
