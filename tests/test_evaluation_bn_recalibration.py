"""BatchNorm recalibration (--bn_recalibrate / bn_recalibrate=True): the last batch, a batch of one
example, a training set of one example; the ends of a path or plane through two BatchNorm checkpoints
are each checkpoint's own loss, with --path_files, --model_file2 and the API; resume and refusals.

The reference for a recalibrated point: BN layers in train mode over the training data (batch 128,
cumulative average), then a plain float64 evaluation."""
import copy
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from helpers import (CNN, FILTER_X, MLP, assert_refused, copy_ckpt, load_net as load, loss_of, ok, read_map, snapshot,
                     surf_attrs)


class LinBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.fc = nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.bn(self.lin(x.flatten(1))).relu())


def test_recalibration_batches_merge_a_last_batch_of_one_example():
    from landscape.evaluation import recalibration_batches
    assert recalibration_batches(1437, 1436) == [(0, 1437)]
    assert recalibration_batches(9, 4) == [(0, 4), (4, 9)]
    assert recalibration_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert recalibration_batches(2, 128) == [(0, 2)]
    with pytest.raises(landscape.LandscapeError, match="at least 2"):
        recalibration_batches(1, 128)


def test_bn_recalibrate_with_a_last_batch_of_one_on_batchnorm1d_equals_the_whole_set_statistics():
    """1437 examples in batches of 1436: one batch of 1437, so the statistics are the set's own
    (mean, unbiased variance of the Linear's outputs), computed here directly."""
    from landscape.zoo.data import load_digits
    d = load_digits()
    torch.manual_seed(0)
    net = LinBN().eval()
    res = landscape.surface(net, (d.train_x, d.train_y), x="0:0:1", directions="filter", bn_recalibrate=True,
                            batch_size=1436)
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        h = ref.lin(d.train_x.double().flatten(1))                           # (1437, 32)
        ref.bn.running_mean.copy_(h.mean(0))
        ref.bn.running_var.copy_(h.var(0, unbiased=True))
        loss = F.cross_entropy(ref(d.train_x.double()), d.train_y).item()
    assert res.values["train_loss"][0] == pytest.approx(loss, rel=1e-5)


def test_bn_recalibrate_on_a_training_set_of_one_example_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    one = (torch.randn(1, 1, 8, 8), torch.tensor([3]))
    with pytest.raises(landscape.LandscapeError, match="at least 2"):
        landscape.surface(LinBN(), one, x="0:1:2", bn_recalibrate=True, out="s.h5")
    (tmp_path / "mine.py").write_text(
        "import torch, torch.nn as nn\n"
        "class LinBN(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.lin, self.bn, self.fc = nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.bn(self.lin(x.flatten(1))))\n"
        "def model():\n    return LinBN()\n"
        "def data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return (torch.randn(1, 1, 8, 8, generator=g), torch.tensor([3])), (torch.randn(4, 1, 8, 8), torch.zeros(4).long())\n")
    torch.save({"state_dict": LinBN().state_dict()}, tmp_path / "m.t7")   # the file's LinBN has the same entries
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = run_cli(plot_surface.main, ["--model", "mine.py:model", "--dataset", "mine.py:data", "--model_file", "m.t7",
                                     "--x=-1:1:3", "--bn_recalibrate"])
    err = capsys.readouterr().err
    assert rc == 2 and "at least 2" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


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


def test_path_ends_are_the_checkpoints_own_losses_with_bn_recalibrate(tmp_path, bn_checkpoints, digits, cli):
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


def test_without_recalibration_the_path_end_keeps_the_first_statistics(tmp_path, bn_checkpoints, cli):
    """What the README now says: under --dir_type weights, BN's statistics stay the first checkpoint's."""
    (a, b), _, own = bn_checkpoints
    ok(cli(CNN + ["--path_files", a, b, "--dir_type", "weights", "--x=0:1:2", "--surf_file", "p.h5"], tmp_path))
    assert abs(read_map(tmp_path / "p.h5")[1] - own[1]) > 0.05 * own[1]


def test_plane_end_with_bn_recalibrate(tmp_path, bn_checkpoints, cli):
    (a, b), nets, own = bn_checkpoints
    a, b = copy_ckpt(a, tmp_path, "a.t7"), copy_ckpt(b, tmp_path, "b.t7")    # the direction file goes beside a
    ok(cli(CNN + ["--model_file", a, "--model_file2", b, "--dir_type", "weights", "--x=0:1:2", "--bn_recalibrate",
                  "--surf_file", "s.h5"], tmp_path))
    Z = read_map(tmp_path / "s.h5")
    assert Z[0] == pytest.approx(own[0], rel=1e-4) and Z[1] == pytest.approx(own[1], rel=1e-4), (Z, own)


def test_resume_refuses_another_bn_recalibrate(tmp_path, bn_checkpoints, cli):
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
def test_bn_recalibrate_refusals(tmp_path, bn_checkpoints, args, words, cli):
    (a, _), _, _ = bn_checkpoints
    a = copy_ckpt(a, tmp_path, "a.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(CNN + ["--model_file", a, "--x=-1:1:3", *FILTER_X, *args], tmp_path), tmp_path, before, *words)


def test_bn_recalibrate_refused_without_batchnorm_and_for_curvature(tmp_path, mlp_ckpt, cnn_ckpt, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    copy_ckpt(cnn_ckpt, tmp_path, "c.t7")
    before = snapshot(tmp_path)
    assert_refused(cli(MLP + ["--model_file", "m.t7", "--x=-1:1:3", "--bn_recalibrate"], tmp_path), tmp_path, before,
                   "no BatchNorm")
    assert_refused(cli(CNN + ["--model_file", "c.t7", "--x=-1:1:3", "--bn_recalibrate"], tmp_path,
                       script="plot_hessian_eigen.py"), tmp_path, before, "--bn_recalibrate")


@pytest.mark.parametrize("fn", ["path", "interpolation", "surface"])
def test_api_bn_recalibrate(bn_checkpoints, digits, fn):
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
